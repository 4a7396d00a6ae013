#include "engine/process_tracker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "proc/processes.h"
#include "util/files.h"
#include "util/text.h"

namespace krait::engine {
namespace {

// Interpreter start-up takes milliseconds; a program that links libpython
// but never starts it should not be polled forever at that pace.
// Attempts (at the process's next samples) before a layout that fails
// validation refuses the process.
constexpr int kValidationAttempts = 8;
// A scan result that no sample claimed within this time belongs to a
// process that is idle or gone: it is dropped (a later sample attaches it
// afresh).
constexpr uint64_t kUnsampledTtlNs = 30'000'000'000ull;

uint64_t not_yet_backoff_ns(int retries) {
  // The first tries follow the sampler (the next sample of the process asks
  // again): a process that lives 200 ms cannot wait for a back-off.
  if (retries < 100)
    return 0;
  const uint64_t base = 10'000'000ull;  // 10 ms
  return std::min<uint64_t>(base << std::min(retries - 100, 8), 2'000'000'000ull);
}

uint64_t clock_tick_ns() {
  static const uint64_t ns = [] {
    const long hz = ::sysconf(_SC_CLK_TCK);
    return hz > 0 ? 1'000'000'000ull / static_cast<uint64_t>(hz) : 10'000'000ull;
  }();
  return ns;
}

}  // namespace

uint64_t read_start_ticks(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat)
    return 0;
  // "pid (comm) state ..." where comm may hold anything, ')' included.
  std::string_view text = *stat;
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos)
    return 0;
  text.remove_prefix(close + 1);
  // Field 22 is the 20th after the comm.
  for (int field = 3; field <= 22; ++field) {
    while (!text.empty() && text.front() == ' ')
      text.remove_prefix(1);
    const size_t end = std::min(text.find(' '), text.size());
    if (field == 22) {
      uint64_t ticks = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + end, ticks);
      return ec == std::errc() && ptr == text.data() + end ? ticks : 0;
    }
    text.remove_prefix(end);
  }
  return 0;
}

uint64_t start_ticks_of(const krait_proc_identity& identity) {
  return identity.start_ns / clock_tick_ns();
}

// What an attach task found, for its completion.
struct ProcessTracker::Outcome {
  uint64_t start_ticks = 0;
  bool wanted = true;
  python::Attachment attachment;
  std::string name;
  std::optional<ProcessNaming> naming;
  std::shared_ptr<const unwind::ProcessModules> modules;
};

ProcessTracker::ProcessTracker(ProcessMapSink& sink, inspect::Inspector& inspector,
                               TrackerOptions options)
    : sink_(sink),
      inspector_(inspector),
      options_(std::move(options)),
      images_(std::make_shared<python::ImageCache>()),
      attach_options_(std::make_shared<const python::AttachOptions>(options_.attach)) {}

const TrackedProcess* ProcessTracker::find(pid_t pid) const {
  auto it = current_.find(pid);
  if (it == current_.end())
    return nullptr;
  return &processes_.at(it->second);
}

const TrackedProcess* ProcessTracker::find_key(uint64_t key) const {
  auto it = processes_.find(key);
  if (it == processes_.end() || it->second.state == ProcessState::kExited)
    return nullptr;
  auto cur = current_.find(it->second.pid);
  return cur != current_.end() && cur->second == key ? &it->second : nullptr;
}

// The same, for the tracker's own changes.
TrackedProcess* ProcessTracker::entry(pid_t pid) {
  return const_cast<TrackedProcess*>(find(pid));
}

TrackedProcess* ProcessTracker::entry_key(uint64_t key) {
  return const_cast<TrackedProcess*>(find_key(key));
}

TrackedProcess& ProcessTracker::fresh_entry(pid_t pid) {
  retire(pid);
  const uint64_t key = next_key_++;
  TrackedProcess& p = processes_[key];
  p.key = key;
  p.pid = pid;
  current_[pid] = key;
  return p;
}

void ProcessTracker::retire(pid_t pid) {
  auto it = current_.find(pid);
  if (it == current_.end())
    return;
  const uint64_t key = it->second;
  current_.erase(it);
  processes_.at(key).inspection = inspector_.usage(key);
  inspector_.forget(key);
  TrackedProcess& p = processes_.at(key);
  if (p.generation == 0) {
    // Never attached nor refused: nothing to report about it.
    processes_.erase(key);
  } else {
    p.state = ProcessState::kExited;
    p.memory.reset();
    p.attach_modules.reset();
    report(p, ProcessEvent::Kind::kExited);
  }
  if (retire_listener_)
    retire_listener_(key);
}

