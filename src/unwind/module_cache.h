// The ModuleFiles of every process krait looks at, shared between processes.
//
// Keys: a mapping names its file by the (device, inode) that /proc/PID/maps
// prints, which the process cannot forge. A file is opened once through
// proc::open_mapped_elf (map_files, or the path inside the process's root,
// checked on the open descriptor: regular, not FIFO or FUSE, size-capped,
// that device and inode), and its ModuleFile is stored under that pair with
// the FileId of its descriptor (device, inode, size, mtime). The pair stays
// unambiguous while the cache holds the file: the ModuleFile keeps it open,
// and an inode that is still open cannot be reused. A file rewritten in
// place keeps its inode but changes size or mtime: every hit compares the
// descriptor's current FileId with the one verified at open, and a changed
// file is opened again. Nothing is shared by build-id: a build-id is what a
// file claims, so two inodes are two ModuleFiles even when they claim the
// same one (ModuleFile::identity includes the build-id only as a check).
// The vDSO is read from this process's own memory once: every x86_64
// process on one kernel maps the same image.
//
// Files that fail to open (not ELF, unreadable, refused) are remembered, so
// a bad mapping costs one attempt, not one per process: at most
// ModuleCacheLimits::max_failures of them, the oldest forgotten first, all
// forgotten by evict_unused(). A failure because the mapping itself is gone
// (the process exited or unmapped it) is not remembered: it says nothing
// about the file, which other processes may still map.
//
// Bound: at most ModuleCacheLimits::max_files files. Past it, the least
// recently used files that nothing outside the cache holds are evicted
// (counted in stats()); files some ProcessModules holds are never evicted,
// so the bound is exceeded only by files in use.
//
// Ownership: the cache holds a shared_ptr to every ModuleFile it returned
// until it evicts it.
//
// Threading: all member functions may be called from any number of threads
// at once. The mutex guards only the maps: opening and indexing a file (the
// slow part, which a hostile file can make slow) happens outside it, so no
// caller waits for another's open. Two threads that miss on one key at once
// both open the file; the first to insert wins and the other's copy is
// dropped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "proc/maps.h"
#include "unwind/module_file.h"
#include "util/result.h"

namespace krait::unwind {

struct ModuleCacheLimits {
  size_t max_files = 4096;     // ModuleFiles kept (each holds one or two descriptors)
  size_t max_failures = 4096;  // remembered failures
};

struct ModuleCacheStats {
  uint64_t hits = 0;      // get() answered from the cache
  uint64_t opened = 0;    // files opened and inserted
  uint64_t failures = 0;  // opens that failed (each remembered)
  uint64_t changed = 0;   // cached files found rewritten in place, and reopened
  uint64_t races = 0;     // opens dropped because another thread inserted first
  uint64_t evicted = 0;   // files dropped by the bound or by evict_unused()
};

class ModuleCache {
 public:
  explicit ModuleCache(ModuleFileOptions options = {}, ModuleCacheLimits limits = {});
  ModuleCache(const ModuleCache&) = delete;
  ModuleCache& operator=(const ModuleCache&) = delete;

  // The file of `map`, a mapping of process `pid`: a file mapping (opened
  // with proc::open_mapped_elf, so containers and deleted files work) or
  // "[vdso]". With pid 0 the path is opened as written, in this process's
  // mount namespace, and must still have the mapping's device and inode:
  // for maps saved from a process that has exited. Errors name the file and
  // the reason.
  Result<std::shared_ptr<const ModuleFile>> get(int pid, const proc::MapEntry& map);

  // This kernel's vDSO, as mapped into this process.
  Result<std::shared_ptr<const ModuleFile>> vdso();

  // Distinct ModuleFiles held, the vDSO included.
  size_t size() const;
  // Drops every ModuleFile that nothing outside the cache holds, and the
  // remembered failures.
  void evict_unused();
  ModuleCacheStats stats() const;

  const ModuleFileOptions& options() const { return options_; }
  const ModuleCacheLimits& limits() const { return limits_; }

 private:
  using MapKey = std::tuple<uint32_t, uint32_t, uint64_t>;  // dev major, minor, inode
  struct Entry {
    std::shared_ptr<const ModuleFile> file;
    uint64_t last_use = 0;
  };
  struct Failure {
    std::string reason;
    uint64_t order = 0;
  };

  Result<std::shared_ptr<const ModuleFile>> open(int pid, const proc::MapEntry& map) const;
  void evict_over_bound_locked();
  void remember_failure_locked(const MapKey& key, std::string reason);

  const ModuleFileOptions options_;
  const ModuleCacheLimits limits_;

  mutable std::mutex mutex_;  // guards everything below; never held across I/O
  std::map<MapKey, Entry> files_;
  std::map<MapKey, Failure> failures_;
  uint64_t clock_ = 0;
  ModuleCacheStats stats_;

  mutable std::mutex vdso_mutex_;  // guards the two below; held while the vDSO is read
  std::shared_ptr<const ModuleFile> vdso_;
  std::string vdso_failure_;
};

}  // namespace krait::unwind
