// `krait dump --tasks` end to end: asyncio_tasks.py runs one event loop
// whose tasks wait in known ways (asyncio.sleep, a socket read, a gather of
// two tasks, a TaskGroup, `await task`) while one task spins, and reports
// each task's own coroutine stack, state, awaiters and the type of the
// future it waits on. The dump of the live process must list exactly those
// tasks on the loop's thread, with exactly those stacks (functions, files,
// lines), states, awaiters and awaited tasks. Before 3.14 the interpreter
// publishes no asyncio layout: there `--tasks` says so and lists none.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
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

// The interpreters whose asyncio layout krait reads: sid's static stripped
// 3.14 (_asyncio a shared module) and 3.15 (_asyncio built in).
const std::vector<std::string> kTaskInterpreters = {"sid-3.14", "sid-3.15"};
// Before 3.14: the workload runs (3.11+ has TaskGroup), krait says why it
// lists no tasks.
const std::vector<std::string> kOlderInterpreters = {"pyenv-3.11.7", "pyenv-3.12.1",
                                                     "pyenv-3.13.0"};

struct TaskTruth {
  std::string name;
  std::string state;
  std::vector<Frame> stack;  // root first
  std::vector<std::string> awaited_by;
  std::string waiting_on;  // the future's type name ("Future", "_GatheringFuture"), "" none
};

std::vector<TaskTruth> task_truths(const Truth& truth) {
  std::vector<TaskTruth> out;
  auto tasks = json_array(truth.json, "tasks");
  EXPECT_TRUE(tasks.ok()) << tasks.error().message;
  if (!tasks.ok())
    return out;
  for (const JsonValue& t : (*tasks)->items) {
    TaskTruth tt;
    tt.name = json_string(t, "name").value();
    tt.state = json_string(t, "state").value();
    tt.stack = parse_stack(*json_array(t, "stack").value()).value();
    for (const JsonValue& a : json_array(t, "awaited_by").value()->items)
      tt.awaited_by.push_back(a.string);
    tt.waiting_on = json_string(t, "waiting_on").value();
    out.push_back(std::move(tt));
  }
  return out;
}

struct DumpedTask {
  int64_t id = 0;
  std::string name;
  std::string state;
  std::vector<Frame> stack;  // root first (the dump lists leaf first)
  std::vector<int64_t> awaits;
  std::vector<int64_t> awaited_by;
  std::string waiting_on;
  std::string error;
};

struct DumpedLoop {
  bool present = false;  // the thread has an "asyncio" member
  int64_t running_task = 0;
  std::vector<DumpedTask> tasks;
  std::string error;
  std::vector<Frame> thread_stack;  // the thread's Python frames, root first
  std::string tasks_error;          // the process's
};

std::vector<int64_t> ids(const JsonValue& task, std::string_view key) {
  std::vector<int64_t> out;
  for (const JsonValue& v : json_array(task, key).value()->items)
    out.push_back(v.integer);
  return out;
}

std::vector<Frame> python_frames_root_first(const JsonValue& owner) {
  std::vector<Frame> out;
  const auto& frames = json_array(owner, "frames").value()->items;
  for (auto it = frames.rbegin(); it != frames.rend(); ++it)
    if (json_string(*it, "kind").value() == "python")
      out.push_back({json_string(*it, "function").value(), json_string(*it, "file").value(),
                     json_int(*it, "line").value()});
  return out;
}

