#include "engine/summary.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <numeric>

#include "util/json_writer.h"

namespace krait::engine {
namespace {

CostQuantiles quantiles(std::vector<uint32_t> c) {
  std::sort(c.begin(), c.end());
  auto at = [&](double q) {
    return c[static_cast<size_t>(q * static_cast<double>(c.size() - 1))] / 1000.0;
  };
  CostQuantiles out;
  out.median_us = at(0.5);
  out.p90_us = at(0.9);
  out.p99_us = at(0.99);
  out.mean_us = std::accumulate(c.begin(), c.end(), 0.0) / static_cast<double>(c.size()) / 1000.0;
  out.samples = c.size();
  return out;
}

uint64_t lookups(const CacheStats& c) {
  return c.hits + c.misses;
}

double hit_percent(const CacheStats& c) {
  return lookups(c) ? 100.0 * static_cast<double>(c.hits) / static_cast<double>(lookups(c)) : 0.0;
}

void cache_json(JsonWriter& w, const char* name, const CacheStats& c) {
  w.key(name).begin_object();
  w.key("hits").value(static_cast<int64_t>(c.hits));
  w.key("misses").value(static_cast<int64_t>(c.misses));
  w.key("evictions").value(static_cast<int64_t>(c.evictions));
  w.key("entries").value(static_cast<int64_t>(c.entries));
  w.key("hit_rate").value(hit_percent(c) / 100.0);
  w.end_object();
}

// Only mixed stacks use these caches: no line without them.
std::optional<std::string> native_cache_line(const RunSummary& s) {
  if (!lookups(s.native_frame_cache) && !lookups(s.symbol_cache) && !lookups(s.unwind_owner_cache))
    return std::nullopt;
  return fmt::format(
      "  native caches: frames {:.1f}% hits ({} evicted), symbols {:.1f}% hits ({} evicted), "
      "unwind addresses {:.1f}% hits ({} forgotten)",
      hit_percent(s.native_frame_cache), s.native_frame_cache.evictions,
      hit_percent(s.symbol_cache), s.symbol_cache.evictions, hit_percent(s.unwind_owner_cache),
      s.unwind_owner_cache.evictions);
}

void native_caches_json(JsonWriter& w, const RunSummary& s) {
  cache_json(w, "native_frame_cache", s.native_frame_cache);
  cache_json(w, "symbol_cache", s.symbol_cache);
  cache_json(w, "unwind_owner_cache", s.unwind_owner_cache);
}

}  // namespace

RunSummary build_summary(const RunFacts& run, const ProcessTracker& tracker, Pipeline& pipe,
                         const BuilderStats& builder) {
  const PipelineStats& pipeline = pipe.stats();
  RunSummary s;
  s.run = run;
  s.native_samples = pipeline.native_samples - pipeline.unwanted_native_samples;
  s.python_samples = pipeline.samples - pipeline.stale_samples - pipeline.native_samples;
  if (!pipeline.sampler_cost_ns.empty())
    s.sampler_cost = quantiles(pipeline.sampler_cost_ns);

  for (const auto& [key, p] : tracker.processes()) {
    const auto& a = p.attachment;
    ProcessSummary ps;
    ps.pid = p.pid;
    ps.name = p.name;
    if (a.version)
      ps.python_version = a.version->str();
    ps.image = a.image_path;
    ps.offsets = a.offsets_source;
    if (p.generation == 0)
      continue;  // never decided
    // A process refused after it was attached (its reading stalled) keeps why.
    ps.profiled = a.status == python::AttachStatus::kAttached && p.reason.empty();
    ps.exited = p.state == ProcessState::kExited;
    ps.reason = ps.profiled ? "" : p.reason;
    ps.throttled = p.throttled;
    ps.throttle_reason = p.throttle_reason;
    ps.inspection = tracker.usage(p);
    ps.stats = pipe.process_stats(key);
    const ProcessStats& stats = ps.stats;
    if (auto u = builder.unwinding.find(p.generation); u != builder.unwinding.end())
      ps.unwinding = u->second;
    if (ps.profiled) {
      for (uint32_t st = 1; st < KRAIT_PY_STATUS_COUNT; ++st) {
        const bool native_thread = st == KRAIT_PY_NO_THREAD_STATE || st == KRAIT_PY_NO_INTERPRETER;
        if (st != KRAIT_PY_PROC_REFUSED && stats.by_status[st] &&
            !(native_thread && run.native_stacks))
          s.losses[std::string(py_status_description(st))] += stats.by_status[st];
      }
      if (stats.truncated)
        s.losses["truncated at the depth limit"] += stats.truncated;
      if (stats.frames_from_capture)
        s.losses
            ["frames named from the sampler's capture: code object gone before it could be "
             "read (name cut or line unknown)"] += stats.frames_from_capture;
      if (stats.frames_named_early)
        s.losses
            ["frames named before their code object's read completed (name cut or line "
             "unknown)"] += stats.frames_named_early;
      if (stats.unsymbolized_frames)
        s.losses["frames whose code object was freed before it was read"] +=
            stats.unsymbolized_frames;
    }
    s.processes.push_back(std::move(ps));
  }
  if (run.counters[KRAIT_CNT_RINGBUF_FULL])
    s.losses["lost: ring buffer full"] += run.counters[KRAIT_CNT_RINGBUF_FULL];
  if (run.counters[KRAIT_CNT_EVENTS_LOST])
    s.losses["process events lost: ring buffer full"] += run.counters[KRAIT_CNT_EVENTS_LOST];
  if (run.counters[KRAIT_CNT_SWITCHES_LOST])
    s.losses["off-CPU samples lost: ring buffer full"] += run.counters[KRAIT_CNT_SWITCHES_LOST];
  if (run.counters[KRAIT_CNT_BLOCK_ENDS_LOST])
    s.losses["ends of off-CPU waits lost: ring buffer full (those waits are not charged)"] +=
        run.counters[KRAIT_CNT_BLOCK_ENDS_LOST];
  if (builder.blocks_without_end)
    s.losses["off-CPU waits whose end never came (not charged)"] += builder.blocks_without_end;
  if (builder.ends_without_block)
    s.losses["ends of off-CPU waits whose sample never came"] += builder.ends_without_block;
  if (pipeline.stale_samples)
    s.losses["from a process that re-executed before its sample was read"] +=
        pipeline.stale_samples;
  if (run.counters[KRAIT_CNT_GIL_SKIPPED])
    s.losses["skipped: thread not holding the GIL (--gil-only)"] +=
        run.counters[KRAIT_CNT_GIL_SKIPPED];
  if (run.counters[KRAIT_CNT_CODE_CAPTURES_LOST])
    s.losses["code object names not captured: ring buffer full"] +=
        run.counters[KRAIT_CNT_CODE_CAPTURES_LOST];
  if (run.counters[KRAIT_CNT_LINETABLES_LOST])
    s.losses["long line tables not captured: ring buffer full or unreadable"] +=
        run.counters[KRAIT_CNT_LINETABLES_LOST];
  if (run.counters[KRAIT_CNT_CODE_CAPTURES_THROTTLED])
    s.losses["code object captures over a process's budget (retried at later samples)"] +=
        run.counters[KRAIT_CNT_CODE_CAPTURES_THROTTLED];
  if (pipeline.parked_timeouts)
    s.losses["samples sent on before their code objects were read (waited too long)"] +=
        pipeline.parked_timeouts;
  if (pipeline.queue_full)
    s.losses["dropped: the stack builder fell behind (queue full)"] += pipeline.queue_full;
  for (const auto& [reason, n] : builder.reasons)
    s.losses[reason] += n;
  if (run.malformed_records)
    s.losses["malformed ring buffer records"] += run.malformed_records;
  s.frame_cache = pipeline.frame_cache;
  s.native_frame_cache = builder.native_frames;
  s.symbol_cache = builder.symbols;
  s.unwind_owner_cache = builder.unwind_owners;

  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    s.krait_cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                          static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    s.krait_max_rss_kb = ru.ru_maxrss;
  }
  return s;
}

