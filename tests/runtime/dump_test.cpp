// `krait dump` end to end: dump_threads.py keeps one thread in time.sleep,
// one in socket.recv and one burning CPU, and reports each one's stack
// (functions, files, lines), kernel thread id and name. The dump of the
// live process must give each thread exactly those Python frames, the
// right state and system call, and a GIL answer that fits (the spinner or
// nobody holds it); with --native, the sleeper's stack must also hold the
// kernel frames and the C library call it sleeps in, with the Python
// frames still exact. And a named pid that is not Python is one line and
// exit status 1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/krait_harness.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

// 2.7 and frame objects before 3.11 (3.8: no qualified names, methods named
// from the frame), 3.11 - 3.13 interpreter frames, Debian's static stripped
// builds (bookworm 3.11, sid 3.14 and 3.15: _Py_DebugOffsets, tagged code
// pointers).
const std::vector<std::string> kInterpreters = {"pyenv-2.7.18", "pyenv-3.8.18", "pyenv-3.11.7",
                                                "pyenv-3.12.1", "pyenv-3.13.0", "debian-3.11.2",
                                                "sid-3.14",     "sid-3.15"};

struct DumpedFrame {
  Frame frame;
  std::string kind;
};

struct DumpedThread {
  std::string name;
  bool python = false;  // has a Python thread state
  std::string state;
  std::string syscall;  // "" for null
  std::string waiting;  // "" for null
  std::string gil;
  std::vector<DumpedFrame> frames;  // leaf first, as dumped
  std::string error;
  std::string native_error;

  // The Python frames, root first like a truth.
  std::vector<Frame> python_stack() const {
    std::vector<Frame> out;
    for (auto it = frames.rbegin(); it != frames.rend(); ++it)
      if (it->kind == "python")
        out.push_back(it->frame);
    return out;
  }
};

// The threads of `pid` in `krait dump --json` output, by tid.
Result<std::map<int64_t, DumpedThread>> parse_dump(const std::string& text, int64_t pid) {
  auto json = parse_json(text);
  if (!json)
    return json.error();
  auto processes = json_array(*json, "processes");
  if (!processes)
    return processes.error();
  for (const JsonValue& p : (*processes)->items) {
    auto id = json_int(p, "pid");
    if (!id || *id != pid)
      continue;
    auto threads = json_array(p, "threads");
    if (!threads)
      return threads.error();
    std::map<int64_t, DumpedThread> out;
    for (const JsonValue& t : (*threads)->items) {
      const JsonValue* tid = t.find("tid");
      if (!tid || !tid->is_int())
        continue;
      DumpedThread d;
      d.name = json_string(t, "name").value();
      d.python = json_bool(t, "python").value();
      d.state = json_string(t, "state").value();
      const JsonValue* sys = t.find("syscall");
      d.syscall = sys && sys->is_string() ? sys->string : "";
      const JsonValue* waiting = t.find("waiting");
      d.waiting = waiting && waiting->is_string() ? waiting->string : "";
      d.gil = json_string(t, "gil").value();
      d.error = json_string(t, "error").value();
      d.native_error = json_string(t, "native_error").value();
      auto frames = json_array(t, "frames");
      if (!frames)
        return frames.error();
      for (const JsonValue& f : (*frames)->items)
        d.frames.push_back({{json_string(f, "function").value(), json_string(f, "file").value(),
                             json_int(f, "line").value()},
                            json_string(f, "kind").value()});
      out[tid->integer] = std::move(d);
    }
    return out;
  }
  return make_error("no process {} in the dump", pid);
}

// The system calls time.sleep waits in: select() before 3.11 (glibc
// implements it with pselect6), clock_nanosleep from 3.11 on.
std::set<std::string> sleep_syscalls(const Interpreter& interp) {
  if (interp.major_minor() < std::make_pair(3, 11))
    return {"select", "pselect6"};
  return {"clock_nanosleep"};
}

const ThreadTruth* thread_named(const Truth& truth, const std::string& name) {
  for (const ThreadTruth& t : truth.threads)
    if (t.name == name)
      return &t;
  return nullptr;
}

