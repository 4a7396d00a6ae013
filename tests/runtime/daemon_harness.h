// What the `krait daemon` runtime tests (daemon_*_test.cpp) share: the
// daemon as a child process, workloads staged in a directory of the test's
// own (so a daemon selects exactly that test's processes), and what the
// ingest server and the directory output received, decoded and checked.
//
// Isolation: other tests (and other people) run Python on this host too, so
// every daemon here selects only the processes of its own test: workloads
// are copied into the test's directory and selected by --cmdline-regex (the
// container by --container-id).
//
// Time passes in these tests only where the length of a run is itself the
// input (how long a server stays down); every wait for an effect is a wait
// on that effect.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "export/profile.pb.h"
#include "runtime/krait_harness.h"
#include "support/ingest_server.h"
#include "support/manifest.h"
#include "support/temp_dir.h"
#include "support/workloads.h"

namespace krait::test {

// Seconds per profile in every test but the SIGTERM ones: short, so a test
// sees several intervals in a few seconds.
constexpr int kInterval = 2;
constexpr int64_t kNs = 1'000'000'000;
constexpr int64_t kIntervalNs = kInterval * kNs;
constexpr int kRateHz = 99;  // the daemon's default

int64_t unix_now_ns();
double seconds_since(std::chrono::steady_clock::time_point t);
double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to);
std::string this_host_name();
std::string regex_escape(const std::string& text);

// The length of a run is the input under test here (a server that stays
// down, a daemon that profiles for a while before SIGTERM), not a way to
// wait for something to happen.
void let_time_pass(std::chrono::milliseconds duration);

// VmRSS of a process in KiB.
Result<int64_t> rss_kib(pid_t pid);
// /proc/PID/comm without its newline; "" when unreadable.
std::string comm_of(pid_t pid);

// A file's text (the krait binary among them), or a line saying why it could not be read (never
// equal to another file's text).
std::string text_of(const std::string& path);

// Runs `argv` to its end; fails naming `package` when the program is not
// installed.
Result<CommandResult> run_tool(const std::vector<std::string>& argv, const std::string& package,
                               std::chrono::seconds timeout = std::chrono::seconds(120));

#define ASSERT_RAN(result, what)                                                                 \
  ASSERT_TRUE((result).ok()) << what << ": " << (result).error().message;                        \
  ASSERT_TRUE((result)->status.success()) << what << ": " << (result)->status.describe() << "\n" \
                                          << (result)->stdout_text << (result)->stderr_text

// ---------------------------------------------------------------------------
// Interpreters and workloads.

struct TestInterpreters {
  const Interpreter* debian = nullptr;  // /usr/bin/python3.11: static, stripped
  const Interpreter* pyenv = nullptr;   // pyenv 3.12: shared libpython
};

// Points into `all`, which must outlive the result.
TestInterpreters test_interpreters(const std::vector<Interpreter>& all);

#define REQUIRE_INTERPRETERS(t)                                              \
  ASSERT_TRUE((t).debian && (t).pyenv)                                       \
      << "the manifest needs Debian bookworm's python3.11 and pyenv's 3.12 " \
         "(scripts/provision-pythons)"

// Copies of the workloads in a directory of this test's own, so the daemon
// can select exactly this test's processes by their command line.
class StagedWorkloads {
 public:
  StagedWorkloads();
  std::string path(const std::string& script) const { return dir_.file(script); }
  // The --cmdline-regex that selects these and nothing else.
  std::string selector() const { return regex_escape(dir_.path() + "/"); }

  // Starts `script` and returns once it printed its truth.
  Result<RunningWorkload> start(const Interpreter& interpreter, const std::string& script,
                                const std::vector<std::string>& args = {}) const;

 private:
  TempDir dir_;
};

// What the delivery, --all-processes and churn tests start from: the
// manifest's two test interpreters, an ingest server, staged workloads.
struct LiveRun {
  std::vector<Interpreter> interpreters = load_manifest();
  TestInterpreters py = test_interpreters(interpreters);  // points into `interpreters`
  std::unique_ptr<IngestServer> server;
  StagedWorkloads staged;
};

// Fails the test, fatally, without root, the interpreters or a server.
void start_live_run(LiveRun& run);

// ---------------------------------------------------------------------------
// The daemon.

class Daemon {
 public:
  // Starts `[prefix...] krait daemon --ready-fd 1 args...` and returns once it
  // says sampling runs.
  static Result<Daemon> start(const std::vector<std::string>& args,
                              const std::vector<std::string>& prefix = {});

  pid_t pid() const { return child_.pid(); }
  double startup_seconds() const { return startup_s_; }
  Result<void> signal(int sig) { return child_.signal(sig); }
  // Everything it logged so far (reading also keeps its stderr pipe from
  // filling up).
  const std::string& log() { return child_.stderr_text(); }

  // Sends `sig` and waits for the exit; `seconds` gets how long that took.
  Result<ExitStatus> stop(int sig, double* seconds = nullptr,
                          std::chrono::seconds timeout = std::chrono::seconds(30));

