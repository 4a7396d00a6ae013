// `krait daemon` end to end (root, real BPF, real interpreters), against the
// ingest server of tests/support, which stands in for Pyroscope and records
// what it received:
// - delivery over both protocols: one profile per application per interval,
//   labels, stacks that carry the workloads' own truth, pprof that
//   `go tool pprof -raw` accepts, intervals that tile time;
// - --all-processes: a C program beside a Python one;
// - failures: refused connections, 500, 429 with Retry-After, a hanging
//   server, a memory cap on the queue, a full and then read-only output
//   directory, SIGTERM (with the server up and down), SIGHUP with a new config;
// - 300 short-lived processes, and the daemon's memory after them;
// - a process in its own PID and mount namespaces and a docker-style cgroup;
// - the Debian package: contents, the unpacked binary, the unit.
//
// Isolation: other tests (and other people) run Python on this host too, so
// every daemon here selects only the processes of its own test: workloads
// are copied into the test's directory and selected by --cmdline-regex (the
// container by --container-id).
//
// Oracles: the workloads' truth lines, the ingest server's record, the
// directory output (which intervals were cut, used where uploads fail),
// /proc (CPU time of the workloads, the daemon's RSS), `go tool pprof -raw`,
// dpkg and systemd-analyze. Time passes in these tests only where the
// length of a run is itself the input (how long a server stays down); every
// wait for an effect is a wait on that effect.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "export/directory_output.h"
#include "export/pprof.h"
#include "export/pyroscope.h"
#include "proc/container.h"
#include "runtime/krait_harness.h"
#include "support/ingest_server.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// Seconds per profile in every test but the SIGTERM ones: short, so a test
// sees several intervals in a few seconds.
constexpr int kInterval = 2;
constexpr int64_t kNs = 1'000'000'000;
constexpr int64_t kIntervalNs = kInterval * kNs;
constexpr int kRateHz = 99;  // the daemon's default

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

std::string this_host_name() {
  utsname u{};
  return ::uname(&u) == 0 ? u.nodename : "";
}

std::string regex_escape(const std::string& text) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(text, special, R"(\$&)");
}

// The length of a run is the input under test here (a server that stays
// down, a daemon that profiles for a while before SIGTERM), not a way to
// wait for something to happen.
void let_time_pass(std::chrono::milliseconds duration) {
  std::this_thread::sleep_for(duration);
}

// VmRSS of a process in KiB.
Result<int64_t> rss_kib(pid_t pid) {
  auto text = read_file(fmt::format("/proc/{}/status", pid));
  if (!text)
    return text.error();
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line))
    if (line.starts_with("VmRSS:"))
      return std::stoll(line.substr(6));
  return make_error("/proc/{}/status: no VmRSS", pid);
}

std::string comm_of(pid_t pid) {
  auto text = read_file(fmt::format("/proc/{}/comm", pid));
  if (!text)
    return "";
  std::string comm = *text;
  while (!comm.empty() && comm.back() == '\n')
    comm.pop_back();
  return comm;
}

// A file's text (the krait binary among them), or a line saying why it could not be read (never
// equal to another file's text).
std::string text_of(const std::string& path) {
  auto text = read_file(path, size_t{1} << 30);
  return text ? *text : "<" + text.error().message + ">";
}

// Runs `argv` to its end; fails naming `package` when the program is not
// installed.
Result<CommandResult> run_tool(const std::vector<std::string>& argv, const std::string& package,
                               std::chrono::seconds timeout = 120s) {
  if (::access(argv.front().c_str(), X_OK) != 0)
    return make_error("{} is missing: install the Debian package '{}' (scripts/setup)",
                      argv.front(), package);
  SpawnOptions options;
  options.argv = argv;
  auto child = ChildProcess::spawn(options);
  if (!child)
    return child.error();
  CommandResult result;
  for (;;) {
    auto line = child->read_line(timeout);
    if (!line)
      break;
    result.stdout_text += *line + "\n";
  }
  auto status = child->wait(timeout);
  if (!status)
    return status.error();
  result.status = *status;
  result.stderr_text = child->stderr_text();
  return result;
}

#define ASSERT_RAN(result, what)                                                                 \
  ASSERT_TRUE((result).ok()) << what << ": " << (result).error().message;                        \
  ASSERT_TRUE((result)->status.success()) << what << ": " << (result)->status.describe() << "\n" \
                                          << (result)->stdout_text << (result)->stderr_text

// ---------------------------------------------------------------------------
// Interpreters and workloads.

const Interpreter* find_interpreter(const std::vector<Interpreter>& all,
                                    const std::function<bool(const Interpreter&)>& wanted) {
  for (const auto& interpreter : all)
    if (wanted(interpreter))
      return &interpreter;
  return nullptr;
}

struct TestInterpreters {
  const Interpreter* debian = nullptr;  // /usr/bin/python3.11: static, stripped
  const Interpreter* pyenv = nullptr;   // pyenv 3.12: shared libpython
};

TestInterpreters test_interpreters(const std::vector<Interpreter>& all) {
  TestInterpreters t;
  t.debian = find_interpreter(all, [](const Interpreter& i) {
    return i.origin == "debian-bookworm" && i.major_minor() == std::pair{3, 11};
  });
  t.pyenv = find_interpreter(all, [](const Interpreter& i) {
    return i.origin == "pyenv" && i.major_minor() == std::pair{3, 12};
  });
  return t;
}

#define REQUIRE_INTERPRETERS(t)                                              \
  ASSERT_TRUE((t).debian && (t).pyenv)                                       \
      << "the manifest needs Debian bookworm's python3.11 and pyenv's 3.12 " \
         "(scripts/provision-pythons)"

// Copies of the workloads in a directory of this test's own, so the daemon
// can select exactly this test's processes by their command line.
class StagedWorkloads {
 public:
  StagedWorkloads() {
    for (const char* script : {"chain.py", "threads.py", "short.py"})
      fs::copy_file(workload_path(script), dir_.file(script));
  }
  std::string path(const std::string& script) const { return dir_.file(script); }
  // The --cmdline-regex that selects these and nothing else.
  std::string selector() const { return regex_escape(dir_.path() + "/"); }

  Result<RunningWorkload> start(const Interpreter& interpreter, const std::string& script,
                                const std::vector<std::string>& args = {}) const {
    std::vector<std::string> argv = {path(script)};
    argv.insert(argv.end(), args.begin(), args.end());
    auto child = ChildProcess::spawn(interpreter_options(interpreter, argv));
    if (!child)
      return make_error("{} {}: {}", interpreter.name, script, child.error().message);
    auto line = child->read_line(60s);
    if (!line)
      return make_error("{} {}: no truth: {}", interpreter.name, script, line.error().message);
    auto truth = parse_truth(*line);
    if (!truth)
      return make_error("{} {}: {} in {}", interpreter.name, script, truth.error().message, *line);
    if (truth->pid != child->pid())
      return make_error("{} {}: truth of pid {}, child {}", interpreter.name, script, truth->pid,
                        child->pid());
    return RunningWorkload{std::move(*child), std::move(*truth)};
  }

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
void start_live_run(LiveRun& run) {
  ASSERT_NO_FATAL_FAILURE(require_root());
  REQUIRE_INTERPRETERS(run.py);
  auto server = IngestServer::start();
  ASSERT_TRUE(server.ok()) << server.error().message;
  run.server = std::move(*server);
}

// ---------------------------------------------------------------------------
// The daemon.

class Daemon {
 public:
  // Starts `[prefix...] krait daemon --ready-fd 1 args...` and returns once it
  // says sampling runs.
  static Result<Daemon> start(const std::vector<std::string>& args,
                              const std::vector<std::string>& prefix = {}) {
    SpawnOptions options;
    options.argv = prefix;
    options.argv.insert(options.argv.end(), {KRAIT_BINARY, "daemon", "--ready-fd", "1"});
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    auto child = ChildProcess::spawn(options);
    if (!child)
      return child.error();
    const auto started = SteadyClock::now();
    auto ready = child->read_line(60s);
    if (!ready || *ready != "ready")
      return make_error("krait daemon did not start: {}",
                        ready ? *ready + child->stderr_text() : ready.error().message);
    return Daemon(std::move(*child), seconds_since(started));
  }

  pid_t pid() const { return child_.pid(); }
  double startup_seconds() const { return startup_s_; }
  Result<void> signal(int sig) { return child_.signal(sig); }
  // Everything it logged so far (reading also keeps its stderr pipe from
  // filling up).
  const std::string& log() { return child_.stderr_text(); }

  // Sends `sig` and waits for the exit; `seconds` gets how long that took.
  Result<ExitStatus> stop(int sig, double* seconds = nullptr,
                          std::chrono::seconds timeout = std::chrono::seconds(30)) {
    const auto sent = SteadyClock::now();
    KRAIT_TRY(child_.signal(sig));
    auto status = child_.wait(timeout);
    if (seconds)
      *seconds = seconds_since(sent);
    return status;
  }

