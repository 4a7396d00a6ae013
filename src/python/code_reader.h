// Reading code objects and strings out of a target process, for
// symbolization in user space. Pure functions over a RemoteMemory, so unit
// tests run them on fixtures.
//
// Limits: strings are cut at kMaxStringChars characters (and end in "..."),
// line tables larger than kMaxLineTableBytes (line_table.h) are refused; a
// garbage address or layout gives an Error, never a crash or an unbounded
// read. Strings come out as valid UTF-8 whatever the process stored
// (surrogates and invalid code points become U+FFFD).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "krait/abi.h"
#include "proc/memory.h"
#include "python/layout.h"
#include "python/line_table.h"
#include "util/result.h"

namespace krait::python {

// Qualified names and file names are shorter in practice; the cap bounds
// what one code object costs to read and to keep in every frame naming it.
inline constexpr size_t kMaxStringChars = 1024;

// A str object (bytes on 2.7) decoded to UTF-8.
Result<std::string> read_py_string(const proc::RemoteMemory& memory, const StringLayout& layout,
                                   uint64_t address);

// The contents of a bytes object (str on 2.7), at most max_bytes.
Result<std::vector<uint8_t>> read_py_bytes(const proc::RemoteMemory& memory,
                                           const StringLayout& layout, uint64_t address,
                                           size_t max_bytes);

struct CodeInfo {
  std::string name;  // co_qualname on 3.11+, co_name before
  std::string filename;
  int32_t firstlineno = 0;
  std::vector<LineRange> lines;

  // Source line of a sampled instruction position (krait_py_frame.instr
  // without the entry bit), or kNoLine.
  int32_t line_at(const PythonLayout& layout, uint32_t instr) const;
};

// What the sampler captured when it first saw a code object
// (krait_code_event): name, file, first line, and the lines of the part of
// the line table the capture holds (the whole table for most functions).
// Enough to name most frames at once, and all there is once the object is
// gone. A string longer than the capture is cut and ends in "...".
struct CapturedCode {
  CodeInfo info;
  bool names_complete = false;  // neither the name nor the file was cut
  // info.lines answer every byte offset below this: UINT32_MAX when the
  // capture held the whole table, the end of the last whole entry otherwise.
  uint32_t lines_upto = 0;
};
Result<CapturedCode> code_info_from_capture(const PythonLayout& layout,
                                            const krait_code_event& event);

// The lines of a captured line table object (`raw`: its bytes from the
// object's start, as krait_code_event.linetable or krait_linetable_event
// hold them): all of them when `raw` holds the whole table, else those of the
// entries it holds whole. `upto` is set as CapturedCode::lines_upto. Any
// bytes are safe: a size field past kMaxLineTableBytes gives no lines.
std::vector<LineRange> lines_from_captured_table(const PythonLayout& layout,
                                                 std::span<const uint8_t> raw, int32_t firstlineno,
                                                 uint32_t& upto);

// Reads the code object at `address` and checks it is the one a sample saw:
// its type must be code_type and its fields must hash to `token` (see
// krait_code_token), else the object was freed and its memory reused.
Result<CodeInfo> read_code_object(const proc::RemoteMemory& memory, const PythonLayout& layout,
                                  uint64_t code_type, uint64_t address, uint32_t token);

}  // namespace krait::python
