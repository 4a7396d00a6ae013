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

#include "util/unique_fd.h"

namespace krait::python {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
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

const std::vector<TypeSpec>& type_specs() {
  static const std::vector<TypeSpec> specs = {
      {"_PyRuntimeState",
       "_PyRuntimeState|pyruntimestate",
       true,
       {
           {"interpreters.head"},
           {"interpreters.main"},
           {"gilstate.tstate_current"},
           {"gilstate.autoTSSkey", "gilstate.autoTSSkey|autoTSSkey"},
           {"ceval.gil.locked"},
           {"ceval.gil.last_holder"},
           {"_finalizing", "_finalizing|finalizing"},
       }},
      {"Py_tss_t", "Py_tss_t|_Py_tss_t", true, {{"_is_initialized"}, {"_key"}}},
      {"PyInterpreterState",
       "PyInterpreterState|_is",
       true,
       {
           {"next"},
           {"id"},
           {"tstate_head", "tstate_head|threads.head"},
           {"threads.main"},
           {"modules", "modules|imports.modules"},
           {"sysdict"},
           {"builtins"},
           {"gc"},
           {"ceval.gil"},
           {"_gil"},
           {"_gil.locked"},
           {"_gil.last_holder"},
           {"_code_object_generation"},
           {"config.remote_debug"},
       }},
      {"PyThreadState",
       "PyThreadState|_ts",
       true,
       {
           {"prev"},
           {"next"},
           {"interp"},
           {"frame"},
           {"cframe"},
           {"current_frame"},
           {"thread_id"},
           {"native_thread_id"},
           {"datastack_chunk"},
           {"_status"},
           {"exc_state"},
           {"exc_info"},
           {"current_exception"},
           {"eval_breaker"},
           {"remote_debugger_support"},
           {"base_frame"},
           {"last_profiled_frame"},
           {"last_profiled_frame_seq"},
           {"holds_gil"},
           {"gil_requested"},
       }},
      {"_PyCFrame", "_PyCFrame|CFrame|_cframe", true, {{"current_frame"}, {"previous"}}},
      {"PyFrameObject",
       "PyFrameObject|_frame",
       true,
       {{"f_back"}, {"f_code"}, {"f_lasti"}, {"f_lineno"}, {"f_frame"}, {"f_localsplus"}}},
      {"_PyInterpreterFrame",
       "_PyInterpreterFrame",
       true,
       {
           {"previous"},
           {"executable", "f_executable|f_code"},
           {"instr_ptr", "instr_ptr|prev_instr"},
           {"owner"},
           {"is_entry"},
           {"localsplus"},
           {"stackpointer"},
       }},
      {"PyCodeObject",
       "PyCodeObject",
       true,
       {
           {"co_firstlineno"},
           {"co_filename"},
           {"co_name"},
           {"co_qualname"},
           {"co_lnotab"},
           {"co_linetable"},
           {"co_code"},
           {"co_code_adaptive"},
           {"co_flags"},
           {"co_argcount"},
           {"co_varnames"},
           {"co_localsplusnames"},
           {"co_localspluskinds"},
       }},
      {"PyObject", "PyObject|_object", true, {{"ob_type"}}},
      {"PyVarObject", "PyVarObject", true, {{"ob_size"}}},
      {"PyTypeObject",
       "PyTypeObject|_typeobject",
       true,
       {{"tp_name"},
        {"tp_basicsize"},
        {"tp_repr"},
        {"tp_flags"},
        {"tp_dictoffset"},
        {"tp_dict"},
        {"tp_mro"},
        {"tp_base"}}},
      {"PyHeapTypeObject", "PyHeapTypeObject|_heaptypeobject", true, {{"ht_cached_keys"}}},
      {"PyBytesObject", "PyBytesObject", true, {{"ob_sval"}}},
      {"PyStringObject", "PyStringObject", true, {{"ob_sval"}}},
      {"PyTupleObject", "PyTupleObject", true, {{"ob_item"}}},
      {"PyListObject", "PyListObject", true, {{"ob_item"}}},
      {"PyDictObject",
       "PyDictObject",
       true,
       {{"ma_used"}, {"ma_keys"}, {"ma_values"}, {"ma_mask"}, {"ma_table"}}},
      {"PyDictKeysObject",
       "PyDictKeysObject|_dictkeysobject",
       true,
       {{"dk_size"}, {"dk_nentries"}, {"dk_indices"}}},
      {"PyDictKeyEntry", "PyDictKeyEntry|PyDictEntry", true, {{"me_key"}, {"me_value"}}},
      {"PyFunctionObject", "PyFunctionObject", true, {{"func_code"}}},
      {"classmethod", "classmethod", true, {{"cm_callable"}}},
      {"PySetObject", "PySetObject", true, {{"used"}, {"table"}, {"mask"}}},
      {"PyFloatObject", "PyFloatObject", true, {{"ob_fval"}}},
      {"PyLongObject",
       "PyLongObject|_longobject",
       true,
       {{"lv_tag", "long_value.lv_tag"}, {"ob_digit", "long_value.ob_digit|ob_digit"}}},
      {"PyASCIIObject",
       "PyASCIIObject",
       true,
       {
           {"length"},
           {"hash"},
           {"state"},
           {"state.kind.bit", "state.kind", Kind::kBitPos},
           {"state.kind.bits", "state.kind", Kind::kBitSize},
           {"state.compact.bit", "state.compact", Kind::kBitPos},
           {"state.compact.bits", "state.compact", Kind::kBitSize},
           {"state.ascii.bit", "state.ascii", Kind::kBitPos},
           {"state.ascii.bits", "state.ascii", Kind::kBitSize},
           {"state.ready.bit", "state.ready", Kind::kBitPos},
           {"state.ready.bits", "state.ready", Kind::kBitSize},
       }},
      {"PyCompactUnicodeObject", "PyCompactUnicodeObject", true, {}},
      {"PyUnicodeObject", "PyUnicodeObject", true, {}},
      {"_gc_runtime_state",
       "_gc_runtime_state",
       true,
       {{"collecting"}, {"frame"}, {"generation_stats"}}},
      {"gc_stats", "gc_stats", true, {}},
      {"PyGenObject",
       "PyGenObject|_PyGenObject",
       true,
       {{"gi_name"}, {"gi_iframe"}, {"gi_frame_state"}}},
      {"llist_node", "llist_node", false, {{"next"}, {"prev"}}},
      {"_PyErr_StackItem", "_PyErr_StackItem|_err_stackitem", true, {{"exc_value"}}},
      {"_PyRemoteDebuggerSupport",
       "_PyRemoteDebuggerSupport",
       false,
       {{"debugger_pending_call"}, {"debugger_script_path"}}},
      {"_Py_DebugOffsets", "_Py_DebugOffsets", true, {}},
  };
  return specs;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    size_t pos = s.find(sep);
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos)
      return out;
    s.remove_prefix(pos + 1);
  }
}

