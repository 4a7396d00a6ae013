// StackBuilder: turns SampleJobs into profile stacks. In mixed mode it
// unwinds the copied user stack (DWARF CFI, libunwind), names native and
// kernel frames, and splices the Python frames into the native stack where
// the interpreter ran them: each native frame of the eval loop
// (_PyEval_EvalFrameDefault, PyEval_EvalFrameEx, their .cold parts) is
// replaced by the Python frames that C call owns, matched from the leaf.
// When the two stacks cannot be matched, the sample says so with a reason
// frame instead of guessing. The rule itself is merge_native.h (greenlets:
// the native stack ends at the greenlet's bootstrap, and the sample gets a
// "greenlet" label naming the greenlet's run function).
//
// Threading: owns the profiles while it runs; used by one thread (the
// builder thread, see BuilderThread); take_profiles() after the thread is
// joined. The ModuleCache is shared.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/job_queue.h"
#include "engine/merge_native.h"
#include "engine/sample_job.h"
#include "profile/profile.h"
#include "symbolize/kernel_symbols.h"
#include "symbolize/native_symbolizer.h"
#include "unwind/unwinder.h"
#include "util/lru_cache.h"
#include "util/result.h"

namespace krait::engine {

struct UnwindStats {
  uint64_t unwinds = 0;
  uint64_t reached_root = 0;              // ended at _start / clone / clone3
  std::map<std::string, uint64_t> stops;  // other ends, by reason
};

struct BuilderStats {
  uint64_t samples = 0;
  // Off-CPU and wall modes: samples taken as a thread left the CPU; blocks
  // whose end never came (the record was lost) or whose sample never came
  // (dropped), and open blocks let go at the cap.
  uint64_t off_cpu_samples = 0;
  uint64_t blocks_without_end = 0;
  uint64_t ends_without_block = 0;
  std::map<std::string, uint64_t> reasons;    // incomplete or unmatched stacks
  std::map<uint64_t, UnwindStats> unwinding;  // per process key
  // Mixed stacks: the caches behind naming native frames. native_frames:
  // profile frames per (file, address), every series and interval summed
  // (entries: those held now); symbols: the symbolizer's per-file address
  // caches; unwind_owners: the unwinder's record of libunwind's cache.
  CacheStats native_frames;
  CacheStats symbols;
  CacheStats unwind_owners;
};

struct BuilderOptions {
  bool native = false;  // unwind and merge native stacks
  bool kernel = true;   // name kernel frames (native only)
  size_t max_native_frames = 256;
  // Native addresses with their profile frames cached per series (LRU).
  size_t max_native_entries = 1'000'000;
};

// A finished interval's profile of one series.
struct SeriesProfile {
  SeriesRef series;  // null for a recording
  profile::Profile profile;
  int64_t start_ktime_ns = 0;
  int64_t end_ktime_ns = 0;
};

// Receives the profiles of an interval that ended (on the builder thread).
using IntervalSink = std::function<void(std::vector<SeriesProfile>)>;

class StackBuilder {
  // Lets create() use std::make_unique while no one else can construct one.
  struct Key {
    explicit Key() = default;
  };

 public:
  static Result<std::unique_ptr<StackBuilder>> create(BuilderOptions options);
  StackBuilder(Key, BuilderOptions options, unwind::Unwinder unwinder);
  // Adds a sample, or ends an interval (job.interval_end): the profiles of
  // every series go to the sink, and new ones start. An off-CPU sample is
  // held until its block ends (job.block_end), then added with that time.
  void add(const SampleJob& job);
  // The profiles gathered since the last interval end, taken out. Blocks
  // still open are charged up to `end_ktime_ns` and go on in the next.
  std::vector<SeriesProfile> take_profiles(int64_t end_ktime_ns);
  void set_interval_sink(IntervalSink sink) { sink_ = std::move(sink); }
  const BuilderStats& stats() const { return stats_; }

 private:
  struct NativeEntry {
    std::vector<profile::FrameId> frames;  // innermost (inlined) first
    bool eval = false;                     // the interpreter's eval loop
    bool greenlet_base = false;            // greenlet's bootstrap (merge_native.h)
  };
  struct NativeKey {
    uint64_t file_serial;
    uint64_t vaddr;
    uint64_t pc;  // the runtime address the location shows
    bool operator==(const NativeKey&) const = default;
  };
  struct NativeKeyHash {
    size_t operator()(const NativeKey& k) const {
      return (k.file_serial * 1000003u) ^ k.vaddr ^ (k.pc << 17);
    }
  };
  // A label set with the greenlet label added, holding what its key points to.
  struct GreenletLabels {
    LabelsRef labels;
    FrameRef root;
    profile::LabelSetId id = 0;
  };
  // One series' profile and the caches of ids into it.
  struct SeriesState {
    explicit SeriesState(size_t max_native_entries)
        : native(max_native_entries, std::numeric_limits<size_t>::max()) {}

