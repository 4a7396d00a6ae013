// A child process for tests: started with an argv and environment changes,
// its stdout read line by line through a pipe, its stderr collected for
// failure messages. Waiting is done on the pipe and on a pidfd with
// deadlines, never by sleeping.
//
// Ownership: a ChildProcess owns the process until it is reaped. Destroying
// one that still runs kills it (SIGKILL) and reaps it, so a failing test never
// leaves a workload burning CPU. The child also gets SIGKILL if the test
// process dies first (PR_SET_PDEATHSIG). Move-only; not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::test {

// A user and group to run a child as.
struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
};

struct SpawnOptions {
  // argv[0] is the program; a path (no PATH lookup).
  std::vector<std::string> argv;
  // Variables to set (a value) or remove (nullopt) on top of this process's
  // environment.
  std::map<std::string, std::optional<std::string>> env;
  // Set: the program to execute (a path), while argv[0] is only what it is
  // told its name is.
  std::optional<std::string> program;
  // Set: the child switches to this user and group (and no supplementary
  // groups) before exec, which needs root. Unset: it keeps this process's.
  std::optional<Credentials> run_as;
};

// How a reaped child ended.
struct ExitStatus {
  bool exited = false;  // true: exit(code); false: killed by `signal`
  int code = 0;
  int signal = 0;

  bool success() const { return exited && code == 0; }
  std::string describe() const;  // "exit 0", "signal 9 (Killed)"
};

class ChildProcess {
 public:
  static Result<ChildProcess> spawn(const SpawnOptions& options);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool reaped() const { return status_.has_value(); }

  // The next line of stdout without its '\n'. Fails at end of file (with the
  // child's stderr in the message) or when `timeout` passes first.
  Result<std::string> read_line(std::chrono::milliseconds timeout);

  // Sends `sig`; an error once the child has been reaped.
  Result<void> signal(int sig);

  // Waits for the child to end and reaps it; fails if `timeout` passes first
  // (the child is then left running). Returns the saved status once reaped.
  Result<ExitStatus> wait(std::chrono::milliseconds timeout);

  // SIGKILL and reap; a no-op once reaped.
  ExitStatus kill();

  // Everything the child wrote to stderr so far.
  const std::string& stderr_text();

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd, UniqueFd out, UniqueFd err);
  // Moves whatever is readable now (or within `timeout`) from the pipes into
  // the buffers; false once stdout is at end of file.
  bool pump(std::chrono::milliseconds timeout);
  void drain_stderr();
  void reap_blocking();

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd out_;
  UniqueFd err_;
  std::string out_buffer_;
  std::string err_buffer_;
  std::optional<ExitStatus> status_;
};

}  // namespace krait::test
