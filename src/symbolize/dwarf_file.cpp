#include "symbolize/dwarf_file.h"

#include <dwarf.h>
#include <elf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "elf/elf_file.h"
#include "util/unique_fd.h"

namespace krait::symbolize {
namespace {

struct ElfDeleter {
  void operator()(Elf* elf) const { elf_end(elf); }
};
struct DwarfDeleter {
  void operator()(Dwarf* dwarf) const { dwarf_end(dwarf); }
};

std::string attr_string(Dwarf_Die* die, unsigned int name) {
  Dwarf_Attribute attr;
  const char* value = dwarf_formstring(dwarf_attr_integrate(die, name, &attr));
  return value != nullptr ? value : "";
}

std::string linkage_name(Dwarf_Die* die) {
  std::string name = attr_string(die, DW_AT_linkage_name);
  return name.empty() ? attr_string(die, DW_AT_MIPS_linkage_name) : name;
}

// Relative source paths are relative to the unit's compilation directory;
// joined the way addr2line and eu-addr2line print them.
std::string source_path(const char* path, const std::string& comp_dir) {
  if (path == nullptr)
    return "";
  if (path[0] == '/' || comp_dir.empty())
    return path;
  return comp_dir + "/" + path;
}

std::string die_name(Dwarf_Die* die) {
  const char* name = dwarf_diename(die);
  return name != nullptr ? name : "";
}

// Nesting deeper than this is garbage (or an attack on the recursion).
constexpr int kMaxDieDepth = 64;
// zlib cannot inflate more than about 1032 bytes per byte: a compressed
// section that claims more lies.
constexpr uint64_t kMaxCompressionRatio = 1032;
// A .gnu_debugaltlink is a path and a build-id.
constexpr uint64_t kMaxAltlinkBytes = 8192;

using ElfHandle = std::unique_ptr<Elf, ElfDeleter>;
using DwarfHandle = std::unique_ptr<Dwarf, DwarfDeleter>;

uint64_t big_endian_64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | p[i];
  return v;
}

std::string hex(const uint8_t* bytes, size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

// The sections libdw will read (and inflate) whole when it opens `e`,
// checked against the limits before it does.
Result<void> check_debug_sections(Elf* e, int fd, std::string_view name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_error("cannot stat {}: {}", name, std::strerror(errno));
  const auto file_size = static_cast<uint64_t>(st.st_size);
  size_t names_index = 0;
  GElf_Shdr names;
  if (elf_getshdrstrndx(e, &names_index) != 0 ||
      gelf_getshdr(elf_getscn(e, names_index), &names) == nullptr)
    return {};  // no section names: libdw finds no debug section either
  if (names.sh_size > elf::kMaxSectionBytes)
    return make_error("{} has a section name table of {} bytes; its DWARF is not read", name,
                      names.sh_size);
  uint64_t total = 0;
  for (Elf_Scn* scn = elf_nextscn(e, nullptr); scn != nullptr; scn = elf_nextscn(e, scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr)
      continue;
    const char* raw_name = elf_strptr(e, names_index, shdr.sh_name);
    if (raw_name == nullptr)
      continue;
    const std::string_view section(raw_name, ::strnlen(raw_name, 256));
    const bool gnu_compressed = section.starts_with(".zdebug_");
    if (!gnu_compressed && !section.starts_with(".debug_"))
      continue;
    // libelf reads nothing of a section that lies outside the file.
    if (shdr.sh_type == SHT_NOBITS || shdr.sh_offset > file_size ||
        shdr.sh_size > file_size - shdr.sh_offset)
      continue;
    uint64_t inflated = 0;
    if ((shdr.sh_flags & SHF_COMPRESSED) != 0) {
      Elf64_Chdr header{};
      if (shdr.sh_size >= sizeof header &&
          ::pread(fd, &header, sizeof header, static_cast<off_t>(shdr.sh_offset)) ==
              static_cast<ssize_t>(sizeof header))
        inflated = header.ch_size;
    } else if (gnu_compressed) {
      uint8_t header[12] = {};
      if (shdr.sh_size >= sizeof header &&
          ::pread(fd, header, sizeof header, static_cast<off_t>(shdr.sh_offset)) ==
              static_cast<ssize_t>(sizeof header) &&
          std::memcmp(header, "ZLIB", 4) == 0)
        inflated = big_endian_64(header + 4);
    }
    if (inflated / kMaxCompressionRatio > shdr.sh_size)
      return make_error(
          "{}: compressed DWARF section {} claims {} bytes from {}, more than zlib can inflate; "
          "its DWARF is not read",
          name, section, inflated, shdr.sh_size);
    if (std::max<uint64_t>(shdr.sh_size, inflated) > kMaxDwarfSectionBytes)
      return make_error(
          "{}: DWARF section {} is {} bytes, more than the {} MiB krait reads from one section; "
          "its DWARF is not read",
          name, section, std::max<uint64_t>(shdr.sh_size, inflated), kMaxDwarfSectionBytes >> 20);
    total += shdr.sh_size + inflated;
    if (total > kMaxDwarfBytes)
      return make_error("{} has more than {} MiB of DWARF; its DWARF is not read", name,
                        kMaxDwarfBytes >> 20);
  }
  return {};
}

// libdw hands out names as pointers into .debug_str and .debug_line_str
// and callers strlen them: a section whose last string runs to its end
// would be read past. Checked on the data libdw uses (inflated, when the
// section was compressed).
Result<void> check_string_sections(Elf* e, std::string_view name) {
  size_t names_index = 0;
  if (elf_getshdrstrndx(e, &names_index) != 0)
    return {};
  for (Elf_Scn* scn = elf_nextscn(e, nullptr); scn != nullptr; scn = elf_nextscn(e, scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr || shdr.sh_type == SHT_NOBITS)
      continue;
    const char* raw_name = elf_strptr(e, names_index, shdr.sh_name);
    if (raw_name == nullptr)
      continue;
    const std::string_view section(raw_name, ::strnlen(raw_name, 256));
    if (section != ".debug_str" && section != ".debug_line_str" && section != ".zdebug_str" &&
        section != ".zdebug_line_str")
      continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (data == nullptr || data->d_buf == nullptr || data->d_size == 0)
      continue;
    if (static_cast<const char*>(data->d_buf)[data->d_size - 1] != '\0')
      return make_error(
          "{}: DWARF string section {} does not end with a NUL; its DWARF is not read", name,
          section);
  }
  return {};
}

// libdw over a duplicate of `fd`, after the limits are checked.
struct OpenedDwarf {
  UniqueFd fd;
  ElfHandle elf;
  DwarfHandle dwarf;  // declared last: destroyed first
};
Result<OpenedDwarf> begin_dwarf(int fd, std::string_view name) {
  OpenedDwarf out;
  out.fd = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!out.fd.valid())
    return make_error("cannot duplicate the descriptor of {}: {}", name, std::strerror(errno));
  // ELF_C_READ reads with pread: a file truncated under us yields errors,
  // not the SIGBUS a mapping would raise.
  out.elf.reset(elf_begin(out.fd.get(), ELF_C_READ, nullptr));
  if (!out.elf)
    return make_error("{} is not a readable ELF file: {}", name, elf_errmsg(-1));
  KRAIT_TRY(check_debug_sections(out.elf.get(), out.fd.get(), name));
  out.dwarf.reset(dwarf_begin_elf(out.elf.get(), DWARF_C_READ, nullptr));
  if (!out.dwarf)
    return make_error("{} has no readable DWARF debug information: {}", name, dwarf_errmsg(-1));
  KRAIT_TRY(check_string_sections(out.elf.get(), name));
  return out;
}

// What .gnu_debugaltlink says: the shared debug file's name and build-id.
struct Altlink {
  std::string name;
  std::string build_id;  // lowercase hex
};
std::optional<Altlink> read_altlink(Elf* e) {
  size_t names_index = 0;
  if (elf_getshdrstrndx(e, &names_index) != 0)
    return std::nullopt;
  for (Elf_Scn* scn = elf_nextscn(e, nullptr); scn != nullptr; scn = elf_nextscn(e, scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr)
      continue;
    const char* section = elf_strptr(e, names_index, shdr.sh_name);
    if (section == nullptr || std::strcmp(section, ".gnu_debugaltlink") != 0)
      continue;
    Altlink link;
    if (shdr.sh_type == SHT_NOBITS || shdr.sh_size > kMaxAltlinkBytes)
      return link;  // present but unreadable: nothing will be found for it
    Elf_Data* data = elf_rawdata(scn, nullptr);
    if (data == nullptr || data->d_buf == nullptr)
      return link;
    const auto* bytes = static_cast<const uint8_t*>(data->d_buf);
    const auto* nul = static_cast<const uint8_t*>(std::memchr(bytes, 0, data->d_size));
    if (nul == nullptr)
      return link;
    link.name.assign(reinterpret_cast<const char*>(bytes), reinterpret_cast<const char*>(nul));
    link.build_id = hex(nul + 1, data->d_size - static_cast<size_t>(nul + 1 - bytes));
    return link;
  }
  return std::nullopt;
}

// `path` names a file inside `root` (lexically: no "." or ".." component).
bool inside(std::string_view path, std::string_view root) {
  while (root.size() > 1 && root.back() == '/')
    root.remove_suffix(1);
  if (root.empty() || path.size() <= root.size() + 1 || !path.starts_with(root) ||
      path[root.size()] != '/')
    return false;
  std::string_view rest = path.substr(root.size() + 1);
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view component = rest.substr(0, slash);
    if (component == "." || component == "..")
      return false;
    rest.remove_prefix(slash == std::string_view::npos ? rest.size() : slash + 1);
  }
  return true;
}