    SeriesRef series;
    profile::Profile profile;
    std::unordered_map<const profile::Frame*, std::pair<FrameRef, profile::FrameId>> frames;
    std::unordered_map<const profile::Labels*, std::pair<LabelsRef, profile::LabelSetId>> labels;
    std::map<std::pair<const profile::Labels*, const profile::Frame*>, GreenletLabels>
        greenlet_labels;
    std::unordered_map<std::string, profile::FrameId> synthetic;
    LruCache<NativeKey, NativeEntry, NativeKeyHash> native;
    std::unordered_map<uint64_t, profile::FrameId> kernel;
    std::unordered_map<std::string, uint32_t> mappings;
  };

  // An off-CPU sample waiting for its thread to run again.
  struct OpenBlock {
    SeriesRef series;
    std::vector<profile::FrameId> stack;  // ids in the series' current profile
    profile::LabelSetId labels = 0;
    uint64_t start_ns = 0;    // the sample's ktime: pairs it with its end
    uint64_t charged_ns = 0;  // charged up to here (an interval cut)
    uint16_t weight = 1;
  };
  struct EarlyEnd {
    uint64_t start_ns = 0;
    uint64_t end_ns = 0;
    uint16_t weight = 1;
  };

  SeriesState& state_for(const SeriesRef& series);
  void open_block(SeriesState& st, const SampleJob& job, profile::LabelSetId labels);
  void end_block(const SampleJob& job);
  // Re-interns an open block's stack and labels from the profile of the
  // interval that ended into its series' new one.
  void carry_over(OpenBlock& block, const profile::Profile& old);
  profile::FrameId frame_id(SeriesState& st, const FrameRef& frame);
  profile::FrameId synthetic(SeriesState& st, const std::string& name);
  profile::FrameId intern(SeriesState& st, const profile::Frame& frame);
  profile::LabelSetId labels_id(SeriesState& st, const LabelsRef& labels);
  // `labels` and greenlet=<qualified name of `root`>, the greenlet's run function.
  profile::LabelSetId greenlet_labels_id(SeriesState& st, const LabelsRef& labels,
                                         const FrameRef& root);
  const NativeEntry& native_entry(SeriesState& st, const unwind::ProcessModules& modules,
                                  uint64_t pc);
  profile::FrameId kernel_frame(SeriesState& st, uint64_t ip);
  void merge_native(SeriesState& st, const SampleJob& job, const unwind::ProcessModules& modules,
                    std::vector<profile::FrameId>& out);
  void reason(SeriesState& st, std::vector<profile::FrameId>& out, const std::string& text);
  void refresh_cache_stats();

  BuilderOptions options_;
  unwind::Unwinder unwinder_;
  symbolize::NativeSymbolizer symbolizer_;
  // Loaded at the first kernel frame: a run whose samples have none never
  // reads /proc/kallsyms (some 5 MiB of text, ~0.1 s of CPU).
  const symbolize::KernelSymbols* kernel_symbols();
  symbolize::KernelSymbols kernel_;
  bool kernel_loaded_ = false;
  bool kernel_tried_ = false;
  unwind::UnwindResult unwound_;
  BuilderStats stats_;
  CacheStats retired_native_frames_;  // of the series of intervals that ended
  std::vector<profile::FrameId> stack_;
  // merge_native's scratch: per native frame its role and its span of
  // native_frames_ (offset, count); per Python frame its role.
  std::vector<NativeRole> native_roles_;
  std::vector<std::pair<size_t, size_t>> native_spans_;
  std::vector<profile::FrameId> native_frames_;
  std::vector<PythonRole> python_roles_;
  // Set by merge_native when the sample ran in a greenlet: its root frame.
  FrameRef greenlet_root_;
  std::map<const Series*, std::unique_ptr<SeriesState>> series_;
  int64_t interval_start_ns_ = 0;
  size_t frame_bytes_ = 0;  // names of the frames interned since the interval began
  IntervalSink sink_;
  std::unordered_map<uint32_t, OpenBlock> open_;       // by tid
  std::unordered_map<uint32_t, EarlyEnd> early_ends_;  // by tid
};

// Runs a StackBuilder on its own thread, fed by a JobQueue.
class BuilderThread {
 public:
  BuilderThread(StackBuilder& builder, JobQueue& queue);
  ~BuilderThread();  // closes the queue and joins
  void finish();     // closes the queue, processes what is left, joins

 private:
  StackBuilder& builder_;
  JobQueue& queue_;
  std::thread thread_;
};

}  // namespace krait::engine
