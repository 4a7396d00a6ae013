// `krait dump`'s text and JSON output (dump_text, dump_json) of a report
// built by hand: leaf-first frames, every state and GIL answer, the reasons
// of what is missing, and names a hostile process chose (control
// characters, quotes) that must neither break the JSON nor reach the
// terminal raw.
#include <gtest/gtest.h>

#include "dump/dump.h"
#include "support/json.h"

namespace krait::dump {
namespace {

DumpReport sample_report() {
  DumpReport r;
  ProcessDump p;
  p.pid = 42;
  p.name = "python3.12";
  p.version = "3.12.1";
  p.command = "python3 app.py";
  p.notes.push_back("more than 4096 Python threads: the rest are not listed");
  ThreadDump sleeper;
  sleeper.tid = 43;
  sleeper.name = "evil\x1b[2J\n\"x";
  sleeper.python = true;
  sleeper.state = "blocked";
  sleeper.kernel_state = 'S';
  sleeper.syscall = "clock_nanosleep";
  sleeper.gil = Gil::kNotHeld;
  sleeper.frames = {{FrameKind::kKernel, "hrtimer_nanosleep", "", 0},
                    {FrameKind::kNative, "clock_nanosleep", "clock_nanosleep.c", 48},
                    {FrameKind::kPython, "nap", "/app.py", 20},
                    {FrameKind::kPython, "<module>", "/app.py", 40}};
  ThreadDump lost;
  lost.tid = -1;
  lost.tid_error = "the thread state has no thread id yet";
  lost.python = true;
  lost.error = "frame at 0x10 is unreadable";
  lost.native_error = "the thread is running";
  p.threads = {sleeper, lost};
  r.processes.push_back(p);
  r.failures.push_back("pid 7: not a Python process");
  return r;
}

TEST(DumpText, LeafFirstWithStateGilAndReasons) {
  const std::string text = dump_text(sample_report());
  EXPECT_NE(text.find("Process 42 python3.12 (Python 3.12.1)  python3 app.py\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("  note: more than 4096 Python threads"), std::string::npos) << text;
  EXPECT_NE(text.find("  Thread 43 \"evil\\x1b[2J\\x0a\"x\"  blocked in clock_nanosleep  GIL: "
                      "not held\n"
                      "    [kernel] hrtimer_nanosleep\n"
                      "    [native] clock_nanosleep (clock_nanosleep.c:48)\n"
                      "    nap (/app.py:20)\n"
                      "    <module> (/app.py:40)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  Thread ? \"\"  state unknown  GIL: unknown\n"
                      "    (thread id unknown: the thread state has no thread id yet)\n"
                      "    (frame at 0x10 is unreadable)\n"
                      "    (native frames unavailable: the thread is running)\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
}

TEST(DumpJson, EveryFieldParsesBack) {
  auto json = test::parse_json(dump_json(sample_report()));
  ASSERT_TRUE(json.ok()) << json.error().message;
  const test::JsonValue& procs = *json->find("processes");
  ASSERT_EQ(procs.items.size(), 1u);
  const test::JsonValue& p = procs.items[0];
  EXPECT_EQ(p.find("pid")->integer, 42);
  EXPECT_EQ(p.find("python_version")->string, "3.12.1");
  const test::JsonValue& threads = *p.find("threads");
  ASSERT_EQ(threads.items.size(), 2u);
  const test::JsonValue& t = threads.items[0];
  EXPECT_EQ(t.find("tid")->integer, 43);
  EXPECT_EQ(t.find("name")->string, "evil\x1b[2J\n\"x");
  EXPECT_EQ(t.find("state")->string, "blocked");
  EXPECT_EQ(t.find("kernel_state")->string, "S");
  EXPECT_EQ(t.find("syscall")->string, "clock_nanosleep");
  EXPECT_EQ(t.find("gil")->string, "not_held");
  const test::JsonValue& frames = *t.find("frames");
  ASSERT_EQ(frames.items.size(), 4u);
  EXPECT_EQ(frames.items[0].find("kind")->string, "kernel");
  EXPECT_EQ(frames.items[1].find("kind")->string, "native");
  EXPECT_EQ(frames.items[2].find("function")->string, "nap");
  EXPECT_EQ(frames.items[2].find("line")->integer, 20);
  EXPECT_EQ(frames.items[2].find("kind")->string, "python");
  const test::JsonValue& lost = threads.items[1];
  EXPECT_TRUE(lost.find("tid")->is_null());
  EXPECT_TRUE(lost.find("syscall")->is_null());
  EXPECT_EQ(lost.find("gil")->string, "unknown");
  EXPECT_EQ(lost.find("error")->string, "frame at 0x10 is unreadable");
  EXPECT_EQ(json->find("failures")->items.at(0).string, "pid 7: not a Python process");
}

// A thread running an event loop: two tasks, one awaiting the other, one
// named by a hostile process.
DumpReport loop_report() {
  DumpReport r;
  ProcessDump p;
  p.pid = 50;
  p.name = "python3.14";
  p.version = "3.14.10";
  ThreadDump t;
  t.tid = 50;
  t.python = true;
  t.state = "running";
  AsyncioDump loop;
  loop.loop = 0x5000;
  loop.running_task = 0x100;
  TaskDump worker;
  worker.id = 0x100;
  worker.name = "work\x1b[2J";
  worker.state = "running";
  worker.frames = {{FrameKind::kPython, "crunch", "/app.py", 7}};
  worker.awaited_by = {0x200};
  TaskDump main;
  main.id = 0x200;
  main.name = "main";
  main.state = "pending";
  main.frames = {{FrameKind::kPython, "main", "/app.py", 12}};
  main.awaits = {0x100};
  main.waiting_on = "_asyncio.Task";
  loop.tasks = {worker, main};
  t.asyncio = loop;
  p.threads = {t};
  r.processes.push_back(p);
  ProcessDump old;
  old.pid = 60;
  old.tasks_error = "asyncio tasks are read from Python 3.14 on";
  r.processes.push_back(old);
  return r;
}

TEST(DumpText, TasksWithWhatTheyWaitOnAndTheirAwaiters) {
  const std::string text = dump_text(loop_report());
  EXPECT_NE(text.find("    asyncio: 2 tasks, running \"work\\x1b[2J\"\n"
                      "      Task \"work\\x1b[2J\" running, awaited by \"main\"\n"
                      "        crunch (/app.py:7)\n"
                      "      Task \"main\" pending, waits on _asyncio.Task: \"work\\x1b[2J\"\n"
                      "        main (/app.py:12)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  asyncio tasks: asyncio tasks are read from Python 3.14 on\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
}

TEST(DumpJson, TasksAreObjectsWithIds) {
  auto json = test::parse_json(dump_json(loop_report()));
  ASSERT_TRUE(json) << json.error().message;
  const auto& processes = json->find("processes")->items;
  const test::JsonValue* loop = processes.at(0).find("threads")->items.at(0).find("asyncio");
  ASSERT_NE(loop, nullptr);
  EXPECT_EQ(loop->find("running_task")->integer, 0x100);
  const auto& tasks = loop->find("tasks")->items;
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].find("name")->string, "work\x1b[2J");
  EXPECT_EQ(tasks[0].find("awaited_by")->items.at(0).integer, 0x200);
  EXPECT_EQ(tasks[1].find("awaits")->items.at(0).integer, 0x100);
  EXPECT_EQ(tasks[1].find("waiting_on")->string, "_asyncio.Task");
  EXPECT_EQ(tasks[1].find("frames")->items.at(0).find("line")->integer, 12);
  EXPECT_EQ(processes.at(1).find("tasks_error")->string,
            "asyncio tasks are read from Python 3.14 on");
  // A thread without a loop has no "asyncio" member.
  const std::string plain = dump_json(sample_report());
  EXPECT_EQ(plain.find("\"asyncio\""), std::string::npos);
}

}  // namespace
}  // namespace krait::dump
