// The two clocks krait uses: CLOCK_MONOTONIC, which is the sampler's own
// (bpf_ktime_get_ns), for ordering and intervals; the wall clock for what
// profiles say about when they were taken.
#pragma once

#include <time.h>

#include <cstdint>

namespace krait {

inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline int64_t unix_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<int64_t>(ts.tv_nsec);
}

}  // namespace krait
