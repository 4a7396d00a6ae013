// What every command may ask of the sampler, defined once: `record`,
// `daemon` and the coming commands check their options against these, and
// the sampler checks its configuration against the same numbers.
// Dependency-free so that option parsers include it without the BPF object.
#pragma once

#include <cstdint>

namespace krait::bpf {

// Samples per second per CPU.
inline constexpr uint32_t kMinFrequencyHz = 1;
inline constexpr uint32_t kMaxFrequencyHz = 10'000;

// Python frames only, or with the native and kernel frames around them.
enum class StackMode : uint8_t { kPython, kMixed };

// Which time is sampled: on-CPU (the perf event), off-CPU (context
// switches: the time a thread waits, at the stack where it waits), or wall
// (both: a thread's samples add up to its wall-clock time).
enum class TimeMode : uint8_t { kCpu, kOffCpu, kWall };

// Off CPU: one context switch in N is captured, weighted by N.
inline constexpr uint32_t kMaxSwitchEvery = 65'535;

// Off CPU: switches captured per second per CPU before one in N is (0: all).
// Each capture costs a stack walk in the kernel and an unwind in krait; a
// server doing 100k switches a second would otherwise cost krait more than
// a core. 1000 keeps that near the cost of on-CPU sampling at 1000 Hz.
inline constexpr uint32_t kDefaultSwitchBudget = 1'000;
inline constexpr uint32_t kMaxSwitchBudget = 1'000'000;

}  // namespace krait::bpf