// The altlink file, from the operator's debug roots only.
std::optional<elf::ElfFile> find_altlink_file(const Altlink& link,
                                              std::span<const std::string> debug_roots) {
  if (link.build_id.size() < 6)
    return std::nullopt;
  auto accept = [&](const std::string& path) -> std::optional<elf::ElfFile> {
    auto file = elf::ElfFile::open(path);
    if (file && file->build_id() == link.build_id)
      return std::move(*file);
    return std::nullopt;
  };
  for (const std::string& root : debug_roots)
    if (auto file = accept(root + "/.build-id/" + link.build_id.substr(0, 2) + "/" +
                           link.build_id.substr(2) + ".debug"))
      return file;
  for (const std::string& root : debug_roots)
    if (inside(link.name, root))
      if (auto file = accept(link.name))
        return file;
  return std::nullopt;
}

// Appends to `chain` the subprograms and inlined subroutines below `parent`
// that contain `vaddr`, outermost first. Scopes without addresses
// (namespaces, classes) are searched through, since C++ compilers may nest
// function definitions in them. libdw's dwarf_getscopes() is not used: at
// an inlined subroutine it continues with the scopes of the inlined
// function's abstract definition, not with its caller.
bool find_chain(Dwarf_Die* parent, uint64_t vaddr, std::vector<Dwarf_Die>& chain, int depth) {
  if (depth > kMaxDieDepth)
    return false;
  Dwarf_Die child;
  if (dwarf_child(parent, &child) != 0)
    return false;
  do {
    switch (dwarf_tag(&child)) {
      case DW_TAG_subprogram:
      case DW_TAG_inlined_subroutine:
      case DW_TAG_lexical_block:
      case DW_TAG_try_block:
      case DW_TAG_catch_block:
        if (dwarf_haspc(&child, vaddr) == 1) {
          int tag = dwarf_tag(&child);
          if (tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine)
            chain.push_back(child);
          find_chain(&child, vaddr, chain, depth + 1);
          return true;
        }
        break;
      case DW_TAG_namespace:
      case DW_TAG_class_type:
      case DW_TAG_structure_type:
      case DW_TAG_union_type:
      case DW_TAG_module:
        if (find_chain(&child, vaddr, chain, depth + 1))
          return true;
        break;
      default:
        break;
    }
  } while (dwarf_siblingof(&child, &child) == 0);
  return false;
}

}  // namespace