std::string field_name(const TypeSpec& type, const FieldSpec& field) {
  return fmt::format("{}.{}", type.canonical, field.name);
}

// ---------------------------------------------------------------------------
// Owning handles for libelf / libdw objects.

struct ElfDeleter {
  void operator()(Elf* e) const { elf_end(e); }
};
struct DwarfDeleter {
  void operator()(Dwarf* d) const { dwarf_end(d); }
};
using ElfPtr = std::unique_ptr<Elf, ElfDeleter>;
using DwarfPtr = std::unique_ptr<Dwarf, DwarfDeleter>;

// An ELF file open for reading. Members are destroyed in reverse order, so
// the Elf* is released before the descriptor it reads from.
struct ElfFile {
  std::string path;
  UniqueFd fd;
  ElfPtr elf;
};

Result<ElfFile> open_elf(const std::string& path) {
  static const bool libelf_ok = elf_version(EV_CURRENT) != EV_NONE;
  if (!libelf_ok)
    return make_error("libelf rejected EV_CURRENT: the installed libelf is unusable");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  ElfPtr elf(elf_begin(fd.get(), ELF_C_READ_MMAP, nullptr));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF)
    return make_error("{} is not an ELF file: pass a python executable or libpython", path);
  return ElfFile{path, std::move(fd), std::move(elf)};
}

