#include "engine/pipeline.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "proc/processes.h"
#include "python/method_class.h"
#include "util/clock.h"
#include "util/files.h"

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
// Stats and label keys of processes that are not Python: the top bit keeps
// them apart from the tracker's generations, which count up from 1.
constexpr uint64_t kOtherProcessKeyBit = uint64_t{1} << 63;

size_t entry_bytes(const CodeEntry& e) {
  size_t bytes = sizeof(CodeEntry) + 64;
  if (e.info)
    bytes += sizeof(python::CodeInfo) + e.info->name.size() + e.info->filename.size() +
             e.info->lines.size() * sizeof(python::LineRange);
  return bytes;
}

size_t frame_bytes(const profile::Frame& f) {
  return sizeof(profile::Frame) + f.function.size() + f.file.size() + 64;
}

size_t parked_bytes_of(const ParkedSample& s) {
  return s.job.bytes() + s.frames.size() * sizeof(krait_py_frame);
}

// Reads of a process charged to its inspection budget.
class ChargedMemory final : public proc::RemoteMemory {
 public:
  ChargedMemory(const proc::RemoteMemory& inner, inspect::TaskContext& context)
      : inner_(inner), context_(context) {}
  Result<void> read(uint64_t address, std::span<uint8_t> out) const override {
    context_.charge_bytes(out.size());
    return inner_.read(address, out);
  }

 private:
  const proc::RemoteMemory& inner_;
  inspect::TaskContext& context_;
};

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

Pipeline::PerProcess* Pipeline::naming_state(const TrackedProcess& p) {
  if (p.attachment.status != python::AttachStatus::kAttached || !p.attachment.layout)
    return nullptr;
  PerProcess& pp = processes_[p.key];
  if (!pp.codes) {
    pp.codes = std::make_unique<LruCache<CodeKey, CodeEntry, CodeKeyHash>>(kMaxCodesPerProcess,
                                                                           kMaxCodeBytesPerProcess);
    if (options_.native) {
      pp.modules = std::make_shared<ModulesSlot>();
      pp.modules->set(p.attach_modules);
      pp.modules_loaded_ns = p.attached_ns;
    }
  }
  return &pp;
}

Pipeline::PerProcess* Pipeline::current(uint64_t key) {
  auto it = processes_.find(key);
  if (it == processes_.end() || !it->second.codes || !tracker_.find_key(key))
    return nullptr;
  return &it->second;
}

void Pipeline::retired(uint64_t key) {
  auto it = processes_.find(key);
  if (it == processes_.end())
    return;
  // Exit and exec send parked samples on before the tracker retires the
  // process; what is left belongs to an incarnation that is gone.
  PerProcess& pp = it->second;
  for (const ParkedSample& s : pp.parked)
    parked_bytes_ -= std::min(parked_bytes_, parked_bytes_of(s));
  parked_keys_.erase(key);
  dirty_.erase(key);
  pp.codes.reset();
  pp.parked.clear();
  pp.parked_bytes = 0;
  pp.modules.reset();
}

ProcessStats Pipeline::process_stats(uint64_t key) const {
  auto it = processes_.find(key);
  return it == processes_.end() ? ProcessStats{} : it->second.stats;
}

bool Pipeline::holds_names(uint64_t key) const {
  auto it = processes_.find(key);
  return it != processes_.end() && it->second.codes != nullptr;
}

size_t Pipeline::parked_samples(uint64_t key) const {
  auto it = processes_.find(key);
  return it == processes_.end() ? 0 : it->second.parked.size();
}

