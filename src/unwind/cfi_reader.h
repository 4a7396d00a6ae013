// Bounds-checked reads of DWARF call-frame information (.eh_frame and
// .debug_frame): the one reader that the CFI indexer (cfi_table.cpp), the
// CFA program check (cfa_program.cpp) and the frame-rule evaluator
// (frame_rule.cpp) parse untrusted bytes with, and the entry framing,
// pointer encodings and CIE fields they share.
// Internal to src/unwind.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace krait::unwind::cfi {

// Bounds-checked little-endian reads over one section. Every read either
// succeeds completely or leaves `ok` false; callers check once per entry.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, size_t pos, size_t end)
      : bytes_(bytes), pos_(pos), end_(std::min(end, bytes.size())) {}

  size_t pos() const { return pos_; }
  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ && pos_ < end_ ? end_ - pos_ : 0; }

  template <typename T>
  T fixed() {
    T value{};
    if (!ok_ || pos_ > end_ || end_ - pos_ < sizeof(T)) {
      ok_ = false;
      return value;
    }
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  uint64_t uleb() {
    uint64_t value = 0;
    for (unsigned shift = 0; ok_; shift += 7) {
      uint8_t byte = fixed<uint8_t>();
      if (shift < 64)
        value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0)
        return value;
      if (shift > 70)
        ok_ = false;  // longer than any 64-bit value
    }
    return 0;
  }
  int64_t sleb() {
    uint64_t value = 0;
    unsigned shift = 0;
    uint8_t byte = 0;
    do {
      byte = fixed<uint8_t>();
      if (!ok_)
        return 0;
      if (shift < 64)
        value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      shift += 7;
      if (shift > 77) {
        ok_ = false;
        return 0;
      }
    } while (byte & 0x80);
    if (shift < 64 && (byte & 0x40))
      value |= ~uint64_t{0} << shift;
    return static_cast<int64_t>(value);
  }
  std::string_view cstring() {
    if (!ok_ || pos_ >= end_) {
      ok_ = false;
      return {};
    }
    const auto* begin = reinterpret_cast<const char*>(bytes_.data() + pos_);
    const void* nul = std::memchr(begin, '\0', end_ - pos_);
    if (nul == nullptr) {
      ok_ = false;
      return {};
    }
    std::string_view out(begin, static_cast<const char*>(nul) - begin);
    pos_ += out.size() + 1;
    return out;
  }
  void skip(size_t n) {
    if (!ok_ || pos_ > end_ || end_ - pos_ < n)
      ok_ = false;
    else
      pos_ += n;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_;
  size_t end_;
  bool ok_ = true;
};

namespace pe {
// DW_EH_PE_* pointer encodings (LSB Core, "DWARF Extensions").
inline constexpr uint8_t kPeOmit = 0xff;
inline constexpr uint8_t kPeFormatMask = 0x0f;
inline constexpr uint8_t kPeApplicationMask = 0x70;
inline constexpr uint8_t kPeIndirect = 0x80;
inline constexpr uint8_t kPeAbsptr = 0x00, kPeUleb128 = 0x01, kPeUdata2 = 0x02, kPeUdata4 = 0x03,
                         kPeUdata8 = 0x04, kPeSleb128 = 0x09, kPeSdata2 = 0x0a, kPeSdata4 = 0x0b,
                         kPeSdata8 = 0x0c;
inline constexpr uint8_t kPePcrel = 0x10;

}  // namespace pe

// The framing shared by CIEs and FDEs in both sections.
struct EntryHeader {
  size_t start = 0;      // offset of the length field
  size_t id_offset = 0;  // offset of the CIE id / CIE pointer field
  size_t body = 0;       // first byte after the id field
  size_t end = 0;        // one past the entry
  uint64_t id = 0;
  bool dwarf64 = false;
  bool terminator = false;
};

inline std::optional<EntryHeader> read_header(std::span<const uint8_t> bytes, size_t pos) {
  Reader r(bytes, pos, bytes.size());
  EntryHeader h;
  h.start = pos;
  uint64_t length = r.fixed<uint32_t>();
  if (!r.ok())
    return std::nullopt;
  if (length == 0) {
    h.terminator = true;
    return h;
  }
  if (length == 0xffffffff) {
    h.dwarf64 = true;
    length = r.fixed<uint64_t>();
  }
  if (!r.ok() || length > r.remaining())
    return std::nullopt;
  h.id_offset = r.pos();
  h.end = r.pos() + length;
  h.id = h.dwarf64 ? r.fixed<uint64_t>() : r.fixed<uint32_t>();
  if (!r.ok() || r.pos() > h.end)
    return std::nullopt;
  h.body = r.pos();
  return h;
}

