// Helpers for the export tests: a scratch directory and running a child
// process (posix_spawn, no shell) while capturing its output.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace krait::test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }
  std::vector<std::string> list() const;  // file names directly inside, sorted

 private:
  std::string path_;
};

struct ChildOutput {
  int exit_code = -1;  // -1 when the child died from a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs argv[0] (an absolute path) with exactly `env` as its environment and
// waits for it. stdin is /dev/null; stdout and stderr are captured through
// pipes.
Result<ChildOutput> run_child(const std::vector<std::string>& argv,
                              const std::vector<std::string>& env);

// The first executable `name` along $PATH, then in `fallback_dirs`.
std::optional<std::string> find_executable(const std::string& name,
                                           const std::vector<std::string>& fallback_dirs);

}  // namespace krait::test
