// Pipeline: the reader thread's half of turning sampler events into a
// profile.
//
// Each sample is attributed to its process incarnation (the generation the
// BPF side walked with) and its Python frames are named from the process's
// code names: what the sampler captured when it first saw each code object
// (a capture record reaches the ring before the first sample that needs
// it), completed by reads of the live object where the capture is not
// enough (a cut name, a line past the captured part of the line table, a
// method's class before 3.11). Those reads run on the Inspector: a sample
// that waits for one is parked (bounded per process and in all) and sent
// on when the read completes, or after kParkTimeout with what is known.
// The rest (native unwinding, symbolization, merging, aggregation) is a
// SampleJob for the StackBuilder on its own thread, behind a bounded queue,
// so the reader never stalls. Nothing is dropped silently: samples that
// lose frames carry a synthetic frame naming the reason and are counted per
// process (ProcessStats) or here (PipelineStats).
//
// Code: pipeline.cpp (events, samples, labels, native material),
// python_names.cpp (naming Python frames, parking), other_processes.cpp
// (--all-processes).
//
// Threading: one thread, the run loop's (ring buffer reader), which also
// runs the Inspector's completions.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/job_queue.h"
#include "engine/process_tracker.h"
#include "engine/sample_job.h"
#include "events/ring_reader.h"
#include "inspect/inspector.h"
#include "python/code_reader.h"
#include "unwind/module_cache.h"
#include "util/lru_cache.h"

namespace krait::engine {

struct ProcessStats {
  uint64_t samples = 0;          // every sample record of the process
  uint64_t off_cpu_samples = 0;  // of those, taken as a thread left the CPU
  std::array<uint64_t, KRAIT_PY_STATUS_COUNT> by_status{};
  uint64_t truncated = 0;
  uint64_t unsymbolized_frames = 0;  // no name at all: gone before it could be read
  // The code object could not be read when its frame needed it, and what
  // the sampler captured at first sight did not hold it whole for this
  // frame (a cut name, or no line past the captured part of the line table).
  uint64_t frames_from_capture = 0;
  // Named from what was known when the frame's read had not finished in
  // time (the process's work throttled, stalled or very late).
  uint64_t frames_named_early = 0;
  uint64_t samples_parked = 0;  // held until their names were read
};

// What the pipeline knows of one code object (address + token).
struct CodeEntry {
  std::shared_ptr<const python::CodeInfo> info;  // null: nothing known yet
  uint32_t lines_upto = UINT32_MAX;              // info->lines answer offsets below this
  bool names_complete = true;
  bool method_pending = false;  // before 3.11: its class is being looked up
  bool reading = false;         // a read is in flight
  bool settled = false;         // no better answer will come
  bool from_capture = false;    // settled on the capture: the object could not be read
  uint64_t frame = 0;           // a frame that ran it (for the method class)
};

struct CodeKey {
  uint64_t address;
  uint32_t token;
  bool operator==(const CodeKey&) const = default;
};
struct CodeKeyHash {
  size_t operator()(const CodeKey& k) const { return k.address * 31 + k.token; }
};

// Per-process code-name cache bounds.
inline constexpr size_t kMaxCodesPerProcess = 200'000;
inline constexpr size_t kMaxCodeBytesPerProcess = size_t{32} << 20;

// A sample held until the names of its frames are read.
struct ParkedSample {
  SampleJob job;  // complete but for job.python
  std::vector<krait_py_frame> frames;
  uint64_t parked_ns = 0;

