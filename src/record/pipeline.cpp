#include "record/pipeline.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <ctime>

#include "python/method_class.h"
#include "util/files.h"

namespace krait::record {
namespace {

// Per-process symbol caches grow with the code objects a process creates;
// a process that creates them without end must not grow krait without end.
constexpr size_t kMaxCodesPerProcess = 200'000;
constexpr size_t kMaxFrameCache = 1'000'000;
// A sample outside the known mappings reloads them, at most this often.
constexpr uint64_t kModuleReloadNs = 100'000'000;

std::string process_comm(int pid) {
  auto comm = read_file("/proc/" + std::to_string(pid) + "/comm");
  std::string name = comm ? *comm : "?";
  while (!name.empty() && name.back() == '\n')
    name.pop_back();
  return name;
}

}  // namespace

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

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

Pipeline::Pipeline(ProcessTracker& tracker, JobQueue& queue, PipelineOptions options,
                   unwind::ModuleCache* modules)
    : tracker_(tracker), queue_(queue), options_(options), module_cache_(modules) {}

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

FrameRef Pipeline::python_frame(TrackedProcess& p, const krait_py_frame& frame) {
  const uint32_t instr = frame.instr & KRAIT_FRAME_INSTR_MASK;
  FrameKey key{p.generation, frame.token, frame.code, instr};
  if (auto it = frames_.find(key); it != frames_.end())
    return it->second;

  TrackedProcess::CodeKey ck{frame.code, frame.token};
  auto code = p.codes.find(ck);
  if (code == p.codes.end()) {
    if (p.codes.size() >= kMaxCodesPerProcess)
      p.codes.clear();
    std::optional<python::CodeInfo> info;
    if (p.memory && p.attachment.layout) {
      auto r = python::read_code_object(*p.memory, *p.attachment.layout,
                                        p.attachment.info.code_type_addr, frame.code, frame.token);
      if (r)
        info = std::move(*r);
      else
        spdlog::debug("pid {}: {}", p.pid, r.error().message);
    }
    if (!info) {
      // Gone before it could be read: the names the sampler captured when it
      // first saw the object still say what ran (without a line).
      if (auto c = p.captured.find(ck); c != p.captured.end()) {
        info = c->second;
        ++p.stats.frames_from_capture;
      }
    }
    if (info) {
      if (auto m = p.method_classes.find(ck); m != p.method_classes.end())
        info->name = m->second + "." + info->name;
    }
    code = p.codes.emplace(ck, std::move(info)).first;
  }
  if (!code->second) {
    // Not cached in frames_: the same address may be readable for the next
    // sample's token.
    ++p.stats.unsymbolized_frames;
    return synthetic_frame("[unknown Python code: object freed before it was read]");
  }
  const python::CodeInfo& info = *code->second;
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kPython;
  f->function = info.name;
  f->file = info.filename;
  f->start_line = info.firstlineno;
  int32_t line = info.line_at(*p.attachment.layout, instr);
  f->line = line < 0 ? 0 : line;
  if (frames_.size() >= kMaxFrameCache)
    frames_.clear();
  frames_.emplace(key, f);
  return f;
}

LabelsRef Pipeline::labels_for(uint64_t key, int pid, const std::string& process_name,
                               const std::string* python_version, uint32_t tid, const char* comm,
                               uint16_t py_flags, const profile::Labels* extra) {
  std::string thread(comm, strnlen(comm, KRAIT_COMM_LEN));
  const char* gil = !(py_flags & KRAIT_PYF_GIL_KNOWN) ? ""
                    : (py_flags & KRAIT_PYF_GIL_HELD) ? "held"
                                                      : "released";
  std::string cache_key = fmt::format("{}/{}/{}/{}", key, tid, gil, thread);
  if (auto it = labels_.find(cache_key); it != labels_.end())
    return it->second;
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
  labels_.emplace(std::move(cache_key), labels);
  return labels;
}

std::shared_ptr<const unwind::ProcessModules> Pipeline::modules_for(
    int pid, std::shared_ptr<const unwind::ProcessModules>& cached, uint64_t& loaded_ns,
    uint64_t ip) {
  const uint64_t now = monotonic_ns();
  const bool stale = cached && !cached->find(ip) && now - loaded_ns > kModuleReloadNs;
  if ((!cached || stale) && module_cache_) {
    auto loaded = unwind::ProcessModules::load(pid, *module_cache_);
    if (loaded) {
      cached = std::make_shared<const unwind::ProcessModules>(std::move(*loaded));
      loaded_ns = now;
    }
  }
  return cached;
}

void Pipeline::add_native(const events::SampleView& view, SampleJob& job,
                          std::shared_ptr<const unwind::ProcessModules>& cached,
                          uint64_t& loaded_ns) {
  const krait_sample& s = view.sample;
  job.native = true;
  job.native_flags = s.native_flags;
  job.kernel_ips.assign(view.kernel_ips.begin(), view.kernel_ips.end());
  if (s.native_flags & KRAIT_NATIVE_CAPTURED) {
    job.regs = s.user_regs;
    job.user_stack.assign(view.user_stack.begin(), view.user_stack.end());
    job.modules = modules_for(static_cast<int>(s.hdr.pid), cached, loaded_ns, s.user_regs.ip);
  }
}

void Pipeline::submit(SampleJob job) {
  if (!queue_.push(std::move(job)))
    ++stats_.queue_full;
}

void Pipeline::on_sample(const events::SampleView& view) {
  const krait_sample& s = view.sample;
  ++stats_.samples;
  const int pid = static_cast<int>(s.hdr.pid);

  if (s.py_status == KRAIT_PY_NOT_PYTHON) {  // --all-processes
    ++stats_.native_samples;
    OtherProcess& other = others_[pid];
    if (other.name.empty()) {
      other.name = process_comm(pid);
      if (options_.other_series) {
        other.series = options_.other_series(pid, other.name);
        other.wanted = other.series != nullptr;
      }
    }
    if (!other.wanted) {
      ++stats_.unwanted_native_samples;
      return;
    }
    SampleJob job;
    job.process_key = (uint64_t{1} << 63) | static_cast<uint32_t>(pid);
    job.ktime_ns = s.hdr.ktime_ns;
    job.series = other.series;
    job.labels = labels_for(job.process_key, pid, other.name, nullptr, s.hdr.tid, s.comm, 0);
    if (options_.native)
      add_native(view, job, other.modules, other.modules_loaded_ns);
    submit(std::move(job));
    return;
  }

  TrackedProcess* p = tracker_.find(pid);
  if (!p || p->generation != s.proc_generation) {
    ++stats_.stale_samples;
    return;
  }
  ++p->stats.samples;
  const uint32_t status =
      s.py_status < KRAIT_PY_STATUS_COUNT ? s.py_status : KRAIT_PY_STATUS_COUNT - 1;
  ++p->stats.by_status[status];
  if (status == KRAIT_PY_PROC_REFUSED)
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
  const bool every_entry = p->attachment.layout && p->attachment.layout->every_frame_is_entry;
  job.python.reserve(view.frames.size());
  for (const krait_py_frame& f : view.frames)
    job.python.push_back({python_frame(*p, f), every_entry || (f.instr & KRAIT_FRAME_ENTRY)});
  if (s.py_flags & KRAIT_PYF_TRUNCATED) {
    ++p->stats.truncated;
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
    add_native(view, job, p->modules, p->modules_loaded_ns);
  submit(std::move(job));
}

void Pipeline::prune_caches() {
  frames_.clear();
  labels_.clear();
  synthetic_.clear();
  if (module_cache_)
    module_cache_->evict_unused();
}

void Pipeline::rename_others() {
  for (auto& [pid, other] : others_)
    other.name.clear();
}

void Pipeline::on_exec(const krait_exec_event& event) {
  ++stats_.exec_events;
  others_.erase(static_cast<int>(event.hdr.pid));
  tracker_.on_exec(static_cast<pid_t>(event.hdr.pid), monotonic_ns());
}

void Pipeline::on_exit(const krait_event_header& event) {
  ++stats_.exit_events;
  others_.erase(static_cast<int>(event.pid));
  tracker_.on_exit(static_cast<pid_t>(event.pid));
}

void Pipeline::on_code_capture(const krait_code_event& event) {
  ++stats_.code_captures;
  TrackedProcess* p = tracker_.find(static_cast<pid_t>(event.hdr.pid));
  if (!p || !p->attachment.layout)
    return;
  if (p->captured.size() >= kMaxCodesPerProcess)
    p->captured.clear();
  if (p->attachment.layout->method_class.enabled && p->memory && event.frame) {
    if (auto cls =
            python::method_class_name(*p->memory, *p->attachment.layout, event.frame, event.code)) {
      if (p->method_classes.size() >= kMaxCodesPerProcess)
        p->method_classes.clear();
      p->method_classes.insert_or_assign({event.code, event.token}, std::move(*cls));
    }
  }
  auto info = python::code_info_from_capture(*p->attachment.layout, event);
  if (info)
    p->captured.insert_or_assign({event.code, event.token}, std::move(*info));
}

void Pipeline::on_unknown_process(const krait_event_header& event) {
  ++stats_.unknown_events;
  (void)tracker_.classify(static_cast<pid_t>(event.pid), monotonic_ns());
}

}  // namespace krait::record
