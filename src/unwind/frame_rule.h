// The row of an FDE's call-frame table at one address, reduced to the form
// the unwinder applies itself without libunwind: CFA = register + offset,
// the return address and each callee-saved register either unchanged,
// undefined, or saved at CFA + offset. That is every row GCC and Clang emit
// for ordinary x86-64 code, and the linker's PLT rows (a CFA expression
// whose value depends only on the pc); anything else (DWARF expressions, a register
// saved in another register, a rule for a caller-saved register or for
// %rsp, signal frames) has no FrameRule and is left to libunwind.
//
// Why: libunwind's remote API takes a lock that blocks every signal (two
// rt_sigprocmask calls) around each access to its cache, and allocates from
// a signal-blocking pool when the cache misses, so each frame it steps costs
// system calls. Rows computed here are cached by the unwinder by (file,
// address), so a step is a cache lookup and a few reads of the copied stack.
//
// Inputs are untrusted CFI bytes (already indexed by CfiTable): every read
// is bounded by the entry, the remember/restore stack is bounded, and an
// opcode or operand outside what libunwind itself accepts gives no rule.
// Internal to src/unwind.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "unwind/cfi_table.h"

namespace krait::unwind {

struct FrameRule {
  // The registers a rule may restore, in this order: the x86-64 callee-saved
  // general registers and the return address (DWARF numbers).
  static constexpr std::array<uint8_t, 7> kRegisters = {3, 6, 12, 13, 14, 15, 16};
  static constexpr size_t kReturnAddress = 6;  // index of DWARF 16 in kRegisters
  static constexpr size_t kFramePointer = 1;   // index of %rbp (DWARF 6)
  // Values of saved[i] that are not offsets.
  static constexpr int32_t kSame = INT32_MIN;
  static constexpr int32_t kUndefined = INT32_MIN + 1;

  uint8_t cfa_register = 7;  // DWARF number, 0-15
  int32_t cfa_offset = 8;
  // For kRegisters[i]: where the caller's value is, as an offset from the
  // CFA, or kSame / kUndefined.
  std::array<int32_t, kRegisters.size()> saved{kSame, kSame, kSame, kSame, kSame, kSame, kSame};
};

// The row of `fde` (an entry of `table`) in effect at file address
// `file_pc`, or nullopt when it is not one a FrameRule can express (or the
// bytes are malformed). `exact`: file_pc is the sampled (or interrupted)
// instruction; otherwise it is one byte before a return address, which is
// what an expression reading %rip sees.
std::optional<FrameRule> frame_rule(const CfiTable& table, const FdeEntry& fde, uint64_t file_pc,
                                    bool exact);

}  // namespace krait::unwind