 private:
  Daemon(ChildProcess child, double startup_s) : child_(std::move(child)), startup_s_(startup_s) {}
  ChildProcess child_;
  double startup_s_ = 0;
};

// The flags every daemon of these tests gets: this server, short intervals,
// only the processes `selector` matches.
std::vector<std::string> daemon_args(const IngestServer& server, const std::string& selector,
                                     const std::vector<std::string>& more = {}) {
  std::vector<std::string> args = {"--pyroscope-url",   server.url(),
                                   "--upload-interval", std::to_string(kInterval),
                                   "--cmdline-regex",   selector};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// SIGTERM, after which the daemon must exit 0 (its log says why not).
void expect_clean_stop(Daemon& daemon) {
  auto status = daemon.stop(SIGTERM);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon.log();
}

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
  size_t bytes = 0;  // the gzipped pprof as sent
};

// Decodes every received profile; each must also pass `go tool pprof -raw`.
Result<std::vector<Delivered>> decode_received(const std::vector<ReceivedProfile>& received) {
  TempDir scratch;
  std::vector<Delivered> out;
  for (size_t i = 0; i < received.size(); ++i) {
    const ReceivedProfile& r = received[i];
    const std::string what = fmt::format("profile {} ({})", i, r.application);
    Delivered d;
    d.application = r.application;
    d.labels = r.labels;
    d.id = r.id;
    d.bytes = r.raw_pprof.size();
    auto pprof = exporter::decode_pprof(r.raw_pprof);
    if (!pprof)
      return pprof.error().context(what);
    d.pprof = std::move(*pprof);
    const std::string file = scratch.file(fmt::format("p{}.pb.gz", i));
    std::ofstream(file, std::ios::binary) << r.raw_pprof;
    auto raw = go_pprof_raw(file, scratch);
    if (!raw)
      return raw.error().context(what);
    d.samples = decode_samples(d.pprof);
    if (r.protocol == "ingest") {
      d.from_ns = std::stoll(r.from) * kNs;
      d.until_ns = std::stoll(r.until) * kNs;
      // The query names the same interval as the profile (whole seconds
      // around it).
      const int64_t start = d.pprof.time_nanos(), end = start + d.pprof.duration_nanos();
      if (d.from_ns != start / kNs * kNs || d.until_ns != (end + kNs - 1) / kNs * kNs)
        return make_error("{}: from={} until={} but the pprof covers [{}, {}] ns", what, r.from,
                          r.until, start, end);
    } else {
      d.from_ns = d.pprof.time_nanos();
      d.until_ns = d.pprof.time_nanos() + d.pprof.duration_nanos();
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::set<std::string> applications_of(const std::vector<Delivered>& all) {
  std::set<std::string> out;
  for (const auto& d : all)
    out.insert(d.application);
  return out;
}

std::vector<const Delivered*> of_application(const std::vector<Delivered>& all,
                                             const std::string& application) {
  std::vector<const Delivered*> out;
  for (const auto& d : all)
    if (d.application == application)
      out.push_back(&d);
  std::sort(out.begin(), out.end(),
            [](const Delivered* a, const Delivered* b) { return a->from_ns < b->from_ns; });
  return out;
}

// The intervals of one application (sorted by start) tile time: each starts
// where the previous ended, none twice; all but the first and last are one
// interval long and start on a multiple of it (wall-clock aligned); the
// first and last are no longer than one. `what` names them in failures.
void expect_tiling(const std::vector<const Delivered*>& profiles, const std::string& what,
                   int64_t interval_ns = kIntervalNs) {
  ASSERT_FALSE(profiles.empty()) << what << ": no profiles";
  std::set<std::string> ids;
  for (size_t i = 0; i < profiles.size(); ++i) {
    const Delivered& p = *profiles[i];
    const std::string at = fmt::format("{} interval {} of {} [{}, {})", what, i, profiles.size(),
                                       p.from_ns, p.until_ns);
    EXPECT_GT(p.until_ns, p.from_ns) << at;
    EXPECT_LE(p.until_ns - p.from_ns, interval_ns) << at;
    if (!p.id.empty()) {
      EXPECT_TRUE(ids.insert(p.id).second) << at << ": id " << p.id << " delivered twice";
    }
    if (i > 0) {
      EXPECT_EQ(p.from_ns, profiles[i - 1]->until_ns) << at << ": not where the previous ended";
      EXPECT_EQ(p.from_ns % interval_ns, 0) << at << ": not on an interval boundary";
    }
    if (i + 1 < profiles.size()) {
      EXPECT_EQ(p.until_ns % interval_ns, 0) << at << ": does not end on a boundary";
    }
    if (i > 0 && i + 1 < profiles.size()) {
      EXPECT_EQ(p.until_ns - p.from_ns, interval_ns) << at << ": not one interval long";
    }
  }
}

// Waits until `done(profiles received so far)` holds, re-checking whenever
// the server accepts another profile.
bool wait_for(const IngestServer& server,
              const std::function<bool(const std::vector<ReceivedProfile>&)>& done,
              std::chrono::seconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    auto profiles = server.profiles();
    if (done(profiles))
      return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left <= 0ms)
      return false;
    server.wait_for_profiles(profiles.size() + 1, left);
  }
}

size_t count_application(const std::vector<ReceivedProfile>& profiles,
                         const std::string& application) {
  return static_cast<size_t>(
      std::count_if(profiles.begin(), profiles.end(),
                    [&](const ReceivedProfile& p) { return p.application == application; }));
}

// Samples of `profiles` whose Python stack is what the truth says the
// sampled thread runs, and all samples (both weighted by count).
std::pair<int64_t, int64_t> truth_share(const std::vector<const Delivered*>& profiles,
                                        const Truth& truth) {
  int64_t matching = 0, all = 0;
  for (const Delivered* p : profiles)
    for (const ProfileSample& s : p->samples) {
      if (s.pid() != truth.pid)
        continue;
      all += s.count;
      const ThreadTruth* thread = truth.thread(s.tid());
      if (thread && stack_matches(truth, *thread, s.stack))
        matching += s.count;
    }
  return {matching, all};
}

int64_t samples_of(const std::vector<const Delivered*>& profiles, int64_t pid) {
  int64_t n = 0;
  for (const Delivered* p : profiles)
    n += total(samples_of_pid(p->samples, pid));
  return n;
}

// A profile file of the directory output: which interval was cut.
struct CutInterval {
  std::string application;
  int64_t from_s = 0, until_s = 0;
  uint64_t bytes = 0;
  bool operator<(const CutInterval& o) const {
    return std::tie(application, from_s) < std::tie(o.application, o.from_s);
  }
};

std::vector<CutInterval> cut_intervals(const std::string& dir) {
  std::vector<CutInterval> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    auto name = exporter::DirectoryOutput::parse_file_name(entry.path().filename().string());
    if (name)
      out.push_back({name->application, name->from, name->until, entry.file_size(ec)});
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Waits, with inotify, until `done(the profile files in dir)` holds.
bool wait_for_files(const std::string& dir,
                    const std::function<bool(const std::vector<CutInterval>&)>& done,
                    std::chrono::seconds timeout) {
  UniqueFd fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!fd.valid() || ::inotify_add_watch(fd.get(), dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0)
    return false;
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    if (done(cut_intervals(dir)))
      return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left <= 0ms)
      return false;
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
      char events[4096];
      while (::read(fd.get(), events, sizeof events) > 0) {
      }
    }
  }
}

// Full intervals (whole length) of `application` in a list of files.
size_t full_intervals(const std::vector<CutInterval>& cut, const std::string& application) {
  return static_cast<size_t>(std::count_if(cut.begin(), cut.end(), [&](const CutInterval& c) {
    return c.application == application && c.until_s - c.from_s == kInterval;
  }));
}

// The intervals the server received for `application`, in whole seconds as
// the directory output names them.
std::set<std::pair<int64_t, int64_t>> received_seconds(const std::vector<Delivered>& all,
                                                       const std::string& application) {
  std::set<std::pair<int64_t, int64_t>> out;
  for (const Delivered* d : of_application(all, application))
    out.insert({d->from_ns / kNs, d->until_ns / kNs});
  return out;
}

std::set<std::pair<int64_t, int64_t>> cut_seconds(const std::vector<CutInterval>& cut,
                                                  const std::string& application) {
  std::set<std::pair<int64_t, int64_t>> out;
  for (const auto& c : cut)
    if (c.application == application)
      out.insert({c.from_s, c.until_s});
  return out;
}

std::string describe_intervals(const std::set<std::pair<int64_t, int64_t>>& intervals) {
  std::string out;
  for (const auto& [from, until] : intervals)
    out += fmt::format("[{}, {}) ", from, until);
  return out;
}

// ---------------------------------------------------------------------------
// 1. Delivery.

