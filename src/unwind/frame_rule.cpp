// Evaluates a CIE's and an FDE's call-frame instructions up to one address,
// the way libunwind 1.6 does (src/dwarf/Gparser.c), and reduces the row to
// a FrameRule. Where libunwind would fail or do something a FrameRule cannot
// say, this gives nullopt and the unwinder lets libunwind decide.
#include "unwind/frame_rule.h"

#include <string_view>

#include "unwind/cfa_program.h"
#include "unwind/cfi_reader.h"

namespace krait::unwind {
namespace {

using cfi::Reader;
using namespace cfi::pe;

// Nesting of DW_CFA_remember_state kept; deeper programs go to libunwind.
// GCC nests one level per shrink-wrapped region; eight is far beyond that.
constexpr size_t kMaxRememberDepth = 8;

enum class Where : uint8_t { kSame, kUndefined, kCfaOffset, kOther };

struct Rule {
  Where where = Where::kSame;
  int64_t offset = 0;
};

struct Row {
  std::array<Rule, kDwarfRegisters> regs{};
  bool cfa_defined = false;  // CFA = register + offset (not an expression)
  bool cfa_expression = false;
  uint8_t cfa_register = 0;
  int64_t cfa_offset = 0;
  size_t cfa_expression_at = 0;  // of the expression's bytes in the section
  uint64_t cfa_expression_size = 0;
};

using cfi::Cie;

bool factored(uint64_t value, int64_t align, int64_t& out) {
  return !__builtin_mul_overflow(static_cast<int64_t>(value), align, &out);
}

// Runs the instructions in [begin, end) while the location is at most
// `target` (libunwind: `curr_ip <= end_ip`). False where libunwind would
// fail, or where the program leaves what a FrameRule can hold.
bool run(std::span<const uint8_t> bytes, size_t begin, size_t end, const Cie& cie, uint64_t target,
         uint64_t& loc, Row& row, const Row& initial) {
  Reader r(bytes, begin, end);
  std::array<Row, kMaxRememberDepth> stack;
  size_t depth = 0;
  auto reg = [&](uint64_t n) { return n < kDwarfRegisters; };
  auto set = [&](uint64_t n, Where where, int64_t offset) { row.regs[n] = Rule{where, offset}; };
  while (loc <= target && r.ok() && r.remaining() > 0) {
    const uint8_t op = r.fixed<uint8_t>();
    const uint8_t low = op & 0x3f;
    int64_t offset = 0;
    switch (op & 0xc0) {
      case 0x40:  // advance_loc
        loc += low * cie.code_align;
        continue;
      case 0x80:  // offset
        if (!reg(low) || !factored(r.uleb(), cie.data_align, offset))
          return false;
        set(low, Where::kCfaOffset, offset);
        continue;
      case 0xc0:  // restore
        if (!reg(low))
          return false;
        row.regs[low] = initial.regs[low];
        continue;
      default:
        break;
    }
    uint64_t n = 0;
    switch (op) {
      case 0x00:  // nop
        break;
      case 0x02:  // advance_loc1
        loc += r.fixed<uint8_t>() * cie.code_align;
        break;
      case 0x03:  // advance_loc2
        loc += r.fixed<uint16_t>() * cie.code_align;
        break;
      case 0x04:  // advance_loc4
        loc += r.fixed<uint32_t>() * cie.code_align;
        break;
      case 0x05:  // offset_extended
        n = r.uleb();
        if (!reg(n) || !factored(r.uleb(), cie.data_align, offset))
          return false;
        set(n, Where::kCfaOffset, offset);
        break;
      case 0x11:  // offset_extended_sf
        n = r.uleb();
        if (!reg(n) || !factored(static_cast<uint64_t>(r.sleb()), cie.data_align, offset))
          return false;
        set(n, Where::kCfaOffset, offset);
        break;
      case 0x2f:  // GNU_negative_offset_extended
        n = r.uleb();
        if (!reg(n) || !factored(r.uleb(), cie.data_align, offset) || offset == INT64_MIN)
          return false;
        set(n, Where::kCfaOffset, -offset);
        break;
      case 0x06:  // restore_extended
        n = r.uleb();
        if (!reg(n))
          return false;
        row.regs[n] = initial.regs[n];
        break;
      case 0x07:  // undefined
      case 0x08:  // same_value
        n = r.uleb();
        if (!reg(n))
          return false;
        set(n, op == 0x07 ? Where::kUndefined : Where::kSame, 0);
        break;
      case 0x09:  // register
      case 0x14:  // val_offset
        n = r.uleb();
        r.uleb();
        if (!reg(n))
          return false;
        set(n, Where::kOther, 0);
        break;
      case 0x15:  // val_offset_sf
        n = r.uleb();
        r.sleb();
        if (!reg(n))
          return false;
        set(n, Where::kOther, 0);
        break;
      case 0x10:  // expression
      case 0x16:  // val_expression
        n = r.uleb();
        if (!reg(n))
          return false;
        r.skip(r.uleb());
        set(n, Where::kOther, 0);
        break;
      case 0x0a:  // remember_state
        if (depth == stack.size())
          return false;
        stack[depth++] = row;
        break;
      case 0x0b:  // restore_state: the whole row, CFA rule included
        if (depth == 0)
          return false;
        row = stack[--depth];
        break;
      case 0x0c:  // def_cfa
        n = r.uleb();
        if (!reg(n))
          return false;
        row.cfa_register = static_cast<uint8_t>(n);
        row.cfa_offset = static_cast<int64_t>(r.uleb());
        row.cfa_defined = true;
        row.cfa_expression = false;
        break;
      case 0x12:  // def_cfa_sf
        n = r.uleb();
        if (!reg(n) || !factored(static_cast<uint64_t>(r.sleb()), cie.data_align, offset))
          return false;
        row.cfa_register = static_cast<uint8_t>(n);
        row.cfa_offset = offset;
        row.cfa_defined = true;
        row.cfa_expression = false;
        break;
      case 0x0d:  // def_cfa_register
        n = r.uleb();
        if (!reg(n))
          return false;
        row.cfa_register = static_cast<uint8_t>(n);
        row.cfa_defined = true;
        row.cfa_expression = false;
        break;
      case 0x0e:  // def_cfa_offset
        row.cfa_offset = static_cast<int64_t>(r.uleb());
        break;
      case 0x13:  // def_cfa_offset_sf
        if (!factored(static_cast<uint64_t>(r.sleb()), cie.data_align, offset))
          return false;
        row.cfa_offset = offset;
        break;
      case 0x0f:  // def_cfa_expression
        row.cfa_expression_size = r.uleb();
        row.cfa_expression_at = r.pos();
        r.skip(row.cfa_expression_size);
        row.cfa_expression = true;
        break;
      case 0x2e:  // GNU_args_size
        r.uleb();
        break;
      default:  // set_loc, vendor opcodes: CfiTable drops such entries
        return false;
    }
  }
  return r.ok();
}

// The one CFA expression the linker writes for every x86-64 PLT (ld's
// elf_x86_64_eh_frame_plt): CFA = %rsp + 8, plus 8 more past the push
// within each 16-byte entry (from byte 11 on, or 10 with IBT's PLT).
std::optional<int64_t> plt_cfa_offset(std::span<const uint8_t> bytes, size_t at, uint64_t size,
                                      uint64_t ip) {
  constexpr uint8_t kPattern[] = {0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x00, 0x2a, 0x33, 0x24, 0x22};
  constexpr size_t kThresholdAt = 6;
  if (size != sizeof kPattern || at > bytes.size() || bytes.size() - at < size)
    return std::nullopt;
  for (size_t i = 0; i < sizeof kPattern; ++i)
    if (i != kThresholdAt && bytes[at + i] != kPattern[i])
      return std::nullopt;
  const uint8_t threshold = bytes[at + kThresholdAt];
  if (threshold != 0x3b && threshold != 0x3a)  // DW_OP_lit11, DW_OP_lit10
    return std::nullopt;
  return (ip & 15) >= static_cast<uint64_t>(threshold - 0x30) ? 16 : 8;
}

bool fits(int64_t value) {
  return value > FrameRule::kUndefined && value <= INT32_MAX;
}

}  // namespace

std::optional<FrameRule> frame_rule(const CfiTable& table, const FdeEntry& fde, uint64_t file_pc,
                                    bool exact) {
  if (fde.signal_frame || file_pc < fde.start || file_pc >= fde.end)
    return std::nullopt;
  const std::span<const uint8_t> bytes = table.bytes();
  // Both sources are in .eh_frame form (CfiTable converts .debug_frame):
  // the CIE pointer counts back from its own field.
  auto header = cfi::read_header(bytes, fde.offset);
  if (!header || header->terminator || header->id == 0 || header->id > header->id_offset)
    return std::nullopt;
  auto cie = cfi::read_eh_cie(bytes, header->id_offset - header->id, kReturnAddressRegister);
  if (!cie)
    return std::nullopt;
  Reader r(bytes, header->body, header->end);
  const uint8_t format = cie->fde_encoding & kPeFormatMask;
  if (!cfi::read_encoded(r, format, 0) || !cfi::read_encoded(r, format, 0))
    return std::nullopt;
  if (cie->augmented)
    r.skip(r.uleb());
  if (!r.ok())
    return std::nullopt;

  Row row;
  uint64_t loc = fde.start;
  if (!run(bytes, cie->program, cie->program_end, *cie, UINT64_MAX, loc, row, row))
    return std::nullopt;
  const Row initial = row;
  loc = fde.start;
  if (!run(bytes, r.pos(), header->end, *cie, file_pc, loc, row, initial))
    return std::nullopt;

  if (row.cfa_expression) {
    // The expression reads %rip: the pc itself, or the return address one
    // past it. A load bias keeps the low 12 bits.
    auto offset =
        plt_cfa_offset(bytes, row.cfa_expression_at, row.cfa_expression_size, file_pc + !exact);
    if (!offset)
      return std::nullopt;
    row.cfa_expression = false;
    row.cfa_defined = true;
    row.cfa_register = 7;
    row.cfa_offset = *offset;
  }
  if (!row.cfa_defined || row.cfa_register >= 16 || !fits(row.cfa_offset))
    return std::nullopt;
  FrameRule out;
  out.cfa_register = row.cfa_register;
  out.cfa_offset = static_cast<int32_t>(row.cfa_offset);
  for (size_t n = 0; n < kDwarfRegisters; ++n) {
    const Rule& rule = row.regs[n];
    size_t slot = FrameRule::kRegisters.size();
    for (size_t i = 0; i < FrameRule::kRegisters.size(); ++i)
      if (FrameRule::kRegisters[i] == n)
        slot = i;
    if (slot == FrameRule::kRegisters.size()) {
      // Caller-saved registers and %rsp: only "unchanged" is followed here.
      if (rule.where != Where::kSame)
        return std::nullopt;
      continue;
    }
    switch (rule.where) {
      case Where::kSame:
        if (slot == FrameRule::kReturnAddress)
          return std::nullopt;  // libunwind's odd case: left to it
        out.saved[slot] = FrameRule::kSame;
        break;
      case Where::kUndefined:
        out.saved[slot] = FrameRule::kUndefined;
        break;
      case Where::kCfaOffset:
        if (!fits(rule.offset))
          return std::nullopt;
        out.saved[slot] = static_cast<int32_t>(rule.offset);
        break;
      case Where::kOther:
        return std::nullopt;
    }
  }
  return out;
}

}  // namespace krait::unwind
