// A stack sample saved to a file: registers, the copied stack, and the
// process's /proc/PID/maps text. Used by tests, benchmarks and offline
// debugging of unwinding problems ("unwind this sample again").
//
// Format (version 1, little-endian, no padding):
//   "KRAITSNP"                    8 bytes
//   u32 version = 1, u32 zero
//   u64 registers x 17            ip sp bp bx r12 r13 r14 r15 ax cx dx si di r8 r9 r10 r11
//   u64 stack_start
//   u64 stack_size, then stack_size bytes
//   u64 maps_size, then maps_size bytes of /proc/PID/maps text
// Test fixtures written in C produce the same layout.
//
// Pure functions over files; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "unwind/unwinder.h"
#include "util/result.h"

namespace krait::unwind {

struct SnapshotFile {
  Registers regs;
  uint64_t stack_start = 0;
  std::vector<uint8_t> stack;
  std::string maps_text;

  // A view of this file's registers and stack (valid while it lives).
  StackSnapshot snapshot() const {
    return StackSnapshot{.regs = regs, .stack_start = stack_start, .stack = stack};
  }
};

// Sizes above these are refused as corrupt.
inline constexpr uint64_t kMaxSnapshotStackBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMaxSnapshotMapsBytes = uint64_t{64} << 20;

Result<SnapshotFile> read_snapshot_file(const std::string& path);
Result<void> write_snapshot_file(const std::string& path, const SnapshotFile& file);

}  // namespace krait::unwind
