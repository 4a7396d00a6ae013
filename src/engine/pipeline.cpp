#include "engine/pipeline.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "krait/off_cpu.h"
#include "util/clock.h"

namespace krait::engine {
namespace {

// Named frames and label sets are shared by every sample that shows them;
// the caches are bounded by what a process can make krait keep.
constexpr size_t kMaxFrameCache = 1'000'000;
constexpr size_t kMaxFrameCacheBytes = size_t{128} << 20;
constexpr size_t kMaxLabelSets = 100'000;
constexpr size_t kMaxLabelBytes = size_t{32} << 20;
// A sample outside the known mappings reloads them, at most this often.
constexpr uint64_t kModuleReloadNs = 100'000'000;
}  // namespace

std::string_view py_status_description(uint32_t status) {
  switch (status) {
    case KRAIT_PY_OK:
      return "ok";
    case KRAIT_PY_PROC_REFUSED:
      return "process not profiled";
    case KRAIT_PY_NO_INTERPRETER:
      return "interpreter not running";
    case KRAIT_PY_NO_THREAD_STATE:
      return "no Python thread state";
    case KRAIT_PY_THREAD_WALK_LIMIT:
      return "thread list longer than the walk limit";
    case KRAIT_PY_READ_FAULT_STATE:
      return "thread state unreadable";
    case KRAIT_PY_READ_FAULT_FRAME:
      return "frame unreadable";
    case KRAIT_PY_READ_FAULT_CODE:
      return "code object unreadable";
    case KRAIT_PY_BAD_CODE_OBJECT:
      return "frame without a code object";
    case KRAIT_PY_NOT_PYTHON:
      return "not a Python process";
    default:
      return "unknown status";
  }
}

Pipeline::Pipeline(ProcessTracker& tracker, inspect::Inspector& inspector, JobQueue& queue,
                   PipelineOptions options, std::shared_ptr<unwind::ModuleCache> modules)
    : tracker_(tracker),
      inspector_(inspector),
      queue_(queue),
      options_(std::move(options)),
      module_cache_(std::move(modules)),
      frames_(kMaxFrameCache, kMaxFrameCacheBytes),
      labels_(kMaxLabelSets, kMaxLabelBytes) {
  tracker_.on_retire([this](uint64_t key) { retired(key); });
}

FrameRef Pipeline::synthetic_frame(const std::string& name) {
  auto it = synthetic_.find(name);
  if (it != synthetic_.end())
    return it->second;
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kSynthetic;
  f->function = name;
  synthetic_.emplace(name, f);
  return f;
}

LabelsRef Pipeline::labels_for(uint64_t key, int pid, const std::string& process_name,
                               const std::string* python_version, uint32_t tid, const char* comm,
                               uint16_t py_flags, const profile::Labels* extra,
                               const krait_sample* state) {
  std::string thread(comm, strnlen(comm, KRAIT_COMM_LEN));
  const char* gil = !(py_flags & KRAIT_PYF_GIL_KNOWN) ? ""
                    : (py_flags & KRAIT_PYF_GIL_HELD) ? "held"
                                                      : "released";
  const bool off_cpu = state && state->cpu_state == KRAIT_STATE_OFF_CPU;
  const char* cpu_state = !options_.state_labels || !state ? "" : off_cpu ? "off-cpu" : "on-cpu";
  const char* reason = off_cpu ? krait_off_cpu_reason_name(state->off_cpu_reason) : "";
  std::string cache_key =
      fmt::format("{}/{}/{}/{}/{}/{}", key, tid, gil, cpu_state, reason, thread);
  if (LabelsRef* hit = labels_.find(cache_key))
    return *hit;
  auto labels = std::make_shared<profile::Labels>(profile::Labels{{"pid", std::to_string(pid)},
                                                                  {"tid", std::to_string(tid)},
                                                                  {"thread_name", thread},
                                                                  {"process_name", process_name}});
  if (python_version)
    labels->emplace_back("python_version", *python_version);
  if (*gil)
    labels->emplace_back("gil", gil);
  if (*cpu_state)
    labels->emplace_back("state", cpu_state);
  if (*reason && options_.state_labels)
    labels->emplace_back("reason", reason);
  if (extra)
    labels->insert(labels->end(), extra->begin(), extra->end());
  std::sort(labels->begin(), labels->end());
  size_t bytes = cache_key.size() + 128;
  for (const auto& [k, v] : *labels)
    bytes += k.size() + v.size() + 64;
  labels_.insert(cache_key, labels, bytes);
  return labels;
}

void Pipeline::request_modules(uint64_t key, pid_t pid, std::shared_ptr<ModulesSlot> slot,
                               bool& loading) {
  if (loading || !module_cache_)
    return;
  auto cache = module_cache_;
  loading =
      inspector_.post(key, "load modules", [=, this](inspect::TaskContext&) -> inspect::Completion {
        auto loaded = unwind::ProcessModules::load(pid, *cache);
        std::shared_ptr<const unwind::ProcessModules> modules;
        if (loaded)
          modules = std::make_shared<const unwind::ProcessModules>(std::move(*loaded));
        return [this, key, pid, slot, modules] {
          if (modules)
            slot->set(modules);
          const uint64_t now = monotonic_ns();
          if (PerProcess* pp = current(key)) {
            pp->modules_loading = false;
            pp->modules_loaded_ns = now;
          } else if (auto it = others_.find(pid); it != others_.end() && it->second.key == key) {
            it->second.modules_loading = false;
            it->second.modules_loaded_ns = now;
            release_other(it->second);
          }
        };
      });
}

void Pipeline::add_native(const events::SampleView& view, SampleJob& job,
                          const std::shared_ptr<ModulesSlot>& slot, uint64_t& loaded_ns,
                          uint64_t key, pid_t pid, bool& loading) {
  const krait_sample& s = view.sample;
  job.native = true;
  job.native_flags = s.native_flags;
  job.kernel_ips.assign(view.kernel_ips.begin(), view.kernel_ips.end());
  if (!(s.native_flags & KRAIT_NATIVE_CAPTURED))
    return;
  job.regs = s.user_regs;
  job.user_stack.assign(view.user_stack.begin(), view.user_stack.end());
  job.modules = slot;
  // Code outside the known mappings (dlopen): the builder unwinds with the
  // newest modules it finds in the slot when it gets to the sample.
  auto modules = slot ? slot->get() : nullptr;
  if (slot && (!modules || !modules->find(s.user_regs.ip)) &&
      monotonic_ns() - loaded_ns > kModuleReloadNs)
    request_modules(key, pid, slot, loading);
}

void Pipeline::on_block_end(const krait_block_end& event) {
  ++stats_.block_ends;
  // The builder pairs it with its sample, whichever reaches it first (the
  // sample may be parked for its names).
  SampleJob job;
  job.block_end = true;
  // The wait is charged from the sample's moment, so the end moves back by
  // the time the walk took (never before the start).
  const uint64_t waited =
      event.hdr.ktime_ns > event.start_ns ? event.hdr.ktime_ns - event.start_ns : 0;
  job.ktime_ns = event.hdr.ktime_ns - std::min<uint64_t>(event.walk_ns, waited);
  job.tid = event.hdr.tid;
  job.block_start_ns = event.start_ns;
  job.weight = event.weight == 0 ? 1 : event.weight;
  submit(std::move(job));
}

void Pipeline::submit(SampleJob job) {
  if (!queue_.push(std::move(job)))
    ++stats_.queue_full;
}

void Pipeline::on_sample(const events::SampleView& view) {
  const krait_sample& s = view.sample;
  ++stats_.samples;
  if (s.py_status == KRAIT_PY_NOT_PYTHON) {  // --all-processes
    on_other_sample(view);
    return;
  }

  const int pid = static_cast<int>(s.hdr.pid);
  const TrackedProcess* p = tracker_.find(pid);
  if (!p || p->generation == 0 || p->generation != s.proc_generation) {
    ++stats_.stale_samples;
    return;
  }
  PerProcess* pp = &processes_[p->key];
  ++pp->stats.samples;
  if (s.cpu_state == KRAIT_STATE_OFF_CPU)
    ++pp->stats.off_cpu_samples;
  const uint32_t status =
      s.py_status < KRAIT_PY_STATUS_COUNT ? s.py_status : KRAIT_PY_STATUS_COUNT - 1;
  ++pp->stats.by_status[status];
  if (status == KRAIT_PY_PROC_REFUSED || !ready_to_name(*p, *pp))
    return;  // counted; the summary names the reason
  if (s.cost_ns && stats_.sampler_cost_ns.size() < kMaxCostSamples)
    stats_.sampler_cost_ns.push_back(s.cost_ns);

  SampleJob job;
  job.process_key = p->generation;
  job.ktime_ns = s.hdr.ktime_ns;
  job.series = p->series;
  job.python_process = true;
  const std::string* version = nullptr;
  std::string version_text;
  if (p->attachment.version) {
    version_text = p->attachment.version->str();
    version = &version_text;
  }
  job.labels = labels_for(p->generation, p->pid, p->name, version, s.hdr.tid, s.comm, s.py_flags,
                          &p->extra_labels, &s);
  if (s.cpu_state == KRAIT_STATE_OFF_CPU) {
    job.off_cpu = true;
    job.tid = s.hdr.tid;
    job.block_start_ns = s.hdr.ktime_ns;
    job.weight = s.weight == 0 ? 1 : s.weight;
  }
  if (s.py_flags & KRAIT_PYF_TRUNCATED) {
    ++pp->stats.truncated;
    job.python_truncated = true;
    job.python_reasons.push_back(
        synthetic_frame(fmt::format("[truncated: deeper than {} frames]", options_.max_depth)));
  }
  // In mixed mode a thread without Python state or frames is just a native
  // thread: its native stack says what it runs.
  const bool native_explains =
      options_.native && (status == KRAIT_PY_NO_THREAD_STATE || status == KRAIT_PY_NO_INTERPRETER);
  if (status != KRAIT_PY_OK && !native_explains)
    job.python_reasons.push_back(
        synthetic_frame(fmt::format("[{}]", py_status_description(status))));
  else if (status == KRAIT_PY_OK && view.frames.empty() && !options_.native)
    job.python_reasons.push_back(synthetic_frame("[no Python frame running]"));
  if (options_.native)
    add_native(view, job, pp->modules, pp->modules_loaded_ns, p->key, p->pid, pp->modules_loading);
  if (!name_frames(*p, *pp, job, view.frames, false)) {
    park(*p, *pp, std::move(job), view.frames);
    return;
  }
  submit(std::move(job));
}

void Pipeline::tick(uint64_t now_ns) {
  // Samples whose reads ended since the last turn, then those whose wait is
  // over: once per turn, however many reads ended.
  for (uint64_t key : std::exchange(dirty_, {}))
    release_key(key, now_ns, false);
  std::vector<uint64_t> expired;
  for (uint64_t key : parked_keys_) {
    PerProcess* pp = current(key);
    if (!pp || pp->parked.empty() || now_ns - pp->parked.front().parked_ns >= kParkTimeoutNs)
      expired.push_back(key);
  }
  for (uint64_t key : expired) {
    if (PerProcess* pp = current(key); pp && !pp->parked.empty())
      release_key(key, now_ns, false);
    else
      parked_keys_.erase(key);
  }
  for (auto& [pid, other] : others_) {
    if (!other.parked.empty() && now_ns - other.parked.front().parked_ns >= kParkTimeoutNs) {
      // Naming or modules did not come in time: on with what is known.
      other.named = true;
      other.modules_loaded_ns = other.modules_loaded_ns ? other.modules_loaded_ns : now_ns;
      stats_.parked_timeouts += other.parked.size();
      release_other(other);
    }
  }
}

void Pipeline::release_all() {
  const uint64_t now = monotonic_ns();
  for (uint64_t key : std::exchange(parked_keys_, {}))
    release_key(key, now, true);
  dirty_.clear();
  for (auto& [pid, other] : others_) {
    other.named = true;
    other.modules_loaded_ns = other.modules_loaded_ns ? other.modules_loaded_ns : now;
    release_other(other);
  }
}

const PipelineStats& Pipeline::stats() {
  stats_.frame_cache = frames_.stats();
  return stats_;
}

void Pipeline::prune_caches() {
  frames_.clear();
  labels_.clear();
  synthetic_.clear();
  if (module_cache_)
    module_cache_->evict_unused();
}

void Pipeline::on_exec(const krait_proc_event& event) {
  ++stats_.exec_events;
  const pid_t pid = static_cast<pid_t>(event.hdr.pid);
  if (auto it = others_.find(pid); it != others_.end()) {
    release_other(it->second);
    inspector_.forget(it->second.key);
    others_.erase(it);
  }
  if (const TrackedProcess* p = tracker_.find(pid))
    release_key(p->key, monotonic_ns(), true);
  tracker_.on_exec(pid, event.identity);
}

void Pipeline::on_exit(const krait_proc_event& event) {
  ++stats_.exit_events;
  const pid_t pid = static_cast<pid_t>(event.hdr.pid);
  if (auto it = others_.find(pid); it != others_.end()) {
    it->second.named = true;
    if (it->second.modules_loaded_ns == 0)
      it->second.modules_loaded_ns = monotonic_ns();
    release_other(it->second);
    inspector_.forget(it->second.key);
    others_.erase(it);
  }
  if (const TrackedProcess* p = tracker_.find(pid))
    release_key(p->key, monotonic_ns(), true);
  tracker_.on_exit(pid);
}

void Pipeline::on_unknown_process(const krait_proc_event& event) {
  ++stats_.unknown_events;
  tracker_.on_unknown(static_cast<pid_t>(event.hdr.pid), event.identity);
}

}  // namespace krait::engine
