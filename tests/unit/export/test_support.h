// Helpers for the export tests: a scratch directory and running a child
// process (posix_spawn, no shell) while capturing its output.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "support/temp_dir.h"
#include "util/result.h"

namespace krait::test {

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
