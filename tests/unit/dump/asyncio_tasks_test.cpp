// python/asyncio_tasks.h over hand-laid fixture memory with the layout of
// CPython 3.14 (the _AsyncioDebug values of sid's 3.14.10 and 3.15.2): the
// section's decoding and checks, a thread's task list with names (str and
// the int of "Task-N"), states, coroutine chains (suspended and running)
// and awaiters, and what a hostile process can build (cyclic or broken
// lists, a list leading to something else, a coroutine awaiting itself, a
// set that is not one) ending with a reason instead of garbage or a hang.
#include "python/asyncio_tasks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "support/python_test_layout.h"

namespace krait::python {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> bytes_of(const uint64_t (&values)[13]) {
  std::vector<uint8_t> out(sizeof values);
  std::memcpy(out.data(), values, sizeof values);
  return out;
}

AsyncioLayout layout_314() {
  auto debug = decode_asyncio_debug(bytes_of(kAsyncioSection314));
  EXPECT_TRUE(debug) << debug.error().message;
  auto a = build_asyncio_layout(*debug, asyncio_test_table({3, 14, 0}), {3, 14, 10});
  EXPECT_TRUE(a) << a.error().message;
  return *a;
}

constexpr uint64_t kCodeType = 0xc0de;
constexpr uint64_t kTstate = 0x10000;
constexpr uint64_t kCoroType = 0x20000, kStrType = 0x20400, kIntType = 0x20800,
                   kFutureType = 0x20c00, kTaskType = 0x21000;

template <typename T>
void put(std::vector<uint8_t>& block, size_t at, T value) {
  std::memcpy(block.data() + at, &value, sizeof value);
}

struct Fixture {
  proc::FakeMemory memory;
  AsyncioLayout a = layout_314();
  PythonLayout layout = frame_object_test_layout();

