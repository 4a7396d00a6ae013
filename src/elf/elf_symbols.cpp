// ElfFile's symbols: the .dynsym and .symtab indexes, the address index of
// functions, and PLT stubs named through the GOT slots they jump through.
// Separate from elf_file.cpp because all of it is built lazily, on the
// first lookup, from sections that opening the file only listed.
#include <elf.h>
#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "elf/elf_file_state.h"

namespace krait::elf {
namespace {

// How far function_at() looks back past the nearest lower symbol, for the
// rare case of a function nested inside a larger one that ends earlier.
constexpr size_t kMaxNestedFunctions = 8;
// Lower is preferred when one name has several definitions.
int bind_rank(uint8_t bind) {
  switch (bind) {
    case STB_GLOBAL:
      return 0;
    case STB_WEAK:
      return 1;
    case STB_LOCAL:
      return 2;
    default:
      return 3;
  }
}

bool is_function(const Symbol& sym) {
  return (sym.type == STT_FUNC || sym.type == STT_GNU_IFUNC) && sym.size > 0;
}

}  // namespace

void ElfFile::State::read_symbols(const SectionInfo& info, std::vector<Symbol>& out) {
  Elf* e = elf.get();
  Elf_Data* data = section_data(info, true);
  size_t entry_size = gelf_fsize(e, ELF_T_SYM, 1, EV_CURRENT);
  // d_buf is null for a section whose type was rewritten but whose data is
  // absent; gelf_getsym would dereference it.
  if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
    return;
  if (!strings_ready(info.link))
    return;
  // The table's size was checked against kMaxSectionBytes, so the count is
  // bounded; the index costs one Symbol per entry on top of it.
  size_t count = data->d_size / entry_size;
  if (!charge(count * sizeof(Symbol)))
    return;
  // Entries that all name one long string would copy it once each: names
  // may total twice their table (linkers share string tails), no more.
  const uint64_t name_budget = 2 * section_at(info.link)->section.size + kMaxSymbolNameSlack;
  uint64_t name_bytes = 0;
  out.reserve(count);
  for (size_t i = 1; i < count; ++i) {
    GElf_Sym sym;
    if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr)
      break;
    uint8_t type = GELF_ST_TYPE(sym.st_info);
    if (sym.st_shndx == SHN_UNDEF || type == STT_SECTION || type == STT_FILE)
      continue;
    const char* name = elf_strptr(e, info.link, sym.st_name);
    if (name == nullptr || *name == '\0')
      continue;
    // elf_strptr() found the terminating NUL inside the table.
    name_bytes += std::strlen(name);
    if (name_bytes > name_budget)
      break;
    out.push_back(Symbol{.name = name,
                         .value = sym.st_value,
                         .size = sym.st_size,
                         .type = type,
                         .bind = static_cast<uint8_t>(GELF_ST_BIND(sym.st_info))});
  }
  if (!charge(name_bytes)) {
    out.clear();
    out.shrink_to_fit();
    return;
  }
  std::stable_sort(out.begin(), out.end(), [](const Symbol& a, const Symbol& b) {
    if (a.name != b.name)
      return a.name < b.name;
    return bind_rank(a.bind) < bind_rank(b.bind);
  });
}

void ElfFile::State::index_symbols() {
  std::lock_guard lock(elf_mutex);
  bool dynsym_done = false;
  bool symtab_done = false;
  for (const SectionInfo& info : sections) {
    if (info.section.type == SHT_DYNSYM && !dynsym_done) {
      read_symbols(info, dynsym);
      dynsym_done = true;
    } else if (info.section.type == SHT_SYMTAB && !symtab_done) {
      read_symbols(info, symtab);
      symtab_done = true;
    }
  }
}

void ElfFile::State::index_functions() {
  std::call_once(symbols_once, [this] { index_symbols(); });
  bool symtab_has_functions = std::any_of(symtab.begin(), symtab.end(), is_function);
  const std::vector<Symbol>& source = symtab_has_functions ? symtab : dynsym;
  for (const Symbol& sym : source)
    if (is_function(sym))
      functions.push_back(&sym);
  std::sort(functions.begin(), functions.end(), [](const Symbol* a, const Symbol* b) {
    if (a->value != b->value)
      return a->value < b->value;
    bool a_global = a->bind == STB_GLOBAL;
    bool b_global = b->bind == STB_GLOBAL;
    if (a_global != b_global)
      return a_global;
    if (a->size != b->size)
      return a->size > b->size;
    return a->name < b->name;
  });
  functions.erase(
      std::unique(functions.begin(), functions.end(),
                  [](const Symbol* a, const Symbol* b) { return a->value == b->value; }),
      functions.end());
}