// What is wrong with a dump of the workload, "" when nothing. The spinner
// may be caught preempted (runnable) or between two bytecodes: any dump
// with it running or runnable and the blocked threads in their calls is
// the state the test wants.
std::string judge(const Interpreter& interp, const Truth& truth,
                  const std::map<int64_t, DumpedThread>& threads, bool native) {
  std::string wrong;
  for (const ThreadTruth& t : truth.threads) {
    auto it = threads.find(t.tid);
    if (it == threads.end()) {
      wrong += fmt::format("{}: tid {} not in the dump; ", t.name, t.tid);
      continue;
    }
    const DumpedThread& d = it->second;
    if (d.name != t.name)
      wrong += fmt::format("{}: named {}; ", t.name, d.name);
    if (d.python_stack() != t.stack)
      wrong += fmt::format("{}: frames {} want {}; ", t.name, format_stack(d.python_stack()),
                           format_stack(t.stack));
    if (t.name == "dump-spin") {
      if (d.state != "running" && d.state != "runnable")
        wrong += fmt::format("{}: state {}; ", t.name, d.state);
    } else {
      const std::set<std::string> want =
          t.name == "dump-sleep" ? sleep_syscalls(interp) : std::set<std::string>{"recvfrom"};
      if (d.state != "blocked" || !want.contains(d.syscall))
        wrong += fmt::format("{}: state {} in '{}'; ", t.name, d.state, d.syscall);
      // The reason off-CPU samples give the same wait.
      const std::string reason = t.name == "dump-sleep" ? "sleep" : "io";
      if (d.waiting != reason)
        wrong += fmt::format("{}: waiting for '{}', want {}; ", t.name, d.waiting, reason);
      if (d.gil != "not_held")
        wrong += fmt::format("{}: GIL {}; ", t.name, d.gil);
    }
    if (d.gil != "held" && d.gil != "not_held")
      wrong += fmt::format("{}: GIL {}; ", t.name, d.gil);
    if (!native)
      continue;
    if (t.name != "dump-spin" && !d.native_error.empty())
      wrong += fmt::format("{}: no native frames: {}; ", t.name, d.native_error);
  }
  return wrong;
}

// Runs `krait dump -p PID --json [extra]` until a dump is right or 60 s pass;
// the last dump's threads.
std::map<int64_t, DumpedThread> dump_until_right(const Interpreter& interp, const Truth& truth,
                                                 const std::vector<std::string>& extra) {
  const bool native = !extra.empty();
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::map<int64_t, DumpedThread> last;
  std::string wrong;
  int dumps = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<std::string> args = {"dump", "-p", std::to_string(truth.pid), "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_krait(args);
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok())
      return {};
    EXPECT_TRUE(r->status.success()) << r->status.describe() << ": " << r->stderr_text;
    auto threads = parse_dump(r->stdout_text, truth.pid);
    EXPECT_TRUE(threads.ok()) << threads.error().message << "\n" << r->stdout_text;
    if (!threads.ok())
      return {};
    ++dumps;
    last = std::move(*threads);
    wrong = judge(interp, truth, last, native);
    if (wrong.empty())
      return last;
    std::this_thread::sleep_for(100ms);  // pacing between polls, not synchronisation
  }
  ADD_FAILURE() << "no right dump in " << dumps << " tries; the last: " << wrong;
  return last;
}

using DumpThreads = InterpreterTest;

