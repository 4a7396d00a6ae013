#include "elf/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "util/unique_fd.h"

namespace krait::elf {
namespace {

struct ElfDeleter {
  void operator()(Elf* elf) const { elf_end(elf); }
};
using ElfHandle = std::unique_ptr<Elf, ElfDeleter>;

// A build-id longer than this is not one any linker writes; treat the note as
// garbage rather than hex-encode an arbitrary blob.
constexpr size_t kMaxBuildIdBytes = 1024;
// How far function_at() looks back past the nearest lower symbol, for the
// rare case of a function nested inside a larger one that ends earlier.
constexpr size_t kMaxNestedFunctions = 8;

std::string libelf_error() {
  const char* message = elf_errmsg(-1);
  return message != nullptr ? message : "unknown libelf error";
}

bool libelf_ready() {
  // elf_version() must run once per process before elf_begin().
  static const bool ready = elf_version(EV_CURRENT) != EV_NONE;
  return ready;
}

std::string to_hex(const uint8_t* bytes, size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

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

std::optional<std::string> build_id_in_notes(Elf_Data* data) {
  if (data == nullptr || data->d_buf == nullptr)
    return std::nullopt;
  const auto* base = static_cast<const uint8_t*>(data->d_buf);
  size_t offset = 0;
  while (offset < data->d_size) {
    GElf_Nhdr note;
    size_t name_offset = 0;
    size_t desc_offset = 0;
    // gelf_getnote bounds-checks name and descriptor against d_size and
    // returns 0 at the end or on a malformed note; progress is >= 12 bytes.
    size_t next = gelf_getnote(data, offset, &note, &name_offset, &desc_offset);
    if (next == 0 || next <= offset)
      break;
    if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
        std::memcmp(base + name_offset, "GNU", 4) == 0 && note.n_descsz > 0 &&
        note.n_descsz <= kMaxBuildIdBytes)
      return to_hex(base + desc_offset, note.n_descsz);
    offset = next;
  }
  return std::nullopt;
}

struct SectionInfo {
  Section section;
  size_t index = 0;  // for elf_getscn
  uint32_t link = 0;
};

}  // namespace

struct ElfFile::State {
  std::string path;
  UniqueFd fd;
  ElfHandle elf;  // declared after fd: destroyed before the fd is closed
  uint64_t file_size = 0;
  bool is_dyn = false;
  std::vector<LoadSegment> loads;
  std::vector<SectionInfo> sections;
  std::string build_id;
  std::vector<std::string> needed;
  std::string soname;
  bool has_symtab = false;
  std::optional<std::string> debuglink;

  // libelf keeps per-handle caches that it fills on demand, so every libelf
  // call after open() is serialised.
  std::mutex elf_mutex;

  std::once_flag symbols_once;
  std::vector<Symbol> dynsym;  // each sorted by (name, bind preference, table order)
  std::vector<Symbol> symtab;

  std::once_flag functions_once;
  std::vector<const Symbol*> functions;  // sorted by address, one per address

  std::once_flag got_once;
  std::unordered_map<uint64_t, std::string> got_slots;  // GOT address -> the symbol it binds

