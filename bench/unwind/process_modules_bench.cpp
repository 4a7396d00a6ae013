// ProcessModules::from_maps on a process that maps one file thousands of
// times (any process can: up to vm.max_map_count, 65,530 by default), with
// a warm ModuleCache, as the pipeline rebuilds it when a sample's address
// is outside the known modules. Each extra mapping is an executable page of
// the fixture library at its own address, so each votes for a bias of its
// own: the case that was cubic (2,000 mappings took 4.6 s). Every iteration
// checks the module count and the real mapping's bias against the plain
// map's.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "fixture_support.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

namespace {

using namespace krait;

struct ManyMappings {
  std::string error;
  std::vector<proc::MapEntry> plain;
  std::unique_ptr<unwind::ModuleCache> cache;
  uint64_t lib_start = 0;  // the library's real executable mapping
  uint64_t lib_bias = 0;
  size_t plain_modules = 0;
};

const ManyMappings& many_mappings() {
  static ManyMappings* m = [] {
    auto* out = new ManyMappings;
    out->cache = std::make_unique<unwind::ModuleCache>();
    auto dir = unwind_fixtures::TempDir::create();
    if (!dir) {
      out->error = dir.error().message;
      return out;
    }
    auto paths = unwind_fixtures::fixture_paths();
    auto captured = unwind_fixtures::capture({paths.c, "many"}, dir->path(), {"many-main"});
    if (!captured) {
      out->error = captured.error().message;
      return out;
    }
    out->plain = (*captured)[0].maps;
    auto modules = unwind::ProcessModules::from_maps(0, out->plain, *out->cache);
    out->plain_modules = modules.modules().size();
    for (const unwind::Module& module : modules.modules())
      if (module.path == paths.lib) {
        out->lib_start = module.start;
        out->lib_bias = module.bias;
      }
    if (out->lib_start == 0)
      out->error = "the fixture does not map " + paths.lib;
    return out;
  }();
  return *m;
}

// The plain map plus `extra` executable pages of the library, each at its
// own address above everything else.
std::vector<proc::MapEntry> with_extra_mappings(const ManyMappings& m, size_t extra) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<proc::MapEntry> maps = m.plain;
  proc::MapEntry lib;
  for (const proc::MapEntry& e : m.plain)
    if (e.start == m.lib_start)
      lib = e;
  const uint64_t base = (maps.back().end + (uint64_t{1} << 30)) & ~(page - 1);
  for (size_t i = 0; i < extra; ++i) {
    proc::MapEntry copy = lib;
    copy.start = base + i * 2 * page;
    copy.end = copy.start + page;
    maps.push_back(copy);
  }
  return maps;
}

void BM_FromMapsManyMappingsOfOneFile(benchmark::State& state) {
  const ManyMappings& m = many_mappings();
  if (!m.error.empty()) {
    bench::check(state, false, m.error.c_str());
    return;
  }
  const size_t extra = static_cast<size_t>(state.range(0));
  const std::vector<proc::MapEntry> maps = with_extra_mappings(m, extra);
  for (auto _ : state) {
    auto modules = unwind::ProcessModules::from_maps(0, maps, *m.cache);
    const unwind::Module* lib = modules.find(m.lib_start);
    if (modules.modules().size() != m.plain_modules + extra || lib == nullptr ||
        lib->bias != m.lib_bias) {
      bench::check(state, false,
                   "from_maps gave other modules or another bias than for the plain map");
      return;
    }
    benchmark::DoNotOptimize(modules);
  }
  state.counters["mappings"] = static_cast<double>(maps.size());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * maps.size()));
}

BENCHMARK(BM_FromMapsManyMappingsOfOneFile)->Arg(2000)->Arg(60000)->Unit(benchmark::kMillisecond);

}  // namespace