struct DynamicInfo {
  std::vector<std::string> needed;
  std::vector<std::string> search_path;  // DT_RUNPATH, else DT_RPATH, entries in order
  std::string soname;
};

DynamicInfo read_dynamic(Elf* elf) {
  DynamicInfo info;
  std::vector<std::string> rpath;
  std::vector<std::string> runpath;
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr shdr;
    if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_DYNAMIC || shdr.sh_entsize == 0)
      continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data)
      continue;
    for (size_t i = 0; i < shdr.sh_size / shdr.sh_entsize; ++i) {
      GElf_Dyn dyn;
      if (!gelf_getdyn(data, static_cast<int>(i), &dyn))
        break;
      if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_SONAME && dyn.d_tag != DT_RPATH &&
          dyn.d_tag != DT_RUNPATH)
        continue;
      const char* str = elf_strptr(elf, shdr.sh_link, dyn.d_un.d_val);
      if (!str)
        continue;
      if (dyn.d_tag == DT_NEEDED)
        info.needed.emplace_back(str);
      else if (dyn.d_tag == DT_SONAME)
        info.soname = str;
      else
        for (auto part : split(str, ':'))
          (dyn.d_tag == DT_RPATH ? rpath : runpath).emplace_back(part);
    }
  }
  // The loader ignores DT_RPATH when DT_RUNPATH is present.
  info.search_path = runpath.empty() ? rpath : runpath;
  return info;
}

std::string expand_origin(std::string entry, const std::string& origin) {
  for (std::string_view token : {"${ORIGIN}", "$ORIGIN"}) {
    size_t pos;
    while ((pos = entry.find(token)) != std::string::npos)
      entry.replace(pos, token.size(), origin);
  }
  return entry;
}

// The file holding the interpreter: the input itself, or the libpython an
// executable is linked against.
Result<std::string> resolve_interpreter_file(const std::string& input) {
  std::error_code ec;
  fs::path real = fs::canonical(input, ec);
  if (ec)
    return make_error("cannot resolve {}: {}", input, ec.message());
  auto file = open_elf(real.string());
  KRAIT_TRY(file);
  DynamicInfo dyn = read_dynamic(file->elf.get());
  std::string libpython;
  for (const auto& name : dyn.needed) {
    if (name.starts_with("libpython"))
      libpython = name;
  }
  if (libpython.empty())
    return real.string();

  const std::string origin = real.parent_path().string();
  std::vector<std::string> dirs;
  for (const auto& entry : dyn.search_path)
    dirs.push_back(expand_origin(entry, origin));
  dirs.push_back((real.parent_path().parent_path() / "lib").string());
  for (const char* system_dir : {"/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib"})
    dirs.emplace_back(system_dir);
  for (const auto& dir : dirs) {
    fs::path candidate = fs::path(dir) / libpython;
    if (fs::exists(candidate, ec))
      return fs::canonical(candidate, ec).string();
  }
  return make_error(
      "{} needs {}, which is neither in its RUNPATH nor in ../lib: pass the libpython file "
      "instead",
      input, libpython);
}

std::string build_id_hex(Elf* elf) {
  const void* id = nullptr;
  ssize_t len = dwelf_elf_gnu_build_id(elf, &id);
  std::string hex;
  for (ssize_t i = 0; i < len; ++i)
    fmt::format_to(std::back_inserter(hex), "{:02x}", static_cast<const uint8_t*>(id)[i]);
  return hex;
}

