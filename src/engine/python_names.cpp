// The Pipeline's naming of Python frames: per-process code names (what the
// sampler captured, completed by reads of the live objects on the
// Inspector), samples parked until their reads complete, and the state kept
// per process incarnation until the tracker retires it.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/pipeline.h"
#include "python/method_class.h"
#include "util/clock.h"

namespace krait::engine {
namespace {

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

bool Pipeline::ready_to_name(const TrackedProcess& p, PerProcess& pp) {
  if (p.attachment.status != python::AttachStatus::kAttached || !p.attachment.layout)
    return false;
  if (!pp.codes) {
    pp.codes = std::make_unique<LruCache<CodeKey, CodeEntry, CodeKeyHash>>(kMaxCodesPerProcess,
                                                                           kMaxCodeBytesPerProcess);
    if (options_.native) {
      pp.modules = std::make_shared<ModulesSlot>();
      pp.modules->set(p.attach_modules);
      pp.modules_loaded_ns = p.attached_ns;
    }
  }
  return true;
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
    parked_bytes_ -= std::min(parked_bytes_, s.bytes());
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

FrameRef Pipeline::named_frame(const TrackedProcess& p, PerProcess& pp, const CodeEntry& entry,
                               const krait_py_frame& frame, bool final_name) {
  if (!entry.info) {
    // Not cached: the same address may be readable for the next sample's token.
    ++pp.stats.unsymbolized_frames;
    return synthetic_frame("[unknown Python code: object freed before it was read]");
  }
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
  // A capture that held this frame's names and line whole loses nothing.
  if (entry.from_capture && (!entry.names_complete || offset >= entry.lines_upto))
    ++pp.stats.frames_from_capture;
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

bool Pipeline::room_to_park(size_t held, size_t held_bytes, size_t bytes) const {
  return held < kMaxParkedPerProcess && held_bytes + bytes <= kMaxParkedBytesPerProcess &&
         parked_bytes_ + bytes <= kMaxParkedBytes;
}

void Pipeline::park(const TrackedProcess& p, PerProcess& pp, SampleJob job,
                    std::span<const krait_py_frame> frames) {
  ParkedSample parked;
  parked.job = std::move(job);
  parked.frames.assign(frames.begin(), frames.end());
  parked.parked_ns = monotonic_ns();
  const size_t bytes = parked.bytes();
  if (!room_to_park(pp.parked.size(), pp.parked_bytes, bytes)) {
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
    const size_t bytes = s.bytes();
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

void Pipeline::on_code_capture(const krait_code_event& event) {
  ++stats_.code_captures;
  const TrackedProcess* p = tracker_.find(static_cast<pid_t>(event.hdr.pid));
  if (!p)
    return;
  PerProcess* pp = &processes_[p->key];
  if (!ready_to_name(*p, *pp))
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

void Pipeline::on_linetable_capture(const krait_linetable_event& event,
                                    std::span<const uint8_t> bytes) {
  const TrackedProcess* p = tracker_.find(static_cast<pid_t>(event.hdr.pid));
  if (!p)
    return;
  PerProcess* pp = current(p->key);
  if (!pp || !p->attachment.layout)
    return;
  // It follows its code event, which made the entry; an entry read whole
  // from the live object needs nothing more.
  const CodeKey key{event.code, event.token};
  CodeEntry* e = pp->codes->peek(key);
  if (!e || !e->info || (e->settled && !e->from_capture))
    return;
  uint32_t upto = 0;
  auto lines =
      python::lines_from_captured_table(*p->attachment.layout, bytes, e->info->firstlineno, upto);
  if (upto <= e->lines_upto)
    return;  // no better than what the code event held
  auto info = std::make_shared<python::CodeInfo>(*e->info);
  info->lines = std::move(lines);
  e->info = std::move(info);
  e->lines_upto = upto;
  // Complete as captured: the read in flight (if any) can only confirm it.
  if (!e->reading && e->names_complete && upto == UINT32_MAX && !e->method_pending)
    e->settled = true;
  pp->codes->resize(key, entry_bytes(*e));
  if (!pp->parked.empty())
    dirty_.insert(p->key);
}

}  // namespace krait::engine
