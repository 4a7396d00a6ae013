// Off-CPU and wall-clock time, end to end, against what the workloads
// measure of themselves.
//
// wall.py: one thread splits its time between burning CPU, time.sleep and a
// blocking pipe read, timing each phase with CLOCK_MONOTONIC (the sampler's
// clock). In `--mode wall` each phase's share of that thread's time in the
// profile must be within 3 points of its share of the same window as the
// workload measured it, at the phase's exact line; off CPU the samples carry
// the reason (sleep, io), and in mixed mode the kernel frames of each wait.
//
// The same with millisecond phases and a switch budget that samples the
// switches: the shares stay within 5 points, the walks within the budget.
//
// gil_contention.py: four threads that need the GIL all the time on two
// CPUs. Each thread's `reason=gil` share must be within 5 points of
// 1 - (its CPU time / its wall time) over the window, as it measures them.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "runtime/krait_harness.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

// time.thread_time (3.7+) and the GIL's place in the offset tables (3.7+):
// frame objects (3.8), interpreter frames (3.11-3.13), Debian's static
// stripped build, and sid's builds read through _Py_DebugOffsets.
const std::vector<std::string> kInterpreters = {"pyenv-3.8.18", "pyenv-3.11.7",  "pyenv-3.12.1",
                                                "pyenv-3.13.0", "debian-3.11.2", "sid-3.14",
                                                "sid-3.15"};

constexpr double kWindowSeconds = 6.0;

double monotonic_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double number(const JsonValue& object, std::string_view key) {
  const JsonValue* v = object.find(key);
  return v && v->is_number() ? v->number : std::nan("");
}

std::vector<Frame> frames_of(const JsonValue& stack) {
  std::vector<Frame> out;
  for (const JsonValue& f : stack.items)
    out.push_back({f.find("function")->string, f.find("file")->string, f.find("line")->integer});
  return out;
}

int64_t value(const ProfileSample& s, const std::string& type) {
  auto it = s.values.find(type);
  return it == s.values.end() ? 0 : it->second;
}

bool has_kernel_frame(const ProfileSample& s, std::string_view piece) {
  for (size_t i = 0; i < s.full_stack.size(); ++i)
    if (s.mappings[i] == "[kernel.kallsyms]" &&
        s.full_stack[i].function.find(piece) != std::string::npos)
      return true;
  return false;
}

// A recording of `pid` in `mode` while the workload runs kWindowSeconds of
// its own clock; the totals lines around the window come back in `lines`.
struct WindowRun {
  RecordingResult result;
  std::vector<JsonValue> lines;
  double start = 0;
  double stop = 0;
};

Result<WindowRun> record_window(RunningWorkload& w, const std::vector<std::string>& args,
                                const TempDir& dir) {
  WindowRun run;
  // Steady state first: one cycle done.
  KRAIT_TRY(read_lines_until(w.child, 0, run.lines));
  auto rec = Recording::start(args, dir);
  if (!rec)
    return rec.error();
  run.start = monotonic_s();
  KRAIT_TRY(read_lines_until(w.child, run.start + kWindowSeconds, run.lines));
  run.stop = monotonic_s();
  auto result = rec->stop();
  if (!result)
    return result.error();
  run.result = std::move(*result);
  KRAIT_TRY(read_lines_until(w.child, run.stop, run.lines));
  return run;
}

using WallTime = InterpreterTest;

