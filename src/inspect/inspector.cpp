#include "inspect/inspector.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "util/unique_fd.h"

namespace krait::inspect {
namespace {

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A token bucket in signed units so that one long task can overdraw it.
struct Bucket {
  int64_t tokens = 0;
  int64_t burst = 0;
  uint64_t per_second = 0;

  void refill(uint64_t elapsed_ns) {
    const long double add = static_cast<long double>(elapsed_ns) * per_second / 1e9L;
    tokens =
        static_cast<int64_t>(std::min<long double>(static_cast<long double>(burst), tokens + add));
  }
};

}  // namespace

struct Inspector::Shared {
  struct Pending {
    std::string what;
    Task task;
  };
  struct KeyState {
    uint64_t serial = 0;  // tells a forgotten key's late completion from a new one's
    std::deque<Pending> queue;
    bool running = false;
    bool ready = false;  // listed in `ready`
    bool throttled = false;
    bool refused = false;
    Bucket cpu;
    Bucket bytes;
    uint64_t refilled_ns = 0;
    std::string running_what;
    KeyUsage usage;
  };
  struct Slot {
    std::atomic<uint64_t> busy_since{0};  // 0: between tasks
    std::atomic<uint64_t> key{0};
    bool abandoned = false;  // under mutex
    bool exited = false;     // under mutex
    std::thread thread;
  };
  struct Done {
    uint64_t key;
    uint64_t serial;
    Completion completion;
  };

  explicit Shared(const InspectorOptions& o) : options(o) {}

  const InspectorOptions options;
  mutable std::mutex mutex;
  std::condition_variable work;      // workers wait for ready keys
  std::condition_variable finished;  // the owner waits for tasks to end
  std::unordered_map<uint64_t, KeyState> keys;
  std::deque<uint64_t> ready;
  std::deque<Done> done;
  std::vector<std::shared_ptr<Slot>> slots;
  std::vector<Notice> notices;
  InspectorStats stats;
  uint64_t next_serial = 1;
  bool stopping = false;
  UniqueFd wake;

  KeyState& key_state(uint64_t key) {
    auto [it, inserted] = keys.try_emplace(key);
    KeyState& ks = it->second;
    if (inserted) {
      ks.serial = next_serial++;
      ks.cpu = Bucket{static_cast<int64_t>(options.budget.cpu_burst_ns),
                      static_cast<int64_t>(options.budget.cpu_burst_ns),
                      options.budget.cpu_per_second_ns};
      ks.bytes =
          Bucket{static_cast<int64_t>(options.budget.bytes_burst),
                 static_cast<int64_t>(options.budget.bytes_burst), options.budget.bytes_per_second};
      ks.refilled_ns = now_ns();
    }
    return ks;
  }

  // Refills the buckets and lifts a throttle once both are back in credit.
  void refill(KeyState& ks) {
    const uint64_t now = now_ns();
    const uint64_t elapsed = now - ks.refilled_ns;
    ks.refilled_ns = now;
    ks.cpu.refill(elapsed);
    ks.bytes.refill(elapsed);
    if (ks.throttled && ks.cpu.tokens >= 0 && ks.bytes.tokens >= 0)
      ks.throttled = false;
  }

  void drop_queue(KeyState& ks) {
    stats.tasks_dropped += ks.queue.size();
    ks.queue.clear();
  }

  void signal_done() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
  }