  const SectionInfo* section(std::string_view name) const {
    for (const SectionInfo& info : sections)
      if (info.section.name == name)
        return &info;
    return nullptr;
  }
  Result<void> read_headers();
  void read_build_id_and_dynamic(const std::vector<GElf_Phdr>& notes,
                                 const std::optional<GElf_Phdr>& dynamic);
  bool read_dynamic_section();
  void read_dynamic_segment(const GElf_Phdr& dynamic);
  void read_symbols(const SectionInfo& info, std::vector<Symbol>& out);
  void index_symbols();
  void index_functions();
  void index_got_slots();
};

Result<void> ElfFile::State::read_headers() {
  Elf* e = elf.get();
  if (elf_kind(e) != ELF_K_ELF)
    return make_error("{} is not an ELF file", path);
  int elf_class = gelf_getclass(e);
  if (elf_class == ELFCLASS32)
    return make_error("{} is a 32-bit ELF file; only x86_64 (ELF64) binaries are supported", path);
  if (elf_class != ELFCLASS64)
    return make_error("{} has an invalid ELF class; the file is corrupt", path);
  size_t ident_size = 0;
  const char* ident = elf_getident(e, &ident_size);
  if (ident == nullptr || ident_size < EI_NIDENT || ident[EI_DATA] != ELFDATA2LSB)
    return make_error("{} is not a little-endian ELF file; only x86_64 binaries are supported",
                      path);
  GElf_Ehdr ehdr;
  if (gelf_getehdr(e, &ehdr) == nullptr)
    return make_error("{} has an unreadable ELF header: {}", path, libelf_error());
  if (ehdr.e_machine != EM_X86_64)
    return make_error("{} is for ELF machine {}, not x86_64 (EM_X86_64 = {})", path, ehdr.e_machine,
                      EM_X86_64);
  if (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN)
    return make_error(
        "{} has ELF type {} (not an executable or shared object); only ET_EXEC and ET_DYN files "
        "can be loaded by a process",
        path, ehdr.e_type);
  is_dyn = ehdr.e_type == ET_DYN;

  size_t phnum = 0;
  if (elf_getphdrnum(e, &phnum) != 0)
    return make_error("{} has a broken program header table: {}", path, libelf_error());
  std::vector<GElf_Phdr> notes;
  std::optional<GElf_Phdr> dynamic;
  for (size_t i = 0; i < phnum; ++i) {
    GElf_Phdr phdr;
    if (gelf_getphdr(e, static_cast<int>(i), &phdr) == nullptr)
      return make_error("{} has an unreadable program header {}: {}", path, i, libelf_error());
    if (phdr.p_type == PT_LOAD) {
      loads.push_back(LoadSegment{.vaddr = phdr.p_vaddr,
                                  .offset = phdr.p_offset,
                                  .filesz = phdr.p_filesz,
                                  .memsz = phdr.p_memsz,
                                  .align = phdr.p_align,
                                  .flags = phdr.p_flags});
    } else if (phdr.p_type == PT_NOTE) {
      notes.push_back(phdr);
    } else if (phdr.p_type == PT_DYNAMIC && !dynamic) {
      dynamic = phdr;
    }
  }

  // A missing or broken section header table is legal for a loadable file
  // (sstrip does it), so it only leaves the section list empty.
  size_t shstrndx = 0;
  bool have_names = elf_getshdrstrndx(e, &shstrndx) == 0;
  for (Elf_Scn* scn = elf_nextscn(e, nullptr); scn != nullptr; scn = elf_nextscn(e, scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr)
      continue;
    const char* name = have_names ? elf_strptr(e, shstrndx, shdr.sh_name) : nullptr;
    sections.push_back(SectionInfo{.section = Section{.name = name != nullptr ? name : "",
                                                      .addr = shdr.sh_addr,
                                                      .offset = shdr.sh_offset,
                                                      .size = shdr.sh_size,
                                                      .type = shdr.sh_type,
                                                      .entsize = shdr.sh_entsize},
                                   .index = elf_ndxscn(scn),
                                   .link = shdr.sh_link});
    if (shdr.sh_type == SHT_SYMTAB && shdr.sh_size > 0)
      has_symtab = true;
  }

  read_build_id_and_dynamic(notes, dynamic);

  if (const SectionInfo* info = section(".gnu_debuglink");
      info != nullptr && info->section.type != SHT_NOBITS) {
    Elf_Data* data = elf_rawdata(elf_getscn(e, info->index), nullptr);
    if (data != nullptr && data->d_buf != nullptr && data->d_size > 0) {
      const auto* begin = static_cast<const char*>(data->d_buf);
      const void* nul = std::memchr(begin, '\0', data->d_size);
      if (nul != nullptr && nul != begin)
        debuglink = std::string(begin, static_cast<const char*>(nul));
    }
  }
  return {};
}

void ElfFile::State::read_build_id_and_dynamic(const std::vector<GElf_Phdr>& notes,
                                               const std::optional<GElf_Phdr>& dynamic) {
  Elf* e = elf.get();
  // Program headers survive every kind of stripping, so they come first.
  for (const GElf_Phdr& note : notes) {
    Elf_Type type = note.p_align == 8 ? ELF_T_NHDR8 : ELF_T_NHDR;
    if (auto id = build_id_in_notes(
            elf_getdata_rawchunk(e, static_cast<int64_t>(note.p_offset), note.p_filesz, type))) {
      build_id = std::move(*id);
      break;
    }
  }
  if (build_id.empty()) {
    for (const SectionInfo& info : sections) {
      if (info.section.type != SHT_NOTE)
        continue;
      if (auto id = build_id_in_notes(elf_getdata(elf_getscn(e, info.index), nullptr))) {
        build_id = std::move(*id);
        break;
      }
    }
  }
  // PT_DYNAMIC is only trusted without section headers: a separate debug
  // file keeps the program headers but not the bytes they point at.
  if (!read_dynamic_section() && dynamic && sections.empty())
    read_dynamic_segment(*dynamic);
}

bool ElfFile::State::read_dynamic_section() {
  Elf* e = elf.get();
  for (const SectionInfo& info : sections) {
    if (info.section.type != SHT_DYNAMIC)
      continue;
    Elf_Data* data = elf_getdata(elf_getscn(e, info.index), nullptr);
    size_t entry_size = gelf_fsize(e, ELF_T_DYN, 1, EV_CURRENT);
    if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
      return false;
    size_t count = data->d_size / entry_size;
    for (size_t i = 0; i < count; ++i) {
      GElf_Dyn dyn;
      if (gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL)
        break;
      if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_SONAME)
        continue;
      const char* name = elf_strptr(e, info.link, dyn.d_un.d_val);
      if (name == nullptr)
        continue;
      if (dyn.d_tag == DT_NEEDED)
        needed.emplace_back(name);
      else
        soname = name;
    }
    return true;
  }
  return false;
}

