// ProcessTracker: which processes are Python, how each is attached, and the
// per-process state symbolization needs.
//
// It reacts to the sampler's events (a pid sampled that user space has not
// classified, exec, exit) and to the initial scan. Attaching reads the
// process (its maps, its files, its memory), so it runs as a task on the
// Inspector, never on the thread that drains the ring buffer; the result
// comes back as a completion on that thread and ends in the BPF `procs` map
// (through ProcessMapSink), so the sampler walks exactly the processes that
// passed validation.
//
// Identity: every `procs` entry is created by the sampler, for the
// incarnation (krait_proc_identity) it sampled; the tracker only updates
// entries, with the identity the sampler reported. A result for an
// incarnation that is gone (it exec'd or exited, its pid was reused) is
// dropped, and the sampler itself replaces any entry whose identity is not
// the sampled process's. The initial scan attaches ahead of the first
// sample; the result waits until that sample reports the process, and is
// used when the start time matches.
//
// Processes that were Python stay listed after they exit, for the summary;
// the tracker tells its retire listener (the pipeline) when one goes, so
// the state kept elsewhere under its key is freed too.
//
// Threading: owned and used by one thread, the run loop's (the ring buffer
// reader); hooks marked "worker" run on Inspector workers.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/sample_job.h"
#include "inspect/inspector.h"
#include "krait/abi.h"
#include "proc/memory.h"
#include "python/attach.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "util/clock.h"

namespace krait::engine {

// Where attach decisions go: the BPF `procs` map in production.
class ProcessMapSink {
 public:
  virtual ~ProcessMapSink() = default;
  // Updates the entry the sampler created for pid (info.identity must be
  // the one it reported). An Error when there is none (the process exited).
  virtual Result<void> set_process(uint32_t pid, const krait_proc_info& info) = 0;
};

enum class ProcessState : uint8_t {
  kPending,  // an attach is in flight, or prepared and waiting for the first sample
  kNotYet,   // Python not ready yet (or not readable now): tried again later
  kPython,
  kRefused,
  kExited,
};

// Daemon: where a process's samples go, decided on a worker (it reads
// /proc) by the naming hook.
struct ProcessNaming {
  SeriesRef series;               // null: its samples are not delivered
  profile::Labels sample_labels;  // labels of its own on every sample (container pid)
};

// One process incarnation as the tracker sees it: written by the tracker
// alone (others get it const), kept after exit for the summary. What the
// pipeline learns per process (code names, parked samples, module reloads,
// sample counts) is the pipeline's, under the same key.
struct TrackedProcess {
  uint64_t key = 0;  // unique per incarnation; the Inspector's key
  pid_t pid = 0;
  std::optional<krait_proc_identity> identity;  // as the sampler reported it
  uint64_t start_ticks = 0;  // /proc/PID/stat start time when attached (0: unknown)
  uint32_t generation = 0;
  ProcessState state = ProcessState::kPending;
  std::string name;    // /proc/PID/comm at attach
  std::string reason;  // kRefused / kNotYet: why
  python::Attachment attachment;
  int retries = 0;             // kNotYet attempts so far
  int failed_validations = 0;  // attempts whose layouts all failed validation
  bool attach_in_flight = false;
  bool prepared = false;  // attached by the initial scan
  // A prepared (scan) result is applied when the first sample reports the
  // process; until then it waits here.
  bool result_unapplied = false;
  // The Inspector throttled this process's work (times, and the last reason).
  uint64_t throttled = 0;
  std::string throttle_reason;
  // What reading the process cost (kept when it exits).
  inspect::KeyUsage inspection;

  // Daemon: the profile series this process feeds and labels of its own
  // (container pid...) that go on every sample; null/empty for a recording.
  SeriesRef series;
  profile::Labels extra_labels;

  // Reads of the process: a live process's memory, or a fixture (tests).
  std::shared_ptr<const proc::RemoteMemory> memory;
  // Mixed stacks: the executable mappings found when attaching, and when.
  // The pipeline keeps them current from there (it owns the reloads).
  std::shared_ptr<const unwind::ProcessModules> attach_modules;
  uint64_t attached_ns = 0;
};

// A Python process's lifecycle as a live view follows it: attached (its
// samples are walked), refused (with the reason), exited.
struct ProcessEvent {
  enum class Kind : uint8_t { kAttached, kRefused, kExited };
  Kind kind;
  uint64_t key = 0;  // the incarnation
  pid_t pid = 0;
  std::string name;            // comm
  std::string python_version;  // "" when unknown
  std::string reason;          // kRefused: why
};
using ProcessEventFn = std::function<void(const ProcessEvent&)>;

struct TrackerOptions {
  python::AttachOptions attach;
  // How a process is attached (runs on a worker); python::attach_process
  // unless a test replaces it.
  std::function<python::Attachment(pid_t, python::ImageCache&, const python::AttachOptions&)>
      attach_process;
  uint64_t not_python_recheck_ns = 10'000'000'000ull;
  bool native = false;                           // load the process's modules when attaching
  std::shared_ptr<unwind::ModuleCache> modules;  // native mode
  // Daemon hooks, both optional, both run on Inspector workers (they read
  // /proc): whether a process may be profiled at all (process selection),
  // and where an attached one's samples go.
  std::function<bool(pid_t)> wanted;
  std::function<ProcessNaming(pid_t, const std::string& python_version)> describe;
  // Lifecycle events of Python processes, on the tracker's thread.
  ProcessEventFn on_process;
};

class ProcessTracker {
 public:
  ProcessTracker(ProcessMapSink& sink, inspect::Inspector& inspector, TrackerOptions options);