Elf_Scn* find_section(Elf* elf, std::string_view name) {
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(elf, &shstrndx) != 0)
    return nullptr;
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr shdr;
    if (!gelf_getshdr(scn, &shdr))
      continue;
    const char* n = elf_strptr(elf, shstrndx, shdr.sh_name);
    if (n && name == n)
      return scn;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Debug information: in the file, or in a separate file found by build-id or
// .gnu_debuglink in the standard places.

struct DebugInfo {
  ElfFile file;  // the file the DWARF is read from (may be the input itself)
  DwarfPtr dwarf;
};

std::optional<DebugInfo> try_dwarf(ElfFile file) {
  DwarfPtr dwarf(dwarf_begin_elf(file.elf.get(), DWARF_C_READ, nullptr));
  if (!dwarf)
    return std::nullopt;
  return DebugInfo{std::move(file), std::move(dwarf)};
}

std::vector<std::string> separate_debug_candidates(const ElfFile& file) {
  std::vector<std::string> out;
  std::string id = build_id_hex(file.elf.get());
  if (id.size() > 2)
    out.push_back(
        fmt::format("/usr/lib/debug/.build-id/{}/{}.debug", id.substr(0, 2), id.substr(2)));
  if (Elf_Scn* scn = find_section(file.elf.get(), ".gnu_debuglink")) {
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (data && data->d_buf && data->d_size > 0) {
      const char* p = static_cast<const char*>(data->d_buf);
      std::string name(p, strnlen(p, data->d_size));
      fs::path dir = fs::path(file.path).parent_path();
      if (!name.empty()) {
        out.push_back((dir / name).string());
        out.push_back((dir / ".debug" / name).string());
        out.push_back((fs::path("/usr/lib/debug") / dir.relative_path() / name).string());
      }
    }
  }
  return out;
}

Result<DebugInfo> open_debug_info(const std::string& path) {
  auto file = open_elf(path);
  KRAIT_TRY(file);
  std::vector<std::string> candidates = separate_debug_candidates(*file);
  if (auto info = try_dwarf(std::move(file).value()))
    return std::move(*info);
  for (const auto& candidate : candidates) {
    if (candidate == path || !fs::exists(candidate))
      continue;
    auto debug_file = open_elf(candidate);
    if (!debug_file)
      continue;
    if (auto info = try_dwarf(std::move(debug_file).value()))
      return std::move(*info);
  }
  return make_error("no DWARF in {}: install its debug symbols or use a build with -g", path);
}

// ---------------------------------------------------------------------------
// Version of the build, read from the ELF without running it.

// "libpython3.6m.so.1.0", "python3.11" -> {3, 6} / {3, 11}.
std::optional<std::pair<int, int>> major_minor_from_name(std::string_view name) {
  size_t pos = name.rfind("python");
  if (pos == std::string_view::npos)
    return std::nullopt;
  const char* p = name.data() + pos + 6;
  const char* end = name.data() + name.size();
  int major = 0;
  int minor = 0;
  auto r1 = std::from_chars(p, end, major);
  if (r1.ec != std::errc() || r1.ptr == end || *r1.ptr != '.')
    return std::nullopt;
  auto r2 = std::from_chars(r1.ptr + 1, end, minor);
  if (r2.ec != std::errc())
    return std::nullopt;
  return std::pair{major, minor};
}

