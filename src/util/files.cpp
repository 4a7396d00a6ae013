#include "util/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "util/unique_fd.h"

namespace krait {
namespace {

// Reads at most `limit` bytes from the start of `path`.
Result<std::string> read_at_most(const std::string& path, size_t limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  std::string out;
  char buf[16384];
  while (out.size() < limit) {
    const size_t want = std::min(sizeof buf, limit - out.size());
    ssize_t n = ::read(fd.get(), buf, want);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return make_error("cannot read {}: {}", path, std::strerror(errno));
    }
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  // One byte more than allowed tells a file of exactly max_bytes from a longer one.
  const size_t limit = max_bytes == SIZE_MAX ? max_bytes : max_bytes + 1;
  auto text = read_at_most(path, limit);
  if (text && text->size() > max_bytes)
    return make_error("{} is larger than {} bytes, the most krait reads of it", path, max_bytes);
  return text;
}

Result<std::string> read_file_prefix(const std::string& path, size_t max_bytes) {
  return read_at_most(path, max_bytes);
}

}  // namespace krait
