#include "python/offsets/interpreter_build.h"

#include <dwarf.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gelf.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <vector>

#include "python/offsets/dwarf_type_specs.h"

namespace krait::python::dwarf_gen {
namespace {

namespace fs = std::filesystem;

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

}  // namespace

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

}  // namespace krait::python::dwarf_gen
