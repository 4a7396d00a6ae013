// `krait daemon` end to end (root, real BPF, real interpreters), against the
// ingest server of tests/support, which stands in for Pyroscope and records
// what it received (daemon_harness.h: isolation and helpers):
// - delivery over both protocols: one profile per application per interval,
//   labels, stacks that carry the workloads' own truth, pprof that
//   `go tool pprof -raw` accepts, intervals that tile time;
// - --all-processes: a C program beside a Python one;
// - 300 short-lived processes, and the daemon's memory after them.
//
// Oracles: the workloads' truth lines, the ingest server's record, /proc
// (CPU time of the workloads, the daemon's RSS), `go tool pprof -raw`.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <iostream>
#include <set>

#include "export/pyroscope.h"
#include "runtime/daemon_harness.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Delivery.

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
// Wall-clock time.

// wall.py's last totals line stamped at or after `until` (its own clock).
Result<JsonValue> wall_totals_after(ChildProcess& child, double until) {
  std::vector<JsonValue> seen;
  KRAIT_TRY(read_lines_until(child, until, seen));
  return std::move(seen.back());
}

// The daemon in --mode wall: each interval's pprof carries wall and
// off-CPU time, and wall.py's phases keep, over the delivered intervals,
// the shares of its time the workload measured itself (within 5 points).
TEST(Daemon, WallModeDeliversEachPhaseWithItsShareOfTheThreadsTime) {
  LiveRun run;
  ASSERT_NO_FATAL_FAILURE(start_live_run(run));
  auto wall = run.staged.start(*run.py.debian, "wall.py");
  ASSERT_TRUE(wall.ok()) << wall.error().message;
  auto first = wall_totals_after(wall->child, 0);
  ASSERT_TRUE(first.ok()) << first.error().message;

  auto daemon = Daemon::start(
      daemon_args(*run.server, run.staged.selector(), {"--mode", "wall", "--stacks", "mixed"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *run.server, [](const auto& p) { return count_application(p, "wall.py") >= 4; }, 30s))
      << "profiles received: " << run.server->profiles().size() << "\n"
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  const double now = std::chrono::duration<double>(SteadyClock::now().time_since_epoch()).count();
  auto last = wall_totals_after(wall->child, now);
  ASSERT_TRUE(last.ok()) << last.error().message;

  auto received = decode_received(run.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  auto phases = json_object(wall->truth.json, "phases");
  ASSERT_TRUE(phases.ok()) << phases.error().message;
  const int64_t tid = wall->truth.threads.at(0).tid;
  int64_t thread_ns = 0;
  std::map<std::string, int64_t> phase_ns;
  for (const Delivered* p : of_application(*received, "wall.py"))
    for (const ProfileSample& s : p->samples) {
      if (s.tid() != tid)
        continue;
      auto w = s.values.find("wall");
      ASSERT_NE(w, s.values.end()) << "a sample without wall time";
      EXPECT_TRUE(s.values.count("off_cpu")) << "a sample without off-CPU time";
      thread_ns += w->second;
      for (const char* phase : {"burn", "sleep", "pipe"}) {
        std::vector<Frame> stack;
        for (const JsonValue& f : (*phases)->find(phase)->items)
          stack.push_back(
              {f.find("function")->string, f.find("file")->string, f.find("line")->integer});
        if (s.stack == stack)
          phase_ns[phase] += w->second;
      }
    }
  ASSERT_GT(thread_ns, 0) << "no sample of wall.py's worker";
  // The phases repeat every ~125 ms: any long window has the shares of the
  // whole run.
  const double span = last->find("t")->number - first->find("t")->number;
  std::string report;
  for (const char* phase : {"burn", "sleep", "pipe"}) {
    const double truth = (last->find(phase)->number - first->find(phase)->number) / span;
    const double share = static_cast<double>(phase_ns[phase]) / static_cast<double>(thread_ns);
    EXPECT_NEAR(share, truth, 0.05) << phase;
    report += fmt::format(" {} {:.1f}% (workload {:.1f}%)", phase, 100 * share, 100 * truth);
  }
  std::cout << fmt::format("[ wall     ] daemon, {}:{}\n", run.py.debian->name, report);
}

// ---------------------------------------------------------------------------
// Process churn.

struct ShortRun {
  Truth truth;
  double cpu_s = 0;       // utime + stime at exit
  double loop_cpu_s = 0;  // the workload's own count: CPU seconds on the truth's stack
  ExitStatus status;
};

// short.py's last line: {"kind": "end", "loop_cpu_s": S}.
Result<double> loop_cpu_seconds(ChildProcess& child, int64_t pid) {
  auto line = child.read_line(10s);
  if (!line)
    return make_error("short.py pid {}: no end line: {}", pid, line.error().message);
  auto json = parse_json(*line);
  if (!json)
    return make_error("short.py pid {}: {} in {}", pid, json.error().message, *line);
  const JsonValue* kind = json->find("kind");
  const JsonValue* seconds = json->find("loop_cpu_s");
  if (!kind || kind->string != "end" || !seconds || !seconds->is_number())
    return make_error("short.py pid {}: not an end line: {}", pid, *line);
  return seconds->number;
}

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
    auto loop_cpu = loop_cpu_seconds(oldest.workload.child, oldest.workload.truth.pid);
    if (!loop_cpu)
      return loop_cpu.error();
    r.loop_cpu_s = *loop_cpu;
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

// The share of the samples due in short.py's hot loops (99 Hz times the CPU
// time the workloads report for them) that must carry the exact stack of
// their truth. Measured: 99.9% and 98.7% (300 processes each, on a loaded
// host); a krait that got the stack of every other sample wrong would still
// give each process its one exact sample, and fails this.
constexpr double kExactShare = 0.90;

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
  double cpu_total = 0, loop_cpu_total = 0;
  for (const ShortRun& r : *churn) {
    EXPECT_TRUE(r.status.success()) << "short.py " << r.truth.pid << ": " << r.status.describe();
    const auto& samples = by_pid[r.truth.pid];
    const auto& thread = r.truth.threads.at(0);
    const int64_t exact = count_exact(samples, thread.stack);
    exact_total += exact;
    samples_total += total(samples);
    cpu_total += r.cpu_s;
    loop_cpu_total += r.loop_cpu_s;
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
  // And the samples of the hot loop are its exact stack: the workloads' own
  // count of CPU time in the loop gives the samples due there (start-up
  // and exit run other stacks, about a third of these samples).
  const double due = loop_cpu_total * kRateHz;
  EXPECT_GE(static_cast<double>(exact_total), kExactShare * due)
      << exact_total << " samples on the truth stack, " << due << " due for " << loop_cpu_total
      << " s of CPU in the hot loops";

  // Memory: the RSS after the churn is back within 2 MiB of the RSS after
  // the warm-up. 1300 processes grew it by 0.5 MiB when measured
  // (docs/daemon.md, "Cost"); a leak of 7 KiB a process would fail.
  constexpr int64_t kMarginKib = 2 * 1024;
  EXPECT_LE(after_kib, baseline_kib + kMarginKib)
      << "RSS after warm-up " << baseline_kib << " KiB, at the end of the churn " << peak_kib
      << " KiB, two intervals later " << after_kib << " KiB";
  std::cout << fmt::format(
      "[ stats    ] {} processes in {:.1f} s, {} with >= 200 ms CPU; {} of {} samples on the "
      "truth stack, {:.1f} s CPU; {:.0f} samples due in the hot loops ({:.1f} s CPU): {:.1f}% "
      "exact; RSS KiB: warm {} peak {} after {}\n",
      churn->size(), churn_seconds, checked, exact_total, samples_total, cpu_total, due,
      loop_cpu_total, due > 0 ? 100 * static_cast<double>(exact_total) / due : 0.0, baseline_kib,
      peak_kib, after_kib);
}

}  // namespace
}  // namespace krait::test