void ProcessTracker::prepare(pid_t pid) {
  if (find(pid) != nullptr)
    return;
  TrackedProcess& p = fresh_entry(pid);
  p.prepared = true;
  post_attach(p);
}

std::optional<python::AttachStatus> ProcessTracker::scan_result(pid_t pid) const {
  auto it = scan_results_.find(pid);
  if (it == scan_results_.end())
    return std::nullopt;
  return it->second;
}

void ProcessTracker::on_unknown(pid_t pid, const krait_proc_identity& identity) {
  TrackedProcess* p = entry(pid);
  if (p && !p->identity && p->start_ticks != 0 && p->start_ticks == start_ticks_of(identity))
    p->identity = identity;  // the first sample of a scanned process
  if (p && p->identity && p->identity->start_ns == identity.start_ns &&
      p->identity->exec_id == identity.exec_id) {
    if (p->result_unapplied || p->state == ProcessState::kPython ||
        p->state == ProcessState::kRefused) {
      // A prepared result, or an entry the map lost (LRU eviction): write it.
      finish(*p);
      return;
    }
    if (p->attach_in_flight)
      return;
    post_attach(*p);
    return;
  }
  if (p && !p->identity && p->attach_in_flight && p->start_ticks == 0) {
    // A scan attach still in flight: it will be matched when it completes.
    p->identity = identity;
    return;
  }
  TrackedProcess& fresh = fresh_entry(pid);
  fresh.identity = identity;
  post_attach(fresh);
}

void ProcessTracker::on_exec(pid_t pid, const krait_proc_identity& identity) {
  retire(pid);
  on_unknown(pid, identity);
}

void ProcessTracker::on_exit(pid_t pid) {
  retire(pid);
}

bool ProcessTracker::settled(pid_t pid) const {
  auto it = current_.find(pid);
  if (it == current_.end())
    return true;
  const TrackedProcess& p = processes_.at(it->second);
  return !p.attach_in_flight;
}

void ProcessTracker::post_attach(TrackedProcess& p) {
  const pid_t pid = p.pid;
  auto images = images_;
  auto attach = attach_options_;
  auto wanted = options_.wanted;
  auto describe = options_.describe;
  auto modules = options_.native ? options_.modules : nullptr;
  auto attach_process = options_.attach_process;
  if (!attach_process)
    attach_process = python::attach_process;
  const uint64_t key = p.key;
  const bool posted =
      inspector_.post(key, "attach", [=, this](inspect::TaskContext&) -> inspect::Completion {
        auto outcome = std::make_shared<Outcome>();
        outcome->start_ticks = read_start_ticks(pid);
        if (outcome->start_ticks == 0) {
          outcome->attachment.status = python::AttachStatus::kGone;
          outcome->attachment.reason = "the process exited";
        } else if (wanted && !wanted(pid)) {
          outcome->wanted = false;
        } else {
          outcome->attachment = attach_process(pid, *images, *attach);
          if (outcome->attachment.status == python::AttachStatus::kAttached) {
            outcome->name = proc::comm_or_unknown(pid);
            if (describe)
              outcome->naming = describe(pid, outcome->attachment.version->str());
            if (modules) {
              auto loaded = unwind::ProcessModules::load(pid, *modules);
              if (loaded)
                outcome->modules =
                    std::make_shared<const unwind::ProcessModules>(std::move(*loaded));
            }
          } else if (outcome->attachment.status == python::AttachStatus::kRefused) {
            outcome->name = proc::comm_or_unknown(pid);
          }
        }
        return [this, key, outcome] { apply(key, outcome); };
      });
  p.attach_in_flight = posted;
  if (!posted) {
    p.state = ProcessState::kNotYet;
    if (p.reason.empty())
      p.reason = inspector_.refused(key) ? "its inspection stalled" : "its inspection is throttled";
  }
}

void ProcessTracker::write(TrackedProcess& p, const krait_proc_info& info) {
  if (!p.identity)
    return;
  krait_proc_info with_identity = info;
  with_identity.identity = *p.identity;
  if (auto r = sink_.set_process(static_cast<uint32_t>(p.pid), with_identity); !r)
    spdlog::debug("pid {}: {}", p.pid, r.error().message);
}

