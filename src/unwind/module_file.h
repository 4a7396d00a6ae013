// One executable file as mapped by processes: its ELF view, its separate
// debug file, its unwind tables, and its load image as the unwinder reads it.
// Shared by every process that maps that very file (see ModuleCache), so a
// library mapped by a thousand processes is opened and indexed once.
//
// Identity: a ModuleFile is the file it was opened as, identified by the
// device, inode, size and modification time of its verified descriptor
// (elf::FileId), with the build-id as an extra check (identity()). A
// build-id is what a file claims: two files claiming one are never taken
// for each other.
//
// Separate debug files are looked up once, when the ModuleFile is created
// (the process that mapped the file may be gone later), in this order:
//   1. <root>/.build-id/<first two hex digits>/<rest>.debug, for each debug
//      root (the operator's files: opened with elf::ElfFile::open, which
//      follows links but is non-blocking, regular files only, size-capped);
//   2. the .gnu_debuglink name in the file's own directory and in its
//      .debug/ subdirectory (chosen by whoever controls that directory:
//      opened with proc::open_in_root inside the mapping process's root);
//   3. under each debug root followed by the file's directory as the
//      process names it (the operator's files again).
// A candidate is accepted when its build-id equals the file's, or, when the
// file has no build-id, when its CRC-32 equals the one in .gnu_debuglink
// (only for candidates of at most kMaxCrcFileBytes). Every candidate is
// opened once and read only through that descriptor; the accepted one is
// kept open.
//
// Unwind tables: .eh_frame of the file, then .debug_frame of the file, else
// of the debug file (see CfiTable); addresses .eh_frame does not cover are
// looked up in .debug_frame. A compressed .debug_frame (SHF_COMPRESSED with
// zlib) is inflated when it claims at most kMaxDebugFrameBytes and no more
// than kMaxCompressionRatio times its compressed size. Files without section
// headers (sstrip) have no unwind information: PT_GNU_EH_FRAME is not read.
// With ModuleFileOptions::index_eagerly (the default), create() indexes the
// unwind tables and the ELF function indexes of the file and its debug file
// on the calling thread, so the thread that later unwinds and symbolizes
// parses nothing; otherwise they are indexed on first use (find_fde,
// has_unwind_info, read_image). Bytes of the image (read_image) are always
// read lazily.
//
// Ownership: a ModuleFile owns its ElfFile(s), whose descriptors stay open
// for its whole life, so it stays readable after the mapping process exited
// or the file was deleted. Held through std::shared_ptr<const ModuleFile>.
// Memory: the .eh_frame section (kept by the ElfFile) plus 28 bytes per FDE
// (libpython: ~0.5 MiB); other bytes are read from the file when needed;
// every section read is bounded by the limits of elf::ElfFile.
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

// The largest .debug_frame inflated from a compressed section, and the
// most a compressed section may claim to grow (zlib cannot exceed about
// 1032:1; a header that claims more lies).
inline constexpr uint64_t kMaxDebugFrameBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMaxCompressionRatio = 1032;
// The largest debuglink candidate whose CRC-32 is computed (files without
// a build-id only).
inline constexpr uint64_t kMaxCrcFileBytes = uint64_t{256} << 20;

struct ModuleFileOptions {
  // Roots of separate debug file trees, searched in order.
  std::vector<std::string> debug_roots = {"/usr/lib/debug"};
  // Index unwind tables and ELF functions in create(), on the caller's
  // thread (see above).
  bool index_eagerly = true;
};

// Where to look for a file's debuglink target: `dir` is the directory that
// holds the file as the mapping process names it ("/usr/lib"), resolved
// inside `root_fd`, an O_PATH descriptor of that process's root (borrowed
// for the call; -1: this process's root). With `search_beside` false (a
// deleted file, a root that could not be opened) only the debug roots are
// searched. `dir` may be empty: then only build-ids are looked up.
struct DebugLinkDirs {
  int root_fd = -1;
  std::string dir;
  bool search_beside = true;
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
  // Builds a ModuleFile from an ElfFile opened the careful way (see
  // proc::open_mapped_elf); the ElfFile's descriptor is the only one used
  // to read the file. Looks for the debug file (see above) and, with
  // options.index_eagerly, indexes.
  static Result<std::shared_ptr<const ModuleFile>> create(elf::ElfFile elf,
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

  ModuleFile(Key, elf::ElfFile elf, std::string identity);
  ModuleFile(const ModuleFile&) = delete;
  ModuleFile& operator=(const ModuleFile&) = delete;
  ~ModuleFile();

  // Unique among all ModuleFiles created by this process (never reused).
  uint64_t serial() const { return serial_; }
  // "file:<major>:<minor>:<inode>:<size>:<mtime ns>/<build-id or "-">":
  // the verified identity of the file (see above), for caches that outlive
  // this object. Equal identities mean the same file with the same claimed
  // build-id; a copy of a file at another inode has another identity.
  const std::string& identity() const { return identity_; }
  // The identity of the opened file, from its descriptor.
  const elf::FileId& file_id() const { return elf_.file_id(); }
  const std::string& build_id() const { return elf_.build_id(); }
  // The path the file was opened through (for messages; never reopened).
  const std::string& path() const { return elf_.path(); }
  const elf::ElfFile& elf() const { return elf_; }
  // The open descriptor of the file (read-only; do not close or seek it:
  // read with pread, or duplicate it).
  int fd() const { return elf_.fd(); }

  // The separate debug file, or nullptr when none was found.
  const elf::ElfFile* debug_elf() const { return debug_ ? &*debug_ : nullptr; }
  int debug_fd() const { return debug_ ? debug_->fd() : -1; }

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
  struct Tables {
    std::optional<CfiTable> eh_frame;
    std::optional<CfiTable> debug_frame;
  };

  void index_tables() const;

  uint64_t serial_;
  elf::ElfFile elf_;
  std::string identity_;
  std::optional<elf::ElfFile> debug_;

  mutable std::once_flag tables_once_;
  mutable Tables tables_;
  mutable std::span<const uint8_t> eh_frame_bytes_;  // for read_image
  mutable uint64_t eh_frame_vaddr_ = 0;
};

// Finds and opens the separate debug file of `elf` (see the order above);
// nullopt when there is none. Exposed for tests and tools.
std::optional<elf::ElfFile> find_debug_file(const elf::ElfFile& elf, const DebugLinkDirs& dirs,
                                            const ModuleFileOptions& options);

}  // namespace krait::unwind