void check_delivery(exporter::PyroscopeProtocol protocol) {
  LiveRun run;
  ASSERT_NO_FATAL_FAILURE(start_live_run(run));
  const bool push = protocol == exporter::PyroscopeProtocol::kPush;
  auto chain = run.staged.start(*run.py.debian, "chain.py");
  ASSERT_TRUE(chain.ok()) << chain.error().message;
  auto threads = run.staged.start(*run.py.pyenv, "threads.py");
  ASSERT_TRUE(threads.ok()) << threads.error().message;

  auto daemon = Daemon::start(daemon_args(*run.server, run.staged.selector(),
                                          {"--pyroscope-protocol", push ? "push" : "ingest"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const std::map<std::string, const RunningWorkload*> workloads = {{"chain.py", &*chain},
                                                                   {"threads.py", &*threads}};
  std::map<std::string, double> cpu_at_start;
  for (const auto& [app, w] : workloads)
    cpu_at_start[app] = cpu_seconds(w->truth.pid).value();

  // A partial first interval, then at least three whole ones each.
  ASSERT_TRUE(wait_for(
      *run.server,
      [](const auto& p) {
        return count_application(p, "chain.py") >= 4 && count_application(p, "threads.py") >= 4;
      },
      30s))
      << "profiles received: " << run.server->profiles().size() << "\n"
      << daemon->log();
  std::map<std::string, double> cpu_used;
  for (const auto& [app, w] : workloads)
    cpu_used[app] = cpu_seconds(w->truth.pid).value() - cpu_at_start[app];
  double stop_seconds = 0;
  auto status = daemon->stop(SIGTERM, &stop_seconds);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();

  auto received = decode_received(run.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const std::set<std::string> applications = applications_of(*received);
  EXPECT_EQ(applications, (std::set<std::string>{"chain.py", "threads.py"}));

  const std::string host = this_host_name();
  for (const auto& [app, w] : workloads) {
    const auto profiles = of_application(*received, app);
    SCOPED_TRACE(app);
    expect_tiling(profiles, app);
    const std::string comm = comm_of(w->truth.pid);
    for (const Delivered* p : profiles) {
      // Series labels: what the application runs and where; per-process
      // labels belong on the samples.
      EXPECT_EQ(p->labels.count("service_name") ? p->labels.at("service_name") : p->application,
                app);
      EXPECT_EQ(p->labels.count("hostname") ? p->labels.at("hostname") : "", host);
      if (push) {
        EXPECT_EQ(p->labels.count("__name__") ? p->labels.at("__name__") : "", "process_cpu");
      }
      for (const char* per_process : {"pid", "process_name", "python_version"})
        EXPECT_EQ(p->labels.count(per_process), 0u) << per_process << " is a series label";
      for (const ProfileSample& s : p->samples) {
        EXPECT_EQ(s.pid(), w->truth.pid) << "a sample of another process";
        EXPECT_EQ(s.labels.count("process_name") ? s.labels.at("process_name") : "", comm);
        EXPECT_EQ(s.labels.count("python_version") ? s.labels.at("python_version") : "",
                  w->truth.python);
      }
    }
    const auto [matching, all] = truth_share(profiles, w->truth);
    EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all))
        << matching << " of " << all << " samples carry the truth of " << app;
    // Nothing lost on the way: the samples match the CPU time the kernel
    // accounted to the workload while the daemon ran (99 Hz per CPU).
    const double expected = cpu_used[app] * kRateHz;
    EXPECT_GE(static_cast<double>(all), 0.8 * expected)
        << all << " samples for " << cpu_used[app] << " s of CPU";
    EXPECT_LE(static_cast<double>(all), 1.2 * expected + 10)
        << all << " samples for " << cpu_used[app] << " s of CPU";
    std::cout << fmt::format(
        "[ stats    ] {}: {} profiles, {} of {} samples match the truth, "
        "{:.2f} s CPU -> {:.0f} samples expected\n",
        app, profiles.size(), matching, all, cpu_used[app], expected);
  }
  std::cout << fmt::format("[ stats    ] startup {:.2f} s, SIGTERM to exit {:.2f} s, {} profiles\n",
                           daemon->startup_seconds(), stop_seconds, received->size());
}

TEST(Daemon, PushDeliversOneProfilePerApplicationPerInterval) {
  check_delivery(exporter::PyroscopeProtocol::kPush);
}

TEST(Daemon, IngestDeliversOneProfilePerApplicationPerInterval) {
  check_delivery(exporter::PyroscopeProtocol::kIngest);
}

// --all-processes (mixed stacks): a program that is not Python is its own
// application, with the native and kernel frames it runs, beside the Python
// ones. Oracle: the C program's own function names (tests/fixtures/cext/
// busy_loop.c), the workload's truth, and the pid of each.
TEST(Daemon, AllProcessesProfilesAProgramThatIsNotPython) {
  LiveRun run;
  ASSERT_NO_FATAL_FAILURE(start_live_run(run));
  const std::string exe = run.staged.path("krait_busy_loop");
  fs::copy_file(KRAIT_BUSY_LOOP, exe);
  fs::permissions(exe, fs::perms::owner_all);
  auto busy = start_ready_program({exe});
  ASSERT_TRUE(busy.ok()) << busy.error().message;
  auto chain = run.staged.start(*run.py.debian, "chain.py");
  ASSERT_TRUE(chain.ok()) << chain.error().message;

  auto daemon = Daemon::start(
      daemon_args(*run.server, run.staged.selector(), {"--all-processes", "--stacks", "mixed"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *run.server,
      [](const auto& p) {
        return count_application(p, "krait_busy_loop") >= 2 &&
               count_application(p, "chain.py") >= 2;
      },
      30s))
      << "profiles received: " << run.server->profiles().size() << "\n"
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(run.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const std::set<std::string> applications = applications_of(*received);
  EXPECT_EQ(applications, (std::set<std::string>{"chain.py", "krait_busy_loop"}))
      << "the selection matches these two programs only";

  const auto native = of_application(*received, "krait_busy_loop");
  expect_tiling(native, "krait_busy_loop");
  int64_t all = 0, named = 0;
  for (const Delivered* p : native)
    for (const ProfileSample& s : p->samples) {
      EXPECT_EQ(s.pid(), busy->pid()) << "a sample of another process";
      EXPECT_TRUE(s.stack.empty()) << "Python frames in a C program";
      all += s.count;
      bool in_main = false, in_part = false;
      for (const Frame& f : s.full_stack) {
        in_main |= f.function == "main";
        in_part |= in_main && (f.function == "krait_busy_spin" || f.function == "krait_busy_read");
      }
      named += in_part ? s.count : 0;
    }
  EXPECT_GE(all, 50) << "samples of the C program";
  EXPECT_GE(static_cast<double>(named), 0.9 * static_cast<double>(all))
      << named << " of " << all << " samples show main calling krait_busy_spin or krait_busy_read";
  const auto [matching, python] = truth_share(of_application(*received, "chain.py"), chain->truth);
  EXPECT_GE(python, 50) << "samples of chain.py";
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(python))
      << matching << " of " << python << " samples carry the truth of chain.py";
  std::cout << fmt::format(
      "[ stats    ] krait_busy_loop: {} profiles, {} of {} samples in main's callees; chain.py "
      "{} of {} match the truth\n",
      native.size(), named, all, matching, python);
}

// ---------------------------------------------------------------------------
// 2. Failure paths. One workload (chain.py, Debian's static interpreter) and
// the directory output beside the upload: the files say which intervals
// were cut while the server could not take them.

struct FailureRun {
  std::unique_ptr<IngestServer> server;
  StagedWorkloads staged;
  TempDir out;
  std::string dir;  // the directory output
  std::optional<RunningWorkload> chain;

  // Starts the server and the workload (the daemon is the test's).
  static Result<std::unique_ptr<FailureRun>> start() {
    auto run = std::make_unique<FailureRun>();
    const auto interpreters = load_manifest();
    const TestInterpreters py = test_interpreters(interpreters);
    if (!py.debian)
      return make_error("the manifest has no Debian bookworm python3.11");
    auto server = IngestServer::start();
    if (!server)
      return server.error();
    run->server = std::move(*server);
    run->dir = run->out.file("profiles");
    fs::create_directory(run->dir);
    auto chain = run->staged.start(*py.debian, "chain.py");
    if (!chain)
      return chain.error();
    run->chain = std::move(*chain);
    return run;
  }

  std::vector<std::string> args(const std::vector<std::string>& more = {}) const {
    auto a = daemon_args(*server, staged.selector(), {"--output-dir", dir});
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }

  // Waits until `n` whole intervals of chain.py were cut (written as files).
  bool wait_for_cut(size_t n, std::chrono::seconds timeout = 30s) const {
    return wait_for_files(
        dir, [&](const auto& cut) { return full_intervals(cut, "chain.py") >= n; }, timeout);
  }

  // Waits until the server has every interval cut so far plus `more`.
  bool wait_for_delivery_of_cut(size_t more, std::chrono::seconds timeout = 40s) const {
    const size_t want = cut_intervals(dir).size() + more;
    return wait_for(
        *server, [&](const auto& p) { return count_application(p, "chain.py") >= want; }, timeout);
  }
};

// What every failure test checks at the end: the server has each interval
// the daemon cut exactly once (so nothing was lost or sent twice), they
// tile time, and their samples are the workload's.
void expect_every_cut_interval_delivered_once(const FailureRun& run,
                                              const std::vector<Delivered>& received) {
  const auto profiles = of_application(received, "chain.py");
  expect_tiling(profiles, "chain.py");
  const auto cut = cut_seconds(cut_intervals(run.dir), "chain.py");
  const auto got = received_seconds(received, "chain.py");
  EXPECT_EQ(got, cut) << "received: " << describe_intervals(got)
                      << "\ncut: " << describe_intervals(cut);
  EXPECT_EQ(got.size(), profiles.size()) << "an interval arrived more than once";
  const auto [matching, all] = truth_share(profiles, run.chain->truth);
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all))
      << matching << " of " << all << " samples carry the workload's truth";
}

TEST(Daemon, RefusedConnectionsDeliverLaterWithoutDuplicates) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  auto daemon = Daemon::start(r.args({"--pyroscope-connect-timeout", "1"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  // Three whole intervals cut while nobody listens.
  ASSERT_TRUE(r.wait_for_cut(3)) << daemon->log();
  const auto during_outage = cut_seconds(cut_intervals(r.dir), "chain.py");
  EXPECT_TRUE(r.server->requests().empty()) << "the server was refusing connections";
  ASSERT_TRUE(r.server->accept_normally().ok());
  const auto back = SteadyClock::now();

  // The backlog and two more intervals arrive.
  ASSERT_TRUE(r.wait_for_delivery_of_cut(2)) << daemon->log();
  const double backlog_seconds = seconds_since(back);
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("connection refused"), std::string::npos) << daemon->log();

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  const auto got = received_seconds(*received, "chain.py");
  for (const auto& interval : during_outage)
    EXPECT_TRUE(got.contains(interval))
        << "interval of the outage lost: " << describe_intervals({interval});
  std::cout << fmt::format(
      "[ stats    ] {} intervals cut during the outage, delivered within "
      "{:.1f} s of the server's return\n",
      during_outage.size(), backlog_seconds);
}

// The numbers of the daemon's last log line ("stopped; ... 3 dropped (queue
// full) ..."): the only place the daemon reports its upload counters.
std::optional<int64_t> logged_counter(const std::string& log, const std::string& what) {
  std::smatch m;
  const std::regex re("stopped;.* ([0-9]+) " + regex_escape(what));
  if (!std::regex_search(log, m, re))
    return std::nullopt;
  return std::stoll(m[1].str());
}

TEST(Daemon, QueueMemoryCapKeepsTheNewestProfiles) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  // Room for two profiles of this workload (one stack: about 2 KiB each,
  // as the queue counts them).
  constexpr uint64_t kCap = 5 * 1024;
  auto daemon = Daemon::start(
      r.args({"--queue-max-bytes", std::to_string(kCap), "--pyroscope-connect-timeout", "1"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  ASSERT_TRUE(r.wait_for_cut(4)) << daemon->log();
  const auto outage = cut_intervals(r.dir);
  ASSERT_TRUE(r.server->accept_normally().ok());
  // Whatever survived the cap, then two intervals cut after the return.
  const int64_t back_s = unix_now_ns() / kNs;
  ASSERT_TRUE(wait_for(
      *r.server,
      [&](const auto& p) {
        size_t after = 0;
        for (const auto& profile : p)
          after += profile.application == "chain.py" && !profile.raw_pprof.empty() &&
                   exporter::decode_pprof(profile.raw_pprof)->time_nanos() / kNs >= back_s;
        return after >= 2;
      },
      60s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto got = received_seconds(*received, "chain.py");
  EXPECT_EQ(got.size(), of_application(*received, "chain.py").size()) << "duplicates";
  // Every interval cut was either delivered or dropped by the cap, and only
  // the oldest are dropped: profiles arrive in order and a drop always takes
  // the oldest waiting, so what arrived is the newest run of what was cut,
  // whenever the retries happened to come.
  const auto cut = cut_intervals(r.dir);
  std::vector<bool> arrived;
  for (const CutInterval& c : cut)
    arrived.push_back(got.contains({c.from_s, c.until_s}));
  const auto first_kept = std::find(arrived.begin(), arrived.end(), true);
  EXPECT_TRUE(std::all_of(first_kept, arrived.end(), [](bool a) { return a; }))
      << "an older profile survived a newer one; cut: "
      << describe_intervals(cut_seconds(cut, "chain.py"))
      << "\nreceived: " << describe_intervals(got);
  const auto cut_set = cut_seconds(cut, "chain.py");
  EXPECT_TRUE(std::includes(cut_set.begin(), cut_set.end(), got.begin(), got.end()))
      << "received an interval that was never cut";
  const auto dropped = static_cast<int64_t>(cut_set.size() - got.size());
  EXPECT_GE(dropped, 2) << "the cap of " << kCap << " bytes held " << outage.size()
                        << " profiles of the outage";
  EXPECT_EQ(logged_counter(daemon->log(), "dropped (queue full)"), dropped) << daemon->log();
  EXPECT_NE(daemon->log().find("upload queue full"), std::string::npos) << daemon->log();
  const auto outage_kept = std::count_if(outage.begin(), outage.end(), [&](const CutInterval& c) {
    return got.contains({c.from_s, c.until_s});
  });
  std::cout << fmt::format(
      "[ stats    ] {} profiles cut during the outage, {} of them delivered; {} cut in all, {} "
      "dropped\n",
      outage.size(), outage_kept, cut_set.size(), dropped);
}

TEST(Daemon, ServerErrorsAreRetried) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  r.server->fail_with_status(500, "internal error");
  auto daemon = Daemon::start(r.args());
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  // Three failed attempts (backoff 0.5-1 s, then 1-2 s), then the server heals.
  ASSERT_TRUE(r.server->wait_for_requests(3, 30s)) << daemon->log();
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  const auto requests = r.server->requests();
  std::string statuses;
  for (const ReceivedRequest& q : requests)
    statuses += fmt::format("{} {} -> {}\n", q.method, q.target, q.status);
  EXPECT_GE(std::count_if(requests.begin(), requests.end(),
                          [](const ReceivedRequest& q) { return q.status == 500; }),
            3)
      << statuses;
  EXPECT_NE(daemon->log().find("HTTP 500"), std::string::npos) << daemon->log();
  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
}

TEST(Daemon, RetryAfterIsHonoured) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  // Longer than the first backoff (at most 1 s), so only Retry-After can
  // explain a wait this long.
  constexpr double kRetryAfter = 3;
  r.server->fail_with_status(429, "slow down", "3");
  auto daemon = Daemon::start(r.args());
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  ASSERT_TRUE(r.server->wait_for_requests(1, 30s)) << daemon->log();
  const auto first = SteadyClock::now();
  ASSERT_TRUE(r.server->wait_for_requests(2, 30s)) << daemon->log();
  const double gap = seconds_since(first);
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  // The first request was answered 429; the next came no sooner than the
  // server asked (less the time the test took to notice the first).
  const auto requests = r.server->requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[0].status, 429);
  EXPECT_GE(gap, kRetryAfter - 0.2)
      << "the retry came " << gap << " s after a Retry-After of " << kRetryAfter << " s";
  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  std::cout << fmt::format("[ stats    ] retry {:.2f} s after the 429\n", gap);
}

TEST(Daemon, HangingServerTimesOutAndSamplingGoesOn) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  r.server->hang();
  auto daemon = Daemon::start(r.args({"--pyroscope-timeout", "2"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const double cpu_at_start = cpu_seconds(r.chain->truth.pid).value();

  // A second request while the first hangs: the first timed out and was
  // retried. Meanwhile intervals keep being cut.
  ASSERT_TRUE(r.server->wait_for_hanging(1, 30s)) << daemon->log();
  ASSERT_TRUE(r.server->wait_for_requests(2, 30s)) << daemon->log();
  ASSERT_TRUE(r.wait_for_cut(3)) << daemon->log();
  const size_t cut_while_hanging = cut_intervals(r.dir).size();
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  const double cpu_used = cpu_seconds(r.chain->truth.pid).value() - cpu_at_start;
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("timed out"), std::string::npos) << daemon->log();

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  // Sampling did not wait for the network: the samples account for the
  // workload's CPU time, hang included.
  const int64_t samples = samples_of(of_application(*received, "chain.py"), r.chain->truth.pid);
  EXPECT_GE(static_cast<double>(samples), 0.8 * cpu_used * kRateHz)
      << samples << " samples for " << cpu_used << " s of CPU";
  std::cout << fmt::format(
      "[ stats    ] {} intervals cut while hanging; {} samples for {:.2f} s "
      "of CPU\n",
      cut_while_hanging, samples, cpu_used);
}

TEST(Daemon, FullOrReadOnlyDirectoryIsLoggedAndUploadsGoOn) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  // The daemon runs in a mount namespace of its own where its output
  // directory is a 64 KiB tmpfs, already full.
  const std::string tiny = r.out.file("tiny");
  fs::create_directory(tiny);
  const std::string setup = fmt::format(
      "mount -t tmpfs -o size=64k krait-full {0} || exit 97; "
      "head -c 65536 /dev/zero > {0}/filler 2>/dev/null; exec \"$0\" \"$@\"",
      tiny);
  auto daemon = Daemon::start(daemon_args(*r.server, r.staged.selector(), {"--output-dir", tiny}),
                              {"/usr/bin/unshare", "--mount", "--", "/bin/sh", "-c", setup});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const std::string inside = fmt::format("/proc/{}/root{}", daemon->pid(), tiny);
  struct statvfs fsinfo {};
  ASSERT_EQ(::statvfs(inside.c_str(), &fsinfo), 0) << inside;
  ASSERT_EQ(fsinfo.f_bavail, 0u) << "the daemon's output tmpfs is not full";

  // Uploads go on while every file fails.
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "chain.py") >= 3; }, 30s))
      << daemon->log();
  EXPECT_TRUE(cut_intervals(inside).empty());
  const std::string log = daemon->log();
  EXPECT_NE(log.find("profile directory: writing a profile into " + tiny), std::string::npos)
      << log;
  EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
  // Room again: the next interval is written.
  ASSERT_TRUE(fs::remove(inside + "/filler"));
  const int64_t freed_s = unix_now_ns() / kNs;
  ASSERT_TRUE(wait_for_files(
      inside, [](const auto& cut) { return !cut.empty(); }, 20s))
      << daemon->log();
  const auto written = cut_intervals(inside);
  // An unwritable directory (a read-only remount in the daemon's mount
  // namespace): logged the same way, no file, and two more uploads go out.
  auto remount =
      run_tool({"/usr/bin/nsenter", fmt::format("--mount=/proc/{}/ns/mnt", daemon->pid()), "--",
                "/bin/mount", "-o", "remount,ro", tiny},
               "util-linux");
  ASSERT_RAN(remount, "remount read-only");
  const size_t files_before = cut_intervals(inside).size();
  const size_t uploads_before = count_application(r.server->profiles(), "chain.py");
  ASSERT_TRUE(wait_for(
      *r.server,
      [&](const auto& p) { return count_application(p, "chain.py") >= uploads_before + 2; }, 30s))
      << daemon->log();
  EXPECT_NE(daemon->log().find("Read-only file system"), std::string::npos) << daemon->log();
  EXPECT_EQ(cut_intervals(inside).size(), files_before) << "a file written read-only";
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto profiles = of_application(*received, "chain.py");
  expect_tiling(profiles, "chain.py");
  const auto [matching, all] = truth_share(profiles, r.chain->truth);
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all));
  const auto got = received_seconds(*received, "chain.py");
  for (const CutInterval& c : written) {
    EXPECT_GE(c.until_s, freed_s) << "a file from before the disk had room";
    EXPECT_TRUE(got.contains({c.from_s, c.until_s})) << "file and upload disagree";
  }
}

