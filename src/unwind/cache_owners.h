// Which (file, load bias) filled libunwind's cache at each process address.
//
// libunwind caches decoded CFI by process address alone, but one Unwinder
// serves many processes, where one address can hold different code. Every
// address that may be in that cache is recorded here with the owner that
// filled it; meeting it with another owner means libunwind's cache must be
// flushed before the address is unwound.
//
// The record is an LruCache bounded by entries, but it is never trimmed one
// entry at a time: an address dropped from it may still be in libunwind's
// cache, and libunwind can only flush its whole cache (unw_flush_cache
// ignores its range). So reaching the bound flushes libunwind and forgets
// every address at once, as a conflict does; keeping the other entries
// after a flush would only hold stale owners and make every later new
// address flush again.
//
// Threading: none; one owner (the Unwinder's state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "util/lru_cache.h"

namespace krait::unwind {

struct CacheOwner {
  uint64_t serial = 0;  // ModuleFile::serial()
  uint64_t bias = 0;
  bool operator==(const CacheOwner&) const = default;
};

class CacheOwners {
 public:
  explicit CacheOwners(size_t max_addresses)
      : max_addresses_(max_addresses),
        owners_(max_addresses == 0 ? 1 : max_addresses, std::numeric_limits<size_t>::max()) {}

  // Records that `owner` is about to fill libunwind's cache at `ip`. True
  // when libunwind's cache must be flushed first (the address changed
  // owner, or the record was full); the record then holds `ip` alone.
  bool claim(uint64_t ip, const CacheOwner& owner) {
    if (const CacheOwner* known = owners_.find(ip)) {
      if (*known == owner)
        return false;
    } else if (owners_.size() < max_addresses_) {
      owners_.insert(ip, owner, kEntryBytes);
      return false;
    }
    forgotten_ += owners_.size();
    owners_.clear();
    owners_.insert(ip, owner, kEntryBytes);
    return true;
  }

  size_t size() const { return owners_.size(); }

  // hits: addresses met again; misses: new ones (and those that changed
  // owner are hits of the address followed by a flush); evictions:
  // addresses forgotten by flushes.
  CacheStats stats() const {
    CacheStats out = owners_.stats();
    out.evictions += forgotten_;
    return out;
  }

 private:
  static constexpr size_t kEntryBytes = sizeof(uint64_t) + sizeof(CacheOwner);

  size_t max_addresses_;
  LruCache<uint64_t, CacheOwner> owners_;
  uint64_t forgotten_ = 0;
};

}  // namespace krait::unwind
