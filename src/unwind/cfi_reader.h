// Bounds-checked reads of DWARF call-frame information (.eh_frame and
// .debug_frame): the one reader that both the CFI indexer (cfi_table.cpp)
// and the CFA program check (cfa_program.cpp) parse untrusted bytes with.
// Internal to src/unwind.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

}  // namespace krait::unwind::cfi
