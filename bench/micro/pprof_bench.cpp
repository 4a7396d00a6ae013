// pprof encoding of a profile of 1000 distinct mixed stacks, about what a
// minute of a busy multi-process recording aggregates to. Encoding runs once
// per output file, so its cost is per flush, not per sample.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "alloc_counter.h"
#include "check.h"
#include "export/pprof.h"
#include "synthetic_profile.h"

namespace krait::bench {
namespace {

constexpr size_t kDistinctStacks = 1000;

// Checks that `bytes` decode to the samples of `profile`, with valid
// structure.
bool round_trips(const std::string& bytes, const profile::Profile& profile) {
  auto decoded = exporter::decode_pprof(bytes);
  if (!decoded.ok() || !exporter::validate_pprof(*decoded).ok())
    return false;
  if (static_cast<size_t>(decoded->sample_size()) != profile.distinct_samples())
    return false;
  uint64_t total = 0;
  for (const auto& sample : decoded->sample())
    total += static_cast<uint64_t>(sample.value(0));
  return total == profile.total_count();
}

void BM_PprofEncode(benchmark::State& state) {
  const auto stacks = make_stacks(kDistinctStacks);
  const AllocSnapshot empty = alloc_snapshot();
  profile::Profile profile({1'700'000'000'000'000'000, 60'000'000'000, 10'101'010, {"bench"}});
  auto interned = intern_stacks(profile, stacks);
  if (!check(state, interned.ok(), interned.ok() ? "" : interned.error().message.c_str()))
    return;
  for (size_t i = 0; i < kDistinctStacks; ++i)
    profile.add_sample(interned->frame_ids[i], interned->labels[i], 1 + i % 37);
  const int64_t profile_bytes = alloc_snapshot().live_bytes - empty.live_bytes;
  if (!check(state, profile.distinct_samples() == kDistinctStacks,
             "synthetic stacks are not distinct"))
    return;

  size_t encoded_size = 0;
  uint64_t allocs = 0;
  for (auto _ : state) {
    const AllocSnapshot before = alloc_snapshot();
    auto bytes = exporter::encode_pprof(profile);
    allocs += alloc_snapshot().allocations - before.allocations;
    if (!check(state, bytes.ok() && !bytes->empty(), "encode failed or empty"))
      break;
    encoded_size = bytes->size();
    // Decoding costs more than encoding; keep it out of the timing.
    state.PauseTiming();
    const bool ok = round_trips(*bytes, profile);
    state.ResumeTiming();
    if (!check(state, ok, "encoded profile does not decode to the same samples"))
      break;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kDistinctStacks));  // stacks
  state.counters["encoded_bytes"] = static_cast<double>(encoded_size);
  state.counters["frames"] = static_cast<double>(profile.frames().size());
  state.counters["profile_bytes"] = static_cast<double>(profile_bytes);
  state.counters["allocs_per_encode"] =
      static_cast<double>(allocs) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_PprofEncode)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace krait::bench
