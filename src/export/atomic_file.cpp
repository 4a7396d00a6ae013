#include "export/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/unique_fd.h"

namespace krait::exporter {
namespace {

// Unlinks the temporary file unless the rename that publishes it succeeded.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!path_.empty())
      ::unlink(path_.c_str());
  }
  void release() { path_.clear(); }

 private:
  std::string path_;
};

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

Result<void> write_file_atomically(const std::string& path, std::string_view data) {
  if (path.empty())
    return make_error("empty output path: pass a file name");
  // O_EXCL on a name of our own rather than mkstemp: mkstemp forces mode 0600,
  // and the output is meant to be readable like any file the user creates.
  static std::atomic<uint64_t> counter{0};
  UniqueFd fd;
  std::string tmp;
  for (int attempt = 0; attempt < 100 && !fd.valid(); ++attempt) {
    tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter.fetch_add(1));
    fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (!fd.valid() && errno != EEXIST)
      return make_error("cannot create {}: {} (check that the directory exists and is writable)",
                        tmp, errno_text(errno));
  }
  if (!fd.valid())
    return make_error("cannot create a temporary file next to {}: too many stale {}.tmp.* files",
                      path, path);
  TempFileGuard guard(tmp);

  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd.get(), p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return make_error("writing {}: {}", tmp, errno_text(errno));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  // Without the fsync a crash after rename can leave an empty file on ext4/xfs.
  if (::fsync(fd.get()) != 0)
    return make_error("flushing {}: {}", tmp, errno_text(errno));
  if (::close(fd.release()) != 0)
    return make_error("closing {}: {}", tmp, errno_text(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error("renaming {} to {}: {}", tmp, path, errno_text(errno));
  guard.release();

  // Persist the rename itself; failure here leaves a complete file either way.
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty())
    dir = std::filesystem::path(".");
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.valid())
    ::fsync(dir_fd.get());
  return {};
}

}  // namespace krait::exporter
