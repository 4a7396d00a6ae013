// The aggregated profile: interned mappings, frames and label sets, and one
// count per distinct (stack, label set). The aggregator fills it; every
// exporter (pprof, folded text, Pyroscope) reads it.
//
// Ownership and threading: a Profile owns all its data and is not
// thread-safe. One owner (the pipeline thread) uses it at a time; hand it to
// an exporter only when no one is adding to it.
//
// Ids: mapping ids are 1-based (0 in Frame::mapping means "no mapping");
// FrameId and LabelSetId are 0-based indexes into frames() and label_sets().
// Ids are stable until clear(); merge() re-interns the other profile's data
// into this one's id space.
//
// Memory: proportional to the number of distinct mappings, frames, label sets
// and (stack, label set) pairs, never to the number of samples added.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace krait::profile {

enum class FrameKind : uint8_t {
  kPython,
  kNative,
  kKernel,
  kSynthetic,  // a placeholder the pipeline inserts: "[truncated]", "[unknown: read fault]", ...
};

// A native ELF mapping. The kernel is file "[kernel.kallsyms]".
struct Mapping {
  std::string file;
  std::string build_id;  // hex, as read from the ELF note; empty when unknown
  uint64_t start = 0;
  uint64_t limit = 0;  // one past the last byte
  uint64_t offset = 0;

  bool operator==(const Mapping&) const = default;
};

// One location: a function at a line (Python) or at an address (native,
// kernel). Two frames are the same frame when every field is equal.
struct Frame {
  FrameKind kind = FrameKind::kPython;
  std::string function;     // display name (Python: qualified name; native: demangled)
  std::string system_name;  // raw/mangled name; empty = same as function
  std::string file;         // source file; empty when unknown
  int64_t start_line = 0;   // first line of the function (Python co_firstlineno), 0 unknown
  int64_t line = 0;         // line executing, 0 unknown
  uint64_t address = 0;     // native/kernel instruction address (0 for Python)
  uint32_t mapping = 0;     // 1-based index into Profile::mappings(), 0 = none

  bool operator==(const Frame&) const = default;
};

struct MappingHash {
  size_t operator()(const Mapping& mapping) const;
};
struct FrameHash {
  size_t operator()(const Frame& frame) const;
};

using FrameId = uint32_t;
using LabelSetId = uint32_t;
// String labels ("pid" -> "1234"). Interned label sets are sorted by key,
// then value; duplicate keys are kept as given.
using Labels = std::vector<std::pair<std::string, std::string>>;

struct LabelsHash {
  size_t operator()(const Labels& labels) const;
};

struct ProfileMeta {
  int64_t start_time_unix_ns = 0;
  int64_t duration_ns = 0;
  int64_t period_ns = 0;              // CPU time one sample stands for
  std::vector<std::string> comments;  // free text: losses, versions, command line
  // Off-CPU and wall modes: samples carry the time their thread spent off
  // the CPU (Sample::off_cpu_ns), and a stack weighs its time, not its
  // count (see weight()). on_cpu: whether on-CPU samples were taken too.
  bool off_cpu = false;
  bool on_cpu = true;
};

class Profile {
 public:
  struct Sample {
    std::vector<FrameId> stack;  // leaf first
    LabelSetId labels = 0;
    uint64_t count = 0;       // on-CPU samples
    uint64_t off_cpu_ns = 0;  // time off the CPU
  };

  explicit Profile(ProfileMeta meta = {});
  // Movable; not copyable (the sample index points into owned storage). Use
  // merge() into an empty Profile to copy.
  Profile(Profile&&) noexcept = default;
  Profile& operator=(Profile&&) noexcept = default;
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  // Returns the 1-based id of `mapping`, adding it if new.
  uint32_t intern_mapping(const Mapping& mapping);
  // Returns the id of `frame`, adding it if new. `frame.mapping` must be 0 or
  // an id returned by intern_mapping() on this profile.
  FrameId intern_frame(const Frame& frame);
  // Sorts `labels` (key, then value) and returns the id of that set.
  LabelSetId intern_labels(Labels labels);

  // Adds `count` on-CPU samples and `off_cpu_ns` of off-CPU time to one
  // stack. Every id must come from this profile. Samples with equal (stack,
  // labels) share one entry; adding nothing is a no-op. Values saturate at
  // UINT64_MAX rather than wrap.
  void add_sample(std::span<const FrameId> stack_leaf_first, LabelSetId labels, uint64_t count = 1,
                  uint64_t off_cpu_ns = 0);

  const std::vector<Mapping>& mappings() const { return mappings_; }
  const std::vector<Frame>& frames() const { return frames_; }
  const std::vector<Labels>& label_sets() const { return label_sets_; }

  // One entry per distinct (stack, labels), in the order each was first
  // added: the same sequence of calls gives the same order on every run.
  std::vector<Sample> samples() const;
  size_t distinct_samples() const { return entries_.size(); }
  uint64_t total_count() const { return total_count_; }
  uint64_t total_off_cpu_ns() const { return total_off_cpu_ns_; }
  // What one sample weighs where a single number per stack is drawn: its
  // count, or with off-CPU time (meta().off_cpu) its time in nanoseconds,
  // on-CPU samples standing for one period each.
  uint64_t weight(const Sample& sample) const;
  // The unit of weight(): "samples" or "nanoseconds".
  const char* weight_unit() const { return meta_.off_cpu ? "nanoseconds" : "samples"; }

  ProfileMeta& meta() { return meta_; }
  const ProfileMeta& meta() const { return meta_; }

  // Adds every sample of `other` to this profile, re-interning its mappings,
  // frames and label sets. Meta is not merged. merge(*this) doubles counts.
  void merge(const Profile& other);
  // Drops samples and interned tables; keeps meta.
  void clear();

 private:
  struct Entry {
    std::vector<FrameId> stack;
    LabelSetId labels = 0;
    uint64_t count = 0;
    uint64_t off_cpu_ns = 0;
  };
  // Borrows the stack of an Entry (heap-allocated, so it never moves) or of
  // the caller during lookup, so adding a known stack allocates nothing.
  struct EntryView {
    std::span<const FrameId> stack;
    LabelSetId labels = 0;
  };
  struct EntryViewHash {
    size_t operator()(const EntryView& view) const;
  };
  struct EntryViewEqual {
    bool operator()(const EntryView& a, const EntryView& b) const;
  };

  ProfileMeta meta_;
  std::vector<Mapping> mappings_;
  std::unordered_map<Mapping, uint32_t, MappingHash> mapping_ids_;
  std::vector<Frame> frames_;
  std::unordered_map<Frame, FrameId, FrameHash> frame_ids_;
  std::vector<Labels> label_sets_;
  std::unordered_map<Labels, LabelSetId, LabelsHash> label_set_ids_;
  std::vector<std::unique_ptr<Entry>> entries_;  // first-added order
  std::unordered_map<EntryView, uint32_t, EntryViewHash, EntryViewEqual> entry_index_;
  uint64_t total_count_ = 0;
  uint64_t total_off_cpu_ns_ = 0;
};

}  // namespace krait::profile
