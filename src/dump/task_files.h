// Parsers of the per-thread /proc files `krait dump` reads:
// /proc/PID/task/TID/stat (scheduler state), .../syscall (the system call a
// blocked thread is in, with its user sp and pc) and .../stack (the kernel
// stack, symbolized by the kernel). Pure functions over the text, so unit
// tests and the fuzz target run them on any input.
//
// The text is hostile (a thread names itself in stat; the files can be cut
// short by a thread that exits while read): every parser is linear, never
// throws, and bounds what it returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::dump {

// Bytes read of each per-thread file: far above a real one (stat ~300 B,
// syscall ~120 B, a 64-frame kernel stack ~3 KiB).
inline constexpr size_t kMaxTaskFileBytes = 16 * 1024;
// Kernel frames kept from .../stack.
inline constexpr size_t kMaxKernelFrames = 64;

// The state letter of /proc/PID/task/TID/stat: the field after the last ')'
// (the comm before it may contain anything, parentheses included).
Result<char> parse_stat_state(std::string_view stat);

// What /proc/PID/task/TID/syscall says.
struct TaskSyscall {
  enum class Kind : uint8_t {
    kRunning,    // "running": on a CPU, no registers to read
    kSyscall,    // blocked in system call `number`
    kNoSyscall,  // "-1 sp pc": blocked, but not in a system call (a fault)
  };
  Kind kind = Kind::kRunning;
  int64_t number = -1;
  uint64_t args[6] = {};  // kSyscall: its arguments
  uint64_t sp = 0;        // user stack pointer and pc at kernel entry (kSyscall, kNoSyscall)
  uint64_t pc = 0;
};
Result<TaskSyscall> parse_syscall(std::string_view text);

// The function names of /proc/PID/task/TID/stack ("[<0>] do_nanosleep+0x6c/0x190"
// gives "do_nanosleep"), leaf first, at most kMaxKernelFrames; lines that do
// not look like a frame are skipped.
std::vector<std::string> parse_kernel_stack(std::string_view text);

// The x86_64 name of a system call number ("clock_nanosleep"), or
// "syscall N" for one the table lacks.
std::string syscall_name(int64_t number);

// "running" (R), "sleeping" (S), "disk sleep" (D), "stopped" (T/t),
// "zombie" (Z), "dead" (X), "idle" (I), "parked" (P), else "state C".
std::string state_name(char state);

}  // namespace krait::dump
