// The Inspector's rules: per-key order, parallel keys, budgets, stalled
// workers given up on, forgotten keys' completions dropped.
#include "inspect/inspector.h"

#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace krait::inspect {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Inspector> make(InspectorOptions options = {}) {
  auto inspector = Inspector::create(options);
  EXPECT_TRUE(inspector.ok()) << inspector.error().message;
  return std::move(*inspector);
}

// Runs completions until `done` holds; the deadline only keeps a broken
// build from hanging the suite.
template <typename Done>
bool run_until(Inspector& inspector, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    inspector.run_completions();
    std::this_thread::yield();
  }
  return true;
}

// A gate a task waits at until the test opens it.
class Gate {
 public:
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

TEST(Inspector, TasksOfOneKeyRunInOrderAndCompleteOnTheOwnerThread) {
  auto inspector = make();
  std::vector<int> order;  // written by completions only: the owner's thread
  const auto owner = std::this_thread::get_id();
  bool on_owner = true;
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(inspector->post(1, "step", [&, i](TaskContext&) -> Completion {
      return [&, i] {
        on_owner &= std::this_thread::get_id() == owner;
        order.push_back(i);
      };
    }));
  ASSERT_TRUE(run_until(*inspector, [&] { return order.size() == 50; }));
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(order[i], i);
  EXPECT_TRUE(on_owner);
}

TEST(Inspector, OneBlockedKeyDoesNotDelayAnother) {
  InspectorOptions options;
  options.workers = 2;
  auto inspector = make(options);
  Gate gate;
  std::atomic<bool> blocked_started{false};
  bool blocked_done = false, other_done = false;
  inspector->post(1, "slow", [&](TaskContext&) -> Completion {
    blocked_started = true;
    gate.wait();
    return [&] { blocked_done = true; };
  });
  ASSERT_TRUE(run_until(*inspector, [&] { return blocked_started.load(); }));
  inspector->post(2, "fast",
                  [&](TaskContext&) -> Completion { return [&] { other_done = true; }; });
  ASSERT_TRUE(run_until(*inspector, [&] { return other_done; }));
  EXPECT_FALSE(blocked_done);
  gate.open();
  ASSERT_TRUE(run_until(*inspector, [&] { return blocked_done; }));
}

TEST(Inspector, AKeyOverItsByteBudgetIsThrottledAndTold) {
  InspectorOptions options;
  options.budget.bytes_burst = 1000;
  options.budget.bytes_per_second = 1;  // refills far slower than the test runs
  auto inspector = make(options);
  int ran = 0;
  inspector->post(7, "read", [&](TaskContext& context) -> Completion {
    context.charge_bytes(5000);
    return [&] { ++ran; };
  });
  ASSERT_TRUE(run_until(*inspector, [&] { return ran == 1; }));
  auto notices = inspector->take_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].key, 7u);
  EXPECT_EQ(notices[0].kind, Notice::Kind::kThrottled);
  EXPECT_NE(notices[0].reason.find("budget"), std::string::npos);
  // Throttled: new work is refused; other keys are not affected.
  EXPECT_FALSE(inspector->post(7, "read", [](TaskContext&) -> Completion { return {}; }));
  bool other = false;
  EXPECT_TRUE(inspector->post(8, "read",
                              [&](TaskContext&) -> Completion { return [&] { other = true; }; }));
  ASSERT_TRUE(run_until(*inspector, [&] { return other; }));
}

TEST(Inspector, AKeyOverItsCpuBudgetIsThrottled) {
  InspectorOptions options;
  options.budget.cpu_burst_ns = 5'000'000;  // 5 ms
  options.budget.cpu_per_second_ns = 1;
  auto inspector = make(options);
  bool ran = false;
  inspector->post(3, "spin", [&](TaskContext&) -> Completion {
    const uint64_t start = thread_cpu_ns();
    volatile uint64_t sink = 0;
    while (thread_cpu_ns() - start < 30'000'000)  // 30 ms of this thread's CPU
      sink = sink + 1;
    return [&] { ran = true; };
  });
  ASSERT_TRUE(run_until(*inspector, [&] { return ran; }));
  auto notices = inspector->take_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].kind, Notice::Kind::kThrottled);
  EXPECT_FALSE(inspector->post(3, "spin", [](TaskContext&) -> Completion { return {}; }));
  EXPECT_GE(inspector->stats().cpu_ns, 30'000'000u);
}