  // The initial scan: attaches `pid` ahead of its first sample.
  void prepare(pid_t pid);
  // The sampler reported a process it has no entry for (or a stale one).
  void on_unknown(pid_t pid, const krait_proc_identity& identity);
  void on_exec(pid_t pid, const krait_proc_identity& identity);
  void on_exit(pid_t pid);
  // The Inspector stopped a process's work (throttled or stalled).
  void on_notice(const inspect::Notice& notice);
  // Forgets scan results of processes that exited before their first
  // sample (the sampler reports no exit for a pid it never saw).
  void prune_unsampled();

  // The current incarnation of pid, if tracked.
  const TrackedProcess* find(pid_t pid) const;
  // The incarnation with this key, if still current.
  const TrackedProcess* find_key(uint64_t key) const;
  // Registers a process decided elsewhere (tests, tools): it replaces any
  // current entry for its pid. Not written to the sink.
  const TrackedProcess& adopt(TrackedProcess process);
  // Called with the key of every incarnation that stops being current
  // (exit, exec, pid reuse, refusal for good): one listener, the owner of
  // what else is kept per process.
  void on_retire(std::function<void(uint64_t key)> listener) {
    retire_listener_ = std::move(listener);
  }

  // Every process seen that is or was Python, and those in flight, in
  // order of first sight.
  const std::map<uint64_t, TrackedProcess>& processes() const { return processes_; }

  uint64_t attached() const { return attached_; }
  // What the first attach of a scanned (prepare()d) pid found; nullopt
  // while it is in flight or for pids never scanned.
  std::optional<python::AttachStatus> scan_result(pid_t pid) const;
  // Whether an attach is in flight or prepared results wait for samples
  // (`krait record -p` waits for the named processes).
  bool settled(pid_t pid) const;
  // Forgets processes that exited (kept until now for a summary) and
  // returns their keys; the daemon prunes once per interval so churn does
  // not accumulate.
  std::vector<uint64_t> prune_exited();
  // Replaces the daemon hooks (configuration reload) and names every
  // attached process again with them.
  void set_hooks(std::function<bool(pid_t)> wanted,
                 std::function<ProcessNaming(pid_t, const std::string&)> describe);
  // A key for work that is not a tracked Python process (--all-processes).
  uint64_t new_key() { return next_key_++; }
  // What reading `p` has cost so far.
  inspect::KeyUsage usage(const TrackedProcess& p) const;

 private:
  struct Outcome;
  TrackedProcess* entry(pid_t pid);
  TrackedProcess* entry_key(uint64_t key);
  TrackedProcess& fresh_entry(pid_t pid);
  void retire(pid_t pid);
  void post_attach(TrackedProcess& p);
  void apply(uint64_t key, std::shared_ptr<Outcome> outcome);
  void decide(TrackedProcess& p, Outcome& outcome, uint64_t now);
  void write(TrackedProcess& p, const krait_proc_info& info);
  void ignore_for(TrackedProcess& p, uint64_t delay_ns, uint64_t now_ns);
  void finish(TrackedProcess& p);
  void report(const TrackedProcess& p, ProcessEvent::Kind kind);

  ProcessMapSink& sink_;
  inspect::Inspector& inspector_;
  TrackerOptions options_;
  std::shared_ptr<python::ImageCache> images_;
  std::shared_ptr<const python::AttachOptions> attach_options_;
  // Keyed by a sequence number so a reused pid gets a new entry.
  std::map<uint64_t, TrackedProcess> processes_;
  std::unordered_map<pid_t, uint64_t> current_;  // pid -> key in processes_
  uint64_t next_key_ = 1;
  uint32_t next_generation_ = 1;
  uint64_t attached_ = 0;
  std::unordered_map<pid_t, python::AttachStatus> scan_results_;
  std::function<void(uint64_t key)> retire_listener_;
};

// /proc/PID/stat's start time (field 22, clock ticks since boot); 0 when
// the process is gone. Ticks of a sampler identity: start_ns / 10 ms.
uint64_t read_start_ticks(pid_t pid);
uint64_t start_ticks_of(const krait_proc_identity& identity);

}  // namespace krait::engine
