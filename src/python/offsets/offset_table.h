// OffsetTable: the byte offsets of CPython's internal struct fields for one
// interpreter build, under canonical, version-independent names.
//
// Canonical names are "<Type>.<member path>" (nested members joined with
// '.'), "sizeof(<Type>)", and for bitfields "<Type>.<path>.bit" (bit position
// inside the member that contains the bitfield) and "<Type>.<path>.bits"
// (width). One name can stand for differently named DWARF members across
// versions (PyInterpreterState.tstate_head is `threads.head` from 3.11);
// offsets/README.md lists every name, its alternatives and their meaning.
// A table never holds a value the source did not contain: a field the build
// does not have is absent, and get() returns nullopt.
//
// Sources: offsets/tables/cpython-<version>.txt (generated from DWARF by
// generate_offset_table(), compiled into the binary) and, for 3.13+, the
// _Py_DebugOffsets read from the live process (debug_offsets.h).
//
// Threading: tables are immutable values; builtin_offset_tables() is built
// once on first use (thread-safe static initialisation) and lives until exit.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "python/offsets/version.h"
#include "util/result.h"

namespace krait::python {

struct OffsetTable {
  PyVersion version;
  // Where the values came from: "dwarf:<file name> build-id <hex>" for
  // generated tables, "_Py_DebugOffsets" for values decoded from a process.
  std::string source;
  std::map<std::string, uint64_t, std::less<>> fields;

  std::optional<uint64_t> get(std::string_view canonical) const;

  bool operator==(const OffsetTable&) const = default;
};

// Parses the offsets/tables file format (see offsets/README.md): comment
// lines starting with '#', `version = M.N.P`, `source = ...`, then one
// `<canonical name> = <decimal>` per line. Errors name the line.
Result<OffsetTable> parse_offset_table(std::string_view text);

// The canonical text of a table: a fixed header comment, version, source, then
// the fields in byte-wise name order. Deterministic, so the generator's output
// can be compared byte-for-byte with the checked-in file, and
// parse_offset_table(format_offset_table(t)) == t.
std::string format_offset_table(const OffsetTable& table);

// Every table under offsets/tables/, compiled in, ordered by version. A file
// that fails to parse is left out and logged (the unit tests make sure none
// does).
const std::vector<OffsetTable>& builtin_offset_tables();

// The built-in table of exactly this version, or nullptr.
const OffsetTable* find_table(PyVersion exact);
// The built-in table closest to `v` within the same major.minor: the highest
// micro <= v.micro, else the lowest above it; nullptr when that minor has no
// table. Struct layouts are meant to be stable within a minor version, but
// not promised to be: callers should prefer find_table() or _Py_DebugOffsets.
const OffsetTable* nearest_table_same_minor(PyVersion v);

// The same two lookups over any list of tables (the built-in ones above are
// these applied to builtin_offset_tables()).
const OffsetTable* find_table(std::span<const OffsetTable> tables, PyVersion exact);
const OffsetTable* nearest_table_same_minor(std::span<const OffsetTable> tables, PyVersion v);

}  // namespace krait::python
