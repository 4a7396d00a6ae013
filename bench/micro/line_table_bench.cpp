// Line-table decoding and lookup, on a real CPython 3.12 location table
// (line_table_data.inc, written by generate_line_table.py). The symbolizer
// decodes a table once per code object and then looks up every sampled
// instruction in it, so decode cost matters per new code object and lookup
// cost per sampled frame.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "alloc_counter.h"
#include "check.h"
#include "python/line_table.h"

namespace krait::bench {
namespace {

#include "line_table_data.inc"

using python::LineRange;
using python::LineTableFormat;

constexpr size_t kUnits = sizeof(kTableLinePerUnit) / sizeof(kTableLinePerUnit[0]);
static_assert(kUnits * 2 == kTableCodeBytes);
// Strides coprime to the table size visit every code unit in turn.
constexpr size_t kDecodeStride = 97;
constexpr size_t kLookupStride = 389;
static_assert(std::gcd(kDecodeStride, kUnits) == 1 && std::gcd(kLookupStride, kUnits) == 1);

Result<std::vector<LineRange>> decode() {
  return python::decode_line_table(LineTableFormat::kLocations311, std::span(kTableBytes),
                                   kTableFirstLine, kTableCodeBytes);
}

// A cheap spot check per decode keeps the timing about decoding; the full
// table is compared once per run, before the loop.
bool lines_match(std::span<const LineRange> ranges, size_t unit) {
  return python::line_for_offset(ranges, static_cast<uint32_t>(unit * 2)) ==
         kTableLinePerUnit[unit];
}

bool all_lines_match(std::span<const LineRange> ranges) {
  for (size_t unit = 0; unit < kUnits; ++unit)
    if (!lines_match(ranges, unit))
      return false;
  return true;
}

void BM_LineTableDecode(benchmark::State& state) {
  {
    auto ranges = decode();
    if (!check(state, ranges.ok() && all_lines_match(*ranges),
               "decoded table disagrees with CPython's co_lines()"))
      return;
  }
  size_t unit = 0;
  size_t range_count = 0;
  const AllocSnapshot before = alloc_snapshot();
  for (auto _ : state) {
    auto ranges = decode();
    if (!check(state, ranges.ok(), "decode failed"))
      break;
    range_count = ranges->size();
    unit = (unit + kDecodeStride) % kUnits;
    if (!check(state, lines_match(*ranges, unit), "line differs from CPython's"))
      break;
    benchmark::DoNotOptimize(ranges->data());
  }
  const AllocSnapshot after = alloc_snapshot();
  const auto n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());  // tables
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(sizeof(kTableBytes)));
  state.counters["table_bytes"] = static_cast<double>(sizeof(kTableBytes));
  state.counters["ranges"] = static_cast<double>(range_count);
  state.counters["result_bytes"] = static_cast<double>(range_count * sizeof(LineRange));
  state.counters["allocs_per_decode"] =
      static_cast<double>(after.allocations - before.allocations) / n;
  state.counters["alloc_bytes_per_decode"] =
      static_cast<double>(after.bytes_allocated - before.bytes_allocated) / n;
}
BENCHMARK(BM_LineTableDecode);

void BM_LineTableLookup(benchmark::State& state) {
  auto decoded = decode();
  if (!check(state, decoded.ok() && all_lines_match(*decoded),
             "decoded table disagrees with CPython's co_lines()"))
    return;
  const std::vector<LineRange> ranges = std::move(decoded).value();
  size_t unit = 0;
  const AllocSnapshot before = alloc_snapshot();
  for (auto _ : state) {
    // Jumping around the table keeps the branch predictor from learning
    // the binary search's path.
    unit = (unit + kLookupStride) % kUnits;
    const int32_t line = python::line_for_offset(ranges, static_cast<uint32_t>(unit * 2));
    if (!check(state, line == kTableLinePerUnit[unit], "line differs from CPython's"))
      break;
  }
  const AllocSnapshot after = alloc_snapshot();
  state.SetItemsProcessed(state.iterations());  // lookups
  state.counters["ranges"] = static_cast<double>(ranges.size());
  state.counters["allocs_per_lookup"] =
      static_cast<double>(after.allocations - before.allocations) /
      static_cast<double>(state.iterations());
}
BENCHMARK(BM_LineTableLookup);

}  // namespace
}  // namespace krait::bench
