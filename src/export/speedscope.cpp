// speedscope JSON writer; see speedscope.h.
#include "export/speedscope.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "export/frame_names.h"
#include "util/json_writer.h"

namespace krait::exporter {
namespace {

using profile::FrameKind;

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

int64_t weight_of(uint64_t count, int64_t period_ns) {
  const int64_t c =
      count > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(count);
  if (period_ns <= 0)
    return c;
  int64_t product = 0;
  return __builtin_mul_overflow(c, period_ns, &product) ? INT64_MAX : product;
}

struct ShownFrame {
  std::string name;
  std::string file;
  int64_t line = 0;
  auto operator<=>(const ShownFrame&) const = default;
};

ShownFrame shown(const profile::Profile& profile, const profile::Frame& f) {
  ShownFrame s{frame_display_name(profile, f), frame_display_file(profile, f),
               f.line > 0 ? f.line : 0};
  if (f.kind == FrameKind::kKernel)
    s.name += "_[k]";
  return s;
}

// Speedscope frame indexes, assigned as samples first use the frames.
class FrameTable {
 public:
  explicit FrameTable(const profile::Profile& profile)
      : profile_(profile), by_id_(profile.frames().size(), kUnassigned) {}

  uint32_t index(profile::FrameId id) {
    uint32_t& slot = by_id_.at(id);
    if (slot == kUnassigned) {
      ShownFrame s = shown(profile_, profile_.frames()[id]);
      auto [it, inserted] = by_shown_.try_emplace(s, static_cast<uint32_t>(frames_.size()));
      if (inserted)
        frames_.push_back(std::move(s));
      slot = it->second;
    }
    return slot;
  }
  const std::vector<ShownFrame>& frames() const { return frames_; }

 private:
  static constexpr uint32_t kUnassigned = UINT32_MAX;
  const profile::Profile& profile_;
  std::vector<uint32_t> by_id_;
  std::map<ShownFrame, uint32_t> by_shown_;
  std::vector<ShownFrame> frames_;
};

struct Thread {
  std::string title;
  std::map<std::vector<uint32_t>, uint64_t> stacks;  // root first -> count
  int64_t total = 0;                                 // sum of weights, saturating
};

std::string thread_profile_name(const profile::Labels& labels) {
  const std::string process = process_title(labels);
  const std::string thread = thread_title(labels);
  if (process.empty() && thread.empty())
    return "[unlabelled]";
  if (process.empty() || thread.empty())
    return process + thread;
  return process + " / " + thread;
}

}  // namespace

std::string encode_speedscope(const profile::Profile& profile, std::string_view title) {
  // Off-CPU and wall profiles weigh stacks in nanoseconds already.
  const int64_t period = profile.meta().off_cpu ? 1 : profile.meta().period_ns;
  FrameTable frames(profile);
  std::map<std::string, Thread> by_title;
  std::vector<uint32_t> stack;
  for (const auto& sample : profile.samples()) {
    std::string name = thread_profile_name(profile.label_sets().at(sample.labels));
    Thread& thread = by_title[name];
    if (thread.title.empty())
      thread.title = std::move(name);
    stack.clear();
    for (auto it = sample.stack.rbegin(); it != sample.stack.rend(); ++it)
      stack.push_back(frames.index(*it));
    uint64_t& count = thread.stacks[stack];
    count = saturating_add(count, profile.weight(sample));
  }
  std::vector<Thread*> threads;
  for (auto& [name, thread] : by_title) {
    for (const auto& [s, count] : thread.stacks) {
      const int64_t w = weight_of(count, period);
      thread.total = thread.total > INT64_MAX - w ? INT64_MAX : thread.total + w;
    }
    threads.push_back(&thread);
  }
  std::stable_sort(threads.begin(), threads.end(),
                   [](const Thread* a, const Thread* b) { return a->total > b->total; });

  JsonWriter w;
  w.begin_object();
  w.key("$schema").value("https://www.speedscope.app/file-format-schema.json");
  w.key("name").value(title);
  w.key("exporter").value("krait");
  w.key("activeProfileIndex").value(int64_t{0});
  w.key("shared").begin_object().key("frames").begin_array();
  for (const auto& f : frames.frames()) {
    w.begin_object().key("name").value(f.name);
    if (!f.file.empty())
      w.key("file").value(f.file);
    if (f.line > 0)
      w.key("line").value(f.line);
    w.end_object();
  }
  w.end_array().end_object();
  w.key("profiles").begin_array();
  for (const Thread* thread : threads) {
    w.begin_object();
    w.key("type").value("sampled");
    w.key("name").value(thread->title);
    w.key("unit").value(period > 0 ? "nanoseconds" : "none");
    w.key("startValue").value(int64_t{0});
    w.key("endValue").value(thread->total);
    w.key("samples").begin_array();
    for (const auto& [s, count] : thread->stacks) {
      w.begin_array();
      for (uint32_t index : s)
        w.value(static_cast<int64_t>(index));
      w.end_array();
    }
    w.end_array();
    w.key("weights").begin_array();
    for (const auto& [s, count] : thread->stacks)
      w.value(weight_of(count, period));
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.str() + "\n";
}

}  // namespace krait::exporter
