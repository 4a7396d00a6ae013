// Collector: everything between the kernel and the profiles, for one run of
// `krait record` or `krait daemon`: the loaded sampler, the process
// tracker, the reader-side pipeline, and the stack builder on its thread.
//
// Threading: created, driven (consume, stop) and destroyed on one thread,
// the run loop's; the builder runs on its own thread until finish().
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "engine/job_queue.h"
#include "engine/pipeline.h"
#include "engine/process_tracker.h"
#include "engine/stack_builder.h"
#include "engine/summary.h"
#include "events/ring_reader.h"
#include "inspect/inspector.h"
#include "unwind/module_cache.h"

namespace krait::engine {

struct CollectorOptions {
  bpf::SamplerConfig sampler;  // ring buffer size is derived here
  TrackerOptions tracker;
  inspect::InspectorOptions inspector;
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  size_t queue_bytes = 256u << 20;  // samples waiting for the stack builder
  OtherSeriesFn other_series;       // see PipelineOptions
};

class Collector {
  // Lets create() use std::make_unique while no one else can construct one.
  struct Key {
    explicit Key() = default;
  };

 public:
  static Result<std::unique_ptr<Collector>> create(CollectorOptions options);
  Collector(Key, CollectorOptions options) : options_(std::move(options)) {}
  ~Collector();

  ProcessTracker& tracker() { return *tracker_; }
  Pipeline& pipeline() { return *pipeline_; }
  StackBuilder& builder() { return *builder_; }
  bpf::Sampler& sampler() { return *sampler_; }
  inspect::Inspector& inspector() { return *inspector_; }

  // Attaches to every process running now (or just `pids`, which become
  // the only ones sampled), ahead of their first samples. Before start().
  Result<void> scan(const std::vector<pid_t>& pids = {});
  // Runs the loop's work (completions) until every pid scan() looked at
  // has a first answer, or `deadline`: a process that answers slowly (or
  // never) holds up the start that long at most, and goes on attaching.
  void await_scan(std::chrono::steady_clock::time_point deadline);
  Result<void> start() { return sampler_->start(); }
  // Adds what the run loop must wait on (the ring buffer, the Inspector's
  // completions) to `epfd`; wait() handles their events.
  Result<void> add_to(int epfd);
  // Samples do not wake the reader: a run loop waits at most this long
  // before it drains the ring (consume()) anyway.
  static constexpr int kDrainPeriodMs = 10;
  // Dispatches the records waiting in the ring buffer.
  Result<uint64_t> consume() { return reader_->consume(); }
  // One turn of a run loop: waits on `epfd` at most kDrainPeriodMs, drains
  // the ring, runs the Inspector's completions and sends on parked samples,
  // and returns how many of `events` are ready (the collector's own
  // included).
  Result<int> wait(int epfd, std::span<epoll_event> events);
  // Ends the current interval at `ktime_ns` (in order with the samples).
  void end_interval(uint64_t ktime_ns);
  // Stops sampling, drains the ring buffer, gives reads in flight a moment,
  // and sends every sample on to the builder.
  Result<void> stop();
  // Lets the builder finish the queue and joins it (take profiles after).
  void finish();

  RunFacts facts(double seconds);
  // One part of the daemon's health line: processes refused, throttled or
  // stalled, with the latest reasons.
  std::string inspection_health();

 private:
  class SamplerSink final : public ProcessMapSink {
   public:
    explicit SamplerSink(bpf::Sampler& sampler) : sampler_(sampler) {}
    Result<void> set_process(uint32_t pid, const krait_proc_info& info) override {
      return sampler_.set_process(pid, info);
    }

   private:
    bpf::Sampler& sampler_;
  };
  // The Inspector's completions and notices, then parked samples.
  void run_inspections();

  CollectorOptions options_;
  std::unique_ptr<bpf::Sampler> sampler_;
  std::unique_ptr<SamplerSink> sink_;
  std::unique_ptr<inspect::Inspector> inspector_;
  std::unique_ptr<ProcessTracker> tracker_;
  std::shared_ptr<unwind::ModuleCache> modules_ = std::make_shared<unwind::ModuleCache>();
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

}  // namespace krait::engine
