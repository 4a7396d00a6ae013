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

}  // namespace krait::bpf