  Fixture() {
    type(kCoroType, 0, "coroutine");
    type(kStrType, uint64_t{1} << 28, "str");
    type(kIntType, uint64_t{1} << 24, "int");
    type(kFutureType, 0, "_asyncio.Future");
    type(kTaskType, 0, "_asyncio.Task");
    code(0x30000, 1);
    code(0x30100, 2);
    code(0x30200, 3);
    thread(0, 0, kTstate + a.debug.tstate_tasks_head);
  }
  void type(uint64_t at, uint64_t flags, const std::string& name) {
    std::vector<uint8_t> block(176);
    put(block, 24, at + 0x200);
    put(block, 168, flags);
    memory.add(at, block);
    // As in a process, the bytes after the NUL are mapped too.
    std::vector<uint8_t> text(name.begin(), name.end());
    text.resize((text.size() / 16 + 1) * 16, 0);
    memory.add(at + 0x200, text);
  }
  void code(uint64_t at, uint32_t firstline) {
    std::vector<uint8_t> block(48);
    put(block, 8, kCodeType);
    put(block, 16, at + 0x10000);  // file, name and line table: never read here
    put(block, 24, at + 0x20000);
    put(block, 32, at + 0x30000);
    put(block, 40, firstline);
    memory.add(at, block);
  }
  void str(uint64_t at, const std::string& text) {
    std::vector<uint8_t> block(48 + text.size() + 1);
    put(block, 8, kStrType);
    put<int64_t>(block, 16, static_cast<int64_t>(text.size()));
    put<uint32_t>(block, 32, (1u << 2) | (1u << 5) | (1u << 6));  // kind 1, compact, ASCII
    std::copy(text.begin(), text.end(), block.begin() + 48);
    memory.add(at, block);
  }
  void integer(uint64_t at, uint32_t n) {
    std::vector<uint8_t> block(32);
    put(block, 8, kIntType);
    put<uint64_t>(block, 16, 1 << 3);  // one digit, positive
    put(block, 24, n);
    memory.add(at, block);
  }
  void thread(uint64_t loop, uint64_t running, uint64_t first_task_node, uint64_t frame = 0) {
    memory.add_value<uint64_t>(kTstate + 8, frame);
    memory.add_value<uint64_t>(kTstate + a.debug.tstate_running_loop, loop);
    memory.add_value<uint64_t>(kTstate + a.debug.tstate_running_task, running);
    memory.add_value<uint64_t>(kTstate + a.debug.tstate_tasks_head, first_task_node);
  }
  struct Task {
    uint64_t name = 0, coro = 0, awaited_by = 0;
    bool awaited_by_is_set = false;
    uint64_t waiter = 0, next = 0;
    int32_t state = 0;
    uint8_t is_task = 1;
  };
  void task(uint64_t at, const Task& t) {
    std::vector<uint8_t> block(168);
    put(block, 8, kTaskType);
    put<uint64_t>(block, 16, 0x5000);  // the loop
    put(block, 96, t.awaited_by);
    put(block, 104, t.state);
    put(block, 108, t.is_task);
    put<uint8_t>(block, 109, t.awaited_by_is_set);
    put(block, 120, t.waiter);
    put(block, 128, t.coro);
    put(block, 136, t.name);
    put(block, 152, t.next);
    memory.add(at, block);
  }
  uint64_t node(uint64_t task) const { return task + a.debug.task_node; }
  uint64_t head() const { return kTstate + a.debug.tstate_tasks_head; }
  // A coroutine whose frame runs `code` at `lasti`; `awaited` (0 none) is
  // what it awaits when `state` is the yield-from state.
  void coro(uint64_t at, int8_t state, uint64_t code_at, int32_t lasti, uint64_t awaited = 0) {
    std::vector<uint8_t> block(120);
    put(block, 8, kCoroType);
    put(block, 48, state);
    put<uint64_t>(block, 64, 0);  // previous: none while suspended
    put(block, 72, code_at);
    put(block, 80, lasti);
    put<uint8_t>(block, 84, 1);              // FRAME_OWNED_BY_GENERATOR
    put<uint64_t>(block, 88, at + 64 + 48);  // stackpointer
    put(block, 104, awaited);                // stackpointer[-1]
    memory.add(at, block);
  }
  void set(uint64_t at, int64_t used, int64_t mask,
           const std::vector<std::pair<uint64_t, int64_t>>& entries) {
    std::vector<uint8_t> block(48);
    put(block, 24, used);
    put(block, 32, mask);
    put(block, 40, at + 0x100);
    memory.add(at, block);
    std::vector<uint8_t> table(16 * entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      put(table, 16 * i, entries[i].first);
      put(table, 16 * i + 8, entries[i].second);
    }
    memory.add(at + 0x100, table);
  }
  LoopTasks read(TaskLimits limits = {}, int budget = 100'000) {
    BudgetedReader reader(memory, budget);
    return read_thread_tasks(reader, layout, a, kCodeType, kTstate, limits);
  }
};

TEST(AsyncioDebug, DecodesTheSectionsOfSid314And315) {
  auto d = decode_asyncio_debug(bytes_of(kAsyncioSection315));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->task_size, 168u);
  EXPECT_EQ(d->task_coro, 128u);
  EXPECT_EQ(d->tstate_running_task, 1032u);
  EXPECT_EQ(d->tstate_tasks_head, 1048u);
  auto a15 = build_asyncio_layout(*d, asyncio_test_table({3, 14, 0}), {3, 15, 2});
  ASSERT_TRUE(a15) << a15.error().message;
  EXPECT_EQ(a15->awaited_slot, 2);
  EXPECT_EQ(a15->state_yield_from, 2);
  EXPECT_EQ(a15->state_cleared, 5);
  const AsyncioLayout a14 = layout_314();
  EXPECT_EQ(a14.fut_loop, 16u);
  EXPECT_EQ(a14.fut_state, 104u);
  EXPECT_EQ(a14.task_fut_waiter, 120u);
  EXPECT_EQ(a14.awaited_slot, 1);
  EXPECT_EQ(a14.state_yield_from, -1);
}

TEST(AsyncioDebug, RefusesWhatItDoesNotKnow) {
  std::vector<uint8_t> bytes = bytes_of(kAsyncioSection314);
  EXPECT_THAT(decode_asyncio_debug(std::span(bytes).first(96)).error().message, HasSubstr("bytes"));
  uint64_t bad[13];
  std::memcpy(bad, kAsyncioSection314, sizeof bad);
  bad[0] = 0;  // task size
  EXPECT_FALSE(decode_asyncio_debug(bytes_of(bad)));
  std::memcpy(bad, kAsyncioSection314, sizeof bad);
  bad[6] = 160;  // task_node past the task's end
  EXPECT_FALSE(decode_asyncio_debug(bytes_of(bad)));
  std::memcpy(bad, kAsyncioSection314, sizeof bad);
  bad[12] = 930;  // the thread's task list past the thread state
  EXPECT_FALSE(decode_asyncio_debug(bytes_of(bad)));

  auto d = decode_asyncio_debug(bytes);
  ASSERT_TRUE(d);
  EXPECT_THAT(build_asyncio_layout(*d, asyncio_test_table({3, 14, 0}), {3, 13, 0}).error().message,
              HasSubstr("from Python 3.14 on"));
  EXPECT_THAT(build_asyncio_layout(*d, asyncio_test_table({3, 14, 0}), {3, 16, 0}).error().message,
              HasSubstr("newer"));
  OffsetTable missing = asyncio_test_table({3, 14, 0});
  missing.fields.erase("PyGenObject.gi_iframe");
  EXPECT_THAT(build_asyncio_layout(*d, missing, {3, 14, 0}).error().message,
              HasSubstr("PyGenObject.gi_iframe"));
  AsyncioDebugOffsets moved = *d;
  moved.task_is_task = 112;
  EXPECT_THAT(
      build_asyncio_layout(moved, asyncio_test_table({3, 14, 0}), {3, 14, 0}).error().message,
      HasSubstr("not laid out"));
}