void Pipeline::forget(std::span<const uint64_t> keys) {
  for (uint64_t key : keys) {
    retired(key);
    processes_.erase(key);
  }
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

FrameRef Pipeline::named_frame(const TrackedProcess& p, PerProcess& pp, const CodeEntry& entry,
                               const krait_py_frame& frame, bool final_name) {
  if (!entry.info) {
    // Not cached: the same address may be readable for the next sample's token.
    ++pp.stats.unsymbolized_frames;
    return synthetic_frame("[unknown Python code: object freed before it was read]");
  }
  if (entry.from_capture)
    ++pp.stats.frames_from_capture;
  const uint32_t instr = frame.instr & KRAIT_FRAME_INSTR_MASK;
  const python::CodeInfo& info = *entry.info;
  const python::PythonLayout& layout = *p.attachment.layout;
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kPython;
  f->function = info.name;
  f->file = info.filename;
  f->start_line = info.firstlineno;
  const uint64_t offset = uint64_t{instr} * layout.instr_scale;
  const int32_t line = offset < entry.lines_upto ? info.line_at(layout, instr) : python::kNoLine;
  f->line = line < 0 ? 0 : line;
  if (final_name)
    frames_.insert(FrameKey{p.generation, frame.token, frame.code, instr}, f, frame_bytes(*f));
  return f;
}

void Pipeline::request_read(const TrackedProcess& p, const CodeKey& key, CodeEntry& entry) {
  if (entry.reading || entry.settled)
    return;
  if (!p.memory || !p.attachment.layout) {
    entry.settled = true;
    entry.method_pending = false;
    entry.from_capture = entry.info != nullptr;
    return;
  }
  auto memory = p.memory;
  const python::PythonLayout layout = *p.attachment.layout;
  const uint64_t code_type = p.attachment.info.code_type_addr;
  const uint64_t frame = entry.method_pending ? entry.frame : 0;
  const uint64_t process_key = p.key;
  const pid_t pid = p.pid;
  const bool posted = inspector_.post(
      p.key, "read code object", [=, this](inspect::TaskContext& context) -> inspect::Completion {
        ChargedMemory mem(*memory, context);
        auto read = python::read_code_object(mem, layout, code_type, key.address, key.token);
        std::string cls;
        if (frame != 0)
          cls = python::method_class_name(mem, layout, frame, key.address).value_or("");
        std::shared_ptr<const python::CodeInfo> info;
        if (read)
          info = std::make_shared<const python::CodeInfo>(std::move(*read));
        else
          spdlog::debug("pid {}: {}", pid, read.error().message);
        const bool ok = read.ok();
        return [this, process_key, key, info, cls, ok] {
          apply_read(process_key, key, info, cls, ok);
        };
      });
  if (posted) {
    entry.reading = true;
  } else {
    // Throttled or stalled: what is known now is all there will be.
    entry.settled = true;
    entry.method_pending = false;
    entry.from_capture = entry.info != nullptr;
  }
}

void Pipeline::apply_read(uint64_t process_key, CodeKey key,
                          std::shared_ptr<const python::CodeInfo> info, std::string method_class,
                          bool read_ok) {
  PerProcess* pp = current(process_key);
  if (!pp)
    return;
  CodeEntry* e = pp->codes->peek(key);
  if (!e)
    e = &pp->codes->insert(key, CodeEntry{}, sizeof(CodeEntry));
  const bool method_pending = e->method_pending;
  e->reading = false;
  e->settled = true;
  e->method_pending = false;
  if (read_ok && info) {
    e->info = std::move(info);
    e->names_complete = true;
    e->lines_upto = UINT32_MAX;
    e->from_capture = false;
  } else {
    // Gone before it was read: the capture (if any) is all there is.
    e->from_capture = e->info != nullptr;
  }
  if (method_pending && !method_class.empty() && e->info) {
    auto named = std::make_shared<python::CodeInfo>(*e->info);
    named->name = method_class + "." + named->name;
    e->info = std::move(named);
  }
  pp->codes->resize(key, entry_bytes(*e));
  if (!pp->parked.empty())
    dirty_.insert(process_key);
}

FrameRef Pipeline::python_frame(const TrackedProcess& p, PerProcess& pp,
                                const krait_py_frame& frame, bool best_effort, bool& waiting) {
  const uint32_t instr = frame.instr & KRAIT_FRAME_INSTR_MASK;
  if (FrameRef* hit = frames_.find(FrameKey{p.generation, frame.token, frame.code, instr}))
    return *hit;
  const CodeKey key{frame.code, frame.token};
  CodeEntry* e = pp.codes->find(key);
  if (!e) {
    CodeEntry unknown;
    unknown.names_complete = false;
    unknown.lines_upto = 0;
    e = &pp.codes->insert(key, unknown, entry_bytes(unknown));
    request_read(p, key, *e);
  }
  const uint64_t offset = uint64_t{instr} * p.attachment.layout->instr_scale;
  const bool complete =
      e->info && e->names_complete && !e->method_pending && offset < e->lines_upto;
  if (e->settled || complete)
    return named_frame(p, pp, *e, frame, true);
  if (!best_effort) {
    waiting = true;
    return nullptr;
  }
  if (e->info) {
    ++pp.stats.frames_named_early;
    return named_frame(p, pp, *e, frame, false);
  }
  ++pp.stats.unsymbolized_frames;
  return synthetic_frame("[unknown Python code: not read in time]");
}

bool Pipeline::name_frames(const TrackedProcess& p, PerProcess& pp, SampleJob& job,
                           std::span<const krait_py_frame> frames, bool best_effort) {
  const bool every_entry = p.attachment.layout && p.attachment.layout->every_frame_is_entry;
  bool waiting = false;
  job.python.clear();
  job.python.reserve(frames.size());
  for (const krait_py_frame& f : frames) {
    // Every frame is looked at even once one must wait, so that all the
    // reads the sample needs are requested together.
    FrameRef named = python_frame(p, pp, f, best_effort, waiting);
    if (!waiting)
      job.python.push_back({std::move(named), every_entry || (f.instr & KRAIT_FRAME_ENTRY)});
  }
  return !waiting;
}

void Pipeline::park(const TrackedProcess& p, PerProcess& pp, SampleJob job,
                    std::span<const krait_py_frame> frames) {
  ParkedSample parked;
  parked.job = std::move(job);
  parked.frames.assign(frames.begin(), frames.end());
  parked.parked_ns = monotonic_ns();
  const size_t bytes = parked_bytes_of(parked);
  if (pp.parked.size() >= kMaxParkedPerProcess ||
      pp.parked_bytes + bytes > kMaxParkedBytesPerProcess ||
      parked_bytes_ + bytes > kMaxParkedBytes) {
    ++stats_.park_full;
    name_frames(p, pp, parked.job, parked.frames, true);
    submit(std::move(parked.job));
    return;
  }
  ++stats_.parked;
  ++pp.stats.samples_parked;
  pp.parked_bytes += bytes;
  parked_bytes_ += bytes;
  pp.parked.push_back(std::move(parked));
  parked_keys_.insert(p.key);
}

void Pipeline::release_parked(const TrackedProcess& p, PerProcess& pp, uint64_t now_ns, bool all) {
  std::deque<ParkedSample> keep;
  while (!pp.parked.empty()) {
    ParkedSample s = std::move(pp.parked.front());
    pp.parked.pop_front();
    const bool expired = now_ns - s.parked_ns >= kParkTimeoutNs;
    if (!name_frames(p, pp, s.job, s.frames, false)) {
      if (!all && !expired) {
        keep.push_back(std::move(s));
        continue;
      }
      if (expired)
        ++stats_.parked_timeouts;
      name_frames(p, pp, s.job, s.frames, true);
    }
    const size_t bytes = parked_bytes_of(s);
    pp.parked_bytes -= std::min(pp.parked_bytes, bytes);
    parked_bytes_ -= std::min(parked_bytes_, bytes);
    submit(std::move(s.job));
  }
  pp.parked = std::move(keep);
  if (pp.parked.empty())
    parked_keys_.erase(p.key);
}

void Pipeline::release_key(uint64_t key, uint64_t now_ns, bool all) {
  const TrackedProcess* p = tracker_.find_key(key);
  PerProcess* pp = current(key);
  if (p && pp && !pp->parked.empty())
    release_parked(*p, *pp, now_ns, all);
}

LabelsRef Pipeline::labels_for(uint64_t key, int pid, const std::string& process_name,
                               const std::string* python_version, uint32_t tid, const char* comm,
                               uint16_t py_flags, const profile::Labels* extra) {
  std::string thread(comm, strnlen(comm, KRAIT_COMM_LEN));
  const char* gil = !(py_flags & KRAIT_PYF_GIL_KNOWN) ? ""
                    : (py_flags & KRAIT_PYF_GIL_HELD) ? "held"
                                                      : "released";
  std::string cache_key = fmt::format("{}/{}/{}/{}", key, tid, gil, thread);
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

void Pipeline::submit(SampleJob job) {
  if (!queue_.push(std::move(job)))
    ++stats_.queue_full;
}

void Pipeline::release_other(OtherProcess& other) {
  const bool ready = other.named && (!options_.native || other.modules_loaded_ns != 0);
  if (!ready)
    return;
  while (!other.parked.empty()) {
    ParkedSample s = std::move(other.parked.front());
    other.parked.pop_front();
    parked_bytes_ -= std::min(parked_bytes_, parked_bytes_of(s));
    if (!other.wanted) {
      ++stats_.unwanted_native_samples;
      continue;
    }
    s.job.series = other.series;
    submit(std::move(s.job));
  }
  other.parked_bytes = 0;
}

void Pipeline::on_other_sample(const events::SampleView& view) {
  const krait_sample& s = view.sample;
  const int pid = static_cast<int>(s.hdr.pid);
  ++stats_.native_samples;
  OtherProcess& other = others_[pid];
  if (other.key == 0) {
    other.key = tracker_.new_key();
    other.name = proc::comm_or_unknown(pid);
    other.modules = std::make_shared<ModulesSlot>();
    if (!options_.other_series)
      other.named = true;
  }
  if (!other.named && !other.naming) {
    auto series_of = options_.other_series;
    const std::string name = other.name;
    const uint64_t key = other.key;
    other.naming = inspector_.post(key, "name process",
                                   [=, this](inspect::TaskContext&) -> inspect::Completion {
                                     SeriesRef series = series_of(pid, name);
                                     return [this, pid, key, series] {
                                       auto it = others_.find(pid);
                                       if (it == others_.end() || it->second.key != key)
                                         return;
                                       it->second.named = true;
                                       it->second.naming = false;
                                       it->second.series = series;
                                       it->second.wanted = series != nullptr;
                                       release_other(it->second);
                                     };
                                   });
    if (!other.naming) {
      other.named = true;  // throttled or stalled: in the default series
      other.wanted = true;
    }
  }
  if (other.named && !other.wanted) {
    ++stats_.unwanted_native_samples;
    return;
  }
  SampleJob job;
  job.process_key = kOtherProcessKeyBit | static_cast<uint32_t>(pid);
  job.ktime_ns = s.hdr.ktime_ns;
  job.series = other.series;
  job.labels = labels_for(job.process_key, pid, other.name, nullptr, s.hdr.tid, s.comm, 0);
  if (options_.native) {
    if (other.modules_loaded_ns == 0)
      request_modules(other.key, pid, other.modules, other.modules_loading);
    add_native(view, job, other.modules, other.modules_loaded_ns, other.key, pid,
               other.modules_loading);
  }
  const bool ready = other.named && (!options_.native || other.modules_loaded_ns != 0);
  if (ready) {
    submit(std::move(job));
    return;
  }
  ParkedSample parked;
  parked.job = std::move(job);
  parked.parked_ns = monotonic_ns();
  const size_t bytes = parked_bytes_of(parked);
  if (other.parked.size() >= kMaxParkedPerProcess ||
      other.parked_bytes + bytes > kMaxParkedBytesPerProcess ||
      parked_bytes_ + bytes > kMaxParkedBytes) {
    ++stats_.park_full;
    submit(std::move(parked.job));
    return;
  }
  ++stats_.parked;
  other.parked_bytes += bytes;
  parked_bytes_ += bytes;
  other.parked.push_back(std::move(parked));
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
  ProcessStats& counts = processes_[p->key].stats;
  ++counts.samples;
  const uint32_t status =
      s.py_status < KRAIT_PY_STATUS_COUNT ? s.py_status : KRAIT_PY_STATUS_COUNT - 1;
  ++counts.by_status[status];
  PerProcess* pp = status == KRAIT_PY_PROC_REFUSED ? nullptr : naming_state(*p);
  if (!pp)
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
                          &p->extra_labels);
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

void Pipeline::on_notice(const inspect::Notice& notice) {
  for (auto& [pid, other] : others_) {
    if (other.key != notice.key)
      continue;
    spdlog::warn("pid {} ({}): {}", pid, other.name, notice.reason);
    other.named = true;
    other.naming = false;
    other.modules_loading = false;
    if (other.modules_loaded_ns == 0)
      other.modules_loaded_ns = monotonic_ns();
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

void Pipeline::rename_others() {
  for (auto& [pid, other] : others_) {
    other.named = !options_.other_series;
    other.naming = false;
  }
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
  tracker_.on_exec(pid, event.identity, monotonic_ns());
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

void Pipeline::on_code_capture(const krait_code_event& event) {
  ++stats_.code_captures;
  const TrackedProcess* p = tracker_.find(static_cast<pid_t>(event.hdr.pid));
  PerProcess* pp = p ? naming_state(*p) : nullptr;
  if (!pp)
    return;
  const python::PythonLayout& layout = *p->attachment.layout;
  const CodeKey key{event.code, event.token};
  CodeEntry* existing = pp->codes->peek(key);
  if (existing && existing->settled && existing->info && !existing->from_capture)
    return;  // already read whole
  CodeEntry e = existing ? *existing : CodeEntry{};
  auto captured = python::code_info_from_capture(layout, event);
  if (captured) {
    e.info = std::make_shared<const python::CodeInfo>(std::move(captured->info));
    e.names_complete = captured->names_complete;
    e.lines_upto = captured->lines_upto;
  }
  if (!e.settled) {
    e.frame = event.frame;
    e.method_pending = layout.method_class.enabled && event.frame != 0;
    // Complete as captured: nothing to read.
    if (e.info && e.names_complete && e.lines_upto == UINT32_MAX && !e.method_pending)
      e.settled = true;
  } else if (e.info) {
    e.from_capture = true;
  }
  CodeEntry& stored = pp->codes->insert(key, e, entry_bytes(e));
  if (!stored.settled)
    request_read(*p, key, stored);
  if (!pp->parked.empty())
    dirty_.insert(p->key);
}

void Pipeline::on_unknown_process(const krait_proc_event& event) {
  ++stats_.unknown_events;
  tracker_.on_unknown(static_cast<pid_t>(event.hdr.pid), event.identity, monotonic_ns());
}

}  // namespace krait::engine
