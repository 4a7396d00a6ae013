#include "python/offsets/dwarf_generator.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gelf.h>
#include <libelf.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "python/offsets/dwarf_type_specs.h"
#include "python/offsets/interpreter_build.h"

namespace krait::python {
namespace {

namespace fs = std::filesystem;
using dwarf_gen::build_id_hex;
using dwarf_gen::field_name;
using dwarf_gen::FieldSpec;
using dwarf_gen::Kind;
using dwarf_gen::open_debug_info;
using dwarf_gen::open_elf;
using dwarf_gen::read_version;
using dwarf_gen::resolve_interpreter_file;
using dwarf_gen::split;
using dwarf_gen::type_specs;
using dwarf_gen::TypeSpec;

// ---------------------------------------------------------------------------
// DWARF type lookup.

bool is_aggregate(const Dwarf_Die& die) {
  int tag = dwarf_tag(const_cast<Dwarf_Die*>(&die));
  return tag == DW_TAG_structure_type || tag == DW_TAG_union_type;
}

bool is_declaration(Dwarf_Die& die) {
  Dwarf_Attribute attr;
  bool flag = false;
  return dwarf_attr_integrate(&die, DW_AT_declaration, &attr) &&
         dwarf_formflag(&attr, &flag) == 0 && flag;
}

// The type of `die` (DW_AT_type) with typedefs and qualifiers peeled off.
std::optional<Dwarf_Die> peeled_type_of(Dwarf_Die& die) {
  Dwarf_Attribute attr;
  Dwarf_Die type;
  if (!dwarf_attr_integrate(&die, DW_AT_type, &attr) || !dwarf_formref_die(&attr, &type))
    return std::nullopt;
  Dwarf_Die peeled;
  if (dwarf_peel_type(&type, &peeled) != 0)
    return std::nullopt;
  return peeled;
}

std::optional<uint64_t> udata_attr(Dwarf_Die& die, unsigned int name) {
  Dwarf_Attribute attr;
  Dwarf_Word value = 0;
  if (!dwarf_attr_integrate(&die, name, &attr) || dwarf_formudata(&attr, &value) != 0)
    return std::nullopt;
  return value;
}

// DW_AT_data_member_location: a constant since DWARF 3 in practice, an
// expression `DW_OP_plus_uconst n` in older producers; absent means 0 (union
// members, DWARF 4 bitfields).
std::optional<uint64_t> member_location(Dwarf_Die& member) {
  Dwarf_Attribute attr;
  if (!dwarf_attr_integrate(&member, DW_AT_data_member_location, &attr))
    return 0;
  Dwarf_Word value = 0;
  if (dwarf_formudata(&attr, &value) == 0)
    return value;
  Dwarf_Op* ops = nullptr;
  size_t n = 0;
  if (dwarf_getlocation(&attr, &ops, &n) == 0 && n == 1 && ops[0].atom == DW_OP_plus_uconst)
    return ops[0].number;
  return std::nullopt;
}

bool is_bitfield(Dwarf_Die& member) {
  return dwarf_hasattr(&member, DW_AT_bit_size) != 0;
}

struct Member {
  Dwarf_Die die;
  uint64_t offset = 0;  // bytes from the start of the aggregate searched
};

// Finds a member by name, looking through anonymous struct/union members.
std::optional<Member> find_member(Dwarf_Die& aggregate, std::string_view name) {
  Dwarf_Die child;
  if (dwarf_child(&aggregate, &child) != 0)
    return std::nullopt;
  do {
    if (dwarf_tag(&child) != DW_TAG_member)
      continue;
    auto location = member_location(child);
    if (!location)
      continue;
    const char* n = dwarf_diename(&child);
    if (n) {
      if (name == n)
        return Member{child, *location};
      continue;
    }
    auto type = peeled_type_of(child);
    if (type && is_aggregate(*type)) {
      if (auto inner = find_member(*type, name))
        return Member{inner->die, *location + inner->offset};
    }
  } while (dwarf_siblingof(&child, &child) == 0);
  return std::nullopt;
}

class TypeIndex {
 public:
  explicit TypeIndex(Dwarf* dwarf) {
    Dwarf_CU* cu = nullptr;
    Dwarf_Die cu_die;
    Dwarf_Half version = 0;
    uint8_t unit_type = 0;
    while (dwarf_get_units(dwarf, cu, &cu, &version, &unit_type, &cu_die, nullptr) == 0) {
      Dwarf_Die child;
      if (dwarf_child(&cu_die, &child) != 0)
        continue;
      do {
        const char* name = dwarf_diename(&child);
        if (!name)
          continue;
        int tag = dwarf_tag(&child);
        if (tag == DW_TAG_typedef)
          typedefs_.try_emplace(name, child);
        else if (is_aggregate(child) && !is_declaration(child))
          aggregates_.try_emplace(name, child);
      } while (dwarf_siblingof(&child, &child) == 0);
    }
  }

  // A complete struct/union named `name` as a typedef or as a tag. A typedef
  // of a declaration is completed through the tag's definition elsewhere.
  std::optional<Dwarf_Die> find(std::string_view name) const {
    if (auto it = typedefs_.find(name); it != typedefs_.end()) {
      Dwarf_Die td = it->second;
      Dwarf_Die peeled;
      if (dwarf_peel_type(&td, &peeled) == 0 && is_aggregate(peeled)) {
        if (!is_declaration(peeled))
          return peeled;
        if (const char* tag = dwarf_diename(&peeled)) {
          if (auto def = aggregates_.find(std::string_view(tag)); def != aggregates_.end())
            return def->second;
        }
      }
    }
    if (auto it = aggregates_.find(name); it != aggregates_.end())
      return it->second;
    return std::nullopt;
  }