  void worker(const std::shared_ptr<Slot>& slot) {
    std::unique_lock lock(mutex);
    for (;;) {
      work.wait(lock, [&] { return stopping || !ready.empty(); });
      if (stopping)
        break;
      const uint64_t key = ready.front();
      ready.pop_front();
      auto it = keys.find(key);
      if (it == keys.end())
        continue;
      KeyState& ks = it->second;
      ks.ready = false;
      refill(ks);
      if (ks.refused || ks.throttled || ks.queue.empty()) {
        drop_queue(ks);
        continue;
      }
      Pending pending = std::move(ks.queue.front());
      ks.queue.pop_front();
      ks.running = true;
      ks.running_what = pending.what;
      const uint64_t serial = ks.serial;
      slot->key.store(key);
      slot->busy_since.store(now_ns());
      lock.unlock();

      TaskContext context;
      Completion completion;
      const uint64_t wall_before = now_ns();
      const uint64_t cpu_before = thread_cpu_ns();
      try {
        completion = pending.task(context);
      } catch (const std::exception& e) {
        // Tasks return errors as values; this is a bug or out of memory, and
        // it must not take the worker (and every process's work) with it.
        spdlog::error("inspecting process work '{}' failed: {}", pending.what, e.what());
      } catch (...) {
        spdlog::error("inspecting process work '{}' failed", pending.what);
      }
      const uint64_t cpu = thread_cpu_ns() - cpu_before;
      const uint64_t wall = now_ns() - wall_before;
      if (wall > 1'000'000'000ull)
        spdlog::debug("reading a process ({}) took {} ms ({} ms of CPU)", pending.what,
                      wall / 1'000'000, cpu / 1'000'000);
      pending = {};

      lock.lock();
      slot->busy_since.store(0);
      stats.cpu_ns += cpu;
      stats.bytes += context.bytes();
      ++stats.tasks_run;
      if (slot->abandoned)
        break;  // declared stalled meanwhile: its key is refused, its result unwanted
      auto again = keys.find(key);
      if (again == keys.end() || again->second.serial != serial)
        continue;  // forgotten while it ran
      KeyState& after = again->second;
      after.running = false;
      after.usage.tasks += 1;
      after.usage.cpu_ns += cpu;
      after.usage.wall_ns += wall;
      after.usage.bytes += context.bytes();
      after.cpu.tokens -= static_cast<int64_t>(cpu);
      after.bytes.tokens -= static_cast<int64_t>(context.bytes());
      if (!after.throttled && (after.cpu.tokens < 0 || after.bytes.tokens < 0)) {
        after.throttled = true;
        drop_queue(after);
        notices.push_back(Notice{
            key, Notice::Kind::kThrottled,
            fmt::format("over its inspection budget ({} ms of CPU and {} MiB at once, then {} ms "
                        "and {} MiB per second); its work waits until the budget refills",
                        options.budget.cpu_burst_ns / 1'000'000, options.budget.bytes_burst >> 20,
                        options.budget.cpu_per_second_ns / 1'000'000,
                        options.budget.bytes_per_second >> 20)});
      }
      if (!after.queue.empty() && !after.ready) {
        after.ready = true;
        ready.push_back(key);
        work.notify_one();
      }
      if (completion) {
        done.push_back(Done{key, serial, std::move(completion)});
        signal_done();
      }
      finished.notify_all();
    }
    slot->exited = true;
    finished.notify_all();
  }
};

Result<std::unique_ptr<Inspector>> Inspector::create(InspectorOptions options) {
  if (options.workers == 0 || options.max_workers < options.workers)
    return make_error("the inspector needs at least one worker and max_workers >= workers");
  auto inspector = std::make_unique<Inspector>(Key{}, options);
  inspector->shared_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!inspector->shared_->wake.valid())
    return make_error("eventfd: {}", std::strerror(errno));
  for (unsigned i = 0; i < options.workers; ++i)
    inspector->spawn_worker();
  return inspector;
}

Inspector::Inspector(Key, InspectorOptions options)
    : shared_(std::make_shared<Shared>(options)), options_(options) {}

Inspector::~Inspector() {
  std::unique_lock lock(shared_->mutex);
  shared_->stopping = true;
  shared_->work.notify_all();
  // A worker in the middle of a task finishes it first; one that does not
  // finish within the stall time is left behind like any stalled worker.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(options_.stall_ns);
  for (auto& slot : shared_->slots) {
    if (slot->abandoned)
      continue;
    shared_->finished.wait_until(lock, deadline, [&] { return slot->exited; });
    if (slot->exited) {
      std::thread thread = std::move(slot->thread);
      lock.unlock();
      thread.join();
      lock.lock();
    } else {
      slot->abandoned = true;
      slot->thread.detach();
    }
  }
}

void Inspector::spawn_worker() {
  auto slot = std::make_shared<Shared::Slot>();
  std::shared_ptr<Shared> shared = shared_;
  slot->thread = std::thread([shared, slot] { shared->worker(slot); });
  shared_->slots.push_back(std::move(slot));
}

bool Inspector::post(uint64_t key, std::string_view what, Task task) {
  std::lock_guard lock(shared_->mutex);
  Shared::KeyState& ks = shared_->key_state(key);
  shared_->refill(ks);
  if (ks.refused || ks.throttled) {
    ++shared_->stats.tasks_dropped;
    return false;
  }
  ks.queue.push_back(Shared::Pending{std::string(what), std::move(task)});
  if (!ks.running && !ks.ready) {
    ks.ready = true;
    shared_->ready.push_back(key);
    shared_->work.notify_one();
  }
  return true;
}

