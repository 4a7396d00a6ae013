#include "python/line_table.h"

#include <algorithm>
#include <limits>

namespace krait::python {
namespace {

constexpr uint64_t kUnknownCodeSize = std::numeric_limits<uint64_t>::max();

// The running line lives in 64 bits so that garbage cannot overflow it between
// checks; anything outside int32 was not written by CPython (its lines are C ints).
Result<int32_t> checked_line(int64_t line) {
  if (line < std::numeric_limits<int32_t>::min() || line > std::numeric_limits<int32_t>::max())
    return make_error("line number {} is outside int32: the table is corrupt or misread", line);
  return static_cast<int32_t>(line);
}

// Collects ranges as the decoders walk the table: drops empty ones, merges
// neighbours with equal lines and clips at the code size, so the output is
// canonical whatever redundancy the compiler put into the table.
class RangeBuilder {
 public:
  explicit RangeBuilder(uint64_t limit) : limit_(limit) {}

  // False once the clip limit is reached: later entries cannot matter.
  bool add(uint64_t start, uint64_t end, int32_t line) {
    if (start >= limit_)
      return false;
    end = std::min(end, limit_);
    if (start == end)
      return true;
    if (!ranges_.empty() && ranges_.back().end == start && ranges_.back().line == line) {
      ranges_.back().end = static_cast<uint32_t>(end);
    } else {
      ranges_.push_back(LineRange{static_cast<uint32_t>(start), static_cast<uint32_t>(end), line});
    }
    return end < limit_;
  }

  std::vector<LineRange> take() && { return std::move(ranges_); }