TEST_P(WallTime, EachPhaseGetsItsShareAtItsLineWithItsKernelWait) {
  TempDir dir;
  auto w = start_workload(interp_, "wall.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  ASSERT_EQ(truth.threads.size(), 1u);
  const int64_t tid = truth.threads[0].tid;
  auto run =
      record_window(*w, {"--mode", "wall", "-r", "299", "-p", std::to_string(truth.pid)}, dir);
  ASSERT_TRUE(run.ok()) << run.error().message;

  // The workload's own shares of the window.
  const JsonValue& before = line_before(run->lines, run->start);
  const JsonValue& after = line_after(run->lines, run->stop);
  const double span = number(after, "t") - number(before, "t");
  ASSERT_GT(span, kWindowSeconds - 1);

  auto phases = json_object(truth.json, "phases");
  ASSERT_TRUE(phases.ok()) << phases.error().message;
  std::map<std::string, std::vector<Frame>> stacks;
  for (const char* phase : {"burn", "sleep", "pipe"})
    stacks[phase] = frames_of(*(*phases)->find(phase));

  // krait's: wall nanoseconds of the worker thread, per phase stack.
  int64_t thread_ns = 0;
  std::map<std::string, int64_t> phase_ns, phase_off_ns, reason_ok_ns, kernel_ok_ns;
  for (const ProfileSample& s : samples_of_pid(run->result.samples, truth.pid)) {
    if (s.tid() != tid)
      continue;
    thread_ns += value(s, "wall");
    for (const auto& [phase, stack] : stacks) {
      if (s.stack != stack)
        continue;
      phase_ns[phase] += value(s, "wall");
      const int64_t off = value(s, "off_cpu");
      phase_off_ns[phase] += off;
      const std::string reason = s.labels.count("reason") ? s.labels.at("reason") : "";
      if ((phase == "sleep" && reason == "sleep") || (phase == "pipe" && reason == "io"))
        reason_ok_ns[phase] += off;
      const bool kernel_wait =
          phase == "pipe" ? has_kernel_frame(s, "pipe_read")
                          : has_kernel_frame(s, "nanosleep") || has_kernel_frame(s, "select");
      if (kernel_wait)
        kernel_ok_ns[phase] += off;
    }
  }
  ASSERT_GT(thread_ns, 0) << "no sample of the worker thread";

  std::string report;
  for (const char* phase : {"burn", "sleep", "pipe"}) {
    const double truth_share = (number(after, phase) - number(before, phase)) / span;
    const double krait_share =
        static_cast<double>(phase_ns[phase]) / static_cast<double>(thread_ns);
    EXPECT_NEAR(krait_share, truth_share, 0.03)
        << phase << " at " << format_stack(stacks[phase]) << "\n"
        << describe_mismatches(samples_of_pid(run->result.samples, truth.pid), stacks[phase]);
    report +=
        fmt::format(" {} {:.1f}% (workload {:.1f}%)", phase, 100 * krait_share, 100 * truth_share);
  }
  // Off CPU, the reason and the kernel's own frames of each wait.
  for (const char* phase : {"sleep", "pipe"}) {
    ASSERT_GT(phase_off_ns[phase], 0) << phase;
    EXPECT_GE(reason_ok_ns[phase], 0.95 * static_cast<double>(phase_off_ns[phase])) << phase;
    EXPECT_GE(kernel_ok_ns[phase], 0.95 * static_cast<double>(phase_off_ns[phase])) << phase;
  }
  std::cout << fmt::format("[ wall     ] {}:{}\n", interp_.name, report);
}

// Millisecond phases switch a few hundred times a second per thread; a
// budget of 200 walks per second per CPU then walks about one switch in
// three and weighs each by it. The phases must keep their shares, and the
// walks must stay within the budget.
using WallBudget = InterpreterTest;

TEST_P(WallBudget, ShortWaitsKeepTheirSharesWhenSwitchesAreSampled) {
  TempDir dir;
  auto w =
      start_workload(interp_, "wall.py", {"--burn-ms", "1", "--sleep-ms", "1", "--pipe-ms", "1"});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  const int64_t tid = truth.threads[0].tid;
  constexpr int kBudget = 200;
  auto run = record_window(*w,
                           {"--mode", "wall", "--stacks", "python", "-r", "299", "--switch-budget",
                            std::to_string(kBudget), "-p", std::to_string(truth.pid)},
                           dir);
  ASSERT_TRUE(run.ok()) << run.error().message;
  const JsonValue& before = line_before(run->lines, run->start);
  const JsonValue& after = line_after(run->lines, run->stop);
  const double span = number(after, "t") - number(before, "t");
  auto phases = json_object(truth.json, "phases");
  ASSERT_TRUE(phases.ok()) << phases.error().message;

  int64_t thread_ns = 0;
  std::map<std::string, int64_t> phase_ns;
  for (const ProfileSample& s : samples_of_pid(run->result.samples, truth.pid)) {
    if (s.tid() != tid)
      continue;
    thread_ns += value(s, "wall");
    for (const char* phase : {"burn", "sleep", "pipe"})
      if (s.stack == frames_of(*(*phases)->find(phase)))
        phase_ns[phase] += value(s, "wall");
  }
  ASSERT_GT(thread_ns, 0) << "no sample of the worker thread";
  std::string report;
  for (const char* phase : {"sleep", "pipe"}) {
    const double truth_share = (number(after, phase) - number(before, phase)) / span;
    const double share = static_cast<double>(phase_ns[phase]) / static_cast<double>(thread_ns);
    EXPECT_NEAR(share, truth_share, 0.05) << phase;
    report += fmt::format(" {} {:.1f}% (workload {:.1f}%)", phase, 100 * share, 100 * truth_share);
  }
  const double walked = number(run->result.stats, "switch_samples");
  const double skipped = number(run->result.stats, "switches_skipped");
  const double seconds = number(run->result.stats, "seconds");
  const double cpus = number(run->result.stats, "cpus");
  EXPECT_GT(skipped, walked) << "the budget never applied: the workload switched too little";
  // A window's rate sets the next one's sampling: a rise shows for 100 ms.
  EXPECT_LE(walked, 1.5 * kBudget * std::max(cpus, 1.0) * seconds + kBudget);
  std::cout << fmt::format("[ budget   ] {}:{}; {:.0f} switches walked, {:.0f} skipped\n",
                           interp_.name, report, walked, skipped);
}

using GilWait = InterpreterTest;

TEST_P(GilWait, EachThreadsGilShareIsItsOwnWaitingShare) {
  TempDir dir;
  auto w = start_workload(interp_, "gil_contention.py", {"--threads", "4"});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  ASSERT_EQ(truth.threads.size(), 4u);
  auto run = record_window(
      *w, {"--mode", "wall", "--stacks", "python", "-r", "199", "-p", std::to_string(truth.pid)},
      dir);
  ASSERT_TRUE(run.ok()) << run.error().message;
  const JsonValue& before = line_before(run->lines, run->start);
  const JsonValue& after = line_after(run->lines, run->stop);

  std::map<int64_t, int64_t> wall_ns, gil_ns;
  for (const ProfileSample& s : samples_of_pid(run->result.samples, truth.pid)) {
    wall_ns[s.tid()] += value(s, "wall");
    if (s.labels.count("reason") && s.labels.at("reason") == "gil")
      gil_ns[s.tid()] += value(s, "off_cpu");
  }
  std::string report;
  for (const ThreadTruth& t : truth.threads) {
    const std::string key = std::to_string(t.tid);
    const JsonValue* b = before.find("threads")->find(key);
    const JsonValue* a = after.find("threads")->find(key);
    ASSERT_TRUE(a && b) << key;
    const double wall = number(*a, "wall") - number(*b, "wall");
    const double cpu = number(*a, "cpu") - number(*b, "cpu");
    ASSERT_GT(wall, kWindowSeconds - 1) << t.name;
    const double waiting = 1 - cpu / wall;
    ASSERT_GT(wall_ns[t.tid], 0) << t.name << ": no samples";
    const double share = static_cast<double>(gil_ns[t.tid]) / static_cast<double>(wall_ns[t.tid]);
    EXPECT_NEAR(share, waiting, 0.05) << t.name;
    report += fmt::format(" {} gil {:.1f}% (waiting {:.1f}%)", t.name, 100 * share, 100 * waiting);
  }
  std::cout << fmt::format("[ gil wait ] {}:{}\n", interp_.name, report);
}

INSTANTIATE_TEST_SUITE_P(Interpreters, WallTime, ::testing::ValuesIn(kInterpreters),
                         interpreter_test_name);
INSTANTIATE_TEST_SUITE_P(Interpreters, WallBudget, ::testing::Values("pyenv-3.12.1", "sid-3.15"),
                         interpreter_test_name);
INSTANTIATE_TEST_SUITE_P(Interpreters, GilWait, ::testing::ValuesIn(kInterpreters),
                         interpreter_test_name);

}  // namespace
}  // namespace krait::test
