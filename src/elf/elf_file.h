// Read-only view of one x86_64 ELF64 executable or shared object on disk.
//
// ElfFile answers the questions the profiler asks of a mapped binary: symbols
// (_PyRuntime, Py_Version, ...), sections (.PyRuntime, .rodata), PT_LOAD
// segments (to turn a file address into a process address, see
// proc/maps.h), the GNU build-id, DT_NEEDED / DT_SONAME, .gnu_debuglink, raw
// bytes at a file virtual address, and the function containing an address.
//
// Inputs are untrusted: any file a process maps, possibly truncated,
// sparse or garbage. Every malformed input yields an Error (from open() or
// from the accessor) or an empty answer; no input crashes, hangs or makes
// the object allocate more than the limits below. FIFOs, devices,
// directories, files on FUSE and files larger than kMaxFileBytes are refused
// before anything is read.
//
// Limits (sizes come from the file, so each is checked before anything is
// allocated): a file of at most kMaxFileBytes; at most kMaxSections section
// headers and kMaxProgramHeaders program headers; no section (symbol and
// string tables, relocations, .dynamic, .rodata, .eh_frame, ...) larger than
// kMaxSectionBytes is read into memory; notes and .gnu_debuglink are read
// only up to kMaxNoteBytes; the names copied into the symbol index total at
// most twice their string table plus kMaxSymbolNameSlack; and all of one
// file's reads and indexes together at most kMaxBytesPerFile. Whatever
// exceeds a limit is an Error naming it (section_bytes) or is left out of
// the answer (a symbol table too large is not indexed).
//
// Ownership: an ElfFile owns its file descriptor and libelf handle and keeps
// the file open for its whole life (so data is read lazily, and a deleted
// file opened through /proc/PID/map_files stays readable). The file is read
// through that one descriptor only (pread): nothing reopens it by path.
// Move-only; a moved-from ElfFile may only be destroyed or assigned to.
//
// Threading: all const member functions may be called concurrently from any
// number of threads on one ElfFile (the symbol and function indexes are built
// once, under std::call_once; libelf is only touched under an internal
// mutex). Headers, segments, sections, build-id, DT_NEEDED, DT_SONAME and
// the debuglink are read eagerly by open() / from_fd(); the symbol indexes
// on the first find_symbol() / function_at() call, or by index_now().
//
// Addresses are the file's own virtual addresses (st_value, p_vaddr,
// sh_addr), never process addresses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::elf {

// Limits on what is read from one file (see the contract above).
inline constexpr uint64_t kMaxFileBytes = uint64_t{4} << 30;  // the largest file opened
inline constexpr uint64_t kMaxSectionBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMaxNoteBytes = uint64_t{1} << 20;
inline constexpr uint64_t kMaxSymbolNameSlack = uint64_t{1} << 20;
inline constexpr uint64_t kMaxBytesPerFile = uint64_t{512} << 20;
// Linked files have a few dozen sections and a dozen program headers; each
// section costs libelf and krait a few hundred bytes, kept while the file is.
inline constexpr size_t kMaxSections = size_t{1} << 12;
inline constexpr size_t kMaxProgramHeaders = size_t{1} << 10;

// statfs f_type of FUSE (fuseblk included): a file there is served by a
// user-space process that can stall any read forever.
inline constexpr int64_t kFuseSuperMagic = 0x65735546;
// statfs f_type of btrfs, whose stat() reports a subvolume's device number
// where /proc/PID/maps prints the filesystem's.
inline constexpr int64_t kBtrfsSuperMagic = 0x9123683e;

// What identifies the contents of an opened file: the device and inode that
// name it, and the size and modification time that change when it is
// rewritten in place. Taken from the open descriptor, never from a path.
struct FileId {
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;

  bool operator==(const FileId&) const = default;
  auto operator<=>(const FileId&) const = default;
};

// What check_file() found about an open descriptor.
struct CheckedFile {
  FileId id;
  int64_t fs_magic = 0;  // statfs f_type of its filesystem
};

// Checks that the open descriptor `fd` (O_PATH descriptors included) is a
// file krait may read: a regular, non-empty file of at most kMaxFileBytes,
// not on FUSE. Uses statx with AT_STATX_DONT_SYNC (no round trip to a
// network or FUSE server for the attributes) and fstatfs. `name` is for
// messages. Errors say what the file is and why it is refused.
Result<CheckedFile> check_file(int fd, std::string_view name);

// The FileId of an open descriptor as it is now (statx, AT_STATX_DONT_SYNC).
Result<FileId> file_id_of(int fd);

struct Symbol {
  std::string name;
  uint64_t value = 0;  // st_value: a virtual address (offset in PT_TLS for STT_TLS)
  uint64_t size = 0;
  uint8_t type = 0;  // STT_*
  uint8_t bind = 0;  // STB_*
};

struct Section {
  std::string name;  // "" when the section-name table is missing or broken
  uint64_t addr = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t type = 0;  // SHT_*
  uint64_t entsize = 0;
};

