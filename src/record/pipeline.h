// Pipeline: turns the sampler's events into the profile, on one thread.
//
// Each sample is attributed to its process incarnation (the generation the
// BPF side walked with), its frames are symbolized through per-process
// caches (code object address + token -> name, file, line table) and the
// stack goes into the Profile with its labels. Nothing is dropped silently:
// samples that lose frames get a synthetic frame naming the reason and are
// counted per process (ProcessStats) or globally (PipelineStats).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "events/ring_reader.h"
#include "profile/profile.h"
#include "record/process_tracker.h"

namespace krait::record {

struct PipelineStats {
  uint64_t samples = 0;        // sample records received
  uint64_t stale_samples = 0;  // from a process incarnation no longer tracked
  uint64_t exec_events = 0;
  uint64_t exit_events = 0;
  uint64_t unknown_events = 0;
  uint64_t code_captures = 0;
  // krait_sample.cost_ns of walked samples when cost measurement is on
  // (capped at kMaxCostSamples; the first ones are kept).
  std::vector<uint32_t> sampler_cost_ns;
};

inline constexpr size_t kMaxCostSamples = 1'000'000;

// Synthetic frame names, also used by tests and the summary.
std::string_view py_status_description(uint32_t status);

class Pipeline final : public events::EventHandler {
 public:
  Pipeline(ProcessTracker& tracker, profile::Profile& profile, uint32_t max_depth);

  void on_sample(const events::SampleView& sample) override;
  void on_exec(const krait_exec_event& event) override;
  void on_exit(const krait_event_header& event) override;
  void on_unknown_process(const krait_event_header& event) override;
  void on_code_capture(const krait_code_event& event) override;

  const PipelineStats& stats() const { return stats_; }

 private:
  profile::FrameId python_frame(TrackedProcess& p, const krait_py_frame& frame);
  profile::FrameId synthetic_frame(const std::string& name);
  profile::LabelSetId labels_for(const TrackedProcess& p, uint32_t tid, const char* comm,
                                 uint16_t py_flags);

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
  profile::Profile& profile_;
  uint32_t max_depth_;
  PipelineStats stats_;
  std::unordered_map<FrameKey, profile::FrameId, FrameKeyHash> frames_;
  std::unordered_map<std::string, profile::FrameId> synthetic_;
  std::unordered_map<std::string, profile::LabelSetId> labels_;
  std::vector<profile::FrameId> stack_;  // reused per sample
};

uint64_t monotonic_ns();

}  // namespace krait::record