std::vector<std::string> summary_text(const RunSummary& s) {
  std::vector<std::string> out;
  const RunFacts& run = s.run;
  out.push_back(
      fmt::format("krait: {} samples of Python processes in {:.1f} s ({} Hz, {}, {} CPUs)",
                  s.python_samples, run.seconds, run.frequency_hz, run.event, run.cpus));
  if (s.sampler_cost)
    out.push_back(fmt::format(
        "  sampler cost per Python sample: median {:.2f} us, p90 {:.2f} us, p99 {:.2f} us, mean "
        "{:.2f} us ({} samples)",
        s.sampler_cost->median_us, s.sampler_cost->p90_us, s.sampler_cost->p99_us,
        s.sampler_cost->mean_us, s.sampler_cost->samples));
  if (run.bpf_runs.runs)
    out.push_back(fmt::format(
        "  sampler runs: {}, {:.2f} us mean (kernel bpf stats); krait itself: {:.2f} s CPU, {} MiB "
        "max RSS",
        run.bpf_runs.runs,
        static_cast<double>(run.bpf_runs.run_time_ns) / 1000.0 /
            static_cast<double>(run.bpf_runs.runs),
        s.krait_cpu_seconds, s.krait_max_rss_kb / 1024));

  const inspect::InspectorStats& in = run.inspector;
  out.push_back(fmt::format(
      "  reading processes: {} tasks, {:.1f} ms CPU, {:.1f} MiB read, {} dropped (budget), {} "
      "stalled",
      in.tasks_run, static_cast<double>(in.cpu_ns) / 1e6, static_cast<double>(in.bytes) / (1 << 20),
      in.tasks_dropped, in.stalls));
  if (auto caches = native_cache_line(s))
    out.push_back(std::move(*caches));

  bool header = false;
  std::vector<std::string> refused;
  std::vector<std::string> throttled;
  for (const auto& p : s.processes) {
    if (p.throttled)
      throttled.push_back(fmt::format("  pid {} ({}): {} ({} times)", p.pid, p.name,
                                      p.throttle_reason, p.throttled));
    if (!p.profiled) {
      refused.push_back(
          fmt::format("  pid {} ({}): {} [{} samples]", p.pid, p.name, p.reason, p.stats.samples));
      continue;
    }
    if (!header) {
      out.push_back(fmt::format("  {:>8}  {:<16} {:<8} {:>8}  {}", "PID", "PROCESS", "PYTHON",
                                "SAMPLES", "OFFSETS"));
      header = true;
    }
    std::string unwound;
    if (p.unwinding.unwinds)
      unwound = fmt::format(", native stacks complete {:.1f}%",
                            100.0 * static_cast<double>(p.unwinding.reached_root) /
                                static_cast<double>(p.unwinding.unwinds));
    out.push_back(fmt::format("  {:>8}  {:<16} {:<8} {:>8}  {}{}{}", p.pid, p.name,
                              p.python_version.empty() ? "?" : p.python_version, p.stats.samples,
                              p.offsets, unwound, p.exited ? " (exited)" : ""));
  }
  if (s.losses.empty()) {
    out.push_back("  no sample dropped or truncated");
  } else {
    out.push_back("  samples dropped, truncated or incomplete:");
    for (const auto& [reason, n] : s.losses)
      out.push_back(fmt::format("  {:>10}  {}", n, reason));
  }
  if (!refused.empty()) {
    out.push_back("  Python processes not profiled:");
    for (auto& r : refused)
      out.push_back(std::move(r));
  }
  if (!throttled.empty()) {
    out.push_back("  Python processes whose reading was throttled:");
    for (auto& t : throttled)
      out.push_back(std::move(t));
  }
  return out;
}