void ElfFile::State::read_dynamic_segment(const GElf_Phdr& dynamic) {
  // Without section headers the string table is found through DT_STRTAB, a
  // virtual address that has to be translated to a file offset.
  Elf* e = elf.get();
  Elf_Data* data =
      elf_getdata_rawchunk(e, static_cast<int64_t>(dynamic.p_offset), dynamic.p_filesz, ELF_T_DYN);
  size_t entry_size = gelf_fsize(e, ELF_T_DYN, 1, EV_CURRENT);
  if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
    return;
  std::optional<uint64_t> strtab_vaddr;
  uint64_t strtab_size = 0;
  std::vector<uint64_t> needed_offsets;
  std::optional<uint64_t> soname_offset;
  size_t count = data->d_size / entry_size;
  for (size_t i = 0; i < count; ++i) {
    GElf_Dyn dyn;
    if (gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL)
      break;
    if (dyn.d_tag == DT_STRTAB)
      strtab_vaddr = dyn.d_un.d_ptr;
    else if (dyn.d_tag == DT_STRSZ)
      strtab_size = dyn.d_un.d_val;
    else if (dyn.d_tag == DT_NEEDED)
      needed_offsets.push_back(dyn.d_un.d_val);
    else if (dyn.d_tag == DT_SONAME)
      soname_offset = dyn.d_un.d_val;
  }
  if (!strtab_vaddr || strtab_size == 0)
    return;
  std::optional<uint64_t> strtab_offset;
  for (const LoadSegment& load : loads) {
    uint64_t delta = *strtab_vaddr - load.vaddr;
    if (*strtab_vaddr >= load.vaddr && delta < load.filesz && strtab_size <= load.filesz - delta) {
      strtab_offset = load.offset + delta;
      break;
    }
  }
  if (!strtab_offset || *strtab_offset > file_size || strtab_size > file_size - *strtab_offset)
    return;
  Elf_Data* strings =
      elf_getdata_rawchunk(e, static_cast<int64_t>(*strtab_offset), strtab_size, ELF_T_BYTE);
  if (strings == nullptr || strings->d_buf == nullptr)
    return;
  const auto* base = static_cast<const char*>(strings->d_buf);
  auto string_at = [&](uint64_t offset) -> std::optional<std::string> {
    if (offset >= strings->d_size)
      return std::nullopt;
    const void* nul = std::memchr(base + offset, '\0', strings->d_size - offset);
    if (nul == nullptr)
      return std::nullopt;
    return std::string(base + offset, static_cast<const char*>(nul));
  };
  for (uint64_t offset : needed_offsets)
    if (auto name = string_at(offset))
      needed.push_back(std::move(*name));
  if (soname_offset)
    if (auto name = string_at(*soname_offset))
      soname = std::move(*name);
}

void ElfFile::State::read_symbols(const SectionInfo& info, std::vector<Symbol>& out) {
  Elf* e = elf.get();
  Elf_Data* data = elf_getdata(elf_getscn(e, info.index), nullptr);
  size_t entry_size = gelf_fsize(e, ELF_T_SYM, 1, EV_CURRENT);
  // d_buf is null for a section whose type was rewritten but whose data is
  // absent; gelf_getsym would dereference it.
  if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
    return;
  // d_size came from the file, so the count is bounded by the file's size.
  size_t count = data->d_size / entry_size;
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
    out.push_back(Symbol{.name = name,
                         .value = sym.st_value,
                         .size = sym.st_size,
                         .type = type,
                         .bind = static_cast<uint8_t>(GELF_ST_BIND(sym.st_info))});
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
    Elf_Data* relocations = elf_getdata(elf_getscn(e, info.index), nullptr);
    Elf_Data* symbol_data = elf_getdata(elf_getscn(e, symbols->index), nullptr);
    size_t entry_size = gelf_fsize(e, ELF_T_RELA, 1, EV_CURRENT);
    if (relocations == nullptr || relocations->d_buf == nullptr || symbol_data == nullptr ||
        symbol_data->d_buf == nullptr || entry_size == 0)
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
      if (name != nullptr && *name != '\0')
        got_slots.emplace(rela.r_offset, name);
    }
  }
}