void Inspector::forget(uint64_t key) {
  std::lock_guard lock(shared_->mutex);
  auto it = shared_->keys.find(key);
  if (it == shared_->keys.end())
    return;
  shared_->drop_queue(it->second);
  shared_->keys.erase(it);
}

KeyUsage Inspector::usage(uint64_t key) const {
  std::lock_guard lock(shared_->mutex);
  auto it = shared_->keys.find(key);
  return it == shared_->keys.end() ? KeyUsage{} : it->second.usage;
}

bool Inspector::refused(uint64_t key) const {
  std::lock_guard lock(shared_->mutex);
  auto it = shared_->keys.find(key);
  return it != shared_->keys.end() && it->second.refused;
}

void Inspector::check_stalls() {
  std::lock_guard lock(shared_->mutex);
  // Read after the lock: a task may have started while this thread waited
  // for it, and its start must not look later than "now".
  const uint64_t now = now_ns();
  size_t live = 0;
  std::vector<std::shared_ptr<Shared::Slot>> stalled;
  for (auto& slot : shared_->slots) {
    if (slot->abandoned || slot->exited)
      continue;
    const uint64_t since = slot->busy_since.load();
    if (since != 0 && now > since && now - since > options_.stall_ns)
      stalled.push_back(slot);
    else
      ++live;
  }
  for (auto& slot : stalled) {
    slot->abandoned = true;
    slot->thread.detach();
    ++shared_->stats.stalls;
    const uint64_t key = slot->key.load();
    std::string what = "its work";
    if (auto it = shared_->keys.find(key); it != shared_->keys.end()) {
      Shared::KeyState& ks = it->second;
      what = ks.running_what;
      ks.refused = true;
      ks.running = false;
      shared_->drop_queue(ks);
    }
    shared_->notices.push_back(Notice{
        key, Notice::Kind::kStalled,
        fmt::format("reading it ({}) blocked for more than {} s (a mapping or file that does "
                    "not answer, such as FUSE); not profiled any further",
                    what, options_.stall_ns / 1'000'000'000)});
    spdlog::warn("a worker reading a profiled process ({}) is blocked; {}", what,
                 live < options_.max_workers ? "starting another" : "no worker left to replace it");
  }
  // Replacements, up to the cap of threads in all (left-behind ones count:
  // they still hold their stacks).
  size_t total = shared_->slots.size();
  for (size_t i = 0; i < stalled.size() && total < options_.max_workers; ++i, ++total)
    spawn_worker();
  // Slots whose threads ended for good are forgotten.
  std::erase_if(shared_->slots, [](const auto& slot) { return slot->exited && slot->abandoned; });
}

size_t Inspector::run_completions() {
  check_stalls();
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(shared_->wake.get(), &count, sizeof count);
  size_t ran = 0;
  for (;;) {
    Shared::Done done;
    {
      std::lock_guard lock(shared_->mutex);
      if (shared_->done.empty())
        break;
      done = std::move(shared_->done.front());
      shared_->done.pop_front();
      auto it = shared_->keys.find(done.key);
      if (it == shared_->keys.end() || it->second.serial != done.serial)
        continue;
    }
    done.completion();
    ++ran;
  }
  return ran;
}

int Inspector::wake_fd() const {
  return shared_->wake.get();
}

std::vector<Notice> Inspector::take_notices() {
  std::lock_guard lock(shared_->mutex);
  return std::exchange(shared_->notices, {});
}

bool Inspector::idle() const {
  std::lock_guard lock(shared_->mutex);
  if (!shared_->ready.empty() || !shared_->done.empty())
    return false;
  for (const auto& slot : shared_->slots)
    if (!slot->abandoned && slot->busy_since.load() != 0)
      return false;
  return true;
}

void Inspector::drain(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    run_completions();
    if (idle() || std::chrono::steady_clock::now() >= deadline)
      return;
    std::unique_lock lock(shared_->mutex);
    // Woken when a task ends; the short step lets stalls be noticed.
    const auto step =
        std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
    shared_->finished.wait_until(lock, step);
  }
}

InspectorStats Inspector::stats() const {
  std::lock_guard lock(shared_->mutex);
  InspectorStats s = shared_->stats;
  s.workers = 0;
  s.abandoned = 0;
  for (const auto& slot : shared_->slots)
    (slot->abandoned ? s.abandoned : s.workers) += 1;
  return s;
}

}  // namespace krait::inspect
