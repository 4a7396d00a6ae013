// One executable file as mapped by processes: its ELF view, its separate
// debug file, its unwind tables, and its load image as the unwinder reads it.
// Shared by every process that maps the file (see ModuleCache), so a library
// mapped by a thousand processes is opened and indexed once.
//
// Separate debug files are looked up once, when the ModuleFile is created
// (the process that mapped the file may be gone later), in this order:
//   1. <root>/.build-id/<first two hex digits>/<rest>.debug, for each root;
//   2. the .gnu_debuglink name in the file's own directory, in its .debug/
//      subdirectory, and under each root followed by the file's directory as
//      the process names it.
// A candidate is accepted when its build-id equals the file's, or, when the
// file has no build-id, when its CRC-32 equals the one in .gnu_debuglink.
//
// Unwind tables are indexed on first use (find_fde, has_unwind_info,
// read_image): .eh_frame of the file, then .debug_frame of the file, else of
// the debug file (see CfiTable); addresses .eh_frame does not cover are
// looked up in .debug_frame. A file without either has no unwind
// information. Files without section headers (sstrip) have none either:
// PT_GNU_EH_FRAME is not read.
//
// Ownership: a ModuleFile owns its ElfFile(s) and keeps a descriptor of the
// file (and of the debug file) open for its whole life, so the symbolizer can
// reopen it through /proc/self/fd even after the mapping process exited or
// the file was deleted. Held through std::shared_ptr<const ModuleFile>.
// Memory: the .eh_frame section (kept by the ElfFile) plus 28 bytes per FDE
// (libpython: ~0.5 MiB); other bytes are read from the file when needed.
//
// Threading: every member function is const and may be called from any
// number of threads at once; lazy indexes are built under std::call_once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "elf/elf_file.h"
#include "unwind/cfi_table.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::unwind {

struct ModuleFileOptions {
  // Roots of separate debug file trees, searched in order.
  std::vector<std::string> debug_roots = {"/usr/lib/debug"};
};

// Where to look for a file's debuglink target: `dir` is the directory that
// holds the file as this process can open it (e.g. "/proc/42/root/usr/lib"),
// `namespace_dir` the same directory as the mapping process names it
// ("/usr/lib"), appended to each debug root. Either may be empty.
struct DebugLinkDirs {
  std::string dir;
  std::string namespace_dir;
};

// The FDE covering an address and the table that holds it.
struct FdeRef {
  const CfiTable* table = nullptr;
  const FdeEntry* fde = nullptr;
  explicit operator bool() const { return fde != nullptr; }
};

class ModuleFile {
  // Lets the factories use std::make_shared while no one else can construct one.
  struct Key {
    explicit Key() = default;
  };

 public:
  // Builds a ModuleFile from an opened ElfFile and a descriptor `fd` of the
  // same file (fstat identifies it). Looks for the debug file (see above).
  static Result<std::shared_ptr<const ModuleFile>> create(elf::ElfFile elf, UniqueFd fd,
                                                          const DebugLinkDirs& dirs,
                                                          const ModuleFileOptions& options);
  // Opens `path` in this process's mount namespace (tools, tests).
  static Result<std::shared_ptr<const ModuleFile>> open(const std::string& path,
                                                        const ModuleFileOptions& options = {});
  // An in-memory ELF image (the vDSO): copied into a memfd so that it can
  // be read like any file.
  static Result<std::shared_ptr<const ModuleFile>> from_image(std::span<const uint8_t> image,
                                                              std::string name,
                                                              const ModuleFileOptions& options);

  ModuleFile(Key, elf::ElfFile elf, UniqueFd fd, std::string identity);
  ModuleFile(const ModuleFile&) = delete;
  ModuleFile& operator=(const ModuleFile&) = delete;
  ~ModuleFile();

  // Unique among all ModuleFiles created by this process (never reused).
  uint64_t serial() const { return serial_; }
  // "build-id:<hex>" when the file has a build-id, else
  // "file:<dev>:<inode>:<size>:<mtime ns>": equal identities mean equal
  // contents, for caches that outlive this object.
  const std::string& identity() const { return identity_; }
  const std::string& build_id() const { return elf_.build_id(); }
  // The path the file was opened through.
  const std::string& path() const { return elf_.path(); }
  const elf::ElfFile& elf() const { return elf_; }
  // An open descriptor of the file (read-only; do not close or seek it:
  // read with pread, or open /proc/self/fd/<fd>).
  int fd() const { return fd_.get(); }

  // The separate debug file, or nullptr when none was found.
  const elf::ElfFile* debug_elf() const { return debug_ ? &debug_->elf : nullptr; }
  int debug_fd() const { return debug_ ? debug_->fd.get() : -1; }

  // The FDE covering file virtual address `file_pc` (.eh_frame first, then
  // .debug_frame). Indexes the tables on the first call.
  FdeRef find_fde(uint64_t file_pc) const;
  // Whether any unwind table could be indexed.
  bool has_unwind_info() const;

  // Copies `len` bytes of the file's load image at file virtual address
  // `vaddr` into `out`: file contents inside PT_LOAD segments, zeros in
  // their zero-filled tails (.bss). False when the first byte lies in no
  // PT_LOAD segment or the file cannot be read; bytes past the end of the
  // segment are zero-filled. Reads .eh_frame from memory, anything else
  // from the file (a pread).
  bool read_image(uint64_t vaddr, void* out, size_t len) const;

 private:
  struct DebugFile {
    elf::ElfFile elf;
    UniqueFd fd;
  };
  struct Tables {
    std::optional<CfiTable> eh_frame;
    std::optional<CfiTable> debug_frame;
  };

  void index_tables() const;

  uint64_t serial_;
  elf::ElfFile elf_;
  UniqueFd fd_;
  std::string identity_;
  std::unique_ptr<DebugFile> debug_;

  mutable std::once_flag tables_once_;
  mutable Tables tables_;
  mutable std::span<const uint8_t> eh_frame_bytes_;  // for read_image
  mutable uint64_t eh_frame_vaddr_ = 0;
};

// Finds the separate debug file of `elf` (see the order above); nullopt when
// there is none. Exposed for tests and tools.
std::optional<std::string> find_debug_file(const elf::ElfFile& elf, const DebugLinkDirs& dirs,
                                           const ModuleFileOptions& options);

}  // namespace krait::unwind