struct DwarfFile::State {
  OpenedDwarf alt;   // the .gnu_debugaltlink file, if any: destroyed after main
  OpenedDwarf main;  // declared last: destroyed first
};

DwarfFile::DwarfFile(std::unique_ptr<State> state) : state_(std::move(state)) {}
DwarfFile::DwarfFile(DwarfFile&&) noexcept = default;
DwarfFile& DwarfFile::operator=(DwarfFile&&) noexcept = default;
DwarfFile::~DwarfFile() = default;

Result<DwarfFile> DwarfFile::open(int fd, std::string_view name,
                                  std::span<const std::string> debug_roots) {
  static const bool libelf_ready = elf_version(EV_CURRENT) != EV_NONE;
  if (!libelf_ready)
    return make_error("libelf refused to initialise; the installed libelf is incompatible");
  auto state = std::make_unique<State>();
  auto main = begin_dwarf(fd, name);
  if (!main)
    return main.error();
  state->main = std::move(*main);
  // libdw would open the altlink file itself, by a name the file chose and
  // with a blocking open(): it is found here, or the DWARF is not used.
  if (auto link = read_altlink(state->main.elf.get())) {
    auto file = find_altlink_file(*link, debug_roots);
    if (!file)
      return make_error(
          "{} keeps part of its DWARF in {} (build-id {}), which is not under the debug roots; "
          "its DWARF is not read",
          name, link->name.empty() ? "an unnamed file" : link->name, link->build_id);
    auto alt = begin_dwarf(file->fd(), file->path());
    if (!alt)
      return alt.error();
    state->alt = std::move(*alt);
    dwarf_setalt(state->main.dwarf.get(), state->alt.dwarf.get());
  }
  return DwarfFile(std::move(state));
}