ElfFile::ElfFile(std::unique_ptr<State> state) : state_(std::move(state)) {}
ElfFile::ElfFile(ElfFile&&) noexcept = default;
ElfFile& ElfFile::operator=(ElfFile&&) noexcept = default;
ElfFile::~ElfFile() = default;

Result<ElfFile> ElfFile::open(const std::string& path) {
  if (!libelf_ready())
    return make_error("libelf refused to initialise ({}); the installed libelf is incompatible",
                      libelf_error());
  auto state = std::make_unique<State>();
  state->path = path;
  // O_NONBLOCK so that opening a FIFO cannot block; fstat rejects it next.
  state->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!state->fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(state->fd.get(), &st) != 0)
    return make_error("cannot stat {}: {}", path, std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    return make_error("{} is a directory, not an ELF file", path);
  if (!S_ISREG(st.st_mode))
    return make_error("{} is not a regular file, so not an ELF file", path);
  if (st.st_size <= 0)
    return make_error("{} is empty, not an ELF file", path);
  state->file_size = static_cast<uint64_t>(st.st_size);
  // ELF_C_READ (pread on demand) rather than ELF_C_READ_MMAP: a mapping of a
  // file that shrinks while we hold it would raise SIGBUS.
  state->elf.reset(elf_begin(state->fd.get(), ELF_C_READ, nullptr));
  if (!state->elf)
    return make_error("{} is not a readable ELF file: {}", path, libelf_error());
  KRAIT_TRY(state->read_headers());
  return ElfFile(std::move(state));
}

const std::string& ElfFile::path() const {
  return state_->path;
}
bool ElfFile::is_dyn() const {
  return state_->is_dyn;
}
const std::vector<LoadSegment>& ElfFile::load_segments() const {
  return state_->loads;
}
const std::string& ElfFile::build_id() const {
  return state_->build_id;
}
const std::vector<std::string>& ElfFile::needed() const {
  return state_->needed;
}
const std::string& ElfFile::soname() const {
  return state_->soname;
}
bool ElfFile::has_symtab() const {
  return state_->has_symtab;
}
std::optional<std::string> ElfFile::debuglink() const {
  return state_->debuglink;
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

std::optional<Section> ElfFile::find_section(std::string_view name) const {
  if (const SectionInfo* info = state_->section(name))
    return info->section;
  return std::nullopt;
}

Result<std::vector<uint8_t>> ElfFile::read_vaddr(uint64_t vaddr, size_t len) const {
  const State& s = *state_;
  const LoadSegment* segment = nullptr;
  for (const LoadSegment& load : s.loads) {
    if (vaddr >= load.vaddr && vaddr - load.vaddr < std::max(load.filesz, load.memsz)) {
      segment = &load;
      break;
    }
  }
  if (segment == nullptr)
    return make_error("address {:#x} is not in any PT_LOAD segment of {}", vaddr, s.path);
  uint64_t delta = vaddr - segment->vaddr;
  if (delta >= segment->filesz || len > segment->filesz - delta)
    return make_error(
        "{} bytes at {:#x} are not all backed by {} (zero-initialised memory such as .bss, or past "
        "the segment); read them from the process instead",
        len, vaddr, s.path);
  uint64_t offset = segment->offset + delta;
  if (offset < segment->offset || offset > s.file_size || len > s.file_size - offset)
    return make_error("{} bytes at {:#x} lie past the end of {}; the file is truncated", len, vaddr,
                      s.path);
  std::vector<uint8_t> out(len);
  size_t done = 0;
  while (done < len) {
    ssize_t n =
        ::pread(s.fd.get(), out.data() + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return make_error("cannot read {}: {}", s.path, std::strerror(errno));
    if (n == 0)
      return make_error("{} ended early while reading {:#x}; the file was truncated", s.path,
                        vaddr);
    done += static_cast<size_t>(n);
  }
  return out;
}

Result<std::span<const uint8_t>> ElfFile::section_bytes(std::string_view name) const {
  State& s = *state_;
  const SectionInfo* info = s.section(name);
  if (info == nullptr)
    return make_error("{} has no section {}", s.path, name);
  const Section& section = info->section;
  if (section.type == SHT_NOBITS)
    return make_error("section {} of {} has no contents in the file (SHT_NOBITS)", name, s.path);
  if (section.offset > s.file_size || section.size > s.file_size - section.offset)
    return make_error("section {} of {} extends past the end of the file; the file is truncated",
                      name, s.path);
  if (section.size == 0)
    return std::span<const uint8_t>();
  std::lock_guard lock(s.elf_mutex);
  Elf_Data* data = elf_rawdata(elf_getscn(s.elf.get(), info->index), nullptr);
  if (data == nullptr || data->d_buf == nullptr)
    return make_error("cannot read section {} of {}: {}", name, s.path, libelf_error());
  return std::span<const uint8_t>(static_cast<const uint8_t*>(data->d_buf), data->d_size);
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