// Flags for a daemon with one long interval: SIGTERM comes in its middle.
std::vector<std::string> long_interval_args(const IngestServer& server,
                                            const std::string& selector) {
  return {"--pyroscope-url", server.url(), "--upload-interval", "60", "--cmdline-regex", selector};
}

TEST(Daemon, SigtermDeliversThePartialIntervalAndExitsZero) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  auto daemon = Daemon::start(long_interval_args(*r.server, r.staged.selector()));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const double cpu_at_start = cpu_seconds(r.chain->truth.pid).value();
  let_time_pass(3s);
  const double cpu_used = cpu_seconds(r.chain->truth.pid).value() - cpu_at_start;
  const int64_t signalled_ns = unix_now_ns();
  double exit_seconds = 0;
  auto status = daemon->stop(SIGTERM, &exit_seconds);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();
  EXPECT_LT(exit_seconds, 3.0) << "SIGTERM to exit, with the server up";

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto profiles = of_application(*received, "chain.py");
  ASSERT_FALSE(profiles.empty()) << "the interval SIGTERM ended was not delivered\n"
                                 << daemon->log();
  expect_tiling(profiles, "chain.py", 60 * kNs);
  // The last profile ends when the signal came.
  EXPECT_GE(profiles.back()->until_ns, signalled_ns - 100'000'000);
  EXPECT_LE(profiles.back()->until_ns, signalled_ns + kNs);
  const int64_t samples = samples_of(profiles, r.chain->truth.pid);
  EXPECT_GE(static_cast<double>(samples), 0.8 * cpu_used * kRateHz)
      << samples << " samples for " << cpu_used << " s of CPU";
  const auto [matching, all] = truth_share(profiles, r.chain->truth);
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all));
  std::cout << fmt::format(
      "[ stats    ] SIGTERM to exit {:.2f} s; {} samples for {:.2f} s of CPU\n", exit_seconds,
      samples, cpu_used);
}