void ProcessTracker::ignore_for(TrackedProcess& p, uint64_t delay_ns, uint64_t now_ns) {
  krait_proc_info info{};
  info.mode = KRAIT_PROC_IGNORE;
  info.recheck_after_ns = now_ns + delay_ns;
  write(p, info);
}

// Writes what was decided about `p` into the sampler's map, once the
// process's identity is known (a scan result waits for its first sample).
void ProcessTracker::finish(TrackedProcess& p) {
  if (!p.identity) {
    p.result_unapplied = true;
    return;
  }
  p.result_unapplied = false;
  krait_proc_info info{};
  switch (p.state) {
    case ProcessState::kPython:
      info = p.attachment.info;
      break;
    case ProcessState::kRefused:
      info.mode = KRAIT_PROC_REFUSED;
      break;
    default:
      return;
  }
  info.generation = p.generation;
  write(p, info);
}

void ProcessTracker::apply(uint64_t key, std::shared_ptr<Outcome> outcome) {
  TrackedProcess* found = entry_key(key);
  if (!found)
    return;  // exited or replaced meanwhile
  TrackedProcess& p = *found;
  p.attach_in_flight = false;
  const uint64_t now = monotonic_ns();
  if (p.identity && outcome->start_ticks != 0 &&
      outcome->start_ticks != start_ticks_of(*p.identity)) {
    // The attach read another process than the one reported: the reported
    // one is gone and its pid taken. The one there now reports itself.
    retire(p.pid);
    return;
  }
  p.start_ticks = outcome->start_ticks;
  const pid_t pid = p.pid;
  python::Attachment& a = outcome->attachment;
  if (p.prepared && !scan_results_.contains(pid))
    scan_results_[pid] = outcome->wanted ? a.status : python::AttachStatus::kNotPython;
  if (!outcome->wanted) {
    ignore_for(p, options_.not_python_recheck_ns, now);
    retire(pid);
    return;
  }
  // Validation reads a process that keeps running: a thread list or a frame
  // read in the middle of its change (start-up, a call) fails once and
  // passes the next time. A layout is refused when it fails every time.
  const bool validate_again = a.status == python::AttachStatus::kRefused && a.validation_failed &&
                              p.failed_validations + 1 < kValidationAttempts;
  if (validate_again)
    a.status = python::AttachStatus::kNotYet;
  switch (a.status) {
    case python::AttachStatus::kGone:
      retire(pid);
      return;
    case python::AttachStatus::kNotPython:
      ignore_for(p, options_.not_python_recheck_ns, now);
      retire(pid);
      return;
    case python::AttachStatus::kNotYet:
      p.state = ProcessState::kNotYet;
      p.failed_validations += validate_again ? 1 : 0;
      p.reason = a.reason;
      p.attachment = std::move(a);
      // The next sample after the back-off reports the process again.
      ignore_for(p, not_yet_backoff_ns(p.retries), now);
      ++p.retries;
      spdlog::debug("pid {}: Python not ready yet ({}), retry #{}", pid, p.reason, p.retries);
      return;
    case python::AttachStatus::kRefused:
    case python::AttachStatus::kAttached:
      break;
  }

  decide(p, *outcome, now);
}

// An attach decided: attached (its samples are walked from now on) or
// refused, written into the sampler's map.
void ProcessTracker::decide(TrackedProcess& p, Outcome& outcome, uint64_t now) {
  const pid_t pid = p.pid;
  p.name = outcome.name.empty() ? proc::comm_or_unknown(pid) : outcome.name;
  p.generation = next_generation_++;
  p.attachment = std::move(outcome.attachment);
  if (p.attachment.status == python::AttachStatus::kAttached) {
    p.state = ProcessState::kPython;
    p.reason.clear();
    if (!p.memory)
      p.memory = std::make_shared<proc::ProcessMemory>(pid);
    p.attach_modules = outcome.modules;
    p.attached_ns = now;
    ++attached_;
    if (outcome.naming) {
      p.series = outcome.naming->series;
      p.extra_labels = outcome.naming->sample_labels;
    }
    spdlog::debug("pid {} ({}): Python {} from {}, offsets: {}", pid, p.name,
                  p.attachment.version->str(), p.attachment.image_path,
                  p.attachment.offsets_source);
    report(p, ProcessEvent::Kind::kAttached);
  } else {
    p.state = ProcessState::kRefused;
    p.reason = p.attachment.reason;
    spdlog::warn("pid {} ({}) is not profiled: {}", pid, p.name, p.reason);
    report(p, ProcessEvent::Kind::kRefused);
  }
  finish(p);
}