namespace {

// One process of the JSON summary.
void process_json(JsonWriter& w, const ProcessSummary& p) {
  w.begin_object();
  w.key("pid").value(static_cast<int64_t>(p.pid));
  w.key("name").value(p.name);
  w.key("python_version").value(p.python_version);
  w.key("image").value(p.image);
  w.key("profiled").value(p.profiled);
  w.key("exited").value(p.exited);
  w.key("offsets").value(p.offsets);
  w.key("reason").value(p.reason);
  w.key("throttled").value(static_cast<int64_t>(p.throttled));
  w.key("throttle_reason").value(p.throttle_reason);
  w.key("inspection").begin_object();
  w.key("tasks").value(static_cast<int64_t>(p.inspection.tasks));
  w.key("cpu_ns").value(static_cast<int64_t>(p.inspection.cpu_ns));
  w.key("wall_ns").value(static_cast<int64_t>(p.inspection.wall_ns));
  w.key("bytes").value(static_cast<int64_t>(p.inspection.bytes));
  w.end_object();
  w.key("samples").value(static_cast<int64_t>(p.stats.samples));
  w.key("truncated").value(static_cast<int64_t>(p.stats.truncated));
  w.key("unsymbolized_frames").value(static_cast<int64_t>(p.stats.unsymbolized_frames));
  w.key("code_from_capture").value(static_cast<int64_t>(p.stats.frames_from_capture));
  w.key("frames_named_early").value(static_cast<int64_t>(p.stats.frames_named_early));
  w.key("samples_parked").value(static_cast<int64_t>(p.stats.samples_parked));
  w.key("native_unwinds").value(static_cast<int64_t>(p.unwinding.unwinds));
  w.key("native_unwinds_to_root").value(static_cast<int64_t>(p.unwinding.reached_root));
  w.key("native_unwind_stops").begin_object();
  for (const auto& [stop, n] : p.unwinding.stops)
    w.key(stop).value(static_cast<int64_t>(n));
  w.end_object();
  w.key("by_status").begin_object();
  for (uint32_t st = 0; st < KRAIT_PY_STATUS_COUNT; ++st)
    if (p.stats.by_status[st])
      w.key(py_status_description(st)).value(static_cast<int64_t>(p.stats.by_status[st]));
  w.end_object();
  w.end_object();
}

}  // namespace