// The health line operators read: every --health-interval, the samples
// so far (growing while a process burns CPU), and how often frames were
// named from the cache.
TEST(Daemon, HealthLineReportsSamplesAndTheFrameCache) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  auto args = long_interval_args(*r.server, r.staged.selector());
  args.insert(args.end(), {"--health-interval", "1"});
  auto daemon = Daemon::start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  let_time_pass(4s);
  auto status = daemon->stop(SIGTERM, nullptr);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();

  std::vector<std::pair<int64_t, double>> lines;  // samples, cached %
  std::istringstream log(daemon->log());
  for (std::string line; std::getline(log, line);) {
    const size_t at = line.find("health: ");
    if (at == std::string::npos)
      continue;
    int64_t processes = 0, samples = 0;
    double cached = -1;
    const std::string text = line.substr(at);
    ASSERT_EQ(std::sscanf(text.c_str(), "health: %" SCNd64 " Python processes profiled, %" SCNd64,
                          &processes, &samples),
              2)
        << line;
    const size_t names = text.find("frame names ");
    ASSERT_NE(names, std::string::npos) << line;
    ASSERT_EQ(std::sscanf(text.c_str() + names, "frame names %lf%%", &cached), 1) << line;
    EXPECT_GE(processes, 1) << line;
    lines.emplace_back(samples, cached);
  }
  ASSERT_GE(lines.size(), 2u) << daemon->log();
  EXPECT_GT(lines.back().first, lines.front().first) << "samples grow while chain.py runs";
  // chain.py spins in one stack: after the first samples every frame is
  // named from the cache.
  EXPECT_GT(lines.back().second, 50.0) << daemon->log();
  EXPECT_LE(lines.back().second, 100.0);
}

TEST(Daemon, SigtermWithTheServerDownExitsZeroAfterTheFlushDeadline) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  auto daemon = Daemon::start(long_interval_args(*r.server, r.staged.selector()));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  let_time_pass(2s);
  double exit_seconds = 0;
  auto status = daemon->stop(SIGTERM, &exit_seconds);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();
  // The flush gives the upload 5 s (docs/daemon.md), then the daemon goes.
  EXPECT_LT(exit_seconds, 7.0);
  EXPECT_NE(daemon->log().find("could not be uploaded before exiting"), std::string::npos)
      << daemon->log();
  std::cout << fmt::format("[ stats    ] SIGTERM to exit {:.2f} s with the server down\n",
                           exit_seconds);
}

// A configuration file for the SIGHUP tests; TOML literal strings need no
// escaping of the regex or the paths.
std::string config_text(const IngestServer& server, const std::string& selector,
                        const std::string& team, const std::string& directory) {
  std::string text = fmt::format(
      "[upload]\ninterval_s = {}\n\n[processes]\ncmdline_regex = ['{}']\n\n"
      "[pyroscope]\nurl = '{}'\n\n[labels]\nteam = '{}'\n",
      kInterval, selector, server.url(), team);
  if (!directory.empty())
    text += fmt::format("\n[directory]\npath = '{}'\n", directory);
  return text;
}

void replace_file(const std::string& path, const std::string& text) {
  std::ofstream(path + ".new") << text;
  fs::rename(path + ".new", path);
}

std::string label_of(const ReceivedProfile& p, const std::string& name) {
  auto it = p.labels.find(name);
  return it == p.labels.end() ? "" : it->second;
}

