// ModuleCache: sharing between processes, files that change under krait
// (replaced, rewritten, claiming another's build-id), bounded caching, and
// ModuleFile's eager index. module_cache_open_test.cpp has the opens that
// block; module_test_support.h the helpers these files share.
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

namespace krait::unwind {
namespace {

using namespace module_test;
using unwind_fixtures::TempDir;

// Two processes of one program: each file is opened once, and the two
// ProcessModules hold the same ModuleFiles.
TEST(ModuleCacheTest, FilesAreSharedBetweenProcesses) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  auto paths = unwind_fixtures::fixture_paths();
  auto first = unwind_fixtures::capture({paths.c, "one"}, dir->path(), {"one-main"});
  auto second = unwind_fixtures::capture({paths.c, "two"}, dir->path(), {"two-main"});
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(second.ok()) << second.error().message;
  const auto& maps_a = (*first)[0].maps;
  const auto& maps_b = (*second)[0].maps;

  std::set<std::tuple<uint32_t, uint32_t, uint64_t>> distinct;
  bool vdso = false;
  for (const auto* maps : {&maps_a, &maps_b})
    for (const proc::MapEntry& e : *maps) {
      if (e.exec && e.is_file())
        distinct.emplace(e.dev_major, e.dev_minor, e.inode);
      vdso |= e.exec && e.path == "[vdso]";
    }

  ModuleCache cache;
  {
    ProcessModules a = ProcessModules::from_maps(0, maps_a, cache);
    ProcessModules b = ProcessModules::from_maps(0, maps_b, cache);
    EXPECT_TRUE(a.problems().empty());
    EXPECT_EQ(cache.size(), distinct.size() + (vdso ? 1 : 0));
    const Module* lib_a = module_of(a, paths.lib);
    const Module* lib_b = module_of(b, paths.lib);
    ASSERT_NE(lib_a, nullptr);
    ASSERT_NE(lib_b, nullptr);
    EXPECT_EQ(lib_a->file.get(), lib_b->file.get());
    EXPECT_EQ(module_of(a, paths.c)->file.get(), module_of(b, paths.c)->file.get());
    // Held by both ProcessModules: nothing to evict.
    cache.evict_unused();
    EXPECT_EQ(cache.size(), distinct.size() + (vdso ? 1 : 0));
  }
  cache.evict_unused();
  EXPECT_EQ(cache.size(), vdso ? 1u : 0u);
}

// A file that claims another's build-id (here: the fixture library's note
// on other contents) is not taken for it: each keeps its own CFI and
// symbols. The cache used to share ModuleFiles by build-id, so whichever
// was mapped first supplied both.
TEST(ModuleCacheTest, SameBuildIdDoesNotMakeTwoFilesOne) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto capture = unwind_fixtures::capture({paths.c, "copy"}, dir->path(), {"copy-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  const std::string impostor = make_impostor(paths.lib, dir->path());
  ModuleCache cache;
  ProcessModules a = ProcessModules::from_maps(0, (*capture)[0].maps, cache);
  ProcessModules b = ProcessModules::from_maps(
      0, with_file_replaced((*capture)[0].maps, paths.lib, impostor), cache);
  const Module* real = module_of(a, paths.lib);
  const Module* fake = module_of(b, impostor);
  ASSERT_NE(real, nullptr);
  ASSERT_NE(fake, nullptr);
  ASSERT_EQ(real->file->build_id(), fake->file->build_id()) << "the impostor lost the claim";
  EXPECT_NE(real->file.get(), fake->file.get());
  EXPECT_NE(real->file->identity(), fake->file->identity());
  auto function = real->file->elf().find_symbol(kLibFunction);
  ASSERT_TRUE(function.has_value());
  EXPECT_TRUE(real->file->find_fde(function->value)) << "the real library has CFI there";
  EXPECT_FALSE(fake->file->find_fde(function->value)) << "the impostor's CFI is the real one's";
  EXPECT_FALSE(fake->file->elf().find_symbol(kLibFunction).has_value());
  EXPECT_TRUE(fake->file->elf().find_symbol(kImpostorFunction).has_value());
}

// Maps saved from a process whose file was replaced since: refused, not
// silently read from the new file.
TEST(ModuleCacheTest, ReplacedFileIsRefused) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  std::string lib = dir->path() + "/libreplaced.so";
  std::filesystem::copy_file(paths.lib, lib);
  auto capture = unwind_fixtures::capture({paths.c, "replaced"}, dir->path(), {"replaced-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  auto maps = with_file_replaced((*capture)[0].maps, paths.lib, lib);
  // Replace the file by a new inode with the same name, the way package
  // managers do (the old inode lives on while processes map it).
  std::filesystem::rename(lib, lib + ".old");
  std::filesystem::copy_file(paths.lib, lib);
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, maps, cache);
  ASSERT_EQ(module_of(modules, lib), nullptr);
  bool reported = false;
  for (const ModuleProblem& p : modules.problems())
    reported |= p.path == lib && p.reason.find("no longer the mapped file") != std::string::npos;
  EXPECT_TRUE(reported);
}

// A mapping that is gone by the time it is opened (the process exited or
// unmapped it) fails, but the failure is not remembered for the file: the
// next mapping of the same file opens.
TEST(ModuleCacheTest, FailureOfAMappingThatIsGoneIsNotRemembered) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string lib = std::filesystem::canonical(dir->path()).string() + "/libgone.so";
  std::filesystem::copy_file(paths.lib, lib);
  std::optional<proc::MapEntry> gone;
  {
    Mapping mapping(lib);
    ASSERT_TRUE(mapping.ok());
    gone = mapping.entry();
  }
  ASSERT_TRUE(gone.has_value());
  ModuleCache cache;
  auto failed = cache.get(::getpid(), *gone);
  ASSERT_FALSE(failed.ok()) << "an unmapped range was opened";
  Mapping again(lib);
  ASSERT_TRUE(again.ok());
  auto entry = again.entry();
  ASSERT_TRUE(entry.has_value());
  auto file = cache.get(::getpid(), *entry);
  EXPECT_TRUE(file.ok()) << "the failure of the unmapped range was remembered: "
                         << file.error().message;
}

// At most max_files files stay; the least recently used ones that nothing
// else holds go first, and every eviction is counted.
TEST(ModuleCacheTest, BoundEvictsLeastRecentlyUsedUnheldFiles) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto capture = unwind_fixtures::capture({paths.c, "bound"}, dir->path(), {"bound-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  std::vector<proc::MapEntry> files;  // one executable mapping per file
  std::set<std::tuple<uint32_t, uint32_t, uint64_t>> seen;
  for (const proc::MapEntry& e : (*capture)[0].maps)
    if (e.exec && e.is_file() && seen.emplace(e.dev_major, e.dev_minor, e.inode).second)
      files.push_back(e);
  ASSERT_GE(files.size(), 4u) << "the fixture maps itself, its library, libc and the loader";

  ModuleCache cache(ModuleFileOptions{}, ModuleCacheLimits{.max_files = 2});
  auto held = cache.get(0, files[0]);
  ASSERT_TRUE(held.ok()) << held.error().message;
  for (size_t i = 1; i < files.size(); ++i) {
    auto file = cache.get(0, files[i]);
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_LE(cache.size(), 2u);
  }
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.stats().evicted, files.size() - 2);
  EXPECT_EQ(cache.stats().opened, files.size());
  // The held file stayed, and is answered from the cache.
  auto again = cache.get(0, files[0]);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), held->get());
  EXPECT_EQ(cache.stats().hits, 1u);
  // So did the most recently used one; the others were evicted.
  auto last = cache.get(0, files.back());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(cache.stats().hits, 2u);
  auto evicted = cache.get(0, files[1]);
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(cache.stats().opened, files.size() + 1);
}

