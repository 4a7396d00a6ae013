#include "record/pipeline.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <ctime>

namespace krait::record {
namespace {

// Per-process symbol caches grow with the code objects a process creates;
// a process that creates them without end must not grow krait without end.
constexpr size_t kMaxCodesPerProcess = 200'000;
constexpr size_t kMaxFrameCache = 1'000'000;

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
    default:
      return "unknown status";
  }
}

Pipeline::Pipeline(ProcessTracker& tracker, profile::Profile& profile, uint32_t max_depth)
    : tracker_(tracker), profile_(profile), max_depth_(max_depth) {}

profile::FrameId Pipeline::synthetic_frame(const std::string& name) {
  auto it = synthetic_.find(name);
  if (it != synthetic_.end())
    return it->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kSynthetic;
  f.function = name;
  profile::FrameId id = profile_.intern_frame(f);
  synthetic_.emplace(name, id);
  return id;
}

profile::FrameId Pipeline::python_frame(TrackedProcess& p, const krait_py_frame& frame) {
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
    code = p.codes.emplace(ck, std::move(info)).first;
  }
  if (!code->second) {
    // Not cached in frames_: the same address may be readable for the next
    // sample's token.
    ++p.stats.unsymbolized_frames;
    return synthetic_frame("[unknown Python code: object freed before it was read]");
  }
  const python::CodeInfo& info = *code->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kPython;
  f.function = info.name;
  f.file = info.filename;
  f.start_line = info.firstlineno;
  int32_t line = info.line_at(*p.attachment.layout, instr);
  f.line = line < 0 ? 0 : line;
  profile::FrameId id = profile_.intern_frame(f);
  if (frames_.size() >= kMaxFrameCache)
    frames_.clear();
  frames_.emplace(key, id);
  return id;
}

profile::LabelSetId Pipeline::labels_for(const TrackedProcess& p, uint32_t tid, const char* comm,
                                         uint16_t py_flags) {
  std::string thread(comm, strnlen(comm, KRAIT_COMM_LEN));
  const char* gil = !(py_flags & KRAIT_PYF_GIL_KNOWN) ? ""
                    : (py_flags & KRAIT_PYF_GIL_HELD) ? "held"
                                                      : "released";
  std::string key = fmt::format("{}/{}/{}/{}", p.generation, tid, gil, thread);
  if (auto it = labels_.find(key); it != labels_.end())
    return it->second;
  profile::Labels labels{{"pid", std::to_string(p.pid)},
                         {"tid", std::to_string(tid)},
                         {"thread_name", thread},
                         {"process_name", p.name}};
  if (p.attachment.version)
    labels.emplace_back("python_version", p.attachment.version->str());
  if (*gil)
    labels.emplace_back("gil", gil);
  profile::LabelSetId id = profile_.intern_labels(std::move(labels));
  labels_.emplace(std::move(key), id);
  return id;
}

void Pipeline::on_sample(const events::SampleView& view) {
  const krait_sample& s = view.sample;
  ++stats_.samples;
  TrackedProcess* p = tracker_.find(static_cast<pid_t>(s.hdr.pid));
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

  stack_.clear();
  for (const krait_py_frame& f : view.frames)
    stack_.push_back(python_frame(*p, f));
  if (s.py_flags & KRAIT_PYF_TRUNCATED) {
    ++p->stats.truncated;
    stack_.push_back(
        synthetic_frame(fmt::format("[truncated: deeper than {} frames]", max_depth_)));
  }
  if (status != KRAIT_PY_OK) {
    stack_.push_back(synthetic_frame(fmt::format("[{}]", py_status_description(status))));
  } else if (stack_.empty()) {
    stack_.push_back(synthetic_frame("[no Python frame running]"));
  }
  profile_.add_sample(stack_, labels_for(*p, s.hdr.tid, s.comm, s.py_flags));
}

void Pipeline::on_exec(const krait_exec_event& event) {
  ++stats_.exec_events;
  tracker_.on_exec(static_cast<pid_t>(event.hdr.pid), monotonic_ns());
}

void Pipeline::on_exit(const krait_event_header& event) {
  ++stats_.exit_events;
  tracker_.on_exit(static_cast<pid_t>(event.pid));
}

void Pipeline::on_code_capture(const krait_code_event& event) {
  ++stats_.code_captures;
  TrackedProcess* p = tracker_.find(static_cast<pid_t>(event.hdr.pid));
  if (!p || !p->attachment.layout)
    return;
  if (p->captured.size() >= kMaxCodesPerProcess)
    p->captured.clear();
  auto info = python::code_info_from_capture(p->attachment.layout->strings, event);
  if (info)
    p->captured.insert_or_assign({event.code, event.token}, std::move(*info));
}

void Pipeline::on_unknown_process(const krait_event_header& event) {
  ++stats_.unknown_events;
  (void)tracker_.classify(static_cast<pid_t>(event.pid), monotonic_ns());
}

}  // namespace krait::record