TEST_P(DumpThreads, EachThreadHasItsFramesStateAndGil) {
  auto w = start_workload(interp_, "dump_threads.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  ASSERT_EQ(truth.threads.size(), 3u);
  auto threads = dump_until_right(interp_, truth, {});
  ASSERT_FALSE(threads.empty());

  // Nobody but the spinner holds the GIL, and the main thread (parked in
  // time.sleep) is listed too.
  ASSERT_TRUE(threads.contains(truth.pid));
  EXPECT_EQ(threads.at(truth.pid).gil, "not_held");
  EXPECT_EQ(threads.at(truth.pid).state, "blocked");
  // Every thread of the process is listed, those with no Python thread
  // state (faulthandler's watchdog) as such.
  std::set<int64_t> tasks, dumped;
  for (const auto& entry :
       std::filesystem::directory_iterator(fmt::format("/proc/{}/task", truth.pid)))
    tasks.insert(std::stoll(entry.path().filename().string()));
  int64_t native = 0;
  for (const auto& [tid, d] : threads) {
    dumped.insert(tid);
    if (d.python) {
      EXPECT_TRUE(d.error.empty()) << tid << ": " << d.error;
    } else {
      ++native;
      EXPECT_EQ(d.error, "no Python thread state");
      EXPECT_EQ(d.gil, "not_held");
    }
  }
  EXPECT_EQ(dumped, tasks);
  EXPECT_EQ(native, json_int(truth.json, "native_threads").value());

  // The text output names every thread with its id and state.
  auto text = run_krait({"dump", "-p", std::to_string(truth.pid)});
  ASSERT_TRUE(text.ok()) << text.error().message;
  EXPECT_TRUE(text->status.success()) << text->stderr_text;
  for (const ThreadTruth& t : truth.threads)
    EXPECT_NE(text->stdout_text.find(fmt::format("Thread {} \"{}\"", t.tid, t.name)),
              std::string::npos)
        << text->stdout_text;
  const ThreadTruth* recv = thread_named(truth, "dump-recv");
  ASSERT_NE(recv, nullptr);
  EXPECT_NE(text->stdout_text.find(
                fmt::format("Thread {} \"dump-recv\"  blocked in recvfrom", recv->tid)),
            std::string::npos)
      << text->stdout_text;
  std::cout << fmt::format("[ dump     ] {}: 3 threads exact\n", interp_.name);
}

TEST_P(DumpThreads, NativeShowsKernelAndLibcFramesOfTheSleeper) {
  auto w = start_workload(interp_, "dump_threads.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  auto threads = dump_until_right(interp_, truth, {"--native"});
  const ThreadTruth* sleeper = thread_named(truth, "dump-sleep");
  ASSERT_NE(sleeper, nullptr);
  ASSERT_TRUE(threads.contains(sleeper->tid));
  const DumpedThread& d = threads.at(sleeper->tid);

  // Leaf first: the kernel frames, then the C library's call, then (further
  // up) the Python frames, exact (checked by dump_until_right).
  ASSERT_FALSE(d.frames.empty());
  EXPECT_EQ(d.frames.front().kind, "kernel");
  size_t first_user = 0;
  while (first_user < d.frames.size() && d.frames[first_user].kind == "kernel")
    ++first_user;
  ASSERT_LT(first_user, d.frames.size());
  const DumpedFrame& libc = d.frames[first_user];
  EXPECT_EQ(libc.kind, "native");
  if (interp_.origin == "debian-sid") {
    // sid's C library is stripped and (glibc 2.41) enters system calls
    // through internal cancellation wrappers without a dynamic symbol.
    EXPECT_NE(libc.frame.function.find("libc.so.6"), std::string::npos) << libc.frame.function;
  } else {
    const std::string want =
        interp_.major_minor() < std::make_pair(3, 11) ? "select" : "clock_nanosleep";
    EXPECT_NE(libc.frame.function.find(want), std::string::npos) << libc.frame.function;
  }
  // The running spinner has no registers to unwind from: its Python frames
  // and the reason.
  const ThreadTruth* spinner = thread_named(truth, "dump-spin");
  ASSERT_NE(spinner, nullptr);
  const DumpedThread& s = threads.at(spinner->tid);
  if (s.state == "running") {
    EXPECT_NE(s.native_error.find("running"), std::string::npos) << s.native_error;
  }
}

INSTANTIATE_TEST_SUITE_P(Interpreters, DumpThreads, ::testing::ValuesIn(kInterpreters),
                         interpreter_test_name);

TEST(DumpFailures, ANamedPidThatIsNotPythonIsOneLineAndExitOne) {
  require_root();
  SpawnOptions o;
  o.argv = {"/bin/sleep", "600"};
  auto sleeper = ChildProcess::spawn(o);
  ASSERT_TRUE(sleeper.ok()) << sleeper.error().message;
  auto r = run_krait({"dump", "-p", std::to_string(sleeper->pid())});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(r->status.code, 1);
  EXPECT_EQ(r->stderr_text,
            fmt::format("krait: dump: pid {}: not a Python process\n", sleeper->pid()));
  sleeper->kill();

  // A pid that does not exist: gone is one line too.
  auto gone = ChildProcess::spawn({.argv = {"/bin/true"}});
  ASSERT_TRUE(gone.ok());
  const pid_t pid = gone->pid();
  ASSERT_TRUE(gone->wait(10s).ok());
  auto g = run_krait({"dump", "-p", std::to_string(pid), "--json"});
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->status.code, 1);
  EXPECT_EQ(std::count(g->stderr_text.begin(), g->stderr_text.end(), '\n'), 1) << g->stderr_text;
  EXPECT_NE(g->stderr_text.find(fmt::format("pid {}:", pid)), std::string::npos);
  auto json = parse_json(g->stdout_text);
  EXPECT_TRUE(json.ok()) << g->stdout_text;
}

}  // namespace
}  // namespace krait::test
