// A file holding the fuzzer's bytes, for code that reads files by path or
// descriptor (ElfFile, DwarfFile): one memfd per process, rewritten per
// input and opened through /proc/self/fd/N like any regular file.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

namespace krait::fuzz {

class MemfdFile {
 public:
  MemfdFile() : fd_(memfd_create("krait-fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemfdFile(const MemfdFile&) = delete;
  MemfdFile& operator=(const MemfdFile&) = delete;
  ~MemfdFile() { ::close(fd_); }

  // Replaces the contents with `bytes`.
  void set(std::span<const uint8_t> bytes) {
    if (::ftruncate(fd_, 0) != 0) {
      std::perror("ftruncate");
      std::abort();
    }
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n =
          ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n <= 0) {
        std::perror("pwrite");
        std::abort();
      }
      done += static_cast<size_t>(n);
    }
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

}  // namespace krait::fuzz