TEST(Daemon, SighupAddsAnOutputAndLabelsNewProcesses) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  const std::string config = r.out.file("krait.toml");
  replace_file(config, config_text(*r.server, r.staged.selector(), "before", ""));
  auto daemon = Daemon::start({"--config", config});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *r.server,
      [](const auto& p) {
        return std::any_of(p.begin(), p.end(),
                           [](const auto& x) { return label_of(x, "team") == "before"; });
      },
      20s))
      << daemon->log();

  replace_file(config, config_text(*r.server, r.staged.selector(), "after", r.dir));
  ASSERT_TRUE(daemon->signal(SIGHUP).ok());
  // The directory output appears...
  ASSERT_TRUE(wait_for_files(
      r.dir, [](const auto& cut) { return !cut.empty(); }, 20s))
      << daemon->log();
  // ... and a process started now carries the new label.
  const auto interpreters = load_manifest();
  const TestInterpreters py = test_interpreters(interpreters);
  REQUIRE_INTERPRETERS(py);
  auto newcomer = r.staged.start(*py.pyenv, "threads.py");
  ASSERT_TRUE(newcomer.ok()) << newcomer.error().message;
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "threads.py") >= 2; }, 20s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("configuration reloaded"), std::string::npos) << daemon->log();

  const auto profiles = r.server->profiles();
  for (const auto& p : profiles) {
    if (p.application == "threads.py") {
      EXPECT_EQ(label_of(p, "team"), "after");
    }
  }
  auto received = decode_received(profiles);
  ASSERT_TRUE(received.ok()) << received.error().message;
  // The reload did not disturb the intervals. The running process changed
  // series (its label) at the reload: each series tiles time, and the new
  // one starts in the interval where the old one ends (both have a part of
  // it) or right after it.
  std::map<std::string, std::vector<const Delivered*>> by_team;
  for (const Delivered* d : of_application(*received, "chain.py"))
    by_team[d->labels.count("team") ? d->labels.at("team") : ""].push_back(d);
  ASSERT_EQ(by_team.size(), 2u) << "chain.py profiles labelled other than before and after";
  const auto& before = by_team["before"];
  const auto& after = by_team["after"];
  expect_tiling(before, "chain.py, team=before");
  expect_tiling(after, "chain.py, team=after");
  ASSERT_FALSE(before.empty() || after.empty());
  EXPECT_TRUE(after.front()->from_ns == before.back()->from_ns ||
              after.front()->from_ns == before.back()->until_ns)
      << "before ends with [" << before.back()->from_ns << ", " << before.back()->until_ns
      << "), after starts with [" << after.front()->from_ns << ", " << after.front()->until_ns
      << ")";
  const auto got = received_seconds(*received, "chain.py");
  for (const CutInterval& c : cut_intervals(r.dir)) {
    if (c.application == "chain.py") {
      EXPECT_TRUE(got.contains({c.from_s, c.until_s})) << "file and upload disagree";
    }
  }
}

// docs/daemon.md: SIGHUP reloads "naming, labels"; a static label is a
// property of the configuration, so the processes already running carry
// the new one from the reload on.
TEST(Daemon, SighupRelabelsRunningProcesses) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  const std::string config = r.out.file("krait.toml");
  replace_file(config, config_text(*r.server, r.staged.selector(), "before", ""));
  auto daemon = Daemon::start({"--config", config});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "chain.py") >= 1; }, 20s))
      << daemon->log();
  replace_file(config, config_text(*r.server, r.staged.selector(), "after", r.dir));
  ASSERT_TRUE(daemon->signal(SIGHUP).ok());
  // Two whole intervals after the reload took effect (the directory output
  // is its witness).
  ASSERT_TRUE(r.wait_for_cut(2, 20s)) << daemon->log();
  ASSERT_TRUE(r.wait_for_delivery_of_cut(0, 20s)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  const auto cut = cut_intervals(r.dir);
  ASSERT_FALSE(cut.empty());
  for (const auto& p : r.server->profiles()) {
    if (p.application != "chain.py")
      continue;
    auto pprof = exporter::decode_pprof(p.raw_pprof);
    ASSERT_TRUE(pprof.ok());
    // Profiles of intervals that began after the reload had taken effect.
    if (pprof->time_nanos() / kNs >= cut.front().until_s) {
      EXPECT_EQ(label_of(p, "team"), "after") << "profile from " << pprof->time_nanos() / kNs
                                              << " still labelled '" << label_of(p, "team") << "'";
    }
  }
}

// ---------------------------------------------------------------------------
// 3. Process churn.

struct ShortRun {
  Truth truth;
  double cpu_s = 0;  // utime + stime at exit
  ExitStatus status;
};

// Runs `count` short.py processes (--ms 200: at least 200 ms of CPU with the
// interpreter's start), `parallel` at a time, taking turns between
// `interpreters`.
Result<std::vector<ShortRun>> run_short_processes(const StagedWorkloads& staged,
                                                  const std::vector<const Interpreter*>& pythons,
                                                  int count, size_t parallel, Daemon& daemon) {
  struct Running {
    RunningWorkload workload;
    UniqueFd pidfd;  // our own: polled to see the exit before the reap
  };
  std::deque<Running> running;
  std::vector<ShortRun> done;
  int started = 0;
  while (started < count || !running.empty()) {
    if (started < count && running.size() < parallel) {
      const Interpreter& python = *pythons[static_cast<size_t>(started) % pythons.size()];
      auto w = staged.start(python, "short.py", {"--ms", "200"});
      if (!w)
        return w.error();
      UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, w->truth.pid, 0)));
      if (!pidfd.valid())
        return make_error("pidfd_open({}): {}", w->truth.pid, std::strerror(errno));
      running.push_back({std::move(*w), std::move(pidfd)});
      ++started;
      continue;
    }
    Running& oldest = running.front();
    pollfd p{oldest.pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 20'000) != 1)
      return make_error("short.py pid {} did not exit", oldest.workload.truth.pid);
    ShortRun r;
    // Exited, not yet reaped: /proc still has its CPU time.
    auto cpu = cpu_seconds(static_cast<pid_t>(oldest.workload.truth.pid));
    if (!cpu)
      return cpu.error();
    r.cpu_s = *cpu;
    auto status = oldest.workload.child.wait(10s);
    if (!status)
      return status.error();
    r.status = *status;
    r.truth = std::move(oldest.workload.truth);
    done.push_back(std::move(r));
    running.pop_front();
    daemon.log();  // keeps the daemon's stderr pipe from filling
  }
  return done;
}

// Waits for `n` more intervals of `application` than the server has now.
bool wait_for_more_intervals(const IngestServer& server, const std::string& application, size_t n,
                             std::chrono::seconds timeout = 30s) {
  const size_t now = count_application(server.profiles(), application);
  return wait_for(
      server, [&](const auto& p) { return count_application(p, application) >= now + n; }, timeout);
}

