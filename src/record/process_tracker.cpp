#include "record/process_tracker.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "util/files.h"

namespace krait::record {
namespace {

std::string process_name(pid_t pid) {
  auto comm = read_file("/proc/" + std::to_string(pid) + "/comm");
  if (!comm)
    return "?";
  std::string name = *comm;
  while (!name.empty() && name.back() == '\n')
    name.pop_back();
  return name;
}

krait_proc_info ignore_until(uint64_t when_ns) {
  krait_proc_info info{};
  info.mode = KRAIT_PROC_IGNORE;
  info.recheck_after_ns = when_ns;
  return info;
}

// Interpreter start-up takes milliseconds; a program that links libpython
// but never starts it should not be polled forever at that pace.
// Attempts (at the process's next samples) before a layout that fails
// validation refuses the process.
constexpr int kValidationAttempts = 8;

uint64_t not_yet_backoff_ns(int retries) {
  // The first tries follow the sampler (the next sample of the process asks
  // again): a process that lives 200 ms cannot wait for a back-off.
  if (retries < 100)
    return 0;
  const uint64_t base = 10'000'000ull;  // 10 ms
  return std::min<uint64_t>(base << std::min(retries - 100, 8), 2'000'000'000ull);
}

}  // namespace

ProcessTracker::ProcessTracker(ProcessMapSink& sink, TrackerOptions options)
    : sink_(sink), options_(std::move(options)) {}

TrackedProcess* ProcessTracker::find(pid_t pid) {
  auto it = current_.find(pid);
  if (it == current_.end())
    return nullptr;
  return &processes_.at(it->second);
}

TrackedProcess& ProcessTracker::fresh_entry(pid_t pid) {
  retire(pid);
  uint64_t key = next_key_++;
  TrackedProcess& p = processes_[key];
  p.pid = pid;
  current_[pid] = key;
  return p;
}

void ProcessTracker::retire(pid_t pid) {
  auto it = current_.find(pid);
  if (it == current_.end())
    return;
  TrackedProcess& p = processes_.at(it->second);
  if (p.state == ProcessState::kNotYet) {
    processes_.erase(it->second);
  } else {
    p.state = ProcessState::kExited;
    p.codes.clear();
    p.captured.clear();
    p.method_classes.clear();
    p.memory.reset();
    p.modules.reset();
  }
  current_.erase(it);
}

python::AttachStatus ProcessTracker::classify(pid_t pid, uint64_t now_ns) {
  TrackedProcess* existing = find(pid);
  if (existing && existing->state == ProcessState::kPython)
    return python::AttachStatus::kAttached;
  if (existing && existing->state == ProcessState::kRefused)
    return python::AttachStatus::kRefused;
  const int retries = existing ? existing->retries : 0;
  if (options_.wanted && !options_.wanted(pid)) {
    retire(pid);
    (void)sink_.set_process(pid, ignore_until(now_ns + options_.not_python_recheck_ns));
    return python::AttachStatus::kNotPython;
  }

  python::Attachment a = python::attach_process(pid, images_, options_.attach);
  // Validation reads a process that keeps running: a thread list or a frame
  // read in the middle of its change (start-up, a call) fails once and
  // passes the next time. A layout is refused when it fails every time.
  const int failed_validations = existing ? existing->failed_validations : 0;
  const bool validate_again = a.status == python::AttachStatus::kRefused && a.validation_failed &&
                              failed_validations + 1 < kValidationAttempts;
  if (validate_again)
    a.status = python::AttachStatus::kNotYet;
  switch (a.status) {
    case python::AttachStatus::kGone:
      retire(pid);
      return a.status;
    case python::AttachStatus::kNotPython:
      retire(pid);
      (void)sink_.set_process(pid, ignore_until(now_ns + options_.not_python_recheck_ns));
      return a.status;
    case python::AttachStatus::kNotYet: {
      TrackedProcess& p = existing ? *existing : fresh_entry(pid);
      p.retries = retries + 1;
      p.failed_validations = failed_validations + (validate_again ? 1 : 0);
      p.reason = a.reason;
      p.attachment = std::move(a);
      (void)sink_.set_process(pid, ignore_until(now_ns + not_yet_backoff_ns(retries)));
      spdlog::debug("pid {}: Python not ready yet ({}), retry #{}", pid, p.reason, p.retries);
      return python::AttachStatus::kNotYet;
    }
    case python::AttachStatus::kRefused:
    case python::AttachStatus::kAttached:
      break;
  }

  TrackedProcess& p = fresh_entry(pid);
  p.name = process_name(pid);
  p.generation = next_generation_++;
  p.attachment = std::move(a);
  krait_proc_info info{};
  const python::Attachment& at = p.attachment;
  if (at.status == python::AttachStatus::kAttached) {
    p.state = ProcessState::kPython;
    info = at.info;
    p.memory = std::make_unique<proc::ProcessMemory>(pid);
    ++attached_;
    if (options_.describe)
      options_.describe(p);
    spdlog::debug("pid {} ({}): Python {} from {}, offsets: {}", pid, p.name, at.version->str(),
                  at.image_path, at.offsets_source);
  } else {
    p.state = ProcessState::kRefused;
    p.reason = at.reason;
    info.mode = KRAIT_PROC_REFUSED;
    spdlog::warn("pid {} ({}) is not profiled: {}", pid, p.name, p.reason);
  }
  info.generation = p.generation;
  if (auto r = sink_.set_process(pid, info); !r)
    spdlog::warn("{}", r.error().message);
  return p.attachment.status;
}

size_t ProcessTracker::prune_exited() {
  size_t n = 0;
  for (auto it = processes_.begin(); it != processes_.end();) {
    if (it->second.state == ProcessState::kExited) {
      it = processes_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

void ProcessTracker::set_hooks(std::function<bool(pid_t)> wanted,
                               std::function<void(TrackedProcess&)> describe) {
  options_.wanted = std::move(wanted);
  options_.describe = std::move(describe);
}

TrackedProcess& ProcessTracker::adopt(TrackedProcess process) {
  TrackedProcess& p = fresh_entry(process.pid);
  p = std::move(process);
  if (p.state == ProcessState::kPython)
    ++attached_;
  return p;
}

void ProcessTracker::on_exec(pid_t pid, uint64_t now_ns) {
  // The sampler already dropped the old image's entry.
  retire(pid);
  (void)classify(pid, now_ns);
}

void ProcessTracker::on_exit(pid_t pid) {
  retire(pid);
}

}  // namespace krait::record