std::string summary_json(const RunSummary& s) {
  JsonWriter w;
  w.begin_object();
  w.key("seconds").value(s.run.seconds);
  w.key("frequency_hz").value(static_cast<int64_t>(s.run.frequency_hz));
  w.key("event").value(s.run.event);
  w.key("cpus").value(static_cast<int64_t>(s.run.cpus));
  w.key("python_samples").value(static_cast<int64_t>(s.python_samples));
  w.key("native_samples").value(static_cast<int64_t>(s.native_samples));
  // Off-CPU mode: captured switches, and those --switch-every passed over.
  w.key("switch_samples").value(static_cast<int64_t>(s.run.counters[KRAIT_CNT_SWITCHES]));
  w.key("switches_skipped").value(static_cast<int64_t>(s.run.counters[KRAIT_CNT_SWITCHES_SKIPPED]));
  w.key("bpf_runs").value(static_cast<int64_t>(s.run.bpf_runs.runs));
  w.key("bpf_run_time_ns").value(static_cast<int64_t>(s.run.bpf_runs.run_time_ns));
  w.key("krait_cpu_seconds").value(s.krait_cpu_seconds);
  w.key("krait_max_rss_kb").value(static_cast<int64_t>(s.krait_max_rss_kb));
  if (s.sampler_cost) {
    w.key("sampler_cost_us").begin_object();
    w.key("median").value(s.sampler_cost->median_us);
    w.key("p90").value(s.sampler_cost->p90_us);
    w.key("p99").value(s.sampler_cost->p99_us);
    w.key("mean").value(s.sampler_cost->mean_us);
    w.key("samples").value(static_cast<int64_t>(s.sampler_cost->samples));
    w.end_object();
  }
  w.key("processes").begin_array();
  for (const auto& p : s.processes)
    process_json(w, p);
  w.end_array();
  const inspect::InspectorStats& in = s.run.inspector;
  w.key("inspector").begin_object();
  w.key("tasks").value(static_cast<int64_t>(in.tasks_run));
  w.key("dropped").value(static_cast<int64_t>(in.tasks_dropped));
  w.key("cpu_ns").value(static_cast<int64_t>(in.cpu_ns));
  w.key("bytes").value(static_cast<int64_t>(in.bytes));
  w.key("stalls").value(static_cast<int64_t>(in.stalls));
  w.end_object();
  w.key("frame_cache").begin_object();
  w.key("hits").value(static_cast<int64_t>(s.frame_cache.hits));
  w.key("misses").value(static_cast<int64_t>(s.frame_cache.misses));
  w.key("evictions").value(static_cast<int64_t>(s.frame_cache.evictions));
  w.end_object();
  native_caches_json(w, s);
  w.key("losses").begin_object();
  for (const auto& [reason, n] : s.losses)
    w.key(reason).value(static_cast<int64_t>(n));
  w.end_object();
  w.end_object();
  return w.str();
}

}  // namespace krait::engine