 private:
  std::map<std::string, Dwarf_Die, std::less<>> typedefs_;
  std::map<std::string, Dwarf_Die, std::less<>> aggregates_;
};

// Resolves a dotted member path. Returns the last member, its offset from
// the start of `type`, and the offset of its containing member.
struct PathHit {
  Dwarf_Die member;
  uint64_t offset = 0;
  uint64_t offset_in_parent = 0;  // from the start of the member holding it
};

std::optional<PathHit> resolve_path(Dwarf_Die type, std::string_view path) {
  std::vector<std::string_view> parts = split(path, '.');
  uint64_t total = 0;
  Dwarf_Die current = type;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto m = find_member(current, parts[i]);
    if (!m)
      return std::nullopt;
    if (i + 1 == parts.size())
      return PathHit{m->die, total + m->offset, m->offset};
    if (is_bitfield(m->die))
      return std::nullopt;
    total += m->offset;
    auto next = peeled_type_of(m->die);
    if (!next || !is_aggregate(*next))
      return std::nullopt;
    current = *next;
  }
  return std::nullopt;
}

// Bit position of a bitfield from the start of its containing member, in
// the little-endian numbering a reader uses after loading that member.
std::optional<uint64_t> bit_position(const PathHit& hit) {
  Dwarf_Die member = hit.member;
  if (!is_bitfield(member))
    return std::nullopt;
  auto bit_size = udata_attr(member, DW_AT_bit_size);
  if (!bit_size)
    return std::nullopt;
  if (auto data_bit_offset = udata_attr(member, DW_AT_data_bit_offset))
    return hit.offset_in_parent * 8 + *data_bit_offset;
  // DWARF 2/3: DW_AT_bit_offset counts from the most significant bit of a
  // storage unit of DW_AT_byte_size bytes at DW_AT_data_member_location.
  auto bit_offset = udata_attr(member, DW_AT_bit_offset);
  auto storage = udata_attr(member, DW_AT_byte_size);
  if (!storage) {
    if (auto type = peeled_type_of(member)) {
      Dwarf_Word size = 0;
      if (dwarf_aggregate_size(&*type, &size) == 0)
        storage = size;
    }
  }
  if (!bit_offset || !storage || *bit_offset + *bit_size > *storage * 8)
    return std::nullopt;
  return hit.offset_in_parent * 8 + *storage * 8 - *bit_offset - *bit_size;
}

std::optional<uint64_t> evaluate(Dwarf_Die type, const FieldSpec& field) {
  std::string_view paths = field.dwarf_paths.empty() ? field.name : field.dwarf_paths;
  for (std::string_view path : split(paths, '|')) {
    auto hit = resolve_path(type, path);
    if (!hit)
      continue;
    switch (field.kind) {
      case Kind::kOffset:
        if (is_bitfield(hit->member))
          return std::nullopt;
        return hit->offset;
      case Kind::kBitPos:
        return bit_position(*hit);
      case Kind::kBitSize:
        return udata_attr(hit->member, DW_AT_bit_size);
      case Kind::kSizeof:
        return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> dwarf_canonical_fields() {
  std::vector<std::string> out;
  for (const auto& type : type_specs()) {
    if (type.want_sizeof)
      out.push_back(fmt::format("sizeof({})", type.canonical));
    for (const auto& field : type.fields)
      out.push_back(field_name(type, field));
  }
  return out;
}

Result<OffsetTable> generate_offset_table(const std::string& python_binary_or_libpython) {
  auto path = resolve_interpreter_file(python_binary_or_libpython);
  KRAIT_TRY(path);
  auto debug = open_debug_info(*path);
  KRAIT_TRY(debug);
  auto code = open_elf(*path);
  KRAIT_TRY(code);
  auto version = read_version(*code);
  KRAIT_TRY(version);

  OffsetTable table;
  table.version = *version;
  std::string id = build_id_hex(code->elf.get());
  table.source = fmt::format("dwarf:{}", fs::path(*path).filename().string());
  if (!id.empty())
    table.source += " build-id " + id;

  TypeIndex index(debug->dwarf.get());
  for (const auto& spec : type_specs()) {
    std::optional<Dwarf_Die> type;
    for (std::string_view name : split(spec.dwarf_names, '|')) {
      if ((type = index.find(name)))
        break;
    }
    if (!type)
      continue;
    if (spec.want_sizeof) {
      Dwarf_Word size = 0;
      if (dwarf_aggregate_size(&*type, &size) == 0)
        table.fields.emplace(fmt::format("sizeof({})", spec.canonical), size);
    }
    for (const auto& field : spec.fields) {
      if (auto value = evaluate(*type, field))
        table.fields.emplace(field_name(spec, field), *value);
    }
  }
  if (!table.get("sizeof(PyThreadState)") || !table.get("sizeof(PyInterpreterState)"))
    return make_error(
        "the DWARF of {} has no PyThreadState or PyInterpreterState: pass a CPython executable "
        "or libpython built with -g",
        *path);
  return table;
}

}  // namespace krait::python
