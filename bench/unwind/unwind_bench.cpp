// Samples per second for native unwinding and symbolization after warm-up,
// on stacks the fixtures captured of themselves: the C chain (8 frames) and
// CPython 3.12 running a script (15 frames, 27 with inlined functions).
// Each iteration is one sample: unwind the copied stack, then name every
// frame (all inline levels), and check the result against the warm-up run.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "check.h"
#include "fixture_support.h"
#include "symbolize/native_symbolizer.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "unwind/unwinder.h"

namespace {

using namespace krait;

struct Sample {
  unwind_fixtures::Capture capture;
  unwind::ProcessModules modules;
  size_t frames = 0;        // pcs of the reference unwind
  std::string leaf;         // its innermost function name
  std::string root;         // its outermost function name
  size_t named_frames = 0;  // with inline levels
};

struct Fixtures {
  std::string error;
  std::unique_ptr<unwind_fixtures::TempDir> dir;
  unwind::ModuleCache cache;
  std::map<std::string, Sample> samples;
};

std::string outermost(symbolize::NativeSymbolizer& symbolizer, const unwind::ProcessModules& m,
                      const unwind::UnwindResult& r, size_t i, bool innermost) {
  uint64_t pc = r.lookup_pc(i);
  const unwind::Module* module = m.find(pc);
  if (module == nullptr)
    return "";
  auto frames = symbolizer.lookup(*module->file, module->file_address(pc));
  return innermost ? frames->front().function : frames->back().function;
}

Fixtures& fixtures() {
  static Fixtures* f = [] {
    auto* out = new Fixtures;
    auto dir = unwind_fixtures::TempDir::create();
    if (!dir) {
      out->error = dir.error().message;
      return out;
    }
    out->dir = std::make_unique<unwind_fixtures::TempDir>(std::move(*dir));
    auto paths = unwind_fixtures::fixture_paths();
    std::vector<unwind_fixtures::Capture> all;
    for (auto* fn : {&unwind_fixtures::capture_c, &unwind_fixtures::capture_python}) {
      auto some = fn(paths, out->dir->path());
      if (!some) {
        out->error = some.error().message;
        return out;
      }
      for (auto& c : *some)
        all.push_back(std::move(c));
    }
    auto unwinder = unwind::Unwinder::create();
    symbolize::NativeSymbolizer symbolizer;
    for (auto& c : all) {
      Sample s;
      s.modules = unwind::ProcessModules::from_maps(0, c.maps, out->cache);
      unwind::UnwindResult r = unwinder->unwind(c.file.snapshot(), s.modules, 256);
      if (r.stop != unwind::UnwindStop::kRoot) {
        out->error = c.name + " does not unwind to the root";
        return out;
      }
      s.frames = r.pcs.size();
      s.leaf = outermost(symbolizer, s.modules, r, 0, true);
      s.root = outermost(symbolizer, s.modules, r, r.pcs.size() - 1, false);
      for (size_t i = 0; i < r.pcs.size(); ++i) {
        const unwind::Module* module = s.modules.find(r.lookup_pc(i));
        if (module != nullptr)
          s.named_frames +=
              symbolizer.lookup(*module->file, module->file_address(r.lookup_pc(i)))->size();
      }
      std::string name = c.name;
      s.capture = std::move(c);
      out->samples.emplace(name, std::move(s));
    }
    return out;
  }();
  return *f;
}

// One sample: unwind, then name every frame. Returns false on a wrong answer.
bool process(unwind::Unwinder& unwinder, symbolize::NativeSymbolizer& symbolizer, const Sample& s,
             unwind::UnwindResult& r, size_t& named) {
  unwinder.unwind(s.capture.file.snapshot(), s.modules, 256, r);
  if (r.stop != unwind::UnwindStop::kRoot || r.pcs.size() != s.frames)
    return false;
  named = 0;
  const std::string* leaf = nullptr;
  const std::string* root = nullptr;
  for (size_t i = 0; i < r.pcs.size(); ++i) {
    uint64_t pc = r.lookup_pc(i);
    const unwind::Module* module = s.modules.find(pc);
    if (module == nullptr)
      return false;
    auto frames = symbolizer.lookup(*module->file, module->file_address(pc));
    named += frames->size();
    if (i == 0)
      leaf = &frames->front().function;
    root = &frames->back().function;
    benchmark::DoNotOptimize(frames.get());
  }
  return named == s.named_frames && *leaf == s.leaf && *root == s.root;
}

void BM_UnwindAndSymbolize(benchmark::State& state, const char* name) {
  Fixtures& f = fixtures();
  if (!f.error.empty()) {
    bench::check(state, false, f.error.c_str());
    return;
  }
  const Sample& s = f.samples.at(name);
  auto unwinder = unwind::Unwinder::create();
  symbolize::NativeSymbolizer symbolizer;
  unwind::UnwindResult r;
  size_t named = 0;
  for (int i = 0; i < 3; ++i)  // warm-up: caches filled, files indexed
    process(*unwinder, symbolizer, s, r, named);
  for (auto _ : state) {
    if (!process(*unwinder, symbolizer, s, r, named)) {
      bench::check(state, false, "wrong unwind or symbolization result");
      return;
    }
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["frames/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * s.frames), benchmark::Counter::kIsRate);
  state.counters["frames"] = static_cast<double>(s.frames);
  state.counters["named_frames"] = static_cast<double>(named);
}

// own_walker false: every step through libunwind (as before the own walker),
// for comparison.
void unwind_only(benchmark::State& state, const char* name, bool own_walker) {
  Fixtures& f = fixtures();
  if (!f.error.empty()) {
    bench::check(state, false, f.error.c_str());
    return;
  }
  const Sample& s = f.samples.at(name);
  auto unwinder = unwind::Unwinder::create(unwind::UnwinderOptions{.own_walker = own_walker});
  unwind::UnwindResult r;
  unwinder->unwind(s.capture.file.snapshot(), s.modules, 256, r);
  for (auto _ : state) {
    unwinder->unwind(s.capture.file.snapshot(), s.modules, 256, r);
    if (r.stop != unwind::UnwindStop::kRoot || r.pcs.size() != s.frames) {
      bench::check(state, false, "wrong unwind result");
      return;
    }
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_UnwindOnly(benchmark::State& state, const char* name) {
  unwind_only(state, name, true);
}

void BM_UnwindOnlyLibunwind(benchmark::State& state, const char* name) {
  unwind_only(state, name, false);
}

// Samples of two processes interleaved, as a system-wide profile sees them.
void BM_UnwindAndSymbolizeInterleaved(benchmark::State& state) {
  Fixtures& f = fixtures();
  if (!f.error.empty()) {
    bench::check(state, false, f.error.c_str());
    return;
  }
  const Sample* samples[] = {&f.samples.at("python-main"), &f.samples.at("c-main"),
                             &f.samples.at("python-thread"), &f.samples.at("c-thread")};
  auto unwinder = unwind::Unwinder::create();
  symbolize::NativeSymbolizer symbolizer;
  unwind::UnwindResult r;
  size_t named = 0;
  for (const Sample* s : samples)
    process(*unwinder, symbolizer, *s, r, named);
  size_t i = 0;
  uint64_t frames = 0;
  for (auto _ : state) {
    const Sample& s = *samples[i++ % 4];
    if (!process(*unwinder, symbolizer, s, r, named)) {
      bench::check(state, false, "wrong unwind or symbolization result");
      return;
    }
    frames += s.frames;
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["frames/s"] =
      benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_UnwindAndSymbolize, python_main, "python-main");
BENCHMARK_CAPTURE(BM_UnwindAndSymbolize, python_thread, "python-thread");
BENCHMARK_CAPTURE(BM_UnwindAndSymbolize, c_main, "c-main");
BENCHMARK_CAPTURE(BM_UnwindOnly, python_main, "python-main");
BENCHMARK_CAPTURE(BM_UnwindOnly, c_main, "c-main");
BENCHMARK_CAPTURE(BM_UnwindOnlyLibunwind, python_main, "python-main");
BENCHMARK_CAPTURE(BM_UnwindOnlyLibunwind, c_main, "c-main");
BENCHMARK(BM_UnwindAndSymbolizeInterleaved);

}  // namespace