// Thread `tid` of process `pid` in `krait dump --json` output.
Result<DumpedLoop> parse_loop(const std::string& text, int64_t pid, int64_t tid) {
  auto json = parse_json(text);
  if (!json)
    return json.error();
  auto processes = json_array(*json, "processes");
  if (!processes)
    return processes.error();
  for (const JsonValue& p : (*processes)->items) {
    if (json_int(p, "pid").value() != pid)
      continue;
    DumpedLoop out;
    out.tasks_error = json_string(p, "tasks_error").value();
    for (const JsonValue& t : json_array(p, "threads").value()->items) {
      const JsonValue* id = t.find("tid");
      if (!id || !id->is_int() || id->integer != tid)
        continue;
      out.thread_stack = python_frames_root_first(t);
      const JsonValue* loop = t.find("asyncio");
      if (!loop)
        return out;
      out.present = true;
      const JsonValue* running = loop->find("running_task");
      out.running_task = running && running->is_int() ? running->integer : 0;
      out.error = json_string(*loop, "error").value();
      for (const JsonValue& task : json_array(*loop, "tasks").value()->items) {
        DumpedTask d;
        d.id = json_int(task, "id").value();
        d.name = json_string(task, "name").value();
        d.state = json_string(task, "state").value();
        d.stack = python_frames_root_first(task);
        d.awaits = ids(task, "awaits");
        d.awaited_by = ids(task, "awaited_by");
        d.waiting_on = json_string(task, "waiting_on").value();
        d.error = json_string(task, "error").value();
        out.tasks.push_back(std::move(d));
      }
      return out;
    }
    return make_error("no thread {} in the dump of {}", tid, pid);
  }
  return make_error("no process {} in the dump", pid);
}

std::string names_text(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names)
    out += (out.empty() ? "" : ", ") + n;
  return "[" + out + "]";
}

// What is wrong with a dump of the workload, "" when nothing.
std::string judge(const Truth& truth, const std::vector<TaskTruth>& want, const DumpedLoop& got) {
  std::string wrong;
  const ThreadTruth& thread = truth.threads.front();
  if (got.thread_stack != thread.stack)
    wrong += fmt::format("thread frames {} want {}; ", format_stack(got.thread_stack),
                         format_stack(thread.stack));
  if (!got.present)
    return wrong + "the loop thread has no asyncio tasks (" + got.tasks_error + "); ";
  if (!got.error.empty())
    wrong += "loop error: " + got.error + "; ";
  std::map<int64_t, std::string> name_of;
  std::map<std::string, const DumpedTask*> by_name;
  for (const DumpedTask& d : got.tasks) {
    name_of[d.id] = d.name;
    if (!by_name.emplace(d.name, &d).second)
      wrong += "task " + d.name + " listed twice; ";
  }
  if (got.tasks.size() != want.size())
    wrong += fmt::format("{} tasks, want {}; ", got.tasks.size(), want.size());
  auto names = [&name_of](const std::vector<int64_t>& list) {
    std::vector<std::string> out;
    for (int64_t id : list)
      out.push_back(name_of.contains(id) ? name_of[id] : fmt::format("{:#x}", id));
    std::sort(out.begin(), out.end());
    return out;
  };
  for (const TaskTruth& t : want) {
    auto it = by_name.find(t.name);
    if (it == by_name.end()) {
      wrong += "task " + t.name + " missing; ";
      continue;
    }
    const DumpedTask& d = *it->second;
    if (d.state != t.state)
      wrong += fmt::format("{}: state {} want {}; ", t.name, d.state, t.state);
    if ((t.state == "running") != (got.running_task == d.id))
      wrong += fmt::format("{}: running_task is {:#x}; ", t.name, got.running_task);
    if (d.stack != t.stack)
      wrong += fmt::format("{}: stack {} want {}; ", t.name, format_stack(d.stack),
                           format_stack(t.stack));
    if (names(d.awaited_by) != t.awaited_by)
      wrong += fmt::format("{}: awaited by {} want {}; ", t.name, names_text(names(d.awaited_by)),
                           names_text(t.awaited_by));
    // It awaits exactly the tasks whose awaiters name it.
    std::vector<std::string> awaited;
    for (const TaskTruth& other : want)
      if (std::find(other.awaited_by.begin(), other.awaited_by.end(), t.name) !=
          other.awaited_by.end())
        awaited.push_back(other.name);
    std::sort(awaited.begin(), awaited.end());
    if (names(d.awaits) != awaited)
      wrong += fmt::format("{}: awaits {} want {}; ", t.name, names_text(names(d.awaits)),
                           names_text(awaited));
    // The type's tp_name: "_asyncio.Future" for the C type, the bare name
    // for a class defined in Python.
    const bool type_ok = t.waiting_on.empty() ? d.waiting_on.empty()
                                              : d.waiting_on == t.waiting_on ||
                                                    d.waiting_on.ends_with("." + t.waiting_on);
    if (!type_ok)
      wrong += fmt::format("{}: waiting on '{}' want '{}'; ", t.name, d.waiting_on, t.waiting_on);
    if (!d.error.empty())
      wrong += fmt::format("{}: error {}; ", t.name, d.error);
  }
  return wrong;
}