// A cached file rewritten in place (same inode, new size or mtime) is not
// answered from the cache: it is opened again.
TEST(ModuleCacheTest, FileRewrittenInPlaceIsOpenedAgain) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string lib = std::filesystem::canonical(dir->path()).string() + "/librewritten.so";
  std::filesystem::copy_file(paths.lib, lib);
  Mapping mapping(lib);
  ASSERT_TRUE(mapping.ok());
  auto entry = mapping.entry();
  ASSERT_TRUE(entry.has_value());
  ModuleCache cache;
  auto first = cache.get(::getpid(), *entry);
  ASSERT_TRUE(first.ok()) << first.error().message;
  // Rewritten in place: the same inode, other contents, a longer file.
  std::vector<uint8_t> bytes = file_bytes(make_impostor(paths.lib, dir->path()));
  bytes.resize(bytes.size() + 4096);
  {
    std::ofstream out(lib, std::ios::binary | std::ios::in | std::ios::out);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  auto second = cache.get(::getpid(), *entry);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(second->get(), first->get());
  EXPECT_EQ(cache.stats().changed, 1u);
  EXPECT_EQ((*second)->file_id().inode, (*first)->file_id().inode);
  EXPECT_TRUE((*second)->elf().find_symbol(kImpostorFunction).has_value());
}

// create() indexes on the caller's thread: the tables are built before the
// ModuleFile is returned, so rewriting the file afterwards (a stand-in for
// "no file is parsed later") leaves the index intact. Lazily, the same
// rewrite is what the index sees.
TEST(ModuleFileTest, IndexesEagerlyOnTheCreatingThread) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto function = elf::ElfFile::open(paths.lib)->find_symbol(kLibFunction);
  ASSERT_TRUE(function.has_value());
  for (bool eager : {true, false}) {
    const std::string lib = dir->path() + (eager ? "/libeager.so" : "/liblazy.so");
    std::filesystem::copy_file(paths.lib, lib);
    auto file = ModuleFile::open(lib, ModuleFileOptions{.debug_roots = {}, .index_eagerly = eager});
    ASSERT_TRUE(file.ok()) << file.error().message;
    std::vector<uint8_t> zeros(std::filesystem::file_size(lib), 0);
    std::ofstream(lib, std::ios::binary | std::ios::in | std::ios::out)
        .write(reinterpret_cast<const char*>(zeros.data()),
               static_cast<std::streamsize>(zeros.size()));
    EXPECT_EQ(static_cast<bool>((*file)->find_fde(function->value)), eager)
        << (eager ? "eager" : "lazy");
    EXPECT_EQ((*file)->elf().function_at(function->value) != nullptr, eager)
        << (eager ? "eager" : "lazy");
  }
}

}  // namespace
}  // namespace krait::unwind
