// Profile::add_sample on the aggregation hot path: at 99 Hz on many CPUs most
// samples repeat a stack already seen, so the cost that matters is adding a
// known stack (hash, compare, count) and, one step earlier, interning each
// of its frames.
#include <benchmark/benchmark.h>

#include <vector>

#include "alloc_counter.h"
#include "check.h"
#include "profile/profile.h"
#include "synthetic_profile.h"

namespace krait::bench {
namespace {

// Adds known stacks, cycling through state.range(0) distinct ones.
void BM_ProfileAddSample(benchmark::State& state) {
  const auto distinct = static_cast<size_t>(state.range(0));
  const auto stacks = make_stacks(distinct);
  const AllocSnapshot empty = alloc_snapshot();
  profile::Profile profile;
  auto interned = intern_stacks(profile, stacks);
  if (!check(state, interned.ok(), interned.ok() ? "" : interned.error().message.c_str()))
    return;
  const auto& ids = interned->frame_ids;
  const auto& labels = interned->labels;
  for (size_t i = 0; i < distinct; ++i)
    profile.add_sample(ids[i], labels[i]);
  if (!check(state, profile.distinct_samples() == distinct, "synthetic stacks are not distinct"))
    return;
  const int64_t profile_bytes = alloc_snapshot().live_bytes - empty.live_bytes;

  uint64_t expected_total = distinct;
  size_t i = 0;
  const AllocSnapshot before = alloc_snapshot();
  for (auto _ : state) {
    profile.add_sample(ids[i], labels[i]);
    ++expected_total;
    if (!check(state, profile.total_count() == expected_total, "sample not counted"))
      break;
    if (++i == distinct)
      i = 0;
  }
  const AllocSnapshot after = alloc_snapshot();
  const uint64_t allocs = after.allocations - before.allocations;
  // The header promises that a known stack allocates nothing.
  check(state, allocs == 0 && profile.distinct_samples() == distinct,
        "adding known stacks allocated or created new entries");
  size_t frames = 0;
  for (const auto& stack : ids)
    frames += stack.size();
  state.SetItemsProcessed(state.iterations());  // samples
  state.counters["frames_per_stack"] = static_cast<double>(frames) / static_cast<double>(distinct);
  state.counters["allocs_per_sample"] =
      static_cast<double>(allocs) / static_cast<double>(state.iterations());
  state.counters["profile_bytes"] = static_cast<double>(profile_bytes);
}
BENCHMARK(BM_ProfileAddSample)->Arg(16)->Arg(1024);

// What the pipeline does per sample: intern every frame (hashing its
// strings), then add the stack. The label set id comes from a cache (the
// pipeline keeps one per thread), so it is not re-interned here.
void BM_ProfileInternAndAdd(benchmark::State& state) {
  const auto distinct = static_cast<size_t>(state.range(0));
  const auto stacks = make_stacks(distinct);
  profile::Profile profile;
  auto interned = intern_stacks(profile, stacks);
  if (!check(state, interned.ok(), interned.ok() ? "" : interned.error().message.c_str()))
    return;

  std::vector<profile::FrameId> ids;
  size_t i = 0;
  uint64_t frames = 0;
  const AllocSnapshot before = alloc_snapshot();
  for (auto _ : state) {
    const auto& stack = stacks[i];
    ids.clear();
    for (const auto& frame : stack.frames)
      ids.push_back(profile.intern_frame(frame));
    profile.add_sample(ids, interned->labels[i]);
    frames += ids.size();
    if (!check(state, ids == interned->frame_ids[i], "re-interning gave different ids"))
      break;
    if (++i == distinct)
      i = 0;
  }
  const AllocSnapshot after = alloc_snapshot();
  check(state,
        profile.total_count() == static_cast<uint64_t>(state.iterations()) &&
            profile.distinct_samples() == std::min<size_t>(distinct, state.iterations()),
        "wrong totals after the loop");
  state.SetItemsProcessed(state.iterations());  // samples
  state.counters["frames_per_s"] =
      benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsRate);
  state.counters["allocs_per_sample"] =
      static_cast<double>(after.allocations - before.allocations) /
      static_cast<double>(state.iterations());
}
BENCHMARK(BM_ProfileInternAndAdd)->Arg(1024);

}  // namespace
}  // namespace krait::bench