std::string run_dump(int64_t pid, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"dump", "-p", std::to_string(pid)};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_krait(args);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok())
    return "";
  EXPECT_TRUE(r->status.success()) << r->status.describe() << ": " << r->stderr_text;
  return r->stdout_text;
}

// Dumps (with `extra`) until `judge` finds nothing wrong or 60 s pass; the
// last dump. The workload stays as it reported (the spinner never yields),
// so the first dump is right unless the read met the spinner in its
// bookkeeping lap, away from the hot line.
template <typename Judge>
DumpedLoop dump_until_right(const Truth& truth, const std::vector<std::string>& extra,
                            const Judge& judge_dump) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::string wrong = "no dump";
  DumpedLoop last;
  int dumps = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto loop = parse_loop(run_dump(truth.pid, extra), truth.pid, truth.threads.front().tid);
    EXPECT_TRUE(loop.ok()) << loop.error().message;
    if (!loop.ok())
      return last;
    ++dumps;
    last = std::move(*loop);
    wrong = judge_dump(last);
    if (wrong.empty())
      return last;
    std::this_thread::sleep_for(100ms);  // pacing between polls, not synchronisation
  }
  ADD_FAILURE() << "no right dump in " << dumps << " tries; the last: " << wrong;
  return last;
}

using AsyncioTasks = InterpreterTest;

TEST_P(AsyncioTasks, EachTaskHasItsStackStateAndAwaiters) {
  auto w = start_workload(interp_, "asyncio_tasks.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  ASSERT_EQ(truth.threads.size(), 1u);
  const std::vector<TaskTruth> want = task_truths(truth);
  ASSERT_EQ(want.size(), 9u);

  const DumpedLoop last =
      dump_until_right(truth, {"--tasks", "--json"},
                       [&truth, &want](const DumpedLoop& got) { return judge(truth, want, got); });
  EXPECT_EQ(last.tasks_error, "");

  // The text names the loop's tasks with their state and waits.
  const std::string text = run_dump(truth.pid, {"--tasks"});
  EXPECT_NE(text.find("asyncio: 9 tasks, running \"spinner\""), std::string::npos) << text;
  EXPECT_NE(text.find("Task \"spinner\" running, awaited by \"main\""), std::string::npos) << text;
  EXPECT_NE(text.find("Task \"gather-a\" pending, waits on _asyncio.Future, awaited by "
                      "\"gather-parent\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("Task \"main\" pending, waits on _asyncio.Task: \"spinner\""),
            std::string::npos)
      << text;

  // Without --tasks nothing of it is read.
  const DumpedLoop plain = dump_until_right(truth, {"--json"}, [&truth](const DumpedLoop& got) {
    return got.thread_stack == truth.threads.front().stack ? "" : "thread frames differ";
  });
  EXPECT_FALSE(plain.present);
  std::cout << fmt::format("[ tasks    ] {}: 9 tasks exact\n", interp_.name);
}

INSTANTIATE_TEST_SUITE_P(Interpreters, AsyncioTasks, ::testing::ValuesIn(kTaskInterpreters),
                         interpreter_test_name);

using AsyncioTasksBefore314 = InterpreterTest;

TEST_P(AsyncioTasksBefore314, SaysWhyNoTasksAreListed) {
  auto w = start_workload(interp_, "asyncio_tasks.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  // The thread's own stack is still exact.
  const DumpedLoop loop =
      dump_until_right(truth, {"--tasks", "--json"}, [&truth](const DumpedLoop& got) {
        return got.thread_stack == truth.threads.front().stack ? "" : "thread frames differ";
      });
  EXPECT_FALSE(loop.present);
  EXPECT_NE(loop.tasks_error.find("from Python 3.14 on"), std::string::npos) << loop.tasks_error;
}

INSTANTIATE_TEST_SUITE_P(Interpreters, AsyncioTasksBefore314,
                         ::testing::ValuesIn(kOlderInterpreters), interpreter_test_name);

}  // namespace
}  // namespace krait::test
