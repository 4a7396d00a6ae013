#include "unwind/module_cache.h"

#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <vector>

#include <fmt/format.h>

namespace krait::unwind {
namespace {

// Whether the mapping `map` of `pid` is gone (the process exited, or
// unmapped it): then a failed open says nothing about the file, and is not
// remembered for it.
bool mapping_gone(int pid, const proc::MapEntry& map) {
  if (pid <= 0)
    return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH)
    return true;
  struct stat st {};
  std::string link = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, map.start, map.end);
  return ::lstat(link.c_str(), &st) != 0 && errno == ENOENT;
}

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos)
    return "";
  return slash == 0 ? std::string("/") : path.substr(0, slash);
}

}  // namespace

ModuleCache::ModuleCache(ModuleFileOptions options, ModuleCacheLimits limits)
    : options_(std::move(options)),
      limits_{.max_files = std::max<size_t>(1, limits.max_files),
              .max_failures = std::max<size_t>(1, limits.max_failures)} {}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::get(int pid, const proc::MapEntry& map) {
  if (map.path == "[vdso]")
    return vdso();
  if (!map.is_file())
    return make_error("mapping {:x}-{:x} ({}) is not a file mapping and has no module", map.start,
                      map.end, map.path.empty() ? "anonymous" : map.path);
  const MapKey key{map.dev_major, map.dev_minor, map.inode};
  std::shared_ptr<const ModuleFile> cached;
  {
    std::lock_guard lock(mutex_);
    if (auto it = files_.find(key); it != files_.end()) {
      it->second.last_use = ++clock_;
      cached = it->second.file;
    } else if (auto failed = failures_.find(key); failed != failures_.end()) {
      return Error{failed->second.reason};
    }
  }
  if (cached) {
    // The descriptor pins the inode; only a rewrite in place changes what
    // it holds, and that changes the size or the modification time.
    auto now = elf::file_id_of(cached->fd());
    if (now && *now == cached->file_id()) {
      std::lock_guard lock(mutex_);
      ++stats_.hits;
      return cached;
    }
    std::lock_guard lock(mutex_);
    ++stats_.changed;
    if (auto it = files_.find(key); it != files_.end() && it->second.file == cached)
      files_.erase(it);
  }

  auto opened = open(pid, map);  // outside the lock: this is where files are slow

  std::lock_guard lock(mutex_);
  if (!opened) {
    ++stats_.failures;
    if (!mapping_gone(pid, map))
      remember_failure_locked(key, opened.error().message);
    return opened.error();
  }
  if (auto it = files_.find(key); it != files_.end()) {
    if (it->second.file->file_id() == (*opened)->file_id()) {
      ++stats_.races;
      it->second.last_use = ++clock_;
      return it->second.file;
    }
    it->second = Entry{*opened, ++clock_};  // ours was verified last
  } else {
    files_.emplace(key, Entry{*opened, ++clock_});
  }
  ++stats_.opened;
  evict_over_bound_locked();
  return *opened;
}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::open(int pid,
                                                            const proc::MapEntry& map) const {
  auto elf = proc::open_mapped_elf(pid, map);
  if (!elf)
    return elf.error();
  // The debuglink target sits beside the file in the process's root (a
  // deleted file has no directory to look in).
  DebugLinkDirs dirs{.root_fd = -1, .dir = parent_dir(map.path), .search_beside = !map.deleted};
  UniqueFd root;
  if (pid > 0 && dirs.search_beside) {
    auto opened_root = proc::open_root(pid);
    if (opened_root) {
      root = std::move(*opened_root);
      dirs.root_fd = root.get();
    } else {
      dirs.search_beside = false;
    }
  }
  return ModuleFile::create(std::move(*elf), dirs, options_);
}

void ModuleCache::remember_failure_locked(const MapKey& key, std::string reason) {
  failures_.insert_or_assign(key, Failure{std::move(reason), ++clock_});
  if (failures_.size() <= limits_.max_failures)
    return;
  auto oldest = std::min_element(failures_.begin(), failures_.end(),
                                 [](auto& a, auto& b) { return a.second.order < b.second.order; });
  failures_.erase(oldest);
}

void ModuleCache::evict_over_bound_locked() {
  if (files_.size() <= limits_.max_files)
    return;
  // Only files no ProcessModules holds can go; the oldest first.
  std::vector<std::pair<uint64_t, MapKey>> unused;
  for (const auto& [key, entry] : files_)
    if (entry.file.use_count() == 1)
      unused.emplace_back(entry.last_use, key);
  std::sort(unused.begin(), unused.end());
  for (const auto& [last_use, key] : unused) {
    if (files_.size() <= limits_.max_files)
      break;
    files_.erase(key);
    ++stats_.evicted;
  }
}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::vdso() {
  std::lock_guard lock(vdso_mutex_);
  if (vdso_)
    return vdso_;
  if (!vdso_failure_.empty())
    return Error{vdso_failure_};
  auto maps = proc::read_maps(::getpid());
  if (!maps)
    return maps.error().context("finding this process's vDSO");
  auto base = static_cast<uint64_t>(::getauxval(AT_SYSINFO_EHDR));
  for (const proc::MapEntry& entry : *maps) {
    if (entry.path != "[vdso]" || entry.start != base)
      continue;
    std::span<const uint8_t> image(reinterpret_cast<const uint8_t*>(entry.start),
                                   entry.end - entry.start);
    auto file = ModuleFile::from_image(image, "[vdso]", options_);
    if (!file) {
      vdso_failure_ = file.error().message;
      return file.error();
    }
    vdso_ = *file;
    return vdso_;
  }
  vdso_failure_ = "this process has no [vdso] mapping at AT_SYSINFO_EHDR; the kernel maps none";
  return Error{vdso_failure_};
}

size_t ModuleCache::size() const {
  size_t n = 0;
  {
    std::lock_guard lock(mutex_);
    n = files_.size();
  }
  std::lock_guard lock(vdso_mutex_);
  return n + (vdso_ ? 1 : 0);
}

void ModuleCache::evict_unused() {
  std::lock_guard lock(mutex_);
  for (auto it = files_.begin(); it != files_.end();) {
    if (it->second.file.use_count() == 1) {
      it = files_.erase(it);
      ++stats_.evicted;
    } else {
      ++it;
    }
  }
  failures_.clear();
}

ModuleCacheStats ModuleCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace krait::unwind
