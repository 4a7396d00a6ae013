// A cache bounded by entries and by bytes, evicting the least recently used
// entry first, with hit, miss and eviction counters for reports.
//
// Every cache that profiled processes can fill goes through this: a process
// decides how many keys it makes (code objects, addresses, files), so each
// such cache needs a bound that holds whatever the process does, and the
// bound's effect must be visible (a cache that evicts all the time shows it).
//
// The byte size of an entry is what the caller says it is (its keys and
// values' heap data, roughly); a single entry larger than the byte bound is
// still kept, alone.
//
// Threading: none; one owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <utility>

namespace krait {

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  size_t entries = 0;
  size_t bytes = 0;

  CacheStats& operator+=(const CacheStats& other) {
    hits += other.hits;
    misses += other.misses;
    evictions += other.evictions;
    entries += other.entries;
    bytes += other.bytes;
    return *this;
  }
};

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class LruCache {
 public:
  LruCache(size_t max_entries, size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}
  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;
  LruCache(LruCache&&) noexcept = default;
  LruCache& operator=(LruCache&&) noexcept = default;

  // The value of `key`, now the most recently used; nullptr (a miss)
  // when absent. Counts a hit or a miss.
  Value* find(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++stats_.misses;
      return nullptr;
    }
    ++stats_.hits;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->value;
  }

  // The same without counting or reordering.
  Value* peek(const Key& key) {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &it->second->value;
  }

  // Inserts or replaces `key`, then evicts least recently used entries
  // until both bounds hold again (never the entry just inserted).
  Value& insert(const Key& key, Value value, size_t bytes) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      stats_.bytes -= it->second->bytes;
      it->second->value = std::move(value);
      it->second->bytes = bytes;
      order_.splice(order_.begin(), order_, it->second);
    } else {
      order_.push_front(Node{key, std::move(value), bytes});
      index_.emplace(key, order_.begin());
    }
    stats_.bytes += bytes;
    stats_.entries = index_.size();
    shrink();
    return order_.front().value;
  }

  // Changes the recorded size of an entry that grew or shrank.
  void resize(const Key& key, size_t bytes) {
    auto it = index_.find(key);
    if (it == index_.end())
      return;
    stats_.bytes = stats_.bytes - it->second->bytes + bytes;
    it->second->bytes = bytes;
    shrink();
  }

  bool erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end())
      return false;
    stats_.bytes -= it->second->bytes;
    order_.erase(it->second);
    index_.erase(it);
    stats_.entries = index_.size();
    return true;
  }

  void clear() {
    index_.clear();
    order_.clear();
    stats_.bytes = 0;
    stats_.entries = 0;
  }

  size_t size() const { return index_.size(); }
  size_t bytes() const { return stats_.bytes; }
  const CacheStats& stats() const { return stats_; }

  // Calls f(key, value) for every entry, most recently used first.
  template <typename F>
  void for_each(F&& f) {
    for (auto& node : order_)
      f(node.key, node.value);
  }

 private:
  struct Node {
    Key key;
    Value value;
    size_t bytes;
  };
  void shrink() {
    while (order_.size() > 1 && (order_.size() > max_entries_ || stats_.bytes > max_bytes_)) {
      Node& last = order_.back();
      stats_.bytes -= last.bytes;
      index_.erase(last.key);
      order_.pop_back();
      ++stats_.evictions;
    }
    stats_.entries = index_.size();
  }

  size_t max_entries_;
  size_t max_bytes_;
  std::list<Node> order_;  // most recently used first
  std::unordered_map<Key, typename std::list<Node>::iterator, Hash> index_;
  CacheStats stats_;
};

}  // namespace krait
