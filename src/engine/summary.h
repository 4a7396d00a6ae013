// The end-of-run report: what was sampled, per process, every sample that
// lost frames with the reason, and what krait itself cost. Built once as
// data (RunSummary), then rendered as text (stderr and the profile's
// comments) or JSON (--stats-json, for scripts and benchmarks).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "engine/pipeline.h"
#include "engine/process_tracker.h"
#include "engine/stack_builder.h"
#include "inspect/inspector.h"

namespace krait::engine {

struct RunFacts {
  double seconds = 0;
  uint32_t frequency_hz = 0;
  const char* event = "";
  uint32_t cpus = 0;
  bpf::Counters counters{};
  uint64_t malformed_records = 0;
  bpf::Sampler::RunStats bpf_runs;
  // Mixed stacks: a thread without Python state is a native thread whose
  // native stack is its sample, not a loss.
  bool native_stacks = false;
  inspect::InspectorStats inspector;  // reading profiled processes
};

struct ProcessSummary {
  int pid = 0;
  std::string name;
  std::string python_version;  // "" when unknown
  std::string image;
  std::string offsets;  // where the layout came from
  bool profiled = false;
  bool exited = false;
  std::string reason;  // not profiled: why
  // Its inspection work ran out of budget this many times (the last reason).
  uint64_t throttled = 0;
  std::string throttle_reason;
  inspect::KeyUsage inspection;  // what reading it cost
  ProcessStats stats;
  UnwindStats unwinding;  // mixed stacks
};

struct CostQuantiles {
  double median_us = 0, p90_us = 0, p99_us = 0, mean_us = 0;
  size_t samples = 0;
};

struct RunSummary {
  RunFacts run;
  uint64_t python_samples = 0;
  uint64_t native_samples = 0;                // --all-processes: of processes that are not Python
  std::optional<CostQuantiles> sampler_cost;  // --measure-sampler-cost
  std::vector<ProcessSummary> processes;      // Python processes, in order of first sight
  std::map<std::string, uint64_t> losses;     // reason -> samples (or frames)
  CacheStats frame_cache;                     // named Python frames
  CacheStats native_frame_cache;              // mixed stacks: BuilderStats::native_frames
  CacheStats symbol_cache;                    // BuilderStats::symbols
  CacheStats unwind_owner_cache;              // BuilderStats::unwind_owners
  double krait_cpu_seconds = 0;               // krait's own user + system time
  long krait_max_rss_kb = 0;
};

RunSummary build_summary(const RunFacts& run, const ProcessTracker& tracker, Pipeline& pipeline,
                         const BuilderStats& builder);
std::vector<std::string> summary_text(const RunSummary& summary);
std::string summary_json(const RunSummary& summary);

}  // namespace krait::engine
