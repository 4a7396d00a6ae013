#include "unwind/cfi_table.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "unwind/cfa_program.h"
#include "unwind/cfi_reader.h"

namespace krait::unwind {
namespace {

using cfi::EntryHeader;
using cfi::read_encoded;
using cfi::read_header;
using cfi::Reader;
using namespace cfi::pe;

// A section larger than this cannot be indexed with 32-bit offsets.
constexpr size_t kMaxSectionBytes = std::numeric_limits<uint32_t>::max() / 2;
// Entries indexed per table, and distinct CIEs parsed: each costs memory
// beyond its bytes (an FDE can be 12 bytes and its index entry is 32), so
// a section of tiny entries is not indexed past these. Real files stay far
// below (libxul: ~200,000 FDEs; a CIE per object file at most).
constexpr size_t kMaxFdes = size_t{1} << 22;
constexpr size_t kMaxCies = size_t{1} << 18;
// How many earlier FDEs find() inspects when the nearest one ends too soon
// (overlapping FDEs are rare; a long scan would only hide garbage).
constexpr int kOverlapLookBack = 4;

// What an FDE needs from its .eh_frame CIE; kept per CIE while indexing,
// so only these few bytes.
struct EhCie {
  bool usable = false;  // libunwind can run its program
  uint8_t fde_encoding = kPeAbsptr;
  bool augmented = false;
  bool signal_frame = false;
};

EhCie parse_eh_cie(std::span<const uint8_t> bytes, size_t offset) {
  auto cie = cfi::read_eh_cie(bytes, offset, kReturnAddressRegister);
  if (!cie || !cfa_program_is_safe(bytes, cie->program, cie->program_end))
    return {};
  return EhCie{.usable = true,
               .fde_encoding = cie->fde_encoding,
               .augmented = cie->augmented,
               .signal_frame = cie->signal_frame};
}

void put_u8(std::vector<uint8_t>& out, uint8_t v) {
  out.push_back(v);
}
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  uint8_t raw[4];
  std::memcpy(raw, &v, sizeof v);
  out.insert(out.end(), raw, raw + sizeof raw);
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  uint8_t raw[8];
  std::memcpy(raw, &v, sizeof v);
  out.insert(out.end(), raw, raw + sizeof raw);
}
void patch_u32(std::vector<uint8_t>& out, size_t at, uint32_t v) {
  std::memcpy(out.data() + at, &v, sizeof v);
}

// The .debug_frame CIE at `offset`, appended to `out` in .eh_frame form;
// its offset in `out`, or nullopt when it cannot be used.
std::optional<uint32_t> convert_debug_cie(std::span<const uint8_t> bytes, size_t offset,
                                          std::vector<uint8_t>& out) {
  auto header = read_header(bytes, offset);
  if (!header || header->terminator)
    return std::nullopt;
  uint64_t cie_id = header->dwarf64 ? ~uint64_t{0} : uint64_t{0xffffffff};
  if (header->id != cie_id)
    return std::nullopt;
  Reader r(bytes, header->body, header->end);
  uint8_t version = r.fixed<uint8_t>();
  if (version != 1 && version != 3 && version != 4)
    return std::nullopt;
  std::string_view augmentation = r.cstring();
  if (!r.ok() || !augmentation.empty())
    return std::nullopt;
  if (version == 4) {
    uint8_t address_size = r.fixed<uint8_t>();
    uint8_t segment_size = r.fixed<uint8_t>();
    if (address_size != 8 || segment_size != 0)
      return std::nullopt;
  }
  size_t fields = r.pos();
  r.uleb();
  r.sleb();
  const uint64_t return_address = version == 1 ? r.fixed<uint8_t>() : r.uleb();
  if (!r.ok() || return_address != kReturnAddressRegister ||
      !cfa_program_is_safe(bytes, r.pos(), header->end))
    return std::nullopt;
  // .eh_frame knows versions 1 and 3; version 4 differs from 3 only by
  // the two size bytes dropped above.
  size_t at = out.size();
  put_u32(out, 0);  // length, patched below
  put_u32(out, 0);  // CIE id in .eh_frame
  put_u8(out, version == 1 ? 1 : 3);
  put_u8(out, 0);  // no augmentation: FDE addresses are 8-byte absolute
  out.insert(out.end(), bytes.begin() + fields, bytes.begin() + header->end);
  patch_u32(out, at, static_cast<uint32_t>(out.size() - at - 4));
  return static_cast<uint32_t>(at);
}

// The .debug_frame FDE of `header`, appended to `out` in .eh_frame form with
// a pointer to its converted CIE at `cie_at`; its index entry, or nullopt
// (nothing appended) when it cannot be used.
std::optional<FdeEntry> convert_debug_fde(std::span<const uint8_t> bytes, const EntryHeader& header,
                                          uint32_t cie_at, std::vector<uint8_t>& out) {
  Reader r(bytes, header.body, header.end);
  uint64_t start = r.fixed<uint64_t>();
  uint64_t range = r.fixed<uint64_t>();
  if (!r.ok() || range == 0 || start + range < start ||
      !cfa_program_is_safe(bytes, r.pos(), header.end))
    return std::nullopt;
  size_t at = out.size();
  put_u32(out, 0);  // length, patched below
  size_t pointer_at = out.size();
  put_u32(out, static_cast<uint32_t>(pointer_at - cie_at));
  put_u64(out, start);
  put_u64(out, range);
  out.insert(out.end(), bytes.begin() + r.pos(), bytes.begin() + header.end);
  patch_u32(out, at, static_cast<uint32_t>(out.size() - at - 4));
  return FdeEntry{
      .start = start, .end = start + range, .offset = static_cast<uint32_t>(at), .absolute = true};
}

}  // namespace

