#include "record/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace krait::record {

std::vector<std::string> summarize(const RunFacts& run, const ProcessTracker& tracker,
                                   const PipelineStats& pipeline) {
  std::vector<std::string> out;
  out.push_back(
      fmt::format("krait: {} samples of Python processes in {:.1f} s ({} Hz, {}, {} CPUs)",
                  pipeline.samples - pipeline.stale_samples, run.seconds, run.frequency_hz,
                  run.event, run.cpus));

  if (run.bpf_runs.runs)
    out.push_back(fmt::format("  sampler cost: {:.2f} us per run over {} runs (kernel bpf stats)",
                              static_cast<double>(run.bpf_runs.run_time_ns) / 1000.0 /
                                  static_cast<double>(run.bpf_runs.runs),
                              run.bpf_runs.runs));
  if (!pipeline.sampler_cost_ns.empty()) {
    std::vector<uint32_t> c = pipeline.sampler_cost_ns;
    std::sort(c.begin(), c.end());
    auto at = [&](double q) {
      return c[static_cast<size_t>(q * static_cast<double>(c.size() - 1))] / 1000.0;
    };
    out.push_back(
        fmt::format("  sampler cost per Python sample: median {:.2f} us, p90 {:.2f} us, p99 {:.2f} "
                    "us ({} samples)",
                    at(0.5), at(0.9), at(0.99), c.size()));
  }
  std::map<std::string, uint64_t> losses;  // reason -> samples
  std::vector<std::string> refused;
  bool header = false;
  for (const auto& [key, p] : tracker.processes()) {
    const auto& a = p.attachment;
    if (p.state == ProcessState::kRefused ||
        (p.state == ProcessState::kExited && a.status == python::AttachStatus::kRefused)) {
      refused.push_back(
          fmt::format("  pid {} ({}): {} [{} samples]", p.pid, p.name, p.reason, p.stats.samples));
      continue;
    }
    if (a.status != python::AttachStatus::kAttached)
      continue;
    if (!header) {
      out.push_back(fmt::format("  {:>8}  {:<16} {:<8} {:>8}  {}", "PID", "PROCESS", "PYTHON",
                                "SAMPLES", "OFFSETS"));
      header = true;
    }
    out.push_back(fmt::format("  {:>8}  {:<16} {:<8} {:>8}  {}{}", p.pid, p.name,
                              a.version ? a.version->str() : "?", p.stats.samples, a.offsets_source,
                              p.state == ProcessState::kExited ? " (exited)" : ""));
    for (uint32_t s = 1; s < KRAIT_PY_STATUS_COUNT; ++s)
      if (s != KRAIT_PY_PROC_REFUSED && p.stats.by_status[s])
        losses[std::string(py_status_description(s))] += p.stats.by_status[s];
    if (p.stats.truncated)
      losses["truncated at the depth limit"] += p.stats.truncated;
    if (p.stats.unsymbolized_frames)
      losses["frames whose code object was freed before it was read"] +=
          p.stats.unsymbolized_frames;
  }
  if (run.counters[KRAIT_CNT_RINGBUF_FULL])
    losses["lost: ring buffer full"] += run.counters[KRAIT_CNT_RINGBUF_FULL];
  if (run.counters[KRAIT_CNT_EVENTS_LOST])
    losses["process events lost: ring buffer full"] += run.counters[KRAIT_CNT_EVENTS_LOST];
  if (pipeline.stale_samples)
    losses["from a process that re-executed before its sample was read"] += pipeline.stale_samples;
  if (run.malformed_records)
    losses["malformed ring buffer records"] += run.malformed_records;

  if (losses.empty()) {
    out.push_back("  no sample dropped or truncated");
  } else {
    out.push_back("  samples dropped, truncated or incomplete:");
    for (const auto& [reason, n] : losses)
      out.push_back(fmt::format("  {:>10}  {}", n, reason));
  }
  if (!refused.empty()) {
    out.push_back("  Python processes not profiled:");
    for (auto& r : refused)
      out.push_back(std::move(r));
  }
  return out;
}

}  // namespace krait::record