void ProcessTracker::on_notice(const inspect::Notice& notice) {
  TrackedProcess* found = entry_key(notice.key);
  if (!found)
    return;
  TrackedProcess& p = *found;
  if (p.name.empty())
    p.name = proc::comm_or_unknown(p.pid);  // comm is read without touching the process's memory
  if (notice.kind == inspect::Notice::Kind::kThrottled) {
    ++p.throttled;
    p.throttle_reason = notice.reason;
    spdlog::warn("pid {} ({}): {}", p.pid, p.name, notice.reason);
    if (p.attach_in_flight) {
      // The attach was dropped with the rest of its work: ask again later.
      p.attach_in_flight = false;
      p.state = ProcessState::kNotYet;
      p.reason = notice.reason;
      ignore_for(p, 5'000'000'000ull, monotonic_ns());
    }
    return;
  }
  // Stalled: the process is refused for good; its samples are counted, not
  // walked, and nothing of it is read again.
  spdlog::warn("pid {} ({}): {}", p.pid, p.name, notice.reason);
  p.attach_in_flight = false;
  if (p.generation == 0)
    p.generation = next_generation_++;
  p.state = ProcessState::kRefused;
  p.reason = notice.reason;
  report(p, ProcessEvent::Kind::kRefused);
  finish(p);
}

void ProcessTracker::report(const TrackedProcess& p, ProcessEvent::Kind kind) {
  if (!options_.on_process)
    return;
  ProcessEvent e{kind,   p.key, p.pid,
                 p.name, "",    kind == ProcessEvent::Kind::kRefused ? p.reason : ""};
  if (p.attachment.version)
    e.python_version = p.attachment.version->str();
  options_.on_process(e);
}

void ProcessTracker::prune_unsampled() {
  std::vector<pid_t> stale;
  for (const auto& [pid, key] : current_) {
    const TrackedProcess& p = processes_.at(key);
    if (p.identity || p.attach_in_flight || p.generation != 0)
      continue;
    if (read_start_ticks(pid) != p.start_ticks)
      stale.push_back(pid);
  }
  for (pid_t pid : stale)
    retire(pid);
}

std::vector<uint64_t> ProcessTracker::prune_exited() {
  std::vector<uint64_t> keys;
  for (auto it = processes_.begin(); it != processes_.end();) {
    if (it->second.state == ProcessState::kExited) {
      keys.push_back(it->first);
      it = processes_.erase(it);
    } else {
      ++it;
    }
  }
  return keys;
}

void ProcessTracker::set_hooks(std::function<bool(pid_t)> wanted,
                               std::function<ProcessNaming(pid_t, const std::string&)> describe) {
  options_.wanted = std::move(wanted);
  options_.describe = std::move(describe);
  // Every attached process is named again: those the new selection leaves
  // out feed no series from now on.
  for (auto& [key, p] : processes_) {
    if (p.state != ProcessState::kPython || !find_key(key))
      continue;
    const pid_t pid = p.pid;
    const std::string version = p.attachment.version ? p.attachment.version->str() : "";
    auto want = options_.wanted;
    auto desc = options_.describe;
    const uint64_t process_key = key;
    inspector_.post(key, "describe", [=, this](inspect::TaskContext&) -> inspect::Completion {
      // Gone or unreadable: the attach decides (the process is kept).
      const bool keep = !want || want(pid);
      std::optional<ProcessNaming> naming;
      if (keep && desc)
        naming = desc(pid, version);
      return [this, process_key, keep, naming] {
        TrackedProcess* p = entry_key(process_key);
        if (!p)
          return;
        if (!keep) {
          p->series = nullptr;
          p->extra_labels.clear();
        } else if (naming) {
          p->series = naming->series;
          p->extra_labels = naming->sample_labels;
        }
      };
    });
  }
}

inspect::KeyUsage ProcessTracker::usage(const TrackedProcess& p) const {
  return p.state == ProcessState::kExited ? p.inspection : inspector_.usage(p.key);
}

const TrackedProcess& ProcessTracker::adopt(TrackedProcess process) {
  TrackedProcess& p = fresh_entry(process.pid);
  const uint64_t key = p.key;
  p = std::move(process);
  p.key = key;
  if (p.state == ProcessState::kPython)
    ++attached_;
  return p;
}

}  // namespace krait::engine