 private:
  uint64_t limit_;
  std::vector<LineRange> ranges_;
};

Result<void> check_offset(uint64_t offset) {
  if (offset > std::numeric_limits<uint32_t>::max())
    return make_error(
        "line table covers more than 4 GiB of bytecode: the table is corrupt or misread");
  return {};
}

// co_lnotab: an entry's line increment takes effect at the offset reached
// after its own byte increment (PyCode_Addr2Line stops at the first entry whose
// address passes the query), so a range closes before the increment is added.
Result<std::vector<LineRange>> decode_lnotab(std::span<const uint8_t> table, int32_t firstlineno,
                                             uint32_t code_size, bool signed_lines) {
  if (code_size == 0)
    return make_error("co_lnotab decoding needs the bytecode size (len(co_code)); pass it");
  if (table.size() % 2 != 0)
    return make_error("co_lnotab has odd length {}: the table is corrupt or misread", table.size());
  RangeBuilder builder(code_size);
  uint64_t addr = 0;
  int64_t line = firstlineno;
  for (size_t i = 0; i < table.size(); i += 2) {
    const uint64_t next = addr + table[i];
    if (!builder.add(addr, next, static_cast<int32_t>(line)))
      return std::move(builder).take();
    addr = next;
    line += signed_lines ? static_cast<int64_t>(static_cast<int8_t>(table[i + 1]))
                         : static_cast<int64_t>(table[i + 1]);
    KRAIT_TRY(checked_line(line));
  }
  builder.add(addr, code_size, static_cast<int32_t>(line));
  return std::move(builder).take();
}

// 3.10 (PEP 626): -128 marks an instruction range with no line and leaves the
// running line where it was, which is why it is not simply a delta.
Result<std::vector<LineRange>> decode_linetable_310(std::span<const uint8_t> table,
                                                    int32_t firstlineno, uint32_t code_size) {
  if (table.size() % 2 != 0)
    return make_error("3.10 co_linetable has odd length {}: the table is corrupt or misread",
                      table.size());
  const uint64_t limit = code_size == 0 ? kUnknownCodeSize : code_size;
  RangeBuilder builder(limit);
  uint64_t addr = 0;
  int64_t computed_line = firstlineno;
  for (size_t i = 0; i < table.size(); i += 2) {
    const auto line_delta = static_cast<int8_t>(table[i + 1]);
    int32_t line = kNoLine;
    if (line_delta != -128) {
      computed_line += line_delta;
      auto checked = checked_line(computed_line);
      KRAIT_TRY(checked);
      line = *checked;
    }
    const uint64_t next = addr + table[i];
    KRAIT_TRY(check_offset(next));
    if (!builder.add(addr, next, line))
      return std::move(builder).take();
    addr = next;
  }
  if (code_size != 0)
    builder.add(addr, code_size, kNoLine);
  return std::move(builder).take();
}

// Location-table varints: 6-bit chunks, least significant first, bit 6 set on
// all but the last. CPython writes 32-bit values, so at most 6 chunks.
Result<uint64_t> read_varint(std::span<const uint8_t> payload, size_t& pos) {
  constexpr int kMaxChunks = 6;
  uint64_t value = 0;
  for (int chunk = 0; chunk < kMaxChunks; ++chunk) {
    if (pos >= payload.size())
      return make_error("location table varint is truncated: the table is corrupt or misread");
    const uint8_t byte = payload[pos++];
    value |= static_cast<uint64_t>(byte & 63) << (6 * chunk);
    if ((byte & 64) == 0)
      return value;
  }
  return make_error("location table varint is longer than {} bytes: the table is corrupt",
                    kMaxChunks);
}

Result<int64_t> read_svarint(std::span<const uint8_t> payload, size_t& pos) {
  auto raw = read_varint(payload, pos);
  KRAIT_TRY(raw);
  const auto magnitude = static_cast<int64_t>(*raw >> 1);
  return (*raw & 1) != 0 ? -magnitude : magnitude;
}

enum LocationCode : uint8_t {
  kOneLine0 = 10,
  kOneLine1 = 11,
  kOneLine2 = 12,
  kNoColumns = 13,
  kLong = 14,
  kNoLocation = 15,
};

// 3.11+ (PEP 657). An entry ends where the next start byte (bit 7 set) begins,
// exactly as CPython's own walker finds it; only the line delta is decoded,
// columns do not matter to a profiler.
Result<std::vector<LineRange>> decode_locations_311(std::span<const uint8_t> table,
                                                    int32_t firstlineno, uint32_t code_size) {
  const uint64_t limit = code_size == 0 ? kUnknownCodeSize : code_size;
  RangeBuilder builder(limit);
  uint64_t addr = 0;
  int64_t computed_line = firstlineno;
  size_t i = 0;
  while (i < table.size()) {
    const uint8_t head = table[i];
    if ((head & 0x80) == 0)
      return make_error(
          "location table entry at byte {} lacks its start bit: the table is corrupt or misread",
          i);
    size_t end = i + 1;
    while (end < table.size() && (table[end] & 0x80) == 0)
      ++end;
    const auto payload = table.subspan(i + 1, end - i - 1);
    const auto code = static_cast<uint8_t>((head >> 3) & 15);
    int64_t delta = 0;
    if (code == kNoColumns || code == kLong) {
      size_t pos = 0;
      auto svarint = read_svarint(payload, pos);
      KRAIT_TRY(svarint);
      delta = *svarint;
    } else if (code >= kOneLine0 && code <= kOneLine2) {
      delta = code - kOneLine0;
    }
    computed_line += delta;
    auto checked = checked_line(computed_line);
    KRAIT_TRY(checked);
    const int32_t line = code == kNoLocation ? kNoLine : *checked;
    const uint64_t next = addr + ((head & 7) + 1) * 2;
    if (!builder.add(addr, next, line))
      return std::move(builder).take();
    addr = next;
    i = end;
  }
  if (code_size != 0)
    builder.add(addr, code_size, kNoLine);
  return std::move(builder).take();
}

}  // namespace

std::string_view format_name(LineTableFormat format) {
  switch (format) {
    case LineTableFormat::kLnotabUnsigned:
      return "lnotab-unsigned";
    case LineTableFormat::kLnotabSigned:
      return "lnotab-signed";
    case LineTableFormat::kLinetable310:
      return "linetable-3.10";
    case LineTableFormat::kLocations311:
      return "locations-3.11";
  }
  return "unknown";
}

std::optional<LineTableFormat> line_table_format(int major, int minor) {
  if (major == 2)
    return minor == 7 ? std::optional(LineTableFormat::kLnotabUnsigned) : std::nullopt;
  if (major != 3 || minor < 0)
    return std::nullopt;
  if (minor <= 5)
    return LineTableFormat::kLnotabUnsigned;
  if (minor <= 9)
    return LineTableFormat::kLnotabSigned;
  if (minor == 10)
    return LineTableFormat::kLinetable310;
  return LineTableFormat::kLocations311;
}

Result<std::vector<LineRange>> decode_line_table(LineTableFormat format,
                                                 std::span<const uint8_t> table,
                                                 int32_t firstlineno, uint32_t code_size) {
  if (table.size() > kMaxLineTableBytes)
    return make_error("line table of {} bytes exceeds the {} byte limit: the size is misread",
                      table.size(), kMaxLineTableBytes);
  switch (format) {
    case LineTableFormat::kLnotabUnsigned:
      return decode_lnotab(table, firstlineno, code_size, /*signed_lines=*/false);
    case LineTableFormat::kLnotabSigned:
      return decode_lnotab(table, firstlineno, code_size, /*signed_lines=*/true);
    case LineTableFormat::kLinetable310:
      return decode_linetable_310(table, firstlineno, code_size);
    case LineTableFormat::kLocations311:
      return decode_locations_311(table, firstlineno, code_size);
  }
  return make_error("unknown line table format {}: pass a LineTableFormat value",
                    static_cast<int>(format));
}

int32_t line_for_offset(std::span<const LineRange> ranges, uint32_t byte_offset) {
  auto it = std::upper_bound(
      ranges.begin(), ranges.end(), byte_offset,
      [](uint32_t offset, const LineRange& range) { return offset < range.start; });
  if (it == ranges.begin())
    return kNoLine;
  --it;
  return byte_offset < it->end ? it->line : kNoLine;
}

}  // namespace krait::python
