// Google Benchmark's main, except that the exit status reports failed checks
// (benchmark's own main exits 0 after SkipWithError).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdio>

#include "check.h"

namespace krait::bench {
namespace {
std::atomic<bool> g_failed{false};
}  // namespace

bool check(benchmark::State& state, bool ok, const char* message) {
  if (ok)
    return true;
  g_failed.store(true);
  state.SkipWithError(message);
  return false;
}

bool any_check_failed() {
  return g_failed.load();
}

}  // namespace krait::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (krait::bench::any_check_failed()) {
    std::fprintf(stderr, "%s: a benchmark's check failed (see its error above)\n", argv[0]);
    return 1;
  }
  return 0;
}
