// Finding CPython in a process: which mapped file is the interpreter (the
// python executable, a libpython, or a program that embeds either), which
// version it is, and where its key symbols are.
//
// ImageCache remembers the analysis per file (device + inode), so a
// thousand processes of one interpreter parse its ELF once; files that are
// not Python are remembered as such. Bounded (least recently used first):
// a process can map as many files named like python as it likes.
// Thread-safe: workers attaching different processes share one; no lock is
// held while a file is read (two workers may analyse one new file at once,
// and the first result is kept).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "elf/elf_file.h"
#include "proc/maps.h"
#include "python/offsets/version.h"
#include "util/result.h"

namespace krait::python {

// What an ELF file tells about the interpreter it contains.
struct InterpreterImage {
  std::string path;  // as the process maps it
  std::string build_id;
  bool shared_library = false;  // libpython*.so rather than an executable
  bool stripped = false;        // no .symtab
  PyVersion version;
  uint64_t runtime_vaddr = 0;         // _PyRuntime (3.7+)
  uint64_t interp_head_vaddr = 0;     // interp_head (2.7, 3.6): holds the first interpreter
  uint64_t code_type_vaddr = 0;       // PyCode_Type
  uint64_t current_tstate_vaddr = 0;  // _PyThreadState_Current (2.7, 3.6): the GIL holder
  std::shared_ptr<const elf::ElfFile> elf;
};

// nullopt: not a CPython image. An Error: it is one, but krait cannot use
// it (the message says why, e.g. the version cannot be told).
Result<std::optional<InterpreterImage>> analyze_image(std::shared_ptr<const elf::ElfFile> elf,
                                                      const std::string& mapped_path);

// An interpreter image placed in one process.
struct ProcessInterpreter {
  InterpreterImage image;
  uint64_t load_bias = 0;
  uint64_t runtime_addr = 0;
  uint64_t interp_head_var = 0;  // 2.7/3.6: address of interp_head
  uint64_t code_type_addr = 0;
  uint64_t current_tstate_addr = 0;  // 2.7/3.6
};

enum class FindStatus : uint8_t { kFound, kNotYet, kNotPython, kGone, kUnusable };

struct FindResult {
  FindStatus status = FindStatus::kNotPython;
  std::optional<ProcessInterpreter> interpreter;
  std::string reason;  // kNotYet, kGone, kUnusable: why
};

class ImageCache {
 public:
  static constexpr size_t kMaxImages = 1024;
  // Candidate files looked at per process (the executable and those named
  // like python): a process mapping thousands of them is not Python-like.
  static constexpr size_t kMaxCandidates = 16;

  // Finds the interpreter of process `pid` from its memory maps. kNotYet
  // when the executable needs a libpython the loader has not mapped yet.
  FindResult find(pid_t pid);
  size_t size() const;

 private:
  using Key = std::tuple<uint32_t, uint32_t, uint64_t>;  // dev major, minor, inode
  struct Entry {
    std::optional<InterpreterImage> image;  // nullopt: not Python
    std::string error;                      // Python, but unusable
    bool needs_libpython = false;
    uint64_t last_used = 0;
  };
  std::shared_ptr<const Entry> analyze(pid_t pid, const proc::MapEntry& map);
  mutable std::mutex mutex_;
  std::map<Key, std::shared_ptr<Entry>> images_;
  uint64_t clock_ = 0;
};

}  // namespace krait::python
