// Engine: everything between the kernel and the profiles, shared by
// `krait record` and `krait daemon`: the loaded sampler, the process
// tracker, the reader-side pipeline and the stack builder on its thread.
// Commands configure it with one EngineOptions, drive it from their run
// loop, and get its results through a few doors: the interval sink
// (profiles per series, on the builder thread), process lifecycle events
// (EngineOptions::on_process), take_profiles() at the end, summary() and
// health(). Its parts are its own; nothing outside reaches
// into them.
//
// Threading: created, driven and destroyed on one thread, the run loop's;
// the builder runs on its own thread until finish().
#pragma once

#include <sys/epoll.h>
#include <sys/types.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "engine/pipeline.h"
#include "engine/process_tracker.h"
#include "engine/stack_builder.h"
#include "engine/summary.h"
#include "inspect/inspector.h"
#include "python/attach.h"

namespace krait::engine {

// Which processes are profiled and where their samples go (the daemon's
// selection and naming; unset for a recording). Every hook runs on
// Inspector workers: they may read /proc.
struct Selection {
  std::function<bool(pid_t)> wanted;  // unset: every Python process
  std::function<ProcessNaming(pid_t, const std::string& python_version)> describe;
  OtherSeriesFn other_series;  // --all-processes: see PipelineOptions
};

struct EngineOptions {
  bpf::SamplerConfig sampler;  // ring buffer size is derived here
  python::AttachOptions attach;
  inspect::InspectorOptions inspector;
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  size_t queue_bytes = 256u << 20;  // samples waiting for the stack builder
  Selection selection;
  // Python processes attached, refused and exited, on the run loop's thread.
  ProcessEventFn on_process;
};

// The figures of the daemon's health line.
struct EngineHealth {
  uint64_t python_processes = 0;  // attached so far
  uint64_t samples = 0;           // sample records received
  uint64_t ring_full = 0;         // lost in the kernel: ring buffer full
  uint64_t queue_full = 0;        // dropped: the stack builder fell behind
  std::string inspection;         // refused, throttled and stalled processes
  CacheStats frame_cache;         // named Python frames
};

class Engine {
  // Lets create() use std::make_unique while no one else can construct one.
  struct Key {
    explicit Key() = default;
  };

 public:
  static Result<std::unique_ptr<Engine>> create(EngineOptions options);
  Engine(Key, EngineOptions options);
  ~Engine();

  // Attaches to every process running now (or just `pids`, which become
  // the only ones sampled), ahead of their first samples. Before start().
  Result<void> scan(const std::vector<pid_t>& pids = {});
  // Runs the loop's work (completions) until every pid scan() looked at
  // has a first answer, or `deadline`: a process that answers slowly (or
  // never) holds up the start that long at most, and goes on attaching.
  void await_scan(std::chrono::steady_clock::time_point deadline);
  // What the first attach of a scanned pid found; nullopt while in flight.
  std::optional<python::AttachStatus> scan_result(pid_t pid) const;
  // Profiles per series at every interval end, on the builder thread
  // (daemon). Before start().
  void set_interval_sink(IntervalSink sink);
  Result<void> start();
  // Adds what the run loop must wait on (the ring buffer, the Inspector's
  // completions) to `epfd`; wait() handles their events.
  Result<void> add_to(int epfd);
  // Samples do not wake the reader: a run loop waits at most this long
  // before it drains the ring anyway.
  static constexpr int kDrainPeriodMs = 10;
  // One turn of a run loop: waits on `epfd` at most kDrainPeriodMs, drains
  // the ring, runs the Inspector's completions and sends on parked samples,
  // and returns how many of `events` are ready (the engine's own included).
  Result<int> wait(int epfd, std::span<epoll_event> events);
  // Ends the current interval at `ktime_ns`: the samples already in the
  // ring go before it; processes that exited and the caches they left go
  // with it.
  Result<void> cut_interval(uint64_t ktime_ns);
  // A new selection (configuration reload): every process is chosen and
  // named again with it.
  void reselect(Selection selection);
  // Stops sampling, drains the ring buffer, gives reads in flight a moment,
  // and sends every sample on to the builder.
  Result<void> stop();
  // Ends the last interval at `ktime_ns` (the interval sink gets it), lets
  // the builder finish the queue, and joins it.
  void finish(std::optional<uint64_t> last_interval_end = std::nullopt);
  // The profiles since the last interval end; after finish().
  std::vector<SeriesProfile> take_profiles(int64_t end_ktime_ns);

  // Python processes attached so far.
  uint64_t attached() const;
  const char* source_name() const;
  // The end-of-run report (after finish()).
  RunSummary summary(double seconds);
  EngineHealth health();

 private:
  class SamplerSink;
  // The Inspector's completions and notices, then parked samples.
  void run_inspections();
  void end_interval(uint64_t ktime_ns);
  std::string inspection_health();
  RunFacts facts(double seconds);

  EngineOptions options_;
  std::unique_ptr<bpf::Sampler> sampler_;
  std::unique_ptr<SamplerSink> sink_;
  std::unique_ptr<inspect::Inspector> inspector_;
  std::unique_ptr<ProcessTracker> tracker_;
  std::shared_ptr<unwind::ModuleCache> modules_;
  std::unique_ptr<StackBuilder> builder_;
  std::unique_ptr<JobQueue> queue_;
  std::unique_ptr<BuilderThread> builder_thread_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<events::RingReader> reader_;
  // The latest throttling and stall notices, for the health line.
  std::deque<std::string> recent_notices_;
  uint64_t throttle_notices_ = 0;
  uint64_t last_prune_ns_ = 0;
  std::vector<pid_t> scanned_;
};

// Attaches to what runs already (every Python process, or just `pids`)
// before sampling starts, so its first samples count: scan(), then
// await_scan() for a bounded time (a process that does not answer means
// "not yet", not "no"; named processes get longer). An error names the
// first of `pids` that is not Python or has exited.
Result<void> attach_running(Engine& engine, const std::vector<pid_t>& pids);

}  // namespace krait::engine
