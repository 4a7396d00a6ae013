// ProcessModules: thousands of mappings, the mapping cap, and this live
// process through /proc.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "fixture_support.h"
#include "module_test_support.h"
#include "unwind/cfi_table.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

extern "C" __attribute__((noinline, used)) int krait_module_cache_test_marker(int x) {
  return x * 7 + 1;
}

namespace krait::unwind {
namespace {

using namespace module_test;
using unwind_fixtures::TempDir;

// Thousands of mappings of several files (every executable mapping of a
// Python process split into pages, as mprotect() splits them): every page
// gets the module, file and bias of its unsplit mapping.
TEST(ProcessModulesTest, ManyMappingsOfSeveralFiles) {
  ASSERT_CAPTURE(capture, "python-main");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<proc::MapEntry> split;
  for (const proc::MapEntry& e : capture->maps) {
    if (!e.exec || !e.is_file()) {
      split.push_back(e);
      continue;
    }
    for (uint64_t start = e.start; start < e.end; start += page) {
      proc::MapEntry piece = e;
      piece.start = start;
      piece.end = std::min(e.end, start + page);
      piece.offset = e.offset + (start - e.start);
      split.push_back(piece);
    }
  }
  ModuleCache cache;
  ProcessModules whole = ProcessModules::from_maps(0, capture->maps, cache);
  ProcessModules pieces = ProcessModules::from_maps(0, split, cache);
  size_t files = 0;
  std::set<const ModuleFile*> distinct;
  for (const Module& m : whole.modules())
    distinct.insert(m.file.get());
  files = distinct.size();
  ASSERT_GE(files, 4u);
  ASSERT_GT(pieces.modules().size(), 1000u) << "too few pages to be many mappings";
  EXPECT_EQ(pieces.problems().size(), whole.problems().size());
  size_t checked = 0;
  for (const Module& m : pieces.modules()) {
    const Module* reference = whole.find(m.start);
    ASSERT_NE(reference, nullptr) << std::hex << m.start;
    EXPECT_EQ(m.file.get(), reference->file.get());
    EXPECT_EQ(m.bias, reference->bias) << m.path;
    EXPECT_EQ(pieces.find(m.end - 1), &m);
    ++checked;
  }
  EXPECT_EQ(checked, pieces.modules().size());
}

// Mappings past kMaxMappingsPerProcess are not considered, and problems()
// says how many were skipped.
TEST(ProcessModulesTest, MappingsPastTheCapAreSkippedAndReported) {
  ASSERT_CAPTURE(capture, "c-main");
  std::vector<proc::MapEntry> maps = capture->maps;
  const size_t real = maps.size();
  const proc::MapEntry last = maps.back();
  for (size_t i = 0; maps.size() < kMaxMappingsPerProcess + 100; ++i) {
    proc::MapEntry anonymous{.start = last.end + i * 8192, .end = last.end + i * 8192 + 4096};
    anonymous.read = true;
    maps.push_back(anonymous);
  }
  // A file mapping past the cap is not looked at.
  proc::MapEntry beyond = capture->maps.front();
  beyond.start = maps.back().end + 4096;
  beyond.end = beyond.start + 4096;
  beyond.exec = true;
  maps.push_back(beyond);
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, maps, cache);
  ProcessModules reference = ProcessModules::from_maps(0, std::span(maps).first(real), cache);
  EXPECT_EQ(modules.modules().size(), reference.modules().size());
  EXPECT_EQ(modules.find(beyond.start), nullptr);
  bool reported = false;
  for (const ModuleProblem& p : modules.problems())
    reported |= p.reason.find(std::to_string(maps.size() - kMaxMappingsPerProcess) +
                              " past the first") != std::string::npos;
  EXPECT_TRUE(reported);
}

// This very process, through /proc/self/maps: the module of a function of
// ours has the bias that makes its address the nm value.
TEST(ProcessModulesTest, LiveProcess) {
  ModuleCache cache;
  auto modules = ProcessModules::load(::getpid(), cache);
  ASSERT_TRUE(modules.ok()) << modules.error().message;
  auto address = reinterpret_cast<uint64_t>(&krait_module_cache_test_marker);
  const Module* module = modules->find(address);
  ASSERT_NE(module, nullptr);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  EXPECT_EQ(module->path, exe);
  auto nm = run_tool({"/usr/bin/nm", exe});
  ASSERT_TRUE(nm.ok()) << nm.error().message;
  auto at = nm->find(" T krait_module_cache_test_marker\n");
  ASSERT_NE(at, std::string::npos);
  uint64_t value = std::stoull(nm->substr(nm->rfind('\n', at) + 1, 16), nullptr, 16);
  EXPECT_EQ(module->file_address(address), value);
  // The vDSO and libc are there as well.
  bool vdso = false;
  for (const Module& m : modules->modules())
    vdso |= m.path == "[vdso]";
  EXPECT_TRUE(vdso);
  Dl_info info{};
  ASSERT_NE(::dladdr(reinterpret_cast<void*>(&::getpid), &info), 0);
  const Module* libc = modules->find(reinterpret_cast<uint64_t>(&::getpid));
  ASSERT_NE(libc, nullptr);
  EXPECT_EQ(libc->bias, reinterpret_cast<uint64_t>(info.dli_fbase));
  EXPECT_EQ(modules->find(0), nullptr);
}

}  // namespace
}  // namespace krait::unwind