TEST(AsyncioTasks, ReadsNamesStatesChainsAndAwaiters) {
  Fixture f;
  constexpr uint64_t kA = 0x40000, kB = 0x41000;
  // A: "alpha", suspended: outer (yield-from) awaits inner, which waits on
  // a future. Awaited by B.
  f.str(0x50000, "alpha");
  f.coro(0x60000, -1, 0x30000, 10, 0x61000);
  f.coro(0x61000, -2, 0x30100, 20, 0);
  f.memory.add_value<uint64_t>(0x70008, kFutureType);  // the future A waits on
  f.task(
      kA,
      {.name = 0x50000, .coro = 0x60000, .awaited_by = kB, .waiter = 0x70000, .next = f.node(kB)});
  // B: the default name 7, running: the thread's frames from the leaf to
  // its coroutine's frame (0x62000 + 64), the loop's frame above. Awaited
  // by a set holding A and a deleted entry.
  f.integer(0x51000, 7);
  f.coro(0x62000, 0, 0x30200, 0);
  f.memory.add_value<uint64_t>(0x80000, 0);
  f.set(0x90000, 1, 3, {{kA, 1234}, {0x999, -1}, {0, 0}, {0, 0}});
  f.task(kB, {.name = 0x51000,
              .coro = 0x62000,
              .awaited_by = 0x90000,
              .awaited_by_is_set = true,
              .next = f.head()});
  std::vector<uint8_t> leaf(24), loop(24);
  put<uint64_t>(leaf, 0, 0x62000 + 64);
  put<uint64_t>(leaf, 8, 0x30100);
  put<int32_t>(leaf, 16, 6);
  put<uint64_t>(loop, 8, 0x30000);
  f.memory.add(0x81000, leaf);
  f.memory.add(0x82000, loop);
  f.memory.add_value<uint64_t>(0x62000 + 64, 0x82000);  // executing: previous is the loop's frame
  f.thread(0x5000, kB, f.node(kA), 0x81000);

  LoopTasks lt = f.read();
  EXPECT_EQ(lt.error, "");
  EXPECT_FALSE(lt.cut);
  EXPECT_EQ(lt.loop, 0x5000u);
  EXPECT_EQ(lt.running_task, kB);
  ASSERT_EQ(lt.tasks.size(), 2u);

  const AsyncTask& a = lt.tasks[0];
  EXPECT_EQ(a.address, kA);
  EXPECT_EQ(a.name, "alpha");
  EXPECT_EQ(a.state, TaskState::kPending);
  EXPECT_EQ(a.loop, 0x5000u);
  EXPECT_EQ(a.error, "");
  ASSERT_EQ(a.coroutine.status, KRAIT_PY_OK) << a.coroutine.reason;
  ASSERT_EQ(a.coroutine.frames.size(), 2u);
  EXPECT_EQ(a.coroutine.frames[0].record.code, 0x30100u);  // leaf first
  EXPECT_EQ(a.coroutine.frames[0].record.instr, 20u);
  EXPECT_EQ(a.coroutine.frames[1].record.code, 0x30000u);
  EXPECT_EQ(a.coroutine.frames[1].frame, 0x60000u + 64);
  EXPECT_THAT(a.awaited_by, ElementsAre(kB));
  EXPECT_EQ(a.waiter, 0x70000u);
  EXPECT_EQ(a.waiter_type, "_asyncio.Future");

  const AsyncTask& b = lt.tasks[1];
  EXPECT_EQ(b.name, "Task-7");
  EXPECT_EQ(b.state, TaskState::kRunning);
  ASSERT_EQ(b.coroutine.status, KRAIT_PY_OK) << b.coroutine.reason;
  ASSERT_EQ(b.coroutine.frames.size(), 2u);
  EXPECT_EQ(b.coroutine.frames[0].frame, 0x81000u);
  EXPECT_EQ(b.coroutine.frames[1].frame, 0x62000u + 64);
  EXPECT_THAT(b.awaited_by, ElementsAre(kA));
  EXPECT_EQ(b.waiter, 0u);
}