void ElfFile::State::index_got_slots() {
  std::lock_guard lock(elf_mutex);
  Elf* e = elf.get();
  for (const SectionInfo& info : sections) {
    if (info.section.type != SHT_RELA)
      continue;
    const SectionInfo* symbols = nullptr;
    for (const SectionInfo& candidate : sections)
      if (candidate.index == info.link && candidate.section.type == SHT_DYNSYM)
        symbols = &candidate;
    if (symbols == nullptr)
      continue;
    Elf_Data* relocations = section_data(info, true);
    Elf_Data* symbol_data = section_data(*symbols, true);
    size_t entry_size = gelf_fsize(e, ELF_T_RELA, 1, EV_CURRENT);
    if (relocations == nullptr || relocations->d_buf == nullptr || symbol_data == nullptr ||
        symbol_data->d_buf == nullptr || entry_size == 0 || !strings_ready(symbols->link))
      continue;
    for (size_t i = 0; i < relocations->d_size / entry_size; ++i) {
      GElf_Rela rela;
      if (gelf_getrela(relocations, static_cast<int>(i), &rela) == nullptr)
        break;
      const uint32_t type = GELF_R_TYPE(rela.r_info);
      if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT)
        continue;
      GElf_Sym sym;
      if (gelf_getsym(symbol_data, static_cast<int>(GELF_R_SYM(rela.r_info)), &sym) == nullptr)
        continue;
      // GLOB_DAT also binds data (stdout, PyExc_*), which no stub jumps
      // through; keeping only functions keeps the index small.
      if (GELF_ST_TYPE(sym.st_info) == STT_OBJECT || GELF_ST_TYPE(sym.st_info) == STT_TLS)
        continue;
      const char* name = elf_strptr(e, symbols->link, sym.st_name);
      if (name == nullptr || *name == '\0')
        continue;
      // Each slot copies its name: charged, so that many relocations of
      // one long name cannot multiply it.
      if (!charge(std::strlen(name) + sizeof(std::string) + 2 * sizeof(uint64_t)))
        return;
      got_slots.emplace(rela.r_offset, name);
    }
  }
}

std::optional<Symbol> ElfFile::find_symbol(std::string_view name) const {
  State& s = *state_;
  std::call_once(s.symbols_once, [&s] { s.index_symbols(); });
  for (const std::vector<Symbol>* table : {&s.dynsym, &s.symtab}) {
    auto it = std::lower_bound(table->begin(), table->end(), name,
                               [](const Symbol& sym, std::string_view n) { return sym.name < n; });
    if (it != table->end() && it->name == name)
      return *it;
  }
  return std::nullopt;
}

void ElfFile::index_now() const {
  State& s = *state_;
  std::call_once(s.functions_once, [&s] { s.index_functions(); });
}

const Symbol* ElfFile::function_at(uint64_t vaddr) const {
  State& s = *state_;
  std::call_once(s.functions_once, [&s] { s.index_functions(); });
  auto it = std::upper_bound(s.functions.begin(), s.functions.end(), vaddr,
                             [](uint64_t v, const Symbol* sym) { return v < sym->value; });
  for (size_t steps = 0; it != s.functions.begin() && steps < kMaxNestedFunctions; ++steps) {
    --it;
    const Symbol* sym = *it;
    if (vaddr - sym->value < sym->size)
      return sym;
  }
  return nullptr;
}

std::optional<std::string> ElfFile::plt_target(uint64_t vaddr) const {
  State& s = *state_;
  const Section* plt = nullptr;
  for (const SectionInfo& info : s.sections)
    if ((info.section.name == ".plt" || info.section.name == ".plt.sec" ||
         info.section.name == ".plt.got") &&
        vaddr >= info.section.addr && vaddr - info.section.addr < info.section.size)
      plt = &info.section;
  if (plt == nullptr)
    return std::nullopt;
  // Stubs are 16 bytes (8 in .plt.got without IBT); sh_entsize says which.
  const uint64_t stub_size = plt->entsize == 8 || plt->entsize == 16 ? plt->entsize : 16;
  const uint64_t stub = plt->addr + (vaddr - plt->addr) / stub_size * stub_size;
  auto code = read_vaddr(stub, stub_size);
  if (!code)
    return std::nullopt;
  // `jmp *disp32(%rip)` (ff 25) first in the stub, or after an endbr64 and
  // a bnd prefix (.plt.sec with IBT). PLT0 pushes first, and a lazy .plt
  // stub of an IBT build pushes its index: neither is taken for a stub.
  const std::vector<uint8_t>& b = *code;
  size_t at = 0;
  if (b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa)
    at = 4;
  if (b[at] == 0xf2)
    ++at;
  if (at + 6 > b.size() || b[at] != 0xff || b[at + 1] != 0x25)
    return std::nullopt;
  int32_t disp = 0;
  std::memcpy(&disp, b.data() + at + 2, sizeof disp);
  const uint64_t slot = stub + at + 6 + static_cast<uint64_t>(static_cast<int64_t>(disp));
  std::call_once(s.got_once, [&s] { s.index_got_slots(); });
  auto it = s.got_slots.find(slot);
  if (it == s.got_slots.end())
    return std::nullopt;
  return it->second;
}

}  // namespace krait::elf
