// Definitions for daemon_harness.h; the header holds the contracts.
#include "runtime/daemon_harness.h"

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "export/directory_output.h"
#include "export/pprof.h"
#include "util/files.h"

namespace krait::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

double seconds_between(SteadyClock::time_point from, SteadyClock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string this_host_name() {
  utsname u{};
  return ::uname(&u) == 0 ? u.nodename : "";
}

std::string regex_escape(const std::string& text) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(text, special, R"(\$&)");
}

void let_time_pass(std::chrono::milliseconds duration) {
  std::this_thread::sleep_for(duration);
}

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

std::string text_of(const std::string& path) {
  auto text = read_file(path, size_t{1} << 30);
  return text ? *text : "<" + text.error().message + ">";
}

Result<CommandResult> run_tool(const std::vector<std::string>& argv, const std::string& package,
                               std::chrono::seconds timeout) {
  if (::access(argv.front().c_str(), X_OK) != 0)
    return make_error("{} is missing: install the Debian package '{}' (scripts/setup --tests)",
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

namespace {

const Interpreter* find_interpreter(const std::vector<Interpreter>& all,
                                    const std::function<bool(const Interpreter&)>& wanted) {
  for (const auto& interpreter : all)
    if (wanted(interpreter))
      return &interpreter;
  return nullptr;
}

}  // namespace

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

StagedWorkloads::StagedWorkloads() {
  for (const char* script : {"chain.py", "threads.py", "short.py", "wall.py", "wsgi_app.py"})
    fs::copy_file(workload_path(script), dir_.file(script));
}

Result<RunningWorkload> StagedWorkloads::start(const Interpreter& interpreter,
                                               const std::string& script,
                                               const std::vector<std::string>& args) const {
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

void start_live_run(LiveRun& run) {
  ASSERT_NO_FATAL_FAILURE(require_root());
  REQUIRE_INTERPRETERS(run.py);
  auto server = IngestServer::start();
  ASSERT_TRUE(server.ok()) << server.error().message;
  run.server = std::move(*server);
}

Result<Daemon> Daemon::start(const std::vector<std::string>& args,
                             const std::vector<std::string>& prefix) {
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

Result<ExitStatus> Daemon::stop(int sig, double* seconds, std::chrono::seconds timeout) {
  const auto sent = SteadyClock::now();
  KRAIT_TRY(child_.signal(sig));
  auto status = child_.wait(timeout);
  if (seconds)
    *seconds = seconds_since(sent);
  return status;
}

std::vector<std::string> daemon_args(const IngestServer& server, const std::string& selector,
                                     const std::vector<std::string>& more) {
  std::vector<std::string> args = {"--pyroscope-url",   server.url(),
                                   "--upload-interval", std::to_string(kInterval),
                                   "--cmdline-regex",   selector};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

void expect_clean_stop(Daemon& daemon) {
  auto status = daemon.stop(SIGTERM);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon.log();
}

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
    d.arrived_unix_ns = r.arrived_unix_ns;
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

void expect_tiling(const std::vector<const Delivered*>& profiles, const std::string& what,
                   int64_t interval_ns) {
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

size_t full_intervals(const std::vector<CutInterval>& cut, const std::string& application) {
  return static_cast<size_t>(std::count_if(cut.begin(), cut.end(), [&](const CutInterval& c) {
    return c.application == application && c.until_s - c.from_s == kInterval;
  }));
}

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

Result<std::unique_ptr<FailureRun>> FailureRun::start() {
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

std::vector<std::string> FailureRun::args(const std::vector<std::string>& more) const {
  auto a = daemon_args(*server, staged.selector(), {"--output-dir", dir});
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

bool FailureRun::wait_for_cut(size_t n, std::chrono::seconds timeout) const {
  return wait_for_files(
      dir, [&](const auto& cut) { return full_intervals(cut, "chain.py") >= n; }, timeout);
}

bool FailureRun::wait_for_delivery_of_cut(size_t more, std::chrono::seconds timeout) const {
  const size_t want = cut_intervals(dir).size() + more;
  return wait_for(
      *server, [&](const auto& p) { return count_application(p, "chain.py") >= want; }, timeout);
}

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

}  // namespace krait::test
