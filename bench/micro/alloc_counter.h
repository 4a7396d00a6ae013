// Heap accounting for the micro-benchmarks: this binary replaces the global
// operator new/delete with counting versions, so a benchmark can report how
// many allocations (and bytes) an operation costs and how much memory a
// structure it built holds.
//
// Counts only memory that goes through C++ operator new (the STL, protobuf's
// messages); zlib's own malloc calls are not seen. Counters are process-wide
// and atomic; read them from the benchmark thread around the code measured.
#pragma once

#include <cstdint>

namespace krait::bench {

struct AllocSnapshot {
  uint64_t allocations = 0;      // operator new calls so far
  uint64_t bytes_allocated = 0;  // usable bytes handed out so far
  int64_t live_bytes = 0;        // usable bytes not yet freed
};

AllocSnapshot alloc_snapshot();

}  // namespace krait::bench
