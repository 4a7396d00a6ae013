// The end-of-run report: what was sampled, per process, and every sample
// that lost frames, with the reason. Printed to stderr and written into the
// profile's comments.
#pragma once

#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "record/pipeline.h"
#include "record/process_tracker.h"

namespace krait::record {

struct RunFacts {
  double seconds = 0;
  uint32_t frequency_hz = 0;
  const char* event = "";
  uint32_t cpus = 0;
  bpf::Counters counters{};
  uint64_t malformed_records = 0;
  bpf::Sampler::RunStats bpf_runs;
};

std::vector<std::string> summarize(const RunFacts& run, const ProcessTracker& tracker,
                                   const PipelineStats& pipeline);

}  // namespace krait::record