TEST(Inspector, AStalledTaskRefusesItsKeyAndAnotherWorkerTakesOver) {
  InspectorOptions options;
  options.workers = 1;
  options.max_workers = 2;
  options.stall_ns = 20'000'000;  // 20 ms
  auto inspector = make(options);
  auto gate = std::make_shared<Gate>();  // outlives the inspector: the task is left behind
  bool stalled_completion_ran = false;
  inspector->post(5, "read memory", [gate, &stalled_completion_ran](TaskContext&) -> Completion {
    gate->wait();
    return [&stalled_completion_ran] { stalled_completion_ran = true; };
  });
  std::vector<Notice> notices;
  ASSERT_TRUE(run_until(*inspector, [&] {
    for (auto& n : inspector->take_notices())
      notices.push_back(std::move(n));
    return !notices.empty();
  }));
  EXPECT_EQ(notices[0].key, 5u);
  EXPECT_EQ(notices[0].kind, Notice::Kind::kStalled);
  EXPECT_NE(notices[0].reason.find("read memory"), std::string::npos) << notices[0].reason;
  EXPECT_TRUE(inspector->refused(5));
  EXPECT_FALSE(inspector->post(5, "again", [](TaskContext&) -> Completion { return {}; }));
  // The only worker is stuck, yet other keys' work gets done.
  bool other = false;
  inspector->post(6, "fast", [&](TaskContext&) -> Completion { return [&] { other = true; }; });
  ASSERT_TRUE(run_until(*inspector, [&] { return other; }));
  EXPECT_EQ(inspector->stats().abandoned, 1u);
  // When the stuck read returns at last, its result is not delivered.
  gate->open();
  inspector->drain(std::chrono::steady_clock::now() + 1s);
  EXPECT_FALSE(stalled_completion_ran);
}

// Short tasks that start while the owner checks for stalls are not stalled:
// a task's start read after the owner's "now" once looked 2^64 ns old.
TEST(Inspector, ShortTasksAreNeverTakenForStalls) {
  InspectorOptions options;
  options.stall_ns = 1'000'000'000;
  auto inspector = make(options);
  int done = 0;
  constexpr int kTasks = 20'000;
  for (int i = 0; i < kTasks; ++i)
    inspector->post(static_cast<uint64_t>(i % 97), "tiny",
                    [&](TaskContext&) -> Completion { return [&] { ++done; }; });
  ASSERT_TRUE(run_until(*inspector, [&] { return done == kTasks; }));
  EXPECT_TRUE(inspector->take_notices().empty());
  EXPECT_EQ(inspector->stats().stalls, 0u);
}

TEST(Inspector, ForgottenKeysDropQueuedWorkAndLateCompletions) {
  InspectorOptions options;
  options.workers = 1;
  auto inspector = make(options);
  Gate gate;
  std::atomic<bool> started{false};
  bool first = false, second = false;
  inspector->post(9, "first", [&](TaskContext&) -> Completion {
    started = true;
    gate.wait();
    return [&] { first = true; };
  });
  inspector->post(9, "second", [&](TaskContext&) -> Completion { return [&] { second = true; }; });
  ASSERT_TRUE(run_until(*inspector, [&] { return started.load(); }));
  inspector->forget(9);
  gate.open();
  inspector->drain(std::chrono::steady_clock::now() + 60s);
  EXPECT_TRUE(inspector->idle());
  EXPECT_FALSE(first);
  EXPECT_FALSE(second);
  EXPECT_EQ(inspector->stats().tasks_dropped, 1u);
}

TEST(Inspector, DrainWaitsForQueuedWork) {
  auto inspector = make();
  int done = 0;
  for (uint64_t key = 1; key <= 20; ++key)
    inspector->post(key, "work", [&](TaskContext&) -> Completion { return [&] { ++done; }; });
  inspector->drain(std::chrono::steady_clock::now() + 60s);
  EXPECT_EQ(done, 20);
  EXPECT_TRUE(inspector->idle());
}

}  // namespace
}  // namespace krait::inspect
