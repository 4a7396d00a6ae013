#include "unwind/cfa_program.h"

#include <optional>

#include "unwind/cfi_reader.h"

namespace krait::unwind {
namespace {

using cfi::Reader;

// The opcodes whose operand is in their low six bits: whether this one is
// safe (its operands read), or nullopt when `op` is none of them.
std::optional<bool> primary_op_is_safe(uint8_t op, Reader& r) {
  const uint8_t low = op & 0x3f;
  switch (op & 0xc0) {
    case 0x40:  // DW_CFA_advance_loc
      return true;
    case 0x80:  // DW_CFA_offset
      if (low >= kDwarfRegisters)
        return false;
      r.uleb();
      return true;
    case 0xc0:  // DW_CFA_restore
      return low < kDwarfRegisters;
    default:
      return std::nullopt;
  }
}

// Every other opcode, its operands read: false for one GNU tools never emit
// for x86-64 or one that names a register libunwind keeps no slot for.
bool extended_op_is_safe(uint8_t op, Reader& r) {
  auto reg = [&] { return r.uleb() < kDwarfRegisters; };
  bool ok = true;
  switch (op) {
    case 0x00:  // nop
    case 0x0a:  // remember_state
    case 0x0b:  // restore_state
      break;
    case 0x02:  // advance_loc1
      r.skip(1);
      break;
    case 0x03:  // advance_loc2
      r.skip(2);
      break;
    case 0x04:  // advance_loc4
      r.skip(4);
      break;
    case 0x05:  // offset_extended
    case 0x0c:  // def_cfa
    case 0x14:  // val_offset
    case 0x2f:  // GNU_negative_offset_extended
      ok = reg();
      r.uleb();
      break;
    case 0x06:  // restore_extended
    case 0x07:  // undefined
    case 0x08:  // same_value
    case 0x0d:  // def_cfa_register
      ok = reg();
      break;
    case 0x09:  // register
      ok = reg() && reg();
      break;
    case 0x0e:  // def_cfa_offset
    case 0x2e:  // GNU_args_size
      r.uleb();
      break;
    case 0x0f:  // def_cfa_expression
      r.skip(r.uleb());
      break;
    case 0x10:  // expression
    case 0x16:  // val_expression
      ok = reg();
      r.skip(r.uleb());
      break;
    case 0x11:  // offset_extended_sf
    case 0x12:  // def_cfa_sf
    case 0x15:  // val_offset_sf
      ok = reg();
      r.sleb();
      break;
    case 0x13:  // def_cfa_offset_sf
      r.sleb();
      break;
    default:  // set_loc and vendor opcodes
      return false;
  }
  return ok;
}

}  // namespace

bool cfa_program_is_safe(std::span<const uint8_t> bytes, size_t begin, size_t end) {
  Reader r(bytes, begin, end);
  while (r.ok() && r.remaining() > 0) {
    const uint8_t op = r.fixed<uint8_t>();
    const std::optional<bool> primary = primary_op_is_safe(op, r);
    const bool ok = primary ? *primary : extended_op_is_safe(op, r);
    if (!ok)
      return false;
  }
  return r.ok();
}

}  // namespace krait::unwind
