// Starting the workloads of tests/workloads under one interpreter of the
// manifest and reading their truth.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/child_process.h"
#include "support/manifest.h"
#include "support/truth.h"
#include "util/result.h"

namespace krait::test {

// Absolute path of a workload script, e.g. workload_path("chain.py").
std::string workload_path(std::string_view script);

// How to run `interpreter` with `args` (e.g. {"-c", "..."}): the
// interpreter's own env on top of this process's environment, minus the
// variables that would point it at another installation (PYTHONHOME,
// PYTHONPATH), plus `extra_env`.
SpawnOptions interpreter_options(const Interpreter& interpreter,
                                 const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& extra_env = {});

// interpreter_options() for `script` of tests/workloads followed by `args`.
SpawnOptions workload_options(const Interpreter& interpreter, std::string_view script,
                              const std::vector<std::string>& args,
                              const std::map<std::string, std::string>& extra_env = {});

struct RunningWorkload {
  ChildProcess child;
  Truth truth;
};

// Starts the workload and reads its first line, which must be its truth for
// the process just started. The child is killed if that fails.
Result<RunningWorkload> start_workload(
    const Interpreter& interpreter, std::string_view script, const std::vector<std::string>& args,
    const std::map<std::string, std::string>& extra_env = {},
    std::chrono::milliseconds truth_timeout = std::chrono::seconds(60));

// Reads a running workload's later lines (JSON objects stamped "t", its own
// CLOCK_MONOTONIC seconds) onto `seen` until the newest is stamped at or
// after `until`; at most `timeout` in all.
Result<void> read_lines_until(ChildProcess& child, double until, std::vector<JsonValue>& seen,
                              std::chrono::seconds timeout = std::chrono::seconds(60));

// Of lines read_lines_until gathered (never empty): the last stamped at or
// before `t`, or the first; the first stamped at or after `t`, or the last.
const JsonValue& line_before(const std::vector<JsonValue>& lines, double t);
const JsonValue& line_after(const std::vector<JsonValue>& lines, double t);

}  // namespace krait::test
