// The check that a CIE's or FDE's call-frame program is one libunwind can
// run safely. Separate from the CFI indexer (cfi_table.cpp) because it is
// the one place that knows libunwind's limits rather than DWARF's: the
// indexer drops every entry this refuses before libunwind sees it.
// Internal to src/unwind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace krait::unwind {

// The x86-64 DWARF registers libunwind keeps a location for: 0-15, the
// general registers, and 16, the return address. libunwind 1.6 indexes
// those slots with register numbers taken from the CFI without checking
// every one (DW_CFA_register's second operand), so a CIE or FDE whose
// program names any other register, or an opcode GNU tools never emit for
// x86-64, is dropped before libunwind sees it.
inline constexpr uint64_t kDwarfRegisters = 17;
inline constexpr uint64_t kReturnAddressRegister = 16;

// Walks the call-frame instructions in [begin, end): true when every
// opcode is known and every register it names is one of kDwarfRegisters.
bool cfa_program_is_safe(std::span<const uint8_t> bytes, size_t begin, size_t end);

}  // namespace krait::unwind
