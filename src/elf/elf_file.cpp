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

#include "elf/elf_file_state.h"
#include "util/unique_fd.h"

namespace krait::elf {
namespace {

// Section names are short (".text", ".debug_info"); a longer one is garbage.
constexpr size_t kMaxSectionNameBytes = 1024;

bool libelf_ready() {
  // elf_version() must run once per process before elf_begin().
  static const bool ready = elf_version(EV_CURRENT) != EV_NONE;
  return ready;
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

Result<void> ElfFile::State::read_headers() {
  KRAIT_TRY(check_elf_header());
  std::vector<GElf_Phdr> notes;
  std::optional<GElf_Phdr> dynamic;
  KRAIT_TRY(read_program_headers(notes, dynamic));
  read_section_headers();
  read_build_id_and_dynamic(notes, dynamic);
  read_debuglink();
  return {};
}

Result<void> ElfFile::State::check_elf_header() {
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
  return {};
}

Result<void> ElfFile::State::read_program_headers(std::vector<GElf_Phdr>& notes,
                                                  std::optional<GElf_Phdr>& dynamic) {
  Elf* e = elf.get();
  size_t phnum = 0;
  if (elf_getphdrnum(e, &phnum) != 0)
    return make_error("{} has a broken program header table: {}", path, libelf_error());
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
  return {};
}

void ElfFile::State::read_section_headers() {
  Elf* e = elf.get();
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
}

void ElfFile::State::read_debuglink() {
  if (const SectionInfo* info = section(".gnu_debuglink")) {
    Elf_Data* data = section_data(*info, false, kMaxNoteBytes);
    if (data != nullptr && data->d_buf != nullptr && data->d_size > 0) {
      const auto* begin = static_cast<const char*>(data->d_buf);
      const void* nul = std::memchr(begin, '\0', data->d_size);
      if (nul != nullptr && nul != begin)
        debuglink = std::string(begin, static_cast<const char*>(nul));
    }
  }
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

}  // namespace krait::elf