  size_t bytes() const { return job.bytes() + frames.size() * sizeof(krait_py_frame); }
};

struct PipelineStats {
  uint64_t samples = 0;        // sample records received
  uint64_t stale_samples = 0;  // from a process incarnation no longer tracked
  uint64_t queue_full = 0;     // dropped: the stack builder fell behind
  uint64_t exec_events = 0;
  uint64_t exit_events = 0;
  uint64_t unknown_events = 0;
  uint64_t code_captures = 0;
  uint64_t block_ends = 0;      // off-CPU blocks that ended
  uint64_t native_samples = 0;  // --all-processes: samples of processes that are not Python
  uint64_t unwanted_native_samples = 0;  // of those, from processes other_series refused
  uint64_t parked = 0;                   // samples held for a read, in all
  uint64_t parked_timeouts = 0;          // released after kParkTimeout with what was known
  uint64_t park_full = 0;                // could not be held (caps): named with what was known
  // krait_sample.cost_ns of walked samples when cost measurement is on
  // (capped at kMaxCostSamples; the first ones are kept).
  std::vector<uint32_t> sampler_cost_ns;
  CacheStats frame_cache;
};

inline constexpr size_t kMaxCostSamples = 1'000'000;

// --all-processes: the series of a process that is not Python, from its pid
// and name, or null when its samples are not wanted. Runs on an Inspector
// worker (it may read /proc).
using OtherSeriesFn = std::function<SeriesRef(pid_t pid, const std::string& name)>;

struct PipelineOptions {
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  bool native = false;  // mixed stacks: jobs carry the native material
  // Off-CPU and wall modes: every sample is labelled state=on-cpu|off-cpu,
  // and off CPU reason=sleep|io|lock|gil|runnable|other.
  bool state_labels = false;
  OtherSeriesFn other_series;  // unset: every such process in the default series
};

// Synthetic frame names, also used by tests and the summary.
std::string_view py_status_description(uint32_t status);

// How long a sample may wait for a read before it goes on with what is known.
inline constexpr uint64_t kParkTimeoutNs = 2'000'000'000;
inline constexpr size_t kMaxParkedPerProcess = 4096;
inline constexpr size_t kMaxParkedBytesPerProcess = size_t{32} << 20;
inline constexpr size_t kMaxParkedBytes = size_t{128} << 20;

class Pipeline final : public events::EventHandler {
 public:
  // `modules` is needed in native mode only.
  Pipeline(ProcessTracker& tracker, inspect::Inspector& inspector, JobQueue& queue,
           PipelineOptions options, std::shared_ptr<unwind::ModuleCache> modules = nullptr);

  void on_sample(const events::SampleView& sample) override;
  void on_exec(const krait_proc_event& event) override;
  void on_exit(const krait_proc_event& event) override;
  void on_unknown_process(const krait_proc_event& event) override;
  void on_code_capture(const krait_code_event& event) override;
  void on_linetable_capture(const krait_linetable_event& event,
                            std::span<const uint8_t> bytes) override;
  void on_block_end(const krait_block_end& event) override;

  // Sends on parked samples whose wait is over; the run loop calls it at
  // every turn (after the Inspector's completions).
  void tick(uint64_t now_ns);
  // Sends on every parked sample with what is known (stopping).
  void release_all();
  // The Inspector stopped work of a process that is not Python.
  void on_notice(const inspect::Notice& notice);

  const PipelineStats& stats();
  // What the samples of one process incarnation showed (zero when none
  // came); kept after the process exits, until forget().
  ProcessStats process_stats(uint64_t key) const;
  // Whether the names, parked samples and modules of `key` are still held
  // (freed when the tracker retires the process).
  bool holds_names(uint64_t key) const;
  size_t parked_samples(uint64_t key) const;
  // Drops what is kept of processes the tracker forgot (prune_exited()).
  void forget(std::span<const uint64_t> keys);
  // Drops the caches of named frames and labels (they are rebuilt on use)
  // and the module files no live process maps: the daemon calls it per
  // interval so processes that came and went leave nothing behind.
  void prune_caches();
  // Asks other_series again for every process that is not Python, at its
  // next sample (configuration reload).
  void rename_others();
  void set_other_series(OtherSeriesFn other_series) {
    options_.other_series = std::move(other_series);
  }

