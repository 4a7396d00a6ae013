// A scratch directory for tests and benchmarks: the one TempDir of the test
// tree (unit, runtime, benchmarks). Needs no GoogleTest, so benchmarks link
// it too (tests/support/temp_dir.cmake).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
// destruction. Single-threaded helper; move-only.
class TempDir {
 public:
  // Throws std::runtime_error when the directory cannot be made: a test
  // then fails with the reason instead of writing into "".
  TempDir();
  // The same, as a value (for code that must not throw, such as a shared
  // fixture built once).
  static Result<TempDir> create();

  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }
  // path() + "/" + name.
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }
  // Names of the entries directly inside, sorted.
  std::vector<std::string> list() const;

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace krait::test
