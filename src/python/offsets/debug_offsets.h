// _Py_DebugOffsets (CPython 3.13+): the table of struct offsets CPython embeds
// as the first member of _PyRuntime for out-of-process tools.
//
// The struct starts with the cookie "xdebugpy" and PY_VERSION_HEX (uint64);
// after that every member is a uint64, but which members exist, and their
// order, change between minor versions (fixed within one). The layout of each
// minor lives in offsets/debug_offsets/<major>.<minor>.txt, compiled in: one
// line per 8-byte slot, optionally mapped to a canonical OffsetTable name.
// Supporting a new minor version means adding that one file.
//
// Everything here is pure (no I/O): the caller reads debug_offsets_read_size()
// bytes from the start of _PyRuntime in the target and hands them over.
// Thread-safe; the built-in layouts are parsed once on first use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "python/offsets/offset_table.h"
#include "util/result.h"

namespace krait::python {

inline constexpr std::string_view kDebugOffsetsCookie = "xdebugpy";
// Prefix of the raw (unmapped) entries decode_debug_offsets() also returns,
// e.g. "_Py_DebugOffsets.free_threaded".
inline constexpr std::string_view kDebugOffsetsRawPrefix = "_Py_DebugOffsets.";

struct DebugOffsetsSlot {
  std::string path;       // member path in _Py_DebugOffsets: "thread_state.current_frame"
  std::string canonical;  // OffsetTable name, or empty when the slot has none
};

struct DebugOffsetsLayout {
  int major = 0;
  int minor = 0;
  std::vector<DebugOffsetsSlot> slots;  // slot i is at byte offset 8 * i

  size_t size_bytes() const { return slots.size() * 8; }
};

// Parses one offsets/debug_offsets/<major>.<minor>.txt file: '#' comments, one
// slot per line, `path` or `path = canonical`. The first two slots must be
// `cookie` and `version`.
Result<DebugOffsetsLayout> parse_debug_offsets_layout(std::string_view text, int major, int minor);

// Every built-in layout (offsets/debug_offsets/*.txt), ordered by version.
const std::vector<DebugOffsetsLayout>& builtin_debug_offsets_layouts();

// The built-in layout for that minor version, or nullptr.
const DebugOffsetsLayout* find_debug_offsets_layout(int major, int minor);

// Bytes to read from the start of _PyRuntime for that minor version; 0 when
// there is no layout for it.
size_t debug_offsets_read_size(int major, int minor);

// Decodes the bytes at the start of _PyRuntime: checks the cookie, reads the
// version, picks the built-in layout of that minor and returns a table with
// source "_Py_DebugOffsets" holding every mapped canonical field plus every
// slot's raw value under kDebugOffsetsRawPrefix + path (cookie excepted).
// Fails when the cookie is wrong, no layout exists for the version, the
// buffer is shorter than the layout, two slots mapped to one name disagree,
// or an offset lies beyond the size of its struct (corrupt or misplaced read).
Result<OffsetTable> decode_debug_offsets(std::span<const uint8_t> bytes);

// The same with an explicit layout (whose major.minor must match the version
// in the bytes).
Result<OffsetTable> decode_debug_offsets(std::span<const uint8_t> bytes,
                                         const DebugOffsetsLayout& layout);

}  // namespace krait::python
