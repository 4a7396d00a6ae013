#include "symbolize/dwarf_file.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <libelf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  UniqueFd fd;
  std::unique_ptr<Elf, ElfDeleter> elf;        // destroyed after dwarf
  std::unique_ptr<Dwarf, DwarfDeleter> dwarf;  // declared last: destroyed first
};

DwarfFile::DwarfFile(std::unique_ptr<State> state) : state_(std::move(state)) {}
DwarfFile::DwarfFile(DwarfFile&&) noexcept = default;
DwarfFile& DwarfFile::operator=(DwarfFile&&) noexcept = default;
DwarfFile::~DwarfFile() = default;

Result<DwarfFile> DwarfFile::open(int fd, std::string_view name) {
  static const bool libelf_ready = elf_version(EV_CURRENT) != EV_NONE;
  if (!libelf_ready)
    return make_error("libelf refused to initialise; the installed libelf is incompatible");
  auto state = std::make_unique<State>();
  state->fd = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!state->fd.valid())
    return make_error("cannot duplicate the descriptor of {}: {}", name, std::strerror(errno));
  // ELF_C_READ reads with pread: a file truncated under us yields errors,
  // not the SIGBUS a mapping would raise.
  state->elf.reset(elf_begin(state->fd.get(), ELF_C_READ, nullptr));
  if (!state->elf)
    return make_error("{} is not a readable ELF file: {}", name, elf_errmsg(-1));
  state->dwarf.reset(dwarf_begin_elf(state->elf.get(), DWARF_C_READ, nullptr));
  if (!state->dwarf)
    return make_error("{} has no readable DWARF debug information: {}", name, dwarf_errmsg(-1));
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
  Dwarf* dwarf = state_->dwarf.get();
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