 private:
  Daemon(ChildProcess child, double startup_s) : child_(std::move(child)), startup_s_(startup_s) {}
  ChildProcess child_;
  double startup_s_ = 0;
};

// The flags every daemon of these tests gets: this server, short intervals,
// only the processes `selector` matches.
std::vector<std::string> daemon_args(const IngestServer& server, const std::string& selector,
                                     const std::vector<std::string>& more = {});

// SIGTERM, after which the daemon must exit 0 (its log says why not).
void expect_clean_stop(Daemon& daemon);

// ---------------------------------------------------------------------------
// What the server received, decoded.

struct Delivered {
  std::string application;
  std::map<std::string, std::string> labels;  // series labels
  std::string id;                             // push only
  int64_t from_ns = 0;                        // push: the pprof's; ingest: from= (s)
  int64_t until_ns = 0;
  perftools::profiles::Profile pprof;
  std::vector<ProfileSample> samples;
  size_t bytes = 0;             // the gzipped pprof as sent
  int64_t arrived_unix_ns = 0;  // when the server read its request's first byte
};

// Decodes every received profile; each must also pass `go tool pprof -raw`.
Result<std::vector<Delivered>> decode_received(const std::vector<ReceivedProfile>& received);

std::set<std::string> applications_of(const std::vector<Delivered>& all);
// The profiles of `application`, sorted by start; they point into `all`.
std::vector<const Delivered*> of_application(const std::vector<Delivered>& all,
                                             const std::string& application);

// The intervals of one application (sorted by start) tile time: each starts
// where the previous ended, none twice; all but the first and last are one
// interval long and start on a multiple of it (wall-clock aligned); the
// first and last are no longer than one. `what` names them in failures.
void expect_tiling(const std::vector<const Delivered*>& profiles, const std::string& what,
                   int64_t interval_ns = kIntervalNs);

// Waits until `done(profiles received so far)` holds, re-checking whenever
// the server accepts another profile.
bool wait_for(const IngestServer& server,
              const std::function<bool(const std::vector<ReceivedProfile>&)>& done,
              std::chrono::seconds timeout);

size_t count_application(const std::vector<ReceivedProfile>& profiles,
                         const std::string& application);

// Samples of `profiles` whose Python stack is what the truth says the
// sampled thread runs, and all samples (both weighted by count).
std::pair<int64_t, int64_t> truth_share(const std::vector<const Delivered*>& profiles,
                                        const Truth& truth);

int64_t samples_of(const std::vector<const Delivered*>& profiles, int64_t pid);

// A profile file of the directory output: which interval was cut.
struct CutInterval {
  std::string application;
  int64_t from_s = 0, until_s = 0;
  uint64_t bytes = 0;
  bool operator<(const CutInterval& o) const {
    return std::tie(application, from_s) < std::tie(o.application, o.from_s);
  }
};

// The profile files of the directory output in `dir`, sorted.
std::vector<CutInterval> cut_intervals(const std::string& dir);

// Waits, with inotify, until `done(the profile files in dir)` holds.
bool wait_for_files(const std::string& dir,
                    const std::function<bool(const std::vector<CutInterval>&)>& done,
                    std::chrono::seconds timeout);

// Full intervals (whole length) of `application` in a list of files.
size_t full_intervals(const std::vector<CutInterval>& cut, const std::string& application);

// The intervals the server received for `application`, in whole seconds as
// the directory output names them.
std::set<std::pair<int64_t, int64_t>> received_seconds(const std::vector<Delivered>& all,
                                                       const std::string& application);

std::set<std::pair<int64_t, int64_t>> cut_seconds(const std::vector<CutInterval>& cut,
                                                  const std::string& application);

std::string describe_intervals(const std::set<std::pair<int64_t, int64_t>>& intervals);

// ---------------------------------------------------------------------------
// The failure and signal tests. One workload (chain.py, Debian's static
// interpreter) and the directory output beside the upload: the files say
// which intervals were cut while the server could not take them.

struct FailureRun {
  std::unique_ptr<IngestServer> server;
  StagedWorkloads staged;
  TempDir out;
  std::string dir;  // the directory output
  std::optional<RunningWorkload> chain;

  // Starts the server and the workload (the daemon is the test's).
  static Result<std::unique_ptr<FailureRun>> start();

  std::vector<std::string> args(const std::vector<std::string>& more = {}) const;

  // Waits until `n` whole intervals of chain.py were cut (written as files).
  bool wait_for_cut(size_t n, std::chrono::seconds timeout = std::chrono::seconds(30)) const;

  // Waits until the server has every interval cut so far plus `more`.
  bool wait_for_delivery_of_cut(size_t more,
                                std::chrono::seconds timeout = std::chrono::seconds(40)) const;
};

// What every failure test checks at the end: the server has each interval
// the daemon cut exactly once (so nothing was lost or sent twice), they
// tile time, and their samples are the workload's.
void expect_every_cut_interval_delivered_once(const FailureRun& run,
                                              const std::vector<Delivered>& received);

}  // namespace krait::test
