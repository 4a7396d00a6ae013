// The executable mappings of one process at one moment, each tied to its
// shared ModuleFile and load bias: what the unwinder and the native
// symbolizer need to turn a process address into (file, file address).
//
// Built from /proc/PID/maps (or from saved maps, for tests and offline
// analysis). A process that maps or unmaps code later needs a new
// ProcessModules; this one keeps describing the old layout.
//
// Cost: the process chooses how many mappings it has (up to vm.max_map_count,
// 65,530 by default, all of one file if it likes). Only the first
// kMaxMappingsPerProcess entries of its map are considered (problems() says
// how many more were skipped); they are grouped by file once (a sort), each
// file is asked of the ModuleCache once and its load bias computed once, so
// building is O(n log n) in the mappings.
//
// Ownership: holds shared_ptrs to its ModuleFiles, so they stay alive while
// it does. Immutable after construction: safe to read from any number of
// threads. Movable and cheap to share by pointer.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "proc/maps.h"
#include "unwind/module_cache.h"
#include "unwind/module_file.h"
#include "util/result.h"

namespace krait::unwind {

// The most entries of one process's memory map that are considered.
inline constexpr size_t kMaxMappingsPerProcess = size_t{1} << 16;

// One executable mapping of a file.
struct Module {
  uint64_t start = 0, end = 0;  // [start, end): the executable mapping in the process
  uint64_t bias = 0;            // process address = file virtual address + bias
  std::shared_ptr<const ModuleFile> file;
  std::string path;  // as the process maps it ("[vdso]" for the vDSO)

  uint64_t file_address(uint64_t address) const { return address - bias; }
};

// A mapping that could not be turned into a Module, and why.
struct ModuleProblem {
  uint64_t start = 0, end = 0;
  std::string path;
  std::string reason;
};

class ProcessModules {
 public:
  ProcessModules() = default;

  // Reads /proc/PID/maps and resolves every executable file mapping (and
  // the vDSO) through `cache`. Error only when the maps cannot be read;
  // mappings whose file cannot be opened are listed in problems(), and so
  // are mappings past the first kMaxMappingsPerProcess (one entry).
  static Result<ProcessModules> load(int pid, ModuleCache& cache);

  // The same from maps already read. pid 0: open paths in this mount
  // namespace (see ModuleCache::get), e.g. maps saved by a process that has
  // exited.
  static ProcessModules from_maps(int pid, std::span<const proc::MapEntry> maps,
                                  ModuleCache& cache);

  // The module whose executable mapping contains `address`, or nullptr.
  // O(log n).
  const Module* find(uint64_t address) const;

  std::span<const Module> modules() const { return modules_; }
  const std::vector<ModuleProblem>& problems() const { return problems_; }
  int pid() const { return pid_; }

 private:
  int pid_ = 0;
  std::vector<Module> modules_;  // sorted by start, non-overlapping
  std::vector<ModuleProblem> problems_;
};

}  // namespace krait::unwind