inline std::optional<uint64_t> read_encoded(Reader& r, uint8_t encoding, uint64_t field_vaddr) {
  if (encoding == pe::kPeOmit || (encoding & pe::kPeIndirect) != 0)
    return std::nullopt;
  uint64_t value = 0;
  switch (encoding & pe::kPeFormatMask) {
    case pe::kPeAbsptr:
    case pe::kPeUdata8:
    case pe::kPeSdata8:
      value = r.fixed<uint64_t>();
      break;
    case pe::kPeUleb128:
      value = r.uleb();
      break;
    case pe::kPeUdata2:
      value = r.fixed<uint16_t>();
      break;
    case pe::kPeUdata4:
      value = r.fixed<uint32_t>();
      break;
    case pe::kPeSleb128:
      value = static_cast<uint64_t>(r.sleb());
      break;
    case pe::kPeSdata2:
      value = static_cast<uint64_t>(static_cast<int64_t>(r.fixed<int16_t>()));
      break;
    case pe::kPeSdata4:
      value = static_cast<uint64_t>(static_cast<int64_t>(r.fixed<int32_t>()));
      break;
    default:
      return std::nullopt;
  }
  if (!r.ok())
    return std::nullopt;
  switch (encoding & pe::kPeApplicationMask) {
    case 0:
      return value;
    case pe::kPePcrel:
      return value + field_vaddr;
    default:
      // datarel/textrel/funcrel/aligned never appear in FDE addresses that
      // GNU tools emit for x86_64.
      return std::nullopt;
  }
}

// What the unwinder needs from an .eh_frame CIE (or a .debug_frame CIE
// after CfiTable converted it): the factors its program is read with,
// how its FDEs encode their addresses, and where its program is.
struct Cie {
  uint64_t code_align = 1;
  int64_t data_align = 1;
  uint8_t fde_encoding = pe::kPeAbsptr;
  bool augmented = false;  // 'z': FDEs carry an augmentation length
  bool signal_frame = false;
  size_t program = 0, program_end = 0;
};

// The CIE at `offset`, or nullopt where libunwind would refuse it: an
// unknown version, a return-address column other than x86_64's, an old
// augmentation whose data cannot be skipped, or a personality pointer
// whose encoding it cannot size.
inline std::optional<Cie> read_eh_cie(std::span<const uint8_t> bytes, size_t offset,
                                      uint64_t return_address_register) {
  auto header = read_header(bytes, offset);
  if (!header || header->terminator || header->id != 0)
    return std::nullopt;
  Reader r(bytes, header->body, header->end);
  Cie cie;
  const uint8_t version = r.fixed<uint8_t>();
  if (version != 1 && version != 3 && version != 4)
    return std::nullopt;
  const std::string_view augmentation = r.cstring();
  if (version == 4)
    r.skip(2);  // address_size, segment_selector_size
  cie.code_align = r.uleb();
  cie.data_align = r.sleb();
  const uint64_t return_address = version == 1 ? r.fixed<uint8_t>() : r.uleb();
  if (!r.ok() || return_address != return_address_register)
    return std::nullopt;
  cie.program = r.pos();
  cie.program_end = header->end;
  if (augmentation.empty())
    return cie;
  if (augmentation.front() != 'z')
    return std::nullopt;
  cie.augmented = true;
  const uint64_t length = r.uleb();
  if (!r.ok() || length > r.remaining())
    return std::nullopt;
  Reader aug(bytes, r.pos(), r.pos() + length);
  for (char c : augmentation.substr(1)) {
    if (c == 'R') {
      cie.fde_encoding = aug.fixed<uint8_t>();
    } else if (c == 'L') {
      aug.fixed<uint8_t>();
    } else if (c == 'P') {
      // Only the personality pointer's size matters here, not its value.
      const uint8_t encoding = aug.fixed<uint8_t>();
      if (!read_encoded(aug, encoding & pe::kPeFormatMask, 0))
        return std::nullopt;
    } else if (c == 'S') {
      cie.signal_frame = true;
    } else {
      break;  // unknown: 'z' lets an FDE's reader skip the rest
    }
  }
  if (!aug.ok())
    return std::nullopt;
  cie.program = r.pos() + length;
  return cie;
}

}  // namespace krait::unwind::cfi