// Value of a data symbol, read from its section in the file.
std::optional<uint64_t> read_symbol_u64(Elf* elf, std::string_view name) {
  for (Elf64_Word type : {SHT_SYMTAB, SHT_DYNSYM}) {
    Elf_Scn* scn = nullptr;
    while ((scn = elf_nextscn(elf, scn)) != nullptr) {
      GElf_Shdr shdr;
      if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != type || shdr.sh_entsize == 0)
        continue;
      Elf_Data* data = elf_getdata(scn, nullptr);
      if (!data)
        continue;
      for (size_t i = 0; i < shdr.sh_size / shdr.sh_entsize; ++i) {
        GElf_Sym sym;
        if (!gelf_getsym(data, static_cast<int>(i), &sym))
          break;
        const char* n = elf_strptr(elf, shdr.sh_link, sym.st_name);
        if (!n || name != n || sym.st_shndx == SHN_UNDEF || sym.st_shndx >= SHN_LORESERVE)
          continue;
        Elf_Scn* target = elf_getscn(elf, sym.st_shndx);
        GElf_Shdr tshdr;
        if (!target || !gelf_getshdr(target, &tshdr) || tshdr.sh_type == SHT_NOBITS)
          return std::nullopt;
        Elf_Data* tdata = elf_getdata(target, nullptr);
        uint64_t size = std::min<uint64_t>(sym.st_size, 8);
        if (!tdata || !tdata->d_buf || sym.st_value < tshdr.sh_addr ||
            sym.st_value - tshdr.sh_addr + size > tdata->d_size || size == 0)
          return std::nullopt;
        uint64_t value = 0;
        std::memcpy(&value,
                    static_cast<const uint8_t*>(tdata->d_buf) + (sym.st_value - tshdr.sh_addr),
                    size);
        return value;
      }
    }
  }
  return std::nullopt;
}

// PY_VERSION may share its bytes with the tail of a longer string (the linker
// merges string tails), so every suffix of every string is a candidate. The
// true literal is always among them; if only one version of the expected
// major.minor turns up, it is that literal.
std::set<PyVersion> version_strings_in_rodata(Elf* elf, std::pair<int, int> major_minor) {
  std::set<PyVersion> found;
  Elf_Scn* scn = find_section(elf, ".rodata");
  if (!scn)
    return found;
  Elf_Data* data = elf_getdata(scn, nullptr);
  if (!data || !data->d_buf)
    return found;
  std::string_view all(static_cast<const char*>(data->d_buf), data->d_size);
  size_t start = 0;
  while (start < all.size()) {
    size_t nul = all.find('\0', start);
    if (nul == std::string_view::npos)
      break;
    std::string_view s = all.substr(start, nul - start);
    for (size_t i = 0; i + 5 <= s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9')
        continue;
      auto v = PyVersion::parse(s.substr(i));
      if (v && v->major == major_minor.first && v->minor == major_minor.second)
        found.insert(*v);
    }
    start = nul + 1;
  }
  return found;
}

Result<PyVersion> read_version(const ElfFile& file) {
  Elf* elf = file.elf.get();
  std::optional<std::pair<int, int>> hint = major_minor_from_name(read_dynamic(elf).soname);
  if (!hint)
    hint = major_minor_from_name(fs::path(file.path).filename().string());

  if (auto hex = read_symbol_u64(elf, "Py_Version")) {
    PyVersion v = PyVersion::from_hex(*hex & 0xffffffffu);
    if (hint && (v.major != hint->first || v.minor != hint->second))
      return make_error("{}: Py_Version says {} but the file name says {}.{}", file.path, v.str(),
                        hint->first, hint->second);
    return v;
  }
  if (!hint)
    return make_error(
        "cannot tell the Python version of {}: no Py_Version symbol and no pythonM.N in its "
        "name or soname",
        file.path);
  std::set<PyVersion> found = version_strings_in_rodata(elf, *hint);
  if (found.size() == 1)
    return *found.begin();
  if (found.empty())
    return make_error("cannot tell the Python version of {}: no {}.{}.N string in .rodata",
                      file.path, hint->first, hint->second);
  std::string list;
  for (const auto& v : found)
    list += (list.empty() ? "" : ", ") + v.str();
  return make_error("cannot tell the Python version of {}: .rodata holds several ({})", file.path,
                    list);
}

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