 private:
  // --all-processes: a process that is not Python.
  struct OtherProcess {
    uint64_t key = 0;
    std::string name;
    bool named = false;  // other_series answered (or there is none)
    bool naming = false;
    bool wanted = true;
    SeriesRef series;
    std::shared_ptr<ModulesSlot> modules;
    uint64_t modules_loaded_ns = 0;
    bool modules_loading = false;
    std::deque<ParkedSample> parked;
    size_t parked_bytes = 0;
  };
  // What the pipeline keeps of one Python process: its stats for the
  // summary, and while it is current, what naming its frames needs.
  struct PerProcess {
    ProcessStats stats;
    std::unique_ptr<LruCache<CodeKey, CodeEntry, CodeKeyHash>> codes;  // null once retired
    std::deque<ParkedSample> parked;
    size_t parked_bytes = 0;
    std::shared_ptr<ModulesSlot> modules;  // mixed stacks
    uint64_t modules_loaded_ns = 0;
    bool modules_loading = false;
  };
  // Whether `p` is attached; its naming state in `pp` is made at the first
  // use (one hash lookup per sample: the caller's).
  bool ready_to_name(const TrackedProcess& p, PerProcess& pp);
  PerProcess* current(uint64_t key);
  void retired(uint64_t key);
  FrameRef python_frame(const TrackedProcess& p, PerProcess& pp, const krait_py_frame& frame,
                        bool best_effort, bool& waiting);
  FrameRef named_frame(const TrackedProcess& p, PerProcess& pp, const CodeEntry& entry,
                       const krait_py_frame& frame, bool final_name);
  FrameRef synthetic_frame(const std::string& name);
  void request_read(const TrackedProcess& p, const CodeKey& key, CodeEntry& entry);
  void apply_read(uint64_t process_key, CodeKey key, std::shared_ptr<const python::CodeInfo> info,
                  std::string method_class, bool read_ok);
  LabelsRef labels_for(uint64_t key, int pid, const std::string& process_name,
                       const std::string* python_version, uint32_t tid, const char* comm,
                       uint16_t py_flags, const profile::Labels* extra = nullptr,
                       const krait_sample* state = nullptr);
  void request_modules(uint64_t key, pid_t pid, std::shared_ptr<ModulesSlot> slot, bool& loading);
  void add_native(const events::SampleView& view, SampleJob& job,
                  const std::shared_ptr<ModulesSlot>& slot, uint64_t& loaded_ns, uint64_t key,
                  pid_t pid, bool& loading);
  // Names the frames of a Python sample; false when it must wait.
  bool name_frames(const TrackedProcess& p, PerProcess& pp, SampleJob& job,
                   std::span<const krait_py_frame> frames, bool best_effort);
  // Whether a process holding `held` samples of `held_bytes` may park one
  // more of `bytes` (its caps and the caps of all).
  bool room_to_park(size_t held, size_t held_bytes, size_t bytes) const;
  void park(const TrackedProcess& p, PerProcess& pp, SampleJob job,
            std::span<const krait_py_frame> frames);
  void release_parked(const TrackedProcess& p, PerProcess& pp, uint64_t now_ns, bool all);
  // Sends on the parked samples of the current incarnation of `key`, if any.
  void release_key(uint64_t key, uint64_t now_ns, bool all);
  void release_other(OtherProcess& other);
  void on_other_sample(const events::SampleView& view);
  void submit(SampleJob job);

  struct FrameKey {
    uint32_t generation;
    uint32_t token;
    uint64_t code;
    uint32_t instr;
    bool operator==(const FrameKey&) const = default;
  };
  struct FrameKeyHash {
    size_t operator()(const FrameKey& k) const {
      return ((k.code * 1000003u) ^ k.token) * 31 + k.instr + (uint64_t{k.generation} << 40);
    }
  };

  ProcessTracker& tracker_;
  inspect::Inspector& inspector_;
  JobQueue& queue_;
  PipelineOptions options_;
  std::shared_ptr<unwind::ModuleCache> module_cache_;
  PipelineStats stats_;
  LruCache<FrameKey, FrameRef, FrameKeyHash> frames_;
  std::unordered_map<std::string, FrameRef> synthetic_;
  LruCache<std::string, LabelsRef> labels_;
  std::unordered_map<uint64_t, PerProcess> processes_;  // by tracker key
  std::unordered_map<int, OtherProcess> others_;
  size_t parked_bytes_ = 0;         // all processes
  std::set<uint64_t> parked_keys_;  // processes with parked samples
  std::set<uint64_t> dirty_;        // ... and new names since the last tick
};

}  // namespace krait::engine
