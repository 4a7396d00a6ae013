#include "unwind/module_cache.h"

#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>

namespace krait::unwind {
namespace {

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

bool matches_mapping(const struct stat& st, const proc::MapEntry& map) {
  return st.st_ino == map.inode && major(st.st_dev) == map.dev_major &&
         minor(st.st_dev) == map.dev_minor;
}

}  // namespace

ModuleCache::ModuleCache(ModuleFileOptions options) : options_(std::move(options)) {}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::get(int pid, const proc::MapEntry& map) {
  std::lock_guard lock(mutex_);
  if (map.path == "[vdso]")
    return vdso_locked();
  if (!map.is_file())
    return make_error("mapping {:x}-{:x} ({}) is not a file mapping and has no module", map.start,
                      map.end, map.path.empty() ? "anonymous" : map.path);
  InodeKey key{map.dev_major, map.dev_minor, map.inode};
  if (auto it = by_inode_.find(key); it != by_inode_.end())
    return it->second;
  if (auto it = failures_.find(key); it != failures_.end())
    return Error{it->second};
  auto file = open_locked(pid, map);
  if (!file) {
    failures_.emplace(key, file.error().message);
    return file.error();
  }
  std::shared_ptr<const ModuleFile> result = *file;
  // Another inode with the same contents (a copy in a container) reuses the
  // file already indexed.
  if (!result->build_id().empty()) {
    auto& shared = by_build_id_[result->build_id()];
    if (auto existing = shared.lock())
      result = existing;
    else
      shared = result;
  }
  by_inode_.emplace(key, result);
  return result;
}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::open_locked(int pid,
                                                                   const proc::MapEntry& map) {
  std::string path;
  DebugLinkDirs dirs;
  Result<elf::ElfFile> elf = Error{};
  if (pid > 0) {
    elf = proc::open_mapped_elf(pid, map);
    if (!elf)
      return elf.error();
    path = elf->path();
    // A debuglink target sits beside the file in the process's mount
    // namespace; map_files paths have no meaningful directory.
    dirs.namespace_dir = parent_dir(map.path);
    dirs.dir =
        map.deleted ? std::string() : fmt::format("/proc/{}/root{}", pid, dirs.namespace_dir);
  } else {
    path = map.path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return make_error("cannot open {}: {}", path, std::strerror(errno));
    if (!matches_mapping(st, map))
      return make_error("{} is no longer the mapped file (inode {}, mapped {}); it was replaced",
                        path, st.st_ino, map.inode);
    elf = elf::ElfFile::open(path);
    if (!elf)
      return elf.error();
    dirs.dir = dirs.namespace_dir = parent_dir(path);
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_ino != map.inode)
    return make_error("{} changed while it was opened (inode {}, mapped {}); retry", path,
                      st.st_ino, map.inode);
  return ModuleFile::create(std::move(*elf), std::move(fd), dirs, options_);
}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::vdso() {
  std::lock_guard lock(mutex_);
  return vdso_locked();
}

Result<std::shared_ptr<const ModuleFile>> ModuleCache::vdso_locked() {
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
  std::lock_guard lock(mutex_);
  std::set<const ModuleFile*> distinct;
  for (const auto& [key, file] : by_inode_)
    distinct.insert(file.get());
  if (vdso_)
    distinct.insert(vdso_.get());
  return distinct.size();
}

void ModuleCache::evict_unused() {
  std::lock_guard lock(mutex_);
  std::map<const ModuleFile*, long> held_here;
  for (const auto& [key, file] : by_inode_)
    ++held_here[file.get()];
  for (auto it = by_inode_.begin(); it != by_inode_.end();) {
    if (it->second.use_count() <= held_here[it->second.get()])
      it = by_inode_.erase(it);
    else
      ++it;
  }
  for (auto it = by_build_id_.begin(); it != by_build_id_.end();) {
    if (it->second.expired())
      it = by_build_id_.erase(it);
    else
      ++it;
  }
  failures_.clear();
}

}  // namespace krait::unwind
