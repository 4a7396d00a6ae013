// Running the real krait binary in runtime tests and reading what it wrote.
//
// A Recording starts `krait record ... --ready-fd 1` and returns once krait
// reports that sampling runs, so a test starts its workloads only when they
// can be seen; it then stops krait with a signal (or lets -d expire) and
// loads the pprof file with the project's decoder, after the independent
// reader `go tool pprof -raw` has accepted it.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "export/profile.pb.h"
#include "support/child_process.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/temp_dir.h"
#include "support/truth.h"

namespace krait::test {

// Fails the current test unless the process can load BPF programs.
void require_root();

// The interpreter of the manifest with this name, or with this name and a
// patch level ("sid-3.15" for sid-3.15.2); a test failure if absent.
Interpreter interpreter_named(const std::string& name);

// A test run once per interpreter of the manifest, named by the parameter;
// it fails unless run as root with that interpreter provisioned.
class InterpreterTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    require_root();
    if (HasFatalFailure())
      return;
    interp_ = interpreter_named(GetParam());
    if (interp_.executable.empty())
      FAIL() << "no interpreter " << GetParam();
  }
  Interpreter interp_;
};

// Starts `argv` (a test program such as krait_busy_loop) and waits for its
// "ready" line; the error carries its stderr.
Result<ChildProcess> start_ready_program(const std::vector<std::string>& argv);

// utime + stime of a process (all its threads), in seconds, from
// /proc/PID/stat; a zombie still has them.
Result<double> cpu_seconds(pid_t pid);

// One sample of the profile, decoded: labels and the stack, root first.
struct ProfileSample {
  std::map<std::string, std::string> labels;
  // Root first. `stack` holds the Python frames only (the "[python]"
  // mapping), what a workload's truth describes, whatever the stack mode;
  // `full_stack` every frame, with its mapping's file name alongside
  // ("[python]", "[kernel.kallsyms]", "[synthetic]", a library path).
  std::vector<Frame> stack;
  std::vector<Frame> full_stack;
  std::vector<std::string> mappings;
  int64_t count = 0;
  // Every value by its sample type ("samples", "cpu", "off_cpu", "wall").
  std::map<std::string, int64_t> values;
  int64_t pid() const;
  int64_t tid() const;
};

struct RecordingResult {
  ExitStatus status;
  std::string stderr_text;
  perftools::profiles::Profile pprof;
  std::vector<ProfileSample> samples;
  JsonValue stats;     // --stats-json
  std::string go_raw;  // `go tool pprof -raw` output
};

class Recording {
 public:
  // Starts krait record with `args` (output and stats files are added) and
  // waits until sampling runs.
  static Result<Recording> start(const std::vector<std::string>& args, const TempDir& dir);
  // Stops it with `sig` (when it has no -d, or early) and collects the results.
  Result<RecordingResult> stop(int sig = SIGINT);
  // Waits for a recording with -d to finish by itself; an error unless it
  // exited 0.
  Result<RecordingResult> wait(std::chrono::seconds timeout);
  // The same, for runs expected to fail (exit status in the result): the
  // profile and stats are written whatever the status.
  Result<RecordingResult> wait_any_status(std::chrono::seconds timeout);
  pid_t pid() const { return child_.pid(); }

 private:
  Recording(ChildProcess child, std::string profile, std::string stats)
      : child_(std::move(child)), profile_(std::move(profile)), stats_(std::move(stats)) {}
  Result<RecordingResult> collect(ExitStatus status, bool require_success);

  ChildProcess child_;
  std::string profile_;
  std::string stats_;
};

// Runs krait with `args` to completion (not `record`-specific).
struct CommandResult {
  ExitStatus status;
  std::string stdout_text;
  std::string stderr_text;
};
Result<CommandResult> run_krait(const std::vector<std::string>& args,
                                std::chrono::seconds timeout = std::chrono::seconds(60),
                                const std::vector<std::string>& prefix = {});

// Every sample of a decoded pprof, in the form above.
std::vector<ProfileSample> decode_samples(const perftools::profiles::Profile& p);

// `go tool pprof -raw FILE`, the independent reader every profile must
// satisfy: its output, or an error with go's stderr when it rejects the file
// (or go is missing). `scratch` holds go's home and caches.
Result<std::string> go_pprof_raw(const std::string& profile, const TempDir& scratch);

// Samples of one process / thread.
std::vector<ProfileSample> samples_of_pid(const std::vector<ProfileSample>& all, int64_t pid);
std::vector<ProfileSample> samples_of_tid(const std::vector<ProfileSample>& all, int64_t tid);
int64_t total(const std::vector<ProfileSample>& samples);

// How many of `samples` (weighted by count) carry exactly `expected`.
int64_t count_exact(const std::vector<ProfileSample>& samples, const std::vector<Frame>& expected);

// "<n> of <m> samples; most common other stacks: ..." for failure messages.
std::string describe_mismatches(const std::vector<ProfileSample>& samples,
                                const std::vector<Frame>& expected);

// The per-process object of --stats-json for pid, or nullptr.
const JsonValue* stats_process(const JsonValue& stats, int64_t pid);

}  // namespace krait::test