TEST(AsyncioTasks, NoLoopNoTasks) {
  Fixture f;
  LoopTasks lt = f.read();
  EXPECT_EQ(lt.loop, 0u);
  EXPECT_TRUE(lt.tasks.empty());
  EXPECT_EQ(lt.error, "");
}

TEST(AsyncioTasks, HostileListsEndWithAReason) {
  constexpr uint64_t kA = 0x40000, kB = 0x41000;
  {
    Fixture f;  // A -> B -> A: never back to the head
    f.task(kA, {.next = f.node(kB)});
    f.task(kB, {.next = f.node(kA)});
    f.thread(0x5000, 0, f.node(kA));
    LoopTasks lt = f.read();
    EXPECT_THAT(lt.error, HasSubstr("cyclic"));
    EXPECT_EQ(lt.tasks.size(), 2u);
  }
  {
    Fixture f;  // the same, cut by the limit first
    f.task(kA, {.next = f.node(kB)});
    f.task(kB, {.next = f.node(kA)});
    f.thread(0x5000, 0, f.node(kA));
    LoopTasks lt = f.read({.max_tasks = 1});
    EXPECT_TRUE(lt.cut);
    EXPECT_EQ(lt.tasks.size(), 1u);
  }
  {
    Fixture f;  // a NULL link
    f.task(kA, {.next = 0});
    f.thread(0x5000, 0, f.node(kA));
    LoopTasks lt = f.read();
    EXPECT_THAT(lt.error, HasSubstr("NULL"));
    EXPECT_EQ(lt.tasks.size(), 1u);
  }
  {
    Fixture f;  // a link into something that is not a task, and an unmapped one
    f.task(kA, {.next = f.node(kB)});
    f.task(kB, {.next = f.head(), .is_task = 0});
    f.thread(0x5000, 0, f.node(kA));
    LoopTasks lt = f.read();
    EXPECT_THAT(lt.error, HasSubstr("not a task"));
    EXPECT_EQ(lt.tasks.size(), 1u);
    f.task(kA, {.next = 0x7777000});
    lt = f.read();
    EXPECT_EQ(lt.tasks.size(), 1u);
    EXPECT_NE(lt.error, "");
  }
  {
    Fixture f;  // the budget ends the walk, whatever the list
    f.task(kA, {.next = f.node(kB)});
    f.task(kB, {.next = f.head()});
    f.thread(0x5000, 0, f.node(kA));
    LoopTasks lt = f.read({}, 4);
    EXPECT_THAT(lt.error, HasSubstr("budget"));
  }
}

TEST(AsyncioTasks, HostileCoroutinesAndSetsAreReportedOnTheTask) {
  constexpr uint64_t kA = 0x40000, kB = 0x41000;
  Fixture f;
  f.str(0x50000, "loop");
  f.coro(0x60000, -1, 0x30000, 4, 0x60000);  // awaits itself
  f.set(0x90000, 3, 6, {});                  // mask 6: not a set's
  f.task(kA, {.name = 0x50000,
              .coro = 0x60000,
              .awaited_by = 0x90000,
              .awaited_by_is_set = true,
              .next = f.node(kB)});
  f.coro(0x61000, 0, 0x30000, 0);  // running, but not on the thread's stack
  f.task(kB, {.name = 0x50000, .coro = 0x61000, .next = f.head()});
  f.thread(0x5000, kB, f.node(kA), 0);

  LoopTasks lt = f.read();
  ASSERT_EQ(lt.tasks.size(), 2u);
  const AsyncTask& a = lt.tasks[0];
  EXPECT_EQ(a.name, "loop");
  EXPECT_THAT(a.coroutine.reason, HasSubstr("cyclic"));
  EXPECT_EQ(a.coroutine.frames.size(), 1u);
  EXPECT_THAT(a.error, HasSubstr("not a set"));
  EXPECT_TRUE(a.awaited_by.empty());
  const AsyncTask& b = lt.tasks[1];
  EXPECT_EQ(b.state, TaskState::kRunning);
  EXPECT_THAT(b.coroutine.reason, HasSubstr("not on the thread's stack"));
  EXPECT_TRUE(b.coroutine.frames.empty());

  // A chain deeper than the limit is cut, not followed.
  f.coro(0x60000, -1, 0x30000, 4, 0x61000);
  f.coro(0x61000, -1, 0x30000, 4, 0x62000);
  f.coro(0x62000, -2, 0x30000, 4);
  f.thread(0x5000, 0, f.node(kA), 0);
  lt = f.read({.max_depth = 2});
  ASSERT_FALSE(lt.tasks.empty());
  EXPECT_TRUE(lt.tasks[0].coroutine.truncated);
  EXPECT_EQ(lt.tasks[0].coroutine.frames.size(), 2u);
}

}  // namespace
}  // namespace krait::python
