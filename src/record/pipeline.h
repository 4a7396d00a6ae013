// Pipeline: the reader thread's half of turning sampler events into a
// profile.
//
// Each sample is attributed to its process incarnation (the generation the
// BPF side walked with) and its Python frames are named right away, through
// per-process caches (code object address + token -> name, file, line
// table): code objects die, so this cannot wait. The rest (native
// unwinding, symbolization, merging, aggregation) is a SampleJob for the
// StackBuilder on its own thread, behind a bounded queue, so the reader
// never stalls. Nothing is dropped silently: samples that lose frames carry
// a synthetic frame naming the reason and are counted per process
// (ProcessStats) or here (PipelineStats).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "events/ring_reader.h"
#include "record/job_queue.h"
#include "record/process_tracker.h"
#include "record/sample_job.h"
#include "unwind/module_cache.h"

namespace krait::record {

struct PipelineStats {
  uint64_t samples = 0;        // sample records received
  uint64_t stale_samples = 0;  // from a process incarnation no longer tracked
  uint64_t queue_full = 0;     // dropped: the stack builder fell behind
  uint64_t exec_events = 0;
  uint64_t exit_events = 0;
  uint64_t unknown_events = 0;
  uint64_t code_captures = 0;
  uint64_t native_samples = 0;  // --all-processes: samples of processes that are not Python
  uint64_t unwanted_native_samples = 0;  // of those, from processes other_series refused
  // krait_sample.cost_ns of walked samples when cost measurement is on
  // (capped at kMaxCostSamples; the first ones are kept).
  std::vector<uint32_t> sampler_cost_ns;
};

inline constexpr size_t kMaxCostSamples = 1'000'000;

// --all-processes: the series of a process that is not Python, from its pid
// and name, or null when its samples are not wanted.
using OtherSeriesFn = std::function<SeriesRef(pid_t pid, const std::string& name)>;

struct PipelineOptions {
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  bool native = false;         // mixed stacks: jobs carry the native material
  OtherSeriesFn other_series;  // unset: every such process in the default series
};

// Synthetic frame names, also used by tests and the summary.
std::string_view py_status_description(uint32_t status);

class Pipeline final : public events::EventHandler {
 public:
  // `modules` is needed in native mode only.
  Pipeline(ProcessTracker& tracker, JobQueue& queue, PipelineOptions options,
           unwind::ModuleCache* modules = nullptr);

  void on_sample(const events::SampleView& sample) override;
  void on_exec(const krait_exec_event& event) override;
  void on_exit(const krait_event_header& event) override;
  void on_unknown_process(const krait_event_header& event) override;
  void on_code_capture(const krait_code_event& event) override;

  const PipelineStats& stats() const { return stats_; }
  // Drops the caches of named frames and labels (they are rebuilt on use)
  // and the module files no live process maps: the daemon calls it per
  // interval so processes that came and went leave nothing behind.
  void prune_caches();
  // Asks other_series again for every process that is not Python, at its
  // next sample (configuration reload).
  void rename_others();

 private:
  struct OtherProcess {  // --all-processes: a process that is not Python
    std::string name;
    bool wanted = true;
    SeriesRef series;
    std::shared_ptr<const unwind::ProcessModules> modules;
    uint64_t modules_loaded_ns = 0;
  };

  FrameRef python_frame(TrackedProcess& p, const krait_py_frame& frame);
  FrameRef synthetic_frame(const std::string& name);
  LabelsRef labels_for(uint64_t key, int pid, const std::string& process_name,
                       const std::string* python_version, uint32_t tid, const char* comm,
                       uint16_t py_flags, const profile::Labels* extra = nullptr);
  std::shared_ptr<const unwind::ProcessModules> modules_for(
      int pid, std::shared_ptr<const unwind::ProcessModules>& cached, uint64_t& loaded_ns,
      uint64_t ip);
  void add_native(const events::SampleView& view, SampleJob& job,
                  std::shared_ptr<const unwind::ProcessModules>& cached, uint64_t& loaded_ns);
  void submit(SampleJob job);

  struct FrameKey {
    uint32_t generation;
    uint32_t token;
    uint64_t code;
    uint32_t instr;
    bool operator==(const FrameKey&) const = default;
  };
  struct FrameKeyHash {
    size_t operator()(const FrameKey& k) const {
      return ((k.code * 1000003u) ^ k.token) * 31 + k.instr + (uint64_t{k.generation} << 40);
    }
  };

  ProcessTracker& tracker_;
  JobQueue& queue_;
  PipelineOptions options_;
  unwind::ModuleCache* module_cache_;
  PipelineStats stats_;
  std::unordered_map<FrameKey, FrameRef, FrameKeyHash> frames_;
  std::unordered_map<std::string, FrameRef> synthetic_;
  std::unordered_map<std::string, LabelsRef> labels_;
  std::unordered_map<int, OtherProcess> others_;
};

uint64_t monotonic_ns();

}  // namespace krait::record