struct LoadSegment {
  uint64_t vaddr = 0, offset = 0, filesz = 0, memsz = 0, align = 0;
  uint32_t flags = 0;  // PF_R | PF_W | PF_X
};

class ElfFile {
 public:
  // Opens and validates `path`: a regular, non-empty ELF64 little-endian
  // x86_64 (EM_X86_64) file of type ET_EXEC or ET_DYN. Errors name the path
  // and what is wrong (not ELF, 32-bit, other machine, ET_REL/ET_CORE, ...).
  // Opens with O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC and follows
  // symbolic links: for tools, tests and the operator's own files (debug
  // roots). Files of a profiled process are opened by proc::open_mapped_elf
  // or another careful opener and handed to from_fd().
  static Result<ElfFile> open(const std::string& path);

  // The same over a descriptor the caller opened (the ElfFile takes it and
  // reads only through it, with pread). It is checked with check_file()
  // before anything is read. `name` is what path() returns and what errors
  // name: the path it was opened through, for messages only.
  static Result<ElfFile> from_fd(UniqueFd fd, std::string name);

  ElfFile(ElfFile&&) noexcept;
  ElfFile& operator=(ElfFile&&) noexcept;
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;
  ~ElfFile();

  // The name given when opened (for messages; never reopened).
  const std::string& path() const;
  // The descriptor the file is read through (read it with pread only; do not
  // close it or move its offset).
  int fd() const;
  // The identity of the file, from its descriptor when it was opened.
  const FileId& file_id() const;
  // ET_DYN: a PIE executable or a shared object (loaded at a bias).
  bool is_dyn() const;

  // The defined symbol named `name` (st_shndx != SHN_UNDEF; section and file
  // symbols are not indexed). .dynsym is searched first, then .symtab. Among
  // several definitions in one table, a global one wins over a weak one over
  // a local one, then the first in table order. O(log n) after the first
  // call, which indexes both tables. Names are matched as stored: GNU ld
  // writes versioned names into .symtab ("stdout@GLIBC_2.2.5"), while
  // .dynsym names carry no version.
  std::optional<Symbol> find_symbol(std::string_view name) const;

  // The first section named `name`.
  std::optional<Section> find_section(std::string_view name) const;

  // PT_LOAD program headers in file order. Their file ranges are not
  // checked against the file's size here; read_vaddr() does that.
  const std::vector<LoadSegment>& load_segments() const;

  // Lowercase hex of the NT_GNU_BUILD_ID note (from PT_NOTE segments, else
  // SHT_NOTE sections); "" when there is none.
  const std::string& build_id() const;
  // DT_NEEDED entries in order (from the SHT_DYNAMIC section, or from
  // PT_DYNAMIC when the section headers are gone); empty for static files.
  const std::vector<std::string>& needed() const;
  // DT_SONAME, or "".
  const std::string& soname() const;
  // True when the file has a non-empty SHT_SYMTAB (false once stripped).
  bool has_symtab() const;
  // The file name recorded in .gnu_debuglink (not a path), if any.
  std::optional<std::string> debuglink() const;

  // `len` bytes at file virtual address `vaddr`. The whole range must lie in
  // the file-backed part (p_filesz) of one PT_LOAD segment and inside the
  // file; otherwise an Error (e.g. for .bss, or a truncated file).
  Result<std::vector<uint8_t>> read_vaddr(uint64_t vaddr, size_t len) const;

  // The raw (on-disk, not decompressed) contents of the first section named
  // `name`. The span stays valid while this ElfFile lives. Error for a
  // missing section, SHT_NOBITS, contents outside the file, a section larger
  // than kMaxSectionBytes, or one that would take the file past
  // kMaxBytesPerFile; nothing is allocated for a section refused.
  Result<std::span<const uint8_t>> section_bytes(std::string_view name) const;

  // Builds the symbol and function indexes now, on the calling thread,
  // instead of on the first find_symbol() / function_at() call.
  void index_now() const;

  // The function symbol whose [value, value + size) contains `vaddr`, or
  // nullptr. Functions are the STT_FUNC / STT_GNU_IFUNC symbols with a
  // non-zero size from .symtab, or from .dynsym when .symtab has none.
  // Where symbols share an address, a global one is preferred, then the
  // larger. The pointer stays valid while this ElfFile lives.
  const Symbol* function_at(uint64_t vaddr) const;

  // The function that the PLT stub at `vaddr` jumps to ("read"), when
  // `vaddr` lies in a stub of .plt, .plt.sec or .plt.got: stubs have no
  // symbols, yet a sample in one says which library call is on its way.
  // Found from the stub's `jmp *slot(%rip)` and the dynamic relocation
  // (JUMP_SLOT or GLOB_DAT) that fills that GOT slot; nullopt for PLT0, a
  // lazy-binding stub that does not jump through its slot, or an address
  // outside the PLT.
  std::optional<std::string> plt_target(uint64_t vaddr) const;

 private:
  struct State;
  explicit ElfFile(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace krait::elf
