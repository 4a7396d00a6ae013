#include "elf/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
// DT_NEEDED entries and the length of one name: a loader takes names of at
// most PATH_MAX, and no real file needs thousands of libraries. Entries
// that all point at one long string would otherwise multiply it.
constexpr size_t kMaxNeeded = 4096;
constexpr size_t kMaxDynamicNameBytes = 4096;
// Section names are short (".text", ".debug_info"); a longer one is garbage.
constexpr size_t kMaxSectionNameBytes = 1024;

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

// libelf allocates its per-section and per-segment structures from the
// counts in the ELF header (or, for large counts, in section header 0)
// before anything else is checked: refuse absurd counts first.
Result<void> check_header_counts(int fd, const std::string& path) {
  Elf64_Ehdr ehdr{};
  if (::pread(fd, &ehdr, sizeof ehdr, 0) != static_cast<ssize_t>(sizeof ehdr) ||
      std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0 || ehdr.e_ident[EI_CLASS] != ELFCLASS64)
    return {};  // libelf reports what is wrong with these
  uint64_t sections = ehdr.e_shnum;
  uint64_t segments = ehdr.e_phnum;
  if ((sections == 0 && ehdr.e_shoff != 0) || segments == PN_XNUM) {
    // Extended numbering: the real counts are in section header 0.
    Elf64_Shdr first{};
    if (::pread(fd, &first, sizeof first, static_cast<off_t>(ehdr.e_shoff)) ==
        static_cast<ssize_t>(sizeof first)) {
      if (sections == 0)
        sections = first.sh_size;
      if (segments == PN_XNUM)
        segments = first.sh_info;
    }
  }
  if (sections > kMaxSections)
    return make_error(
        "{} claims {} section headers, more than the {} krait reads; the file is corrupt or "
        "hostile",
        path, sections, kMaxSections);
  if (segments > kMaxProgramHeaders)
    return make_error(
        "{} claims {} program headers, more than the {} krait reads; the file is corrupt or "
        "hostile",
        path, segments, kMaxProgramHeaders);
  return {};
}

struct SectionInfo {
  Section section;
  size_t index = 0;  // for elf_getscn
  uint32_t link = 0;
};

}  // namespace

Result<FileId> file_id_of(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
              STATX_TYPE | STATX_MODE | STATX_INO | STATX_SIZE | STATX_MTIME, &stx) != 0)
    return make_error("{}", std::strerror(errno));
  return FileId{.dev_major = stx.stx_dev_major,
                .dev_minor = stx.stx_dev_minor,
                .inode = stx.stx_ino,
                .size = stx.stx_size,
                .mtime_ns = static_cast<int64_t>(stx.stx_mtime.tv_sec) * 1'000'000'000 +
                            static_cast<int64_t>(stx.stx_mtime.tv_nsec)};
}

Result<CheckedFile> check_file(int fd, std::string_view name) {
  // AT_STATX_DONT_SYNC: the attributes the kernel has, without asking a
  // FUSE or network server (which could take forever to answer).
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
              STATX_TYPE | STATX_MODE | STATX_INO | STATX_SIZE | STATX_MTIME, &stx) != 0)
    return make_error("cannot stat {}: {}", name, std::strerror(errno));
  const mode_t mode = stx.stx_mode;
  if (S_ISDIR(mode))
    return make_error("{} is a directory, not an ELF file", name);
  if (!S_ISREG(mode))
    return make_error(
        "{} is not a regular file (a FIFO, device, socket or link), so not an ELF file", name);
  if (stx.stx_size == 0)
    return make_error("{} is empty, not an ELF file", name);
  if (stx.stx_size > kMaxFileBytes)
    return make_error(
        "{} is {} bytes, larger than the {} GiB krait reads from one file; refused (a binary this "
        "large is sparse or hostile)",
        name, stx.stx_size, kMaxFileBytes >> 30);
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0)
    return make_error("cannot stat the filesystem of {}: {}", name, std::strerror(errno));
  const auto fs_magic = static_cast<int64_t>(fs.f_type);
  if (fs_magic == kFuseSuperMagic)
    return make_error(
        "{} is on a FUSE filesystem, whose user-space server can stall any read forever; krait "
        "does not read files there",
        name);
  return CheckedFile{
      .id = FileId{.dev_major = stx.stx_dev_major,
                   .dev_minor = stx.stx_dev_minor,
                   .inode = stx.stx_ino,
                   .size = stx.stx_size,
                   .mtime_ns = static_cast<int64_t>(stx.stx_mtime.tv_sec) * 1'000'000'000 +
                               static_cast<int64_t>(stx.stx_mtime.tv_nsec)},
      .fs_magic = fs_magic};
}

