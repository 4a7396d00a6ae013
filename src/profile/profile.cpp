#include "profile/profile.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <string_view>

namespace krait::profile {
namespace {

// boost-style mixing keeps neighbouring small integers (line numbers, ids)
// from colliding when combined.
void hash_combine(size_t& seed, size_t value) {
  seed ^= value + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
}

size_t hash_string(std::string_view s) {
  return std::hash<std::string_view>{}(s);
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

}  // namespace

size_t MappingHash::operator()(const Mapping& m) const {
  size_t seed = hash_string(m.file);
  hash_combine(seed, hash_string(m.build_id));
  hash_combine(seed, std::hash<uint64_t>{}(m.start));
  hash_combine(seed, std::hash<uint64_t>{}(m.limit));
  hash_combine(seed, std::hash<uint64_t>{}(m.offset));
  return seed;
}

size_t FrameHash::operator()(const Frame& f) const {
  size_t seed = std::hash<uint8_t>{}(static_cast<uint8_t>(f.kind));
  hash_combine(seed, hash_string(f.function));
  hash_combine(seed, hash_string(f.system_name));
  hash_combine(seed, hash_string(f.file));
  hash_combine(seed, std::hash<int64_t>{}(f.start_line));
  hash_combine(seed, std::hash<int64_t>{}(f.line));
  hash_combine(seed, std::hash<uint64_t>{}(f.address));
  hash_combine(seed, std::hash<uint32_t>{}(f.mapping));
  return seed;
}

size_t LabelsHash::operator()(const Labels& labels) const {
  size_t seed = labels.size();
  for (const auto& [key, value] : labels) {
    hash_combine(seed, hash_string(key));
    hash_combine(seed, hash_string(value));
  }
  return seed;
}

size_t Profile::EntryViewHash::operator()(const EntryView& view) const {
  size_t seed = std::hash<uint32_t>{}(view.labels);
  for (FrameId id : view.stack)
    hash_combine(seed, std::hash<uint32_t>{}(id));
  return seed;
}

bool Profile::EntryViewEqual::operator()(const EntryView& a, const EntryView& b) const {
  return a.labels == b.labels && std::ranges::equal(a.stack, b.stack);
}

Profile::Profile(ProfileMeta meta) : meta_(std::move(meta)) {}

uint32_t Profile::intern_mapping(const Mapping& mapping) {
  auto [it, inserted] =
      mapping_ids_.try_emplace(mapping, static_cast<uint32_t>(mappings_.size() + 1));
  if (inserted)
    mappings_.push_back(mapping);
  return it->second;
}

FrameId Profile::intern_frame(const Frame& frame) {
  auto [it, inserted] = frame_ids_.try_emplace(frame, static_cast<FrameId>(frames_.size()));
  if (inserted)
    frames_.push_back(frame);
  return it->second;
}

LabelSetId Profile::intern_labels(Labels labels) {
  // A full (key, value) order makes the set canonical even with repeated keys.
  std::sort(labels.begin(), labels.end());
  auto it = label_set_ids_.find(labels);
  if (it != label_set_ids_.end())
    return it->second;
  const auto id = static_cast<LabelSetId>(label_sets_.size());
  label_sets_.push_back(labels);
  label_set_ids_.emplace(std::move(labels), id);
  return id;
}

void Profile::add_sample(std::span<const FrameId> stack_leaf_first, LabelSetId labels,
                         uint64_t count, uint64_t off_cpu_ns) {
  if (count == 0 && off_cpu_ns == 0)
    return;
  total_count_ = saturating_add(total_count_, count);
  total_off_cpu_ns_ = saturating_add(total_off_cpu_ns_, off_cpu_ns);
  auto it = entry_index_.find(EntryView{stack_leaf_first, labels});
  if (it != entry_index_.end()) {
    Entry& entry = *entries_[it->second];
    entry.count = saturating_add(entry.count, count);
    entry.off_cpu_ns = saturating_add(entry.off_cpu_ns, off_cpu_ns);
    return;
  }
  auto entry = std::make_unique<Entry>(
      Entry{{stack_leaf_first.begin(), stack_leaf_first.end()}, labels, count, off_cpu_ns});
  entry_index_.emplace(EntryView{entry->stack, labels}, static_cast<uint32_t>(entries_.size()));
  entries_.push_back(std::move(entry));
}

std::vector<Profile::Sample> Profile::samples() const {
  std::vector<Sample> out;
  out.reserve(entries_.size());
  for (const auto& entry : entries_)
    out.push_back(Sample{entry->stack, entry->labels, entry->count, entry->off_cpu_ns});
  return out;
}

uint64_t Profile::weight(const Sample& sample) const {
  if (!meta_.off_cpu)
    return sample.count;
  const uint64_t period = meta_.period_ns > 0 ? static_cast<uint64_t>(meta_.period_ns) : 0;
  const uint64_t on_cpu =
      period != 0 && sample.count > UINT64_MAX / period ? UINT64_MAX : sample.count * period;
  return saturating_add(on_cpu, sample.off_cpu_ns);
}

void Profile::merge(const Profile& other) {
  if (&other == this) {
    // Re-interning our own tables would read them while growing them.
    total_count_ = 0;
    total_off_cpu_ns_ = 0;
    for (auto& entry : entries_) {
      entry->count = saturating_add(entry->count, entry->count);
      entry->off_cpu_ns = saturating_add(entry->off_cpu_ns, entry->off_cpu_ns);
      total_count_ = saturating_add(total_count_, entry->count);
      total_off_cpu_ns_ = saturating_add(total_off_cpu_ns_, entry->off_cpu_ns);
    }
    return;
  }
  std::vector<uint32_t> mapping_map(other.mappings_.size() + 1, 0);
  for (size_t i = 0; i < other.mappings_.size(); ++i)
    mapping_map[i + 1] = intern_mapping(other.mappings_[i]);

  std::vector<FrameId> frame_map(other.frames_.size());
  for (size_t i = 0; i < other.frames_.size(); ++i) {
    Frame frame = other.frames_[i];
    frame.mapping = frame.mapping < mapping_map.size() ? mapping_map[frame.mapping] : 0;
    frame_map[i] = intern_frame(frame);
  }

  std::vector<LabelSetId> labels_map(other.label_sets_.size());
  for (size_t i = 0; i < other.label_sets_.size(); ++i)
    labels_map[i] = intern_labels(other.label_sets_[i]);

  std::vector<FrameId> stack;
  for (const auto& entry : other.entries_) {
    stack.clear();
    for (FrameId id : entry->stack)
      stack.push_back(frame_map[id]);
    add_sample(stack, labels_map[entry->labels], entry->count, entry->off_cpu_ns);
  }
}

void Profile::clear() {
  mappings_.clear();
  mapping_ids_.clear();
  frames_.clear();
  frame_ids_.clear();
  label_sets_.clear();
  label_set_ids_.clear();
  entry_index_.clear();
  entries_.clear();
  total_count_ = 0;
  total_off_cpu_ns_ = 0;
}

}  // namespace krait::profile
