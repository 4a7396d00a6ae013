// ProcessTracker: which processes are Python, how each is attached, and the
// per-process state symbolization needs.
//
// It reacts to the sampler's events (exec, exit, "unknown pid sampled") and
// to the initial scan; every decision ends in the BPF `procs` map (through
// ProcessMapSink) so the sampler walks exactly the processes that passed
// validation. Processes that were Python stay listed after they exit, for
// the summary, but their caches are freed.
//
// Threading: owned and used by the pipeline thread only.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "krait/abi.h"
#include "proc/memory.h"
#include "python/attach.h"
#include "python/code_reader.h"
#include "record/sample_job.h"
#include "unwind/process_modules.h"

namespace krait::record {

// Where attach decisions go: the BPF `procs` map in production.
class ProcessMapSink {
 public:
  virtual ~ProcessMapSink() = default;
  virtual Result<void> set_process(uint32_t pid, const krait_proc_info& info) = 0;
  virtual void remove_process(uint32_t pid) = 0;
};

enum class ProcessState : uint8_t { kNotYet, kPython, kRefused, kExited };

struct ProcessStats {
  uint64_t samples = 0;  // every sample record of the process
  std::array<uint64_t, KRAIT_PY_STATUS_COUNT> by_status{};
  uint64_t truncated = 0;
  uint64_t unsymbolized_frames = 0;  // code objects gone or unreadable
  uint64_t frames_from_capture = 0;  // code object gone, named from the sampler's capture (no line)
};

struct TrackedProcess {
  pid_t pid = 0;
  uint32_t generation = 0;
  ProcessState state = ProcessState::kNotYet;
  std::string name;    // /proc/PID/comm at attach
  std::string reason;  // kRefused / kNotYet: why
  python::Attachment attachment;
  ProcessStats stats;
  int retries = 0;             // kNotYet attempts so far
  int failed_validations = 0;  // attempts whose layouts all failed validation
  // Daemon: the profile series this process feeds and labels of its own
  // (container pid...) that go on every sample; null/empty for a recording.
  SeriesRef series;
  profile::Labels extra_labels;

  // Symbolization caches, keyed by what the sample carries; freed at exit.
  struct CodeKey {
    uint64_t address;
    uint32_t token;
    bool operator==(const CodeKey&) const = default;
  };
  struct CodeKeyHash {
    size_t operator()(const CodeKey& k) const { return k.address * 31 + k.token; }
  };
  std::unordered_map<CodeKey, std::optional<python::CodeInfo>, CodeKeyHash> codes;
  // Names the sampler captured at first sight, used when the live read fails.
  std::unordered_map<CodeKey, python::CodeInfo, CodeKeyHash> captured;
  // Before 3.11: the class defining a method, found when it was captured.
  std::unordered_map<CodeKey, std::string, CodeKeyHash> method_classes;
  std::unique_ptr<proc::RemoteMemory> memory;
  // Mixed stacks: the process's executable mappings, reloaded when a sample
  // runs code outside them (dlopen).
  std::shared_ptr<const unwind::ProcessModules> modules;
  uint64_t modules_loaded_ns = 0;
};

struct TrackerOptions {
  python::AttachOptions attach;
  bool listed_only = false;
  uint64_t not_python_recheck_ns = 10'000'000'000ull;
  // Daemon hooks, both optional. `wanted`: whether a process may be
  // profiled at all (process selection), asked before attaching.
  // `describe`: fills series and extra_labels of a process just attached.
  std::function<bool(pid_t)> wanted;
  std::function<void(TrackedProcess&)> describe;
};

class ProcessTracker {
 public:
  ProcessTracker(ProcessMapSink& sink, TrackerOptions options);

  // Looks at a process now (scan, unknown-pid report, exec) and records the
  // outcome in the sink. `now_ns` is CLOCK_MONOTONIC (bpf_ktime_get_ns).
  python::AttachStatus classify(pid_t pid, uint64_t now_ns);
  void on_exec(pid_t pid, uint64_t now_ns);
  void on_exit(pid_t pid);

  // The current incarnation of pid, if Python (attached or refused).
  TrackedProcess* find(pid_t pid);
  // Registers a process decided elsewhere (tests, tools): it replaces any
  // current entry for its pid. Not written to the sink.
  TrackedProcess& adopt(TrackedProcess process);

  // Every Python process seen, in order of first sight.
  const std::map<uint64_t, TrackedProcess>& processes() const { return processes_; }

  uint64_t attached() const { return attached_; }
  // Forgets processes that exited (kept until now for a summary); the
  // daemon calls it once per interval so churn does not accumulate.
  size_t prune_exited();
  // Replaces the daemon hooks (configuration reload).
  void set_hooks(std::function<bool(pid_t)> wanted, std::function<void(TrackedProcess&)> describe);

 private:
  TrackedProcess& fresh_entry(pid_t pid);
  void retire(pid_t pid);

  ProcessMapSink& sink_;
  TrackerOptions options_;
  python::ImageCache images_;
  // Keyed by a sequence number so a reused pid gets a new entry.
  std::map<uint64_t, TrackedProcess> processes_;
  std::unordered_map<pid_t, uint64_t> current_;  // pid -> key in processes_
  uint64_t next_key_ = 1;
  uint32_t next_generation_ = 1;
  uint64_t attached_ = 0;
};

}  // namespace krait::record
