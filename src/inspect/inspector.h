// Inspector: where krait reads profiled processes. Every read of a
// profiled process's memory, /proc files and mapped files (attaching,
// naming code objects, loading its modules) is a Task run here, on a small
// pool of worker threads, never on the thread that drains the ring buffer.
//
// Why: every such read can be slow or block for as long as the process
// wants (a code object placed in a FUSE-backed mapping, a library swapped
// for a FIFO, a huge line table). The reader thread posts work and goes on;
// one process's slow work delays only that process.
//
// Rules:
// - Tasks are keyed by a process incarnation (the caller's key). Tasks of
//   one key run one at a time, in the order posted; different keys run in
//   parallel, taken round-robin so a busy process cannot starve the others.
// - Every task's CPU time (its thread's CPU clock) and the bytes it reports
//   (TaskContext::charge_bytes) are charged to its key's budget, a token
//   bucket (a burst, then a rate). A key that overdraws its budget is
//   throttled: its queued and new tasks are dropped until the bucket is
//   back above zero, and the owner is told once, with the reason.
// - A task that runs longer than `stall_ns` of wall time is considered
//   stalled: its key is refused for good (queued and new tasks dropped, the
//   owner told), its worker is abandoned (its completion is never run; the
//   thread ends when the read returns, if ever), and a new worker takes its
//   place, up to `max_workers` threads in all.
// - A task returns a Completion: it runs on the owner's thread, in
//   run_completions(), so results reach single-threaded state (the process
//   tracker, the pipeline) without locks. Completions of forgotten keys are
//   dropped.
//
// Threading: post(), forget(), run_completions(), take_notices(), drain()
// and stats() are for one owner thread. Tasks run on worker threads and
// must only touch what they captured (shared, immutable or thread-safe
// objects): they may outlive the Inspector if they stall.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::inspect {

struct Budget {
  // CPU: a process may use the burst at once (attaching parses ELF files and
  // validates a layout), then this much per second of wall time.
  uint64_t cpu_burst_ns = 2'000'000'000;
  uint64_t cpu_per_second_ns = 100'000'000;  // a tenth of a core
  // Bytes read from the process or its files.
  uint64_t bytes_burst = uint64_t{256} << 20;
  uint64_t bytes_per_second = uint64_t{32} << 20;
};

struct InspectorOptions {
  // More threads than a host's cores: attaching a process is mostly CPU,
  // but one slow process (a huge map, a file that parses slowly) must not
  // keep the quick ones waiting, and on a busy host each thread gets its
  // own share of the CPU.
  unsigned workers = 4;
  unsigned max_workers = 12;  // replacements for stalled workers included
  // Far above any honest read (an attach parses an interpreter's ELF file
  // and validates its layout: well under a second, even on a loaded host).
  uint64_t stall_ns = 10'000'000'000;
  Budget budget;
};

// What a running task may tell the Inspector.
class TaskContext {
 public:
  // Bytes the task read from the process or its files.
  void charge_bytes(uint64_t bytes) { bytes_ += bytes; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_ = 0;
};

using Completion = std::function<void()>;
using Task = std::function<Completion(TaskContext&)>;

// Why a key's work stopped.
struct Notice {
  enum class Kind : uint8_t { kThrottled, kStalled };
  uint64_t key = 0;
  Kind kind = Kind::kThrottled;
  std::string reason;  // one line, for the summary and the health line
};

// What one key's work has cost so far.
struct KeyUsage {
  uint64_t tasks = 0;
  uint64_t cpu_ns = 0;
  uint64_t wall_ns = 0;
  uint64_t bytes = 0;
};

struct InspectorStats {
  uint64_t tasks_run = 0;
  uint64_t tasks_dropped = 0;  // throttled, refused or forgotten keys
  uint64_t cpu_ns = 0;         // worker CPU time in tasks
  uint64_t bytes = 0;          // bytes tasks reported
  uint64_t stalls = 0;
  unsigned workers = 0;    // live workers
  unsigned abandoned = 0;  // workers left behind in a stalled task
};

class Inspector {
  struct Key {
    explicit Key() = default;
  };

 public:
  static Result<std::unique_ptr<Inspector>> create(InspectorOptions options);
  Inspector(Key, InspectorOptions options);
  // Stops the workers after their current task; abandoned ones are left to
  // end on their own.
  ~Inspector();
  Inspector(const Inspector&) = delete;
  Inspector& operator=(const Inspector&) = delete;

  // Queues `task` for `key`. False (and the task is dropped) when the key is
  // throttled or refused. `what` names the work in messages ("attach").
  bool post(uint64_t key, std::string_view what, Task task);
  // Drops the key's queued tasks, its budget and any completion still to
  // come: the process is gone.
  void forget(uint64_t key);
  // Whether the key was refused (stalled) for good.
  bool refused(uint64_t key) const;
  // What the key's work has cost so far (zero for an unknown key).
  KeyUsage usage(uint64_t key) const;

  // Runs the completions that arrived, in arrival order, and checks for
  // stalled workers. Returns how many ran.
  size_t run_completions();
  // An eventfd that is readable while completions wait (for epoll).
  int wake_fd() const;
  // Throttling and stalls since the last call.
  std::vector<Notice> take_notices();
  // Waits until no task is queued or running, or until `deadline`, running
  // completions as they arrive. Stalled workers are given up on as usual.
  void drain(std::chrono::steady_clock::time_point deadline);
  // Whether any task is queued or running.
  bool idle() const;

  InspectorStats stats() const;

 private:
  struct Shared;
  void spawn_worker();
  void check_stalls();
  std::shared_ptr<Shared> shared_;
  InspectorOptions options_;
};

}  // namespace krait::inspect
