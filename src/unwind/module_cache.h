// The ModuleFiles of every process krait looks at, shared between processes.
//
// A mapped file is identified by the (device, inode) pair that
// /proc/PID/maps prints. The pair is unambiguous while the cache holds the
// file: a ModuleFile keeps the file open, and an inode that is still open
// cannot be reused for another file. Files with equal build-ids (the same
// library in two containers) share one ModuleFile. The vDSO is read from
// this process's own memory once: every x86_64 process on one kernel maps
// the same image.
//
// Files that fail to open (not ELF, unreadable) are remembered too, so a
// bad mapping costs one attempt, not one per process.
//
// Ownership: the cache holds a shared_ptr to every ModuleFile it returned
// until evict_unused() finds no one else holding it.
//
// Threading: all member functions may be called from any thread; a mutex
// serialises them (opening a file happens under it, so concurrent callers of
// one cache wait for each other's opens).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "proc/maps.h"
#include "unwind/module_file.h"
#include "util/result.h"

namespace krait::unwind {

class ModuleCache {
 public:
  explicit ModuleCache(ModuleFileOptions options = {});
  ModuleCache(const ModuleCache&) = delete;
  ModuleCache& operator=(const ModuleCache&) = delete;

  // The file of `map`, a mapping of process `pid`: a file mapping (opened
  // with proc::open_mapped_elf, so containers and deleted files work) or
  // "[vdso]". With pid 0 the path is opened as written, in this process's
  // mount namespace, and must still have the mapping's inode: for maps saved
  // from a process that has exited. Errors name the file and the reason.
  Result<std::shared_ptr<const ModuleFile>> get(int pid, const proc::MapEntry& map);

  // This kernel's vDSO, as mapped into this process.
  Result<std::shared_ptr<const ModuleFile>> vdso();

  // Distinct ModuleFiles held (files sharing a build-id count once).
  size_t size() const;
  // Drops every ModuleFile that nothing outside the cache holds, and the
  // remembered failures.
  void evict_unused();

  const ModuleFileOptions& options() const { return options_; }

 private:
  using InodeKey = std::tuple<uint32_t, uint32_t, uint64_t>;  // dev major, minor, inode

  Result<std::shared_ptr<const ModuleFile>> open_locked(int pid, const proc::MapEntry& map);
  Result<std::shared_ptr<const ModuleFile>> vdso_locked();

  ModuleFileOptions options_;
  mutable std::mutex mutex_;
  std::map<InodeKey, std::shared_ptr<const ModuleFile>> by_inode_;
  std::unordered_map<std::string, std::weak_ptr<const ModuleFile>> by_build_id_;
  std::map<InodeKey, std::string> failures_;
  std::shared_ptr<const ModuleFile> vdso_;
  std::string vdso_failure_;
};

}  // namespace krait::unwind