TEST(Daemon, ChurnOfShortProcessesIsProfiledAndLeavesNoMemoryBehind) {
  LiveRun run;
  ASSERT_NO_FATAL_FAILURE(start_live_run(run));
  // A steady process, niced so the short ones get the CPUs: its profiles
  // mark interval ends (when the daemon forgets exited processes) while
  // nothing else runs.
  auto steady = run.staged.start(*run.py.pyenv, "chain.py");
  ASSERT_TRUE(steady.ok()) << steady.error().message;
  ASSERT_EQ(::setpriority(PRIO_PROCESS, static_cast<id_t>(steady->truth.pid), 19), 0);
  // Python stacks: what stays behind a process is the question here. Mixed
  // stacks add caches keyed by code address (the DWARF of libpython and
  // libc, read lazily as new native frames are sampled), which keep growing
  // for thousands of processes, bounded by the libraries' size and not by
  // the number of processes (docs/daemon.md, "Cost").
  auto daemon =
      Daemon::start(daemon_args(*run.server, run.staged.selector(), {"--stacks", "python"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const std::vector<const Interpreter*> pythons = {run.py.debian, run.py.pyenv};

  // Warm-up: caches of both interpreters' files, the allocator's arenas.
  auto warmup = run_short_processes(run.staged, pythons, 30, 2, *daemon);
  ASSERT_TRUE(warmup.ok()) << warmup.error().message;
  ASSERT_TRUE(wait_for_more_intervals(*run.server, "chain.py", 2)) << daemon->log();
  const int64_t baseline_kib = rss_kib(daemon->pid()).value();

  const auto churn_started = SteadyClock::now();
  const int64_t churn_started_ns = unix_now_ns();
  auto churn = run_short_processes(run.staged, pythons, 300, 2, *daemon);
  ASSERT_TRUE(churn.ok()) << churn.error().message;
  const double churn_seconds = seconds_since(churn_started);
  const int64_t peak_kib = rss_kib(daemon->pid()).value();
  // Two interval ends after the last exit: the exited processes are gone
  // from the daemon's tables by then.
  ASSERT_TRUE(wait_for_more_intervals(*run.server, "chain.py", 2)) << daemon->log();
  const int64_t after_kib = rss_kib(daemon->pid()).value();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(run.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto profiles = of_application(*received, "short.py");
  // While short processes ran (the warm-up, the churn), short.py has a
  // profile in every interval; between the two none ran for two intervals.
  std::vector<const Delivered*> warm_profiles, churn_profiles;
  for (const Delivered* p : profiles)
    (p->until_ns <= churn_started_ns ? warm_profiles : churn_profiles).push_back(p);
  expect_tiling(warm_profiles, "short.py, warm-up");
  expect_tiling(churn_profiles, "short.py, churn");
  std::map<int64_t, std::vector<ProfileSample>> by_pid;
  for (const Delivered* p : profiles)
    for (const ProfileSample& s : p->samples)
      by_pid[s.pid()].push_back(s);

  int64_t checked = 0, exact_total = 0, samples_total = 0;
  double cpu_total = 0;
  for (const ShortRun& r : *churn) {
    EXPECT_TRUE(r.status.success()) << "short.py " << r.truth.pid << ": " << r.status.describe();
    const auto& samples = by_pid[r.truth.pid];
    const auto& thread = r.truth.threads.at(0);
    const int64_t exact = count_exact(samples, thread.stack);
    exact_total += exact;
    samples_total += total(samples);
    cpu_total += r.cpu_s;
    if (r.cpu_s < 0.2)
      continue;
    ++checked;
    EXPECT_GE(exact, 1) << "short.py pid " << r.truth.pid << " (" << r.truth.python << ", "
                        << r.cpu_s << " s CPU): " << describe_mismatches(samples, thread.stack);
  }
  EXPECT_GE(checked, 250) << "too few short processes got 200 ms of CPU: the host is too busy";
  // Short lives lose nothing either: samples for the CPU time they used.
  EXPECT_GE(static_cast<double>(samples_total), 0.8 * cpu_total * kRateHz)
      << samples_total << " samples for " << cpu_total << " s of CPU";

  // Memory: the RSS after the churn is back within 2 MiB of the RSS after
  // the warm-up. 1300 processes grew it by 0.5 MiB when measured
  // (docs/daemon.md, "Cost"); a leak of 7 KiB a process would fail.
  constexpr int64_t kMarginKib = 2 * 1024;
  EXPECT_LE(after_kib, baseline_kib + kMarginKib)
      << "RSS after warm-up " << baseline_kib << " KiB, at the end of the churn " << peak_kib
      << " KiB, two intervals later " << after_kib << " KiB";
  std::cout << fmt::format(
      "[ stats    ] {} processes in {:.1f} s, {} with >= 200 ms CPU; {} of {} samples on the "
      "truth stack, {:.1f} s CPU; RSS KiB: warm {} peak {} after {}\n",
      churn->size(), churn_seconds, checked, exact_total, samples_total, cpu_total, baseline_kib,
      peak_kib, after_kib);
}

// ---------------------------------------------------------------------------
// 4. Containers.

// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
// hybrid hosts), from /proc/self/mounts.
Result<std::string> cgroup2_mount() {
  auto mounts = read_file("/proc/self/mounts");
  if (!mounts)
    return mounts.error();
  std::istringstream lines(*mounts);
  std::string device, dir, type;
  std::string rest;
  while (lines >> device >> dir >> type && std::getline(lines, rest))
    if (type == "cgroup2")
      return dir;
  return make_error("no cgroup2 file system is mounted (/proc/self/mounts)");
}

std::string random_container_id() {
  std::random_device device;
  std::string id;
  while (id.size() < 64)
    id += fmt::format("{:08x}", device());
  return id;
}

// A docker-style scope, "<cgroup2>/system.slice/docker-<id>.scope", made
// for one test: the destructor kills what is left in it and removes it (and
// system.slice, if it made that too).
class DockerScope {
 public:
  static Result<std::unique_ptr<DockerScope>> create() {
    auto root = cgroup2_mount();
    if (!root)
      return root.error();
    auto scope = std::unique_ptr<DockerScope>(new DockerScope());
    scope->id_ = random_container_id();
    scope->slice_ = *root + "/system.slice";
    std::error_code ec;
    scope->made_slice_ = fs::create_directory(scope->slice_, ec);
    if (ec)
      return make_error("mkdir {}: {}", scope->slice_, ec.message());
    scope->path_ = scope->slice_ + "/docker-" + scope->id_ + ".scope";
    if (!fs::create_directory(scope->path_, ec))
      return make_error("mkdir {}: {}", scope->path_, ec ? ec.message() : "exists");
    return scope;
  }
  ~DockerScope() {
    // The namespace's init dies with the unshare that forked it, but is
    // reaped by someone else: wait (with a limit) until the scope is empty.
    const auto deadline = SteadyClock::now() + 10s;
    while (SteadyClock::now() < deadline) {
      auto procs = read_file(path_ + "/cgroup.procs");
      if (!procs || procs->empty())
        break;
      std::istringstream pids(*procs);
      for (pid_t pid; pids >> pid;)
        ::kill(pid, SIGKILL);
      wait_for_change(path_ + "/cgroup.events", deadline);
    }
    std::error_code ec;
    fs::remove(path_, ec);
    if (made_slice_)
      fs::remove(slice_, ec);
  }
  DockerScope(const DockerScope&) = delete;
  DockerScope& operator=(const DockerScope&) = delete;

  const std::string& id() const { return id_; }
  const std::string& path() const { return path_; }
  std::string cgroup() const {  // as /proc/PID/cgroup shows it
    return "/system.slice/docker-" + id_ + ".scope";
  }

 private:
  DockerScope() = default;
  // cgroup.events is modified when the scope becomes empty.
  static void wait_for_change(const std::string& file,
                              std::chrono::steady_clock::time_point deadline) {
    UniqueFd fd(::inotify_init1(IN_CLOEXEC));
    if (!fd.valid() || ::inotify_add_watch(fd.get(), file.c_str(), IN_MODIFY) < 0)
      return;
    auto procs = read_file(fs::path(file).parent_path().string() + "/cgroup.procs");
    if (!procs || procs->empty())
      return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    pollfd p{fd.get(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
  }
  std::string id_, slice_, path_;
  bool made_slice_ = false;
};

// The only child of `parent` (/proc/PID/task/PID/children).
Result<pid_t> only_child(pid_t parent) {
  auto text = read_file(fmt::format("/proc/{0}/task/{0}/children", parent));
  if (!text)
    return text.error();
  std::istringstream pids(*text);
  std::vector<pid_t> children{std::istream_iterator<pid_t>(pids), {}};
  if (children.size() != 1)
    return make_error("pid {} has {} children: '{}'", parent, children.size(), *text);
  return children.front();
}

// The truth as the host sees it: a process in its own PID namespace reports
// the pid and thread ids of that namespace.
Result<Truth> truth_on_host(Truth truth, pid_t host_pid) {
  std::map<int64_t, int64_t> host_tid;  // namespace tid -> host tid
  std::error_code ec;
  const std::string tasks = fmt::format("/proc/{}/task", host_pid);
  for (const auto& task : fs::directory_iterator(tasks, ec)) {
    const int tid = std::stoi(task.path().filename().string());
    auto nspid = proc::read_nspid(tid, tasks);
    if (!nspid || nspid->size() < 2)
      return make_error("{}/{}: no nested NSpid", tasks, tid);
    host_tid[nspid->back()] = nspid->front();
  }
  if (!host_tid.contains(truth.pid) || host_tid.at(truth.pid) != host_pid)
    return make_error("the truth's pid {} is not host pid {} in its namespace", truth.pid,
                      host_pid);
  truth.pid = host_pid;
  for (ThreadTruth& t : truth.threads) {
    if (!host_tid.contains(t.tid))
      return make_error("thread {} of the truth is not a thread of pid {}", t.tid, host_pid);
    t.tid = host_tid.at(t.tid);
  }
  return truth;
}

// Debian's python3.11 runs chain.py as pid 1 of a PID namespace of its own,
// from a tmpfs mounted in a mount namespace of its own (the host sees an
// empty directory there: krait can only reach the interpreter's file
// through /proc/PID/root), in a docker-style cgroup. The daemon selects it
// by its container id alone.
TEST(Daemon, ContainerProcessIsProfiledAndLabelled) {
  require_root();
  const auto interpreters = load_manifest();
  const TestInterpreters py = test_interpreters(interpreters);
  REQUIRE_INTERPRETERS(py);
  auto scope = DockerScope::create();
  ASSERT_TRUE(scope.ok()) << "a docker-style cgroup for the test: " << scope.error().message;
  auto server = IngestServer::start();
  ASSERT_TRUE(server.ok()) << server.error().message;
  TempDir dir;
  const std::string root = dir.file("container");
  fs::create_directory(root);

  SpawnOptions options = interpreter_options(*py.debian, {});
  const std::string inside = fmt::format(
      "mount -t tmpfs krait-container \"$1\" && cp \"$2\" \"$3\" \"$1/\" && "
      "echo 0 > \"$4/cgroup.procs\" && exec \"$1/{}\" \"$1/chain.py\"",
      fs::path(py.debian->executable).filename().string());
  // A namespace of its own has a /proc of its own (--mount-proc), as in a
  // container: the workload reads its threads there.
  options.argv = {"/usr/bin/unshare",
                  "--pid",
                  "--mount",
                  "--mount-proc",
                  "--fork",
                  "--kill-child",
                  "--",
                  "/bin/sh",
                  "-c",
                  inside,
                  "sh"};
  for (const std::string& arg :
       {root, py.debian->executable, workload_path("chain.py"), (*scope)->path()})
    options.argv.push_back(arg);
  auto child = ChildProcess::spawn(options);
  ASSERT_TRUE(child.ok()) << child.error().message;
  auto line = child->read_line(60s);
  ASSERT_TRUE(line.ok()) << "the container's python: " << line.error().message;
  auto ns_truth = parse_truth(*line);
  ASSERT_TRUE(ns_truth.ok()) << ns_truth.error().message << " in " << *line;
  EXPECT_EQ(ns_truth->pid, 1) << "not pid 1 of its own PID namespace";
  auto host_pid = only_child(child->pid());
  ASSERT_TRUE(host_pid.ok()) << host_pid.error().message;
  auto truth = truth_on_host(*ns_truth, *host_pid);
  ASSERT_TRUE(truth.ok()) << truth.error().message;
  auto container = proc::read_container_info(*host_pid);
  ASSERT_TRUE(container.ok()) << container.error().message;
  ASSERT_EQ(container->container_id, (*scope)->id()) << "cgroup " << container->cgroup_path;
  // The interpreter and the script exist only in the process's own mounts.
  ASSERT_FALSE(fs::exists(root + "/chain.py"));
  ASSERT_TRUE(fs::exists(fmt::format("/proc/{}/root{}/chain.py", *host_pid, root)));

  auto daemon =
      Daemon::start({"--pyroscope-url", (*server)->url(), "--upload-interval",
                     std::to_string(kInterval), "--container-id", (*scope)->id().substr(0, 12)});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      **server, [](const auto& p) { return count_application(p, "chain.py") >= 3; }, 30s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received((*server)->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const std::set<std::string> applications = applications_of(*received);
  EXPECT_EQ(applications, std::set<std::string>{"chain.py"})
      << "the container id selects one process";
  const auto profiles = of_application(*received, "chain.py");
  expect_tiling(profiles, "chain.py");
  for (const Delivered* p : profiles) {
    EXPECT_EQ(p->labels.count("container_id") ? p->labels.at("container_id") : "", (*scope)->id());
    EXPECT_EQ(p->labels.count("container_runtime") ? p->labels.at("container_runtime") : "",
              "docker");
    EXPECT_EQ(p->labels.count("systemd_unit"), 0u) << "a container is not a service";
    for (const ProfileSample& s : p->samples) {
      EXPECT_EQ(s.pid(), *host_pid) << "a sample of another process";
      EXPECT_EQ(s.labels.count("container_pid") ? s.labels.at("container_pid") : "", "1");
    }
  }
  const auto [matching, all] = truth_share(profiles, *truth);
  EXPECT_GT(all, 0) << daemon->log();
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all))
      << matching << " of " << all << " samples carry the truth";
  // Native frames of the interpreter, named from its file inside the
  // container (the mapping's path is the one the process sees).
  int64_t native_named = 0;
  for (const Delivered* p : profiles)
    for (const ProfileSample& s : p->samples)
      for (size_t i = 0; i < s.full_stack.size(); ++i)
        if (s.mappings[i].starts_with(root + "/") && s.full_stack[i].function.starts_with("Py")) {
          native_named += s.count;
          break;
        }
  EXPECT_GT(native_named, 0) << "no native frame of " << root << "/python3.11 was named";
  std::cout << fmt::format(
      "[ stats    ] container {}: host pid {}, {} of {} samples carry the truth, {} a named "
      "interpreter frame\n",
      (*scope)->id().substr(0, 12), *host_pid, matching, all, native_named);
}

// ---------------------------------------------------------------------------
// 5. The Debian package.

TEST(Daemon, DebianPackageInstallsARunnableService) {
  require_root();
  TempDir dir;
  // CPack packages the build's install rules: the krait this test runs.
  auto cpack = run_tool({"/usr/bin/cpack", "-G", "DEB", "-B", dir.file("deb"), "--config",
                         std::string(KRAIT_BUILD_DIR) + "/CPackConfig.cmake"},
                        "cmake");
  ASSERT_RAN(cpack, "cpack -G DEB");
  std::vector<std::string> debs;
  for (const auto& entry : fs::directory_iterator(dir.file("deb")))
    if (entry.path().extension() == ".deb")
      debs.push_back(entry.path().string());
  ASSERT_EQ(debs.size(), 1u) << cpack->stdout_text;
  const std::string deb = debs.front();

  auto listing = run_tool({"/usr/bin/dpkg-deb", "--contents", deb}, "dpkg");
  ASSERT_RAN(listing, "dpkg-deb --contents");
  std::map<std::string, std::string> modes;  // path -> permissions
  {
    std::istringstream lines(listing->stdout_text);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
      if (f.size() >= 6)
        modes[f[5]] = f[0];
    }
  }
  EXPECT_EQ(modes["./usr/bin/krait"], "-rwxr-xr-x") << listing->stdout_text;
  EXPECT_EQ(modes["./usr/lib/systemd/system/krait.service"], "-rw-r--r--") << listing->stdout_text;
  EXPECT_EQ(modes["./etc/krait/krait.toml"], "-rw-r--r--") << listing->stdout_text;
  EXPECT_TRUE(modes.contains("./usr/share/doc/krait/daemon.md")) << listing->stdout_text;

  auto control = run_tool({"/usr/bin/dpkg-deb", "--control", deb, dir.file("control")}, "dpkg");
  ASSERT_RAN(control, "dpkg-deb --control");
  EXPECT_EQ(text_of(dir.file("control/conffiles")), "/etc/krait/krait.toml\n");
  auto fields = run_tool({"/usr/bin/dpkg-deb", "--field", deb, "Version", "Depends"}, "dpkg");
  ASSERT_RAN(fields, "dpkg-deb --field");
  EXPECT_NE(fields->stdout_text.find("adduser"), std::string::npos) << fields->stdout_text;
  EXPECT_NE(fields->stdout_text.find("libc6"), std::string::npos) << fields->stdout_text;
  std::smatch version;
  const std::string field_text = fields->stdout_text;
  ASSERT_TRUE(std::regex_search(field_text, version, std::regex("Version: (\\S+)"))) << field_text;

  const std::string root = dir.file("root");
  auto unpacked = run_tool({"/usr/bin/dpkg", "-x", deb, root}, "dpkg");
  ASSERT_RAN(unpacked, "dpkg -x");
  const std::string krait = root + "/usr/bin/krait";
  EXPECT_EQ(text_of(krait), text_of(KRAIT_BINARY)) << "the packaged binary is not the one built";
  EXPECT_EQ(text_of(root + "/etc/krait/krait.toml"),
            text_of(std::string(KRAIT_SOURCE_DIR) + "/packaging/krait.toml"));

  auto version_out = run_tool({krait, "--version"}, "krait");
  ASSERT_RAN(version_out, "krait --version");
  EXPECT_EQ(version_out->stdout_text, "krait " + version[1].str() + "\n");
  auto info = run_tool({krait, "info", "--json"}, "krait");
  ASSERT_RAN(info, "krait info --json");
  auto info_json = parse_json(info->stdout_text);
  ASSERT_TRUE(info_json.ok()) << info_json.error().message << "\n" << info->stdout_text;
  const JsonValue* caps = info_json->find("capabilities");
  const JsonValue* can_record = caps ? caps->find("can_record") : nullptr;
  ASSERT_TRUE(can_record && can_record->is_bool()) << info->stdout_text;
  EXPECT_TRUE(can_record->boolean) << "as root the packaged krait can record";
  // The default configuration reads back as the service will read it.
  auto config = run_tool(
      {krait, "daemon", "--config", root + "/etc/krait/krait.toml", "--print-config"}, "krait");
  ASSERT_RAN(config, "krait daemon --print-config of the packaged configuration");
  EXPECT_NE(config->stdout_text.find("/var/lib/krait"), std::string::npos) << config->stdout_text;

  // The unit as installed, pointed at the unpacked binary (verify wants
  // ExecStart's program to exist).
  auto unit = read_file(root + "/usr/lib/systemd/system/krait.service");
  ASSERT_TRUE(unit.ok()) << unit.error().message;
  EXPECT_NE(unit->find("ExecStart=/usr/bin/krait daemon --config /etc/krait/krait.toml"),
            std::string::npos)
      << *unit;
  const std::string verify_dir = dir.file("unit");
  fs::create_directory(verify_dir);
  std::ofstream(verify_dir + "/krait.service")
      << std::regex_replace(*unit, std::regex("/usr/bin/krait"), krait);
  auto verify = run_tool(
      {"/usr/bin/systemd-analyze", "verify", "--man=no", verify_dir + "/krait.service"}, "systemd");
  ASSERT_RAN(verify, "systemd-analyze verify");
  EXPECT_EQ(verify->stdout_text + verify->stderr_text, "") << "systemd-analyze has remarks";
}

}  // namespace
}  // namespace krait::test
