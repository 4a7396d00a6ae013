// CPython line-number tables: turns the line table bytes of a code object
// (read from the target process) and a sampled instruction position into the
// source line CPython itself reports for that position.
//
// Formats, by the interpreter that wrote the table:
//   kLnotabUnsigned  co_lnotab of 2.7 and 3.0-3.5: (byte increment, line
//                    increment) pairs, both unsigned bytes.
//   kLnotabSigned    co_lnotab of 3.6-3.9: as above, but the line increment is
//                    a signed byte.
//   kLinetable310    co_linetable of 3.10 (PEP 626): (byte delta, signed line
//                    delta) pairs; a line delta of -128 marks "no line" and does
//                    not move the running line.
//   kLocations311    co_linetable of 3.11 and later (PEP 657 location table):
//                    entries of 1-8 code units with a start byte (bit 7 set) and
//                    varint/svarint payloads. Unchanged through 3.15: the
//                    _PyCodeLocationInfoKind codes, the varint writers and the
//                    2-byte _Py_CODEUNIT in the 3.14/3.15 headers match 3.11-3.13.
//
// What the sampled position means, per version, and what to pass as
// `byte_offset` to line_for_offset():
//   2.7, 3.0-3.9  PyFrameObject.f_lasti is already a byte offset into co_code.
//   3.10          f_lasti counts code units: pass f_lasti * 2.
//   3.11, 3.12    _PyInterpreterFrame.prev_instr points at the executing
//                 instruction: pass its byte distance from the start of
//                 co_code_adaptive (code-unit index * 2), as CPython's own
//                 f_lineno does.
//   3.13+         _PyInterpreterFrame.instr_ptr: likewise, its byte distance
//                 from the start of co_code_adaptive.
// Inline cache units share their instruction's line, so an offset that lands
// on a cache entry still gets the right answer.
// A negative position (f_lasti == -1 before the first instruction) has no
// offset; CPython reports co_firstlineno for it, and so should the caller.
//
// Threading: every function here is pure and thread-safe. Limits: tables
// larger than kMaxLineTableBytes are refused; decoding is linear in the table
// size, and the result has at most one range per table entry plus one.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::python {

enum class LineTableFormat : uint8_t {
  kLnotabUnsigned,
  kLnotabSigned,
  kLinetable310,
  kLocations311
};

// "lnotab-unsigned", "lnotab-signed", "linetable-3.10", "locations-3.11".
std::string_view format_name(LineTableFormat format);

// Format written by CPython major.minor: 2.7 and 3.0-3.5 -> kLnotabUnsigned,
// 3.6-3.9 -> kLnotabSigned, 3.10 -> kLinetable310, 3.11 and later ->
// kLocations311. nullopt for versions that have none of these (< 2.7, 2.8+,
// major other than 2 or 3).
std::optional<LineTableFormat> line_table_format(int major, int minor);

inline constexpr int32_t kNoLine = -1;
// Above any real table (the body of a module of 100,000 lines has one of a
// few hundred KiB): a larger one is a misread or a hostile object, and
// decoding it costs about six times its size in memory.
inline constexpr size_t kMaxLineTableBytes = size_t{4} << 20;

// Byte offsets into the bytecode, [start, end); line kNoLine (-1) = no line.
struct LineRange {
  uint32_t start;
  uint32_t end;
  int32_t line;
  bool operator==(const LineRange&) const = default;
};

// Decodes a whole table into non-empty ranges sorted by start, contiguous from
// offset 0, adjacent ranges with equal lines merged. firstlineno is
// co_firstlineno. code_size is the bytecode size in bytes (len(co_code); for
// 3.11+ the size of co_code_adaptive):
//   - lnotab formats need it: the last entry runs to the end of the code.
//     0 is an error for them.
//   - 3.10 and 3.11+ tables describe their own extent; with code_size != 0 the
//     ranges are clipped to it, and bytecode the table does not cover gets a
//     kNoLine range (CPython answers -1 there). 0 means "unknown": no clipping.
// Errors (one line each) for tables CPython cannot have written: too large,
// odd length for pair formats, 3.11+ entries that do not start with bit 7 set,
// truncated or over-long varints, lines outside int32.
Result<std::vector<LineRange>> decode_line_table(LineTableFormat format,
                                                 std::span<const uint8_t> table,
                                                 int32_t firstlineno, uint32_t code_size);

// Line executing at `byte_offset` (the instruction starting there), or kNoLine
// when no range covers it. Same rule as CPython's PyCode_Addr2Line for every
// offset inside the bytecode. `ranges` must come from decode_line_table.
// O(log n).
int32_t line_for_offset(std::span<const LineRange> ranges, uint32_t byte_offset);

}  // namespace krait::python
