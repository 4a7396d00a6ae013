// Names native frames: function, source file and line, with the functions
// inlined at an address, from a ModuleFile's ELF symbols and DWARF.
//
// Sources, in order of preference:
// - DWARF (from the separate debug file when there is one, else the file):
//   the inlined call chain and every position in it. Function names are the
//   demangled DW_AT_linkage_name, else DW_AT_name; for the outermost
//   function without a linkage name, a mangled ELF symbol covering the
//   address is demangled instead (static C++ functions:
//   "(anonymous namespace)::f(int)").
// - ELF symbols when DWARF does not cover the address: the file's .symtab,
//   the debug file's .symtab, then .dynsym. Split parts keep their suffix
//   ("_PyEval_EvalFrameDefault.cold", demangled C++ as "f() [clone .cold]").
//   In a stripped file, a cold part without its own symbol is named after
//   the function whose FDE precedes it (see split_from in the .cpp).
// - A PLT stub, which no symbol covers, is named after the call it makes
//   ("read@plt", elf::ElfFile::plt_target).
// An address nothing names gives one frame with an empty function name.
// Debug files that dwz split (.gnu_debugaltlink, as Debian's -dbgsym
// packages are) are read as far as libdw follows the link on its own.
//
// Return addresses: pass pc - 1 for every frame but the sampled one (and
// the one interrupted by a signal), see unwind::UnwindResult::lookup_pc; a
// return address can belong to the next function when a call is the last
// instruction of its caller.
//
// Caching: per verified file (ModuleFile::identity: the device, inode, size
// and mtime of the opened descriptor, with the build-id as an extra check),
// so a library shared by many processes is parsed once; and per (file,
// address), so a hot frame is named once. Never per build-id alone: a file
// that claims another's build-id keeps its own names, and copies of one
// library at different inodes (containers) are parsed once each. Both
// levels are bounded (NativeSymbolizerOptions): the least recently used
// file is closed, and a file's least recently used address is dropped.
//
// Threading: all member functions may be called concurrently. Lookups of
// different files run in parallel; lookups of one file are serialised on
// that file (libdw handles are not thread-safe).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "unwind/module_file.h"
#include "util/lru_cache.h"

namespace krait::symbolize {

struct NativeFrame {
  std::string function;     // demangled; "" when nothing names the address
  std::string system_name;  // mangled (linkage or ELF symbol name); == function for C
  std::string file;         // source file, "" without DWARF line information
  int line = 0;             // 0 when unknown
  bool inlined = false;     // inlined into the next frame of the same address

  bool operator==(const NativeFrame&) const = default;
};

// Innermost first.
using NativeFrames = std::vector<NativeFrame>;

struct NativeSymbolizerOptions {
  size_t max_files = 1024;                  // files with open DWARF and caches
  size_t max_addresses_per_file = 1 << 16;  // cached addresses per file
  // Where a .gnu_debugaltlink file (dwz) may be found (see DwarfFile).
  std::vector<std::string> debug_roots = {"/usr/lib/debug"};
};

struct NativeSymbolizerStats {
  uint64_t lookups = 0;
  uint64_t address_cache_hits = 0;
  uint64_t files_opened = 0;
  uint64_t files_evicted = 0;
  // The per-file address caches, summed over the files (hits are
  // address_cache_hits; entries are those of the files held now).
  CacheStats address_cache;
};

class NativeSymbolizer {
 public:
  explicit NativeSymbolizer(NativeSymbolizerOptions options = {});
  NativeSymbolizer(const NativeSymbolizer&) = delete;
  NativeSymbolizer& operator=(const NativeSymbolizer&) = delete;
  ~NativeSymbolizer();

  // The frames at file virtual address `file_vaddr` of `file` (never
  // empty), innermost first.
  NativeFrames symbolize(const unwind::ModuleFile& file, uint64_t file_vaddr);
  // The same without copying: the cached, immutable result (never null).
  std::shared_ptr<const NativeFrames> lookup(const unwind::ModuleFile& file, uint64_t file_vaddr);

  // Distinct file identities currently held.
  size_t file_count() const;
  NativeSymbolizerStats stats() const;

 private:
  struct FileState;
  std::shared_ptr<FileState> file_state(const unwind::ModuleFile& file);
  NativeFrames resolve(FileState& state, const unwind::ModuleFile& file, uint64_t vaddr);

  struct Shared;
  std::unique_ptr<Shared> shared_;
};

}  // namespace krait::symbolize