Result<CfiTable> CfiTable::from_eh_frame(std::span<const uint8_t> bytes, uint64_t vaddr) {
  if (bytes.size() > kMaxSectionBytes)
    return make_error(".eh_frame of {} bytes is too large to index", bytes.size());
  CfiTable table;
  table.source_ = Source::kEhFrame;
  table.bytes_ = bytes;
  table.vaddr_ = vaddr;
  std::unordered_map<size_t, EhCie> cies;
  size_t pos = 0;
  while (pos < bytes.size()) {
    auto header = read_header(bytes, pos);
    if (!header || header->terminator)
      break;
    pos = header->end;
    if (header->id == 0)
      continue;  // a CIE, parsed when an FDE refers to it
    // The CIE pointer counts back from its own field.
    if (header->id > header->id_offset)
      continue;
    size_t cie_offset = header->id_offset - header->id;
    if (table.entries_.size() >= kMaxFdes ||
        (cies.size() >= kMaxCies && !cies.contains(cie_offset)))
      break;
    auto [it, inserted] = cies.try_emplace(cie_offset);
    if (inserted)
      it->second = parse_eh_cie(bytes, cie_offset);
    const EhCie& cie = it->second;
    if (!cie.usable)
      continue;
    Reader r(bytes, header->body, header->end);
    auto start = read_encoded(r, cie.fde_encoding, vaddr + r.pos());
    auto range = read_encoded(r, cie.fde_encoding & kPeFormatMask, 0);
    if (!start || !range || *range == 0 || *start + *range < *start)
      continue;
    if (cie.augmented)
      r.skip(r.uleb());
    if (!r.ok() || !cfa_program_is_safe(bytes, r.pos(), header->end))
      continue;
    table.entries_.push_back(FdeEntry{.start = *start,
                                      .end = *start + *range,
                                      .offset = static_cast<uint32_t>(header->start),
                                      .signal_frame = cie.signal_frame,
                                      .absolute = (cie.fde_encoding & kPeApplicationMask) == 0});
  }
  if (table.entries_.empty())
    return make_error(".eh_frame has no readable FDE");
  table.index_entries();
  return table;
}

Result<CfiTable> CfiTable::from_debug_frame(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxSectionBytes)
    return make_error(".debug_frame of {} bytes is too large to index", bytes.size());
  CfiTable table;
  table.source_ = Source::kDebugFrame;
  std::vector<uint8_t>& out = table.owned_;
  out.reserve(bytes.size() + 64);
  // Converted CIEs by their offset in .debug_frame; nullopt when unusable.
  std::unordered_map<size_t, std::optional<uint32_t>> converted;

  size_t pos = 0;
  while (pos < bytes.size()) {
    auto header = read_header(bytes, pos);
    if (!header || header->terminator)
      break;
    pos = header->end;
    uint64_t cie_id = header->dwarf64 ? ~uint64_t{0} : uint64_t{0xffffffff};
    if (header->id == cie_id)
      continue;
    if (header->id >= bytes.size())
      continue;
    if (table.entries_.size() >= kMaxFdes ||
        (converted.size() >= kMaxCies && !converted.contains(header->id)))
      break;
    auto [it, inserted] = converted.try_emplace(header->id);
    if (inserted)
      it->second = convert_debug_cie(bytes, header->id, out);
    if (!it->second)
      continue;
    if (auto entry = convert_debug_fde(bytes, *header, *it->second, out))
      table.entries_.push_back(*entry);
  }
  put_u32(out, 0);  // terminator
  if (table.entries_.empty())
    return make_error(
        ".debug_frame has no FDE that can be used (8-byte addresses, no augmentation)");
  table.bytes_ = out;
  table.index_entries();
  return table;
}

void CfiTable::index_entries() {
  std::sort(entries_.begin(), entries_.end(), [](const FdeEntry& a, const FdeEntry& b) {
    return a.start != b.start ? a.start < b.start : a.end < b.end;
  });
  by_offset_.resize(entries_.size());
  for (uint32_t i = 0; i < by_offset_.size(); ++i)
    by_offset_[i] = i;
  std::sort(by_offset_.begin(), by_offset_.end(),
            [&](uint32_t a, uint32_t b) { return entries_[a].offset < entries_[b].offset; });
}

const FdeEntry* CfiTable::emitted_before(const FdeEntry& fde) const {
  auto it = std::lower_bound(
      by_offset_.begin(), by_offset_.end(), fde.offset,
      [&](uint32_t index, uint32_t offset) { return entries_[index].offset < offset; });
  if (it == by_offset_.begin() || it == by_offset_.end() || entries_[*it].offset != fde.offset)
    return nullptr;
  return &entries_[*std::prev(it)];
}

const FdeEntry* CfiTable::find(uint64_t file_pc) const {
  auto it = std::upper_bound(entries_.begin(), entries_.end(), file_pc,
                             [](uint64_t pc, const FdeEntry& e) { return pc < e.start; });
  for (int steps = 0; it != entries_.begin() && steps < kOverlapLookBack; ++steps) {
    --it;
    if (file_pc < it->end)
      return &*it;
  }
  return nullptr;
}

}  // namespace krait::unwind