namespace {

// The chain at `vaddr` inside one unit; empty when no function of the unit
// contains it. `line_only` receives the line-table position either way.
std::vector<DwarfScope> scopes_in_unit(Dwarf_Die* cu, uint64_t vaddr, DwarfScope& line_only) {
  std::vector<DwarfScope> out;
  std::string comp_dir = attr_string(cu, DW_AT_comp_dir);
  std::string file;
  int line = 0;
  if (Dwarf_Line* row = dwarf_getsrc_die(cu, vaddr)) {
    file = source_path(dwarf_linesrc(row, nullptr, nullptr), comp_dir);
    dwarf_lineno(row, &line);
  }
  line_only = DwarfScope{.file = file, .line = line};
  Dwarf_Files* files = nullptr;
  size_t file_count = 0;
  if (dwarf_getsrcfiles(cu, &files, &file_count) != 0)
    files = nullptr;

  std::vector<Dwarf_Die> chain;  // outermost first
  find_chain(cu, vaddr, chain, 0);
  // The innermost function that is not inlined ends the chain (a nested
  // function's encloser is not one of its callers).
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    Dwarf_Die* scope = &*it;
    bool inlined = dwarf_tag(scope) == DW_TAG_inlined_subroutine;
    out.push_back(DwarfScope{.name = die_name(scope),
                             .linkage_name = linkage_name(scope),
                             .file = file,
                             .line = line,
                             .inlined = inlined});
    if (!inlined)
      break;
    // The enclosing scope is positioned at this inline's call site.
    Dwarf_Attribute attr;
    Dwarf_Word value = 0;
    file.clear();
    line = 0;
    if (files != nullptr &&
        dwarf_formudata(dwarf_attr(scope, DW_AT_call_file, &attr), &value) == 0 &&
        value < file_count)
      file = source_path(dwarf_filesrc(files, value, nullptr, nullptr), comp_dir);
    if (dwarf_formudata(dwarf_attr(scope, DW_AT_call_line, &attr), &value) == 0)
      line = static_cast<int>(value);
  }
  return out;
}

}  // namespace

std::vector<DwarfScope> DwarfFile::scopes_at(uint64_t vaddr) {
  Dwarf* dwarf = state_->main.dwarf.get();
  DwarfScope line_only;
  bool have_line = false;
  Dwarf_Die cu;
  Dwarf_Off first_unit = ~Dwarf_Off{0};
  if (dwarf_addrdie(dwarf, vaddr, &cu) != nullptr) {
    auto scopes = scopes_in_unit(&cu, vaddr, line_only);
    if (!scopes.empty())
      return scopes;
    have_line = true;
    first_unit = dwarf_dieoffset(&cu);
  }
  // .debug_aranges can point at the wrong unit (an empty range that
  // starts where another unit's code does, as in libpython's
  // _PyEval_EvalFrameDefault.cold), or be incomplete: ask every unit.
  Dwarf_Off offset = 0, next = 0;
  size_t header_size = 0;
  while (dwarf_nextcu(dwarf, offset, &next, &header_size, nullptr, nullptr, nullptr) == 0) {
    Dwarf_Die unit;
    if (offset + header_size != first_unit &&
        dwarf_offdie(dwarf, offset + header_size, &unit) != nullptr &&
        dwarf_haspc(&unit, vaddr) == 1) {
      DwarfScope unit_line;
      auto scopes = scopes_in_unit(&unit, vaddr, unit_line);
      if (!scopes.empty())
        return scopes;
      if (!have_line) {
        line_only = unit_line;
        have_line = true;
      }
    }
    offset = next;
  }
  if (!have_line)
    return {};
  return {line_only};
}

}  // namespace krait::symbolize
