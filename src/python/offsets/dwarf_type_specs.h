// What the DWARF offset generator (dwarf_generator.cpp) looks up: for each
// CPython type, the canonical field names (offsets/README.md) and the DWARF
// spellings each has had across versions. A data table, kept apart from the
// generator's code so that a new field or spelling touches only this file.
// Internal to python/offsets.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace krait::python::dwarf_gen {

// What to look up. Each canonical field lists the DWARF spellings it has had
// across CPython versions; the first one present in the build wins.

enum class Kind {
  kOffset,   // byte offset of the member from the start of the type
  kSizeof,   // byte size of the type
  kBitPos,   // bit position of a bitfield inside the member that contains it
  kBitSize,  // width of a bitfield
};

struct FieldSpec {
  std::string_view name;         // canonical path after "<Type>."
  std::string_view dwarf_paths;  // '|'-separated alternatives; empty: same as name
  Kind kind = Kind::kOffset;
};

struct TypeSpec {
  std::string_view canonical;    // canonical type name
  std::string_view dwarf_names;  // '|'-separated typedef names or struct tags
  bool want_sizeof = true;
  std::vector<FieldSpec> fields;
};

const std::vector<TypeSpec>& type_specs();

// "<Type>.<field>", the name a field has in offset tables.
std::string field_name(const TypeSpec& type, const FieldSpec& field);

// The parts of `s` between `sep`s (the spellings of a '|' list).
std::vector<std::string_view> split(std::string_view s, char sep);

}  // namespace krait::python::dwarf_gen