struct ElfFile::State {
  std::string path;
  UniqueFd fd;
  ElfHandle elf;  // declared after fd: destroyed before the fd is closed
  FileId file_id;
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
  // Bytes read into memory or indexed so far (kMaxBytesPerFile), and which
  // sections were read (libelf keeps a section's data once read, so each is
  // charged once). Guarded by elf_mutex, except during open().
  std::atomic<uint64_t> charged{0};
  std::vector<bool> section_read;  // parallel to `sections`

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
  const SectionInfo* section_at(size_t index) const {
    if (index >= 1 && index - 1 < sections.size() && sections[index - 1].index == index)
      return &sections[index - 1];
    for (const SectionInfo& info : sections)
      if (info.index == index)
        return &info;
    return nullptr;
  }
  // Counts `bytes` against kMaxBytesPerFile; false (nothing counted) when
  // they do not fit.
  bool charge(uint64_t bytes) {
    uint64_t used = charged.load(std::memory_order_relaxed);
    do {
      if (bytes > kMaxBytesPerFile || used > kMaxBytesPerFile - bytes)
        return false;
    } while (!charged.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    return true;
  }
  // Why the contents of `info` may not be read into memory, or "" when they
  // may (and are then charged): every section read goes through here,
  // before libelf allocates.
  std::string admit_section(const SectionInfo& info, uint64_t limit);
  // The contents of `info` (raw bytes, or converted to the host's layout
  // with `converted`), admitted by admit_section() first; nullptr when
  // refused or unreadable. Call with elf_mutex held (or during open()).
  Elf_Data* section_data(const SectionInfo& info, bool converted,
                         uint64_t limit = kMaxSectionBytes);
  // Loads the string table `index` so that elf_strptr() on it reads nothing
  // more; false when it is refused.
  bool strings_ready(size_t index);
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
  if (have_names) {
    // elf_strptr() reads the whole name table: check its size first.
    GElf_Shdr names;
    have_names = gelf_getshdr(elf_getscn(e, shstrndx), &names) != nullptr &&
                 names.sh_type != SHT_NOBITS && names.sh_offset <= file_size &&
                 names.sh_size <= file_size - names.sh_offset &&
                 names.sh_size <= kMaxSectionBytes && charge(names.sh_size);
  }
  for (Elf_Scn* scn = elf_nextscn(e, nullptr); scn != nullptr; scn = elf_nextscn(e, scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr)
      continue;
    const char* name = have_names ? elf_strptr(e, shstrndx, shdr.sh_name) : nullptr;
    // Every header may name the same long string: each copy is charged.
    if (name != nullptr && (::strnlen(name, kMaxSectionNameBytes) == kMaxSectionNameBytes ||
                            !charge(std::strlen(name))))
      name = nullptr;
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

  section_read.assign(sections.size(), false);
  for (size_t i = 0; have_names && i < sections.size(); ++i)
    if (sections[i].index == shstrndx)
      section_read[i] = true;  // charged above

  read_build_id_and_dynamic(notes, dynamic);

  if (const SectionInfo* info = section(".gnu_debuglink")) {
    Elf_Data* data = section_data(*info, false, kMaxNoteBytes);
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
    // libelf allocates p_filesz bytes for the chunk, and keeps them.
    if (note.p_filesz > kMaxNoteBytes || note.p_offset > file_size ||
        note.p_filesz > file_size - note.p_offset || !charge(note.p_filesz))
      continue;
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
      if (auto id = build_id_in_notes(section_data(info, true, kMaxNoteBytes))) {
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
    Elf_Data* data = section_data(info, true);
    size_t entry_size = gelf_fsize(e, ELF_T_DYN, 1, EV_CURRENT);
    if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
      return false;
    if (!strings_ready(info.link))
      return true;
    size_t count = data->d_size / entry_size;
    for (size_t i = 0; i < count; ++i) {
      GElf_Dyn dyn;
      if (gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL)
        break;
      if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_SONAME)
        continue;
      if (dyn.d_tag == DT_NEEDED && needed.size() >= kMaxNeeded)
        continue;
      const char* name = elf_strptr(e, info.link, dyn.d_un.d_val);
      if (name == nullptr || ::strnlen(name, kMaxDynamicNameBytes) == kMaxDynamicNameBytes)
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
  if (dynamic.p_filesz > kMaxSectionBytes || dynamic.p_offset > file_size ||
      dynamic.p_filesz > file_size - dynamic.p_offset || !charge(dynamic.p_filesz))
    return;
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
    else if (dyn.d_tag == DT_NEEDED && needed_offsets.size() < kMaxNeeded)
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
  if (!strtab_offset || *strtab_offset > file_size || strtab_size > file_size - *strtab_offset ||
      strtab_size > kMaxSectionBytes || !charge(strtab_size))
    return;
  Elf_Data* strings =
      elf_getdata_rawchunk(e, static_cast<int64_t>(*strtab_offset), strtab_size, ELF_T_BYTE);
  if (strings == nullptr || strings->d_buf == nullptr)
    return;
  const auto* base = static_cast<const char*>(strings->d_buf);
  auto string_at = [&](uint64_t offset) -> std::optional<std::string> {
    if (offset >= strings->d_size)
      return std::nullopt;
    const void* nul = std::memchr(
        base + offset, '\0', std::min<uint64_t>(strings->d_size - offset, kMaxDynamicNameBytes));
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

std::string ElfFile::State::admit_section(const SectionInfo& info, uint64_t limit) {
  const Section& section = info.section;
  if (section.type == SHT_NOBITS)
    return fmt::format("section {} of {} has no contents in the file (SHT_NOBITS)", section.name,
                       path);
  if (section.offset > file_size || section.size > file_size - section.offset)
    return fmt::format("section {} of {} extends past the end of the file; the file is truncated",
                       section.name, path);
  if (section.size > limit)
    return fmt::format(
        "section {} of {} is {} bytes, more than the {} KiB krait reads from one section; the "
        "file is corrupt or hostile",
        section.name, path, section.size, limit >> 10);
  const auto at = static_cast<size_t>(&info - sections.data());
  const bool ours = at < section_read.size();
  if (ours && section_read[at])
    return "";
  if (!charge(section.size))
    return fmt::format(
        "reading section {} of {} ({} bytes) would take krait past the {} MiB it reads from one "
        "file; the file is corrupt or hostile",
        section.name, path, section.size, kMaxBytesPerFile >> 20);
  if (ours)
    section_read[at] = true;
  return "";
}

Elf_Data* ElfFile::State::section_data(const SectionInfo& info, bool converted, uint64_t limit) {
  if (!admit_section(info, limit).empty())
    return nullptr;
  Elf_Scn* scn = elf_getscn(elf.get(), info.index);
  if (scn == nullptr)
    return nullptr;
  return converted ? elf_getdata(scn, nullptr) : elf_rawdata(scn, nullptr);
}

bool ElfFile::State::strings_ready(size_t index) {
  // libelf's elf_strptr() refuses anything but SHT_STRTAB as well.
  const SectionInfo* info = section_at(index);
  if (info == nullptr || info->section.type != SHT_STRTAB)
    return false;
  Elf_Data* data = section_data(*info, false);
  return data != nullptr && data->d_buf != nullptr;
}

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

ElfFile::ElfFile(std::unique_ptr<State> state) : state_(std::move(state)) {}
ElfFile::ElfFile(ElfFile&&) noexcept = default;
ElfFile& ElfFile::operator=(ElfFile&&) noexcept = default;
ElfFile::~ElfFile() = default;

Result<ElfFile> ElfFile::open(const std::string& path) {
  // O_NONBLOCK so that opening a FIFO cannot block; from_fd() refuses it.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  return from_fd(std::move(fd), path);
}

Result<ElfFile> ElfFile::from_fd(UniqueFd fd, std::string name) {
  if (!libelf_ready())
    return make_error("libelf refused to initialise ({}); the installed libelf is incompatible",
                      libelf_error());
  if (!fd.valid())
    return make_error("no open descriptor for {}", name);
  auto checked = check_file(fd.get(), name);
  if (!checked)
    return checked.error();
  KRAIT_TRY(check_header_counts(fd.get(), name));
  auto state = std::make_unique<State>();
  state->path = std::move(name);
  state->fd = std::move(fd);
  state->file_id = checked->id;
  state->file_size = checked->id.size;
  // ELF_C_READ (pread on demand) rather than ELF_C_READ_MMAP: a mapping of a
  // file that shrinks while we hold it would raise SIGBUS.
  state->elf.reset(elf_begin(state->fd.get(), ELF_C_READ, nullptr));
  if (!state->elf)
    return make_error("{} is not a readable ELF file: {}", state->path, libelf_error());
  KRAIT_TRY(state->read_headers());
  return ElfFile(std::move(state));
}

const std::string& ElfFile::path() const {
  return state_->path;
}
int ElfFile::fd() const {
  return state_->fd.get();
}
const FileId& ElfFile::file_id() const {
  return state_->file_id;
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
  if (info->section.size == 0 && info->section.type != SHT_NOBITS &&
      info->section.offset <= s.file_size)
    return std::span<const uint8_t>();
  std::lock_guard lock(s.elf_mutex);
  if (std::string refusal = s.admit_section(*info, kMaxSectionBytes); !refusal.empty())
    return Error{std::move(refusal)};
  Elf_Data* data = s.section_data(*info, false);
  if (data == nullptr || data->d_buf == nullptr)
    return make_error("cannot read section {} of {}: {}", name, s.path, libelf_error());
  return std::span<const uint8_t>(static_cast<const uint8_t*>(data->d_buf), data->d_size);
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
