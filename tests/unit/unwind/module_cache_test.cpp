// ModuleCache, ProcessModules and CfiTable: sharing between processes,
// live /proc, and the CFI index against readelf's own decoding.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "fixture_support.h"
#include "unwind/cfi_table.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

extern "C" __attribute__((noinline, used)) int krait_module_cache_test_marker(int x) {
  return x * 7 + 1;
}

namespace krait::unwind {
namespace {

using unwind_fixtures::TempDir;

Result<std::string> run_tool(const std::vector<std::string>& argv) {
  auto run = unwind_fixtures::run_program(argv);
  if (!run)
    return run.error();
  if (run->exit_code != 0)
    return make_error("{} failed: {}", argv[0], run->err);
  return run->out;
}

std::vector<proc::MapEntry> with_file_replaced(std::vector<proc::MapEntry> maps,
                                               const std::string& old_path,
                                               const std::string& new_path) {
  struct stat st {};
  EXPECT_EQ(::stat(new_path.c_str(), &st), 0) << new_path;
  for (proc::MapEntry& entry : maps) {
    if (entry.path != old_path)
      continue;
    entry.path = new_path;
    entry.inode = st.st_ino;
    entry.dev_major = major(st.st_dev);
    entry.dev_minor = minor(st.st_dev);
  }
  return maps;
}

const Module* module_of(const ProcessModules& modules, const std::string& path) {
  for (const Module& m : modules.modules())
    if (m.path == path)
      return &m;
  return nullptr;
}

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

// A copy of a library at another inode, with the same build-id, reuses the
// ModuleFile already indexed.
TEST(ModuleCacheTest, SameBuildIdSharesOneFile) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto capture = unwind_fixtures::capture({paths.c, "copy"}, dir->path(), {"copy-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  std::string copy = dir->path() + "/libcopy.so";
  std::filesystem::copy_file(paths.lib, copy);
  ModuleCache cache;
  ProcessModules a = ProcessModules::from_maps(0, (*capture)[0].maps, cache);
  size_t before = cache.size();
  ProcessModules b =
      ProcessModules::from_maps(0, with_file_replaced((*capture)[0].maps, paths.lib, copy), cache);
  ASSERT_NE(module_of(b, copy), nullptr);
  EXPECT_EQ(module_of(a, paths.lib)->file.get(), module_of(b, copy)->file.get());
  EXPECT_EQ(cache.size(), before);
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

// readelf's decoding of the frame sections: every FDE it lists, we find
// with the same range.
struct OracleFde {
  uint64_t start = 0, end = 0;
};
Result<std::vector<OracleFde>> readelf_fdes(const std::string& path, const std::string& section) {
  auto out = run_tool({"/usr/bin/readelf", "--debug-dump=frames", path});
  if (!out)
    return out.error();
  std::vector<OracleFde> fdes;
  bool in_section = false;
  std::istringstream in(*out);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("Contents of the ")) {
      in_section = line.find(" " + section + " ") != std::string::npos;
      continue;
    }
    auto fde = line.find(" FDE cie=");
    auto pc = line.find("pc=");
    if (!in_section || fde == std::string::npos || pc == std::string::npos)
      continue;
    auto dots = line.find("..", pc);
    fdes.push_back(OracleFde{std::stoull(line.substr(pc + 3, dots - pc - 3), nullptr, 16),
                             std::stoull(line.substr(dots + 2), nullptr, 16)});
  }
  return fdes;
}

void expect_table_matches_readelf(const CfiTable& table, const std::vector<OracleFde>& fdes,
                                  const std::string& what) {
  size_t nonempty = 0;
  for (const OracleFde& fde : fdes) {
    if (fde.end == fde.start)
      continue;
    ++nonempty;
    const FdeEntry* found = table.find(fde.start);
    ASSERT_NE(found, nullptr) << what << " FDE " << std::hex << fde.start;
    EXPECT_EQ(found->start, fde.start) << what;
    EXPECT_EQ(found->end, fde.end) << what;
    found = table.find(fde.end - 1);
    ASSERT_NE(found, nullptr) << what;
    EXPECT_EQ(found->start, fde.start) << what;
  }
  EXPECT_EQ(table.size(), nonempty) << what;
  EXPECT_GT(nonempty, 10u) << what;
}

TEST(CfiTableTest, EhFrameMatchesReadelf) {
  std::string libpython = unwind_fixtures::fixture_paths().libpython;
  for (const std::string& path : {unwind_fixtures::fixture_paths().cpp, libpython}) {
    auto elf = elf::ElfFile::open(path);
    ASSERT_TRUE(elf.ok()) << elf.error().message;
    auto section = elf->find_section(".eh_frame");
    auto bytes = elf->section_bytes(".eh_frame");
    ASSERT_TRUE(section && bytes.ok()) << path;
    auto table = CfiTable::from_eh_frame(*bytes, section->addr);
    ASSERT_TRUE(table.ok()) << table.error().message;
    EXPECT_EQ(table->source(), CfiTable::Source::kEhFrame);
    auto fdes = readelf_fdes(path, ".eh_frame");
    ASSERT_TRUE(fdes.ok()) << fdes.error().message;
    expect_table_matches_readelf(*table, *fdes, path);
    EXPECT_EQ(table->find(0), nullptr);
  }
}

TEST(CfiTableTest, DebugFrameMatchesReadelf) {
  std::string path = unwind_fixtures::fixture_paths().c_debug_frame;
  auto elf = elf::ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  auto bytes = elf->section_bytes(".debug_frame");
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  auto table = CfiTable::from_debug_frame(*bytes);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->source(), CfiTable::Source::kDebugFrame);
  auto fdes = readelf_fdes(path, ".debug_frame");
  ASSERT_TRUE(fdes.ok()) << fdes.error().message;
  // The fixture has few functions of its own; the check is per FDE.
  size_t nonempty = 0;
  for (const OracleFde& fde : *fdes) {
    if (fde.end == fde.start)
      continue;
    ++nonempty;
    const FdeEntry* found = table->find(fde.start);
    ASSERT_NE(found, nullptr) << std::hex << fde.start;
    EXPECT_EQ(found->start, fde.start);
    EXPECT_EQ(found->end, fde.end);
    EXPECT_TRUE(found->absolute);
  }
  EXPECT_EQ(table->size(), nonempty);
  EXPECT_GE(nonempty, 4u);
}

// Random bytes and damaged real sections: no crash, no read outside the
// input (run under AddressSanitizer in krait_unwind_garbage_asan_test).
TEST(CfiTableTest, GarbageInput) {
  std::mt19937 random(99);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> bytes(random() % 512);
    for (uint8_t& b : bytes)
      b = static_cast<uint8_t>(random());
    // Plausible lengths make the parser go deeper than pure noise does.
    if (bytes.size() >= 8 && round % 2 == 0) {
      uint32_t length = static_cast<uint32_t>(random() % bytes.size());
      std::memcpy(bytes.data(), &length, 4);
      if (round % 4 == 0)
        std::memset(bytes.data() + 4, round % 8 == 0 ? 0 : 0xff, 4);
    }
    auto eh = CfiTable::from_eh_frame(bytes, random());
    if (eh.ok())
      for (int i = 0; i < 8; ++i)
        (void)eh->find(random());
    auto df = CfiTable::from_debug_frame(bytes);
    if (df.ok())
      for (int i = 0; i < 8; ++i)
        (void)df->find(random());
  }
  auto elf = elf::ElfFile::open(unwind_fixtures::fixture_paths().c_debug_frame);
  ASSERT_TRUE(elf.ok());
  for (const char* name : {".eh_frame", ".debug_frame"}) {
    auto original = elf->section_bytes(name);
    ASSERT_TRUE(original.ok());
    for (int round = 0; round < 500; ++round) {
      std::vector<uint8_t> bytes(original->begin(), original->end());
      for (int flips = 1 + round % 8; flips > 0; --flips)
        bytes[random() % bytes.size()] ^= static_cast<uint8_t>(1 + random() % 255);
      if (round % 5 == 0)
        bytes.resize(random() % bytes.size());
      auto table = std::string(name) == ".eh_frame" ? CfiTable::from_eh_frame(bytes, 0x1000)
                                                    : CfiTable::from_debug_frame(bytes);
      if (table.ok())
        for (size_t i = 0; i < table->size() && i < 4; ++i)
          (void)table->find(0x1000 + i * 16);
    }
  }
}

}  // namespace
}  // namespace krait::unwind
