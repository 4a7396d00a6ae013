// Checks inside benchmark loops. A failed check stops that benchmark
// (SkipWithError) and makes the binary exit non-zero, so the CTest smoke run
// fails when a hot path computes a wrong answer, not only when it crashes.
#pragma once

#include <benchmark/benchmark.h>

namespace krait::bench {

// Marks the run failed and stops `state`'s benchmark with `message` (copied).
// Returns false so a loop can `if (!check(...)) break;`. Takes a C string:
// building a std::string per call would put an allocation in every loop
// that checks.
bool check(benchmark::State& state, bool ok, const char* message);

// Whether any check failed in this process.
bool any_check_failed();

}  // namespace krait::bench
