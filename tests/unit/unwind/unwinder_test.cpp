// Unwinding self-captured stacks (C, C++, CPython 3.12; main thread and a
// second thread) against glibc's own unwinder and binutils, plus damaged
// input: truncated copies, random stack bytes, bad registers, files without
// or with broken unwind tables.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "fixture_support.h"
#include "module_test_support.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "unwind/unwinder.h"

namespace krait::unwind {
namespace {

using module_test::run_tool;
using module_test::with_file_replaced;
using unwind_fixtures::Capture;
using unwind_fixtures::TempDir;

constexpr size_t kMaxFrames = 256;

using unwind_fixtures::capture_errors;
using unwind_fixtures::find_capture;

Unwinder make_unwinder() {
  auto unwinder = Unwinder::create();
  EXPECT_TRUE(unwinder.ok()) << unwinder.error().message;
  return std::move(*unwinder);
}

std::string describe(const UnwindResult& r) {
  std::string out = fmt::format("stop={} pcs:", to_string(r.stop));
  for (uint64_t pc : r.pcs)
    out += fmt::format(" {:#x}", pc);
  return out;
}

std::string copy_file(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
  return to;
}

// The outermost function addr2line names at frame `i` of `r` (the fixture's
// own ELF, not ours, tells the object: dladdr's view through the maps).
std::string oracle_function(const Capture& capture, const UnwindResult& r, size_t i) {
  uint64_t pc = r.lookup_pc(i);
  for (const proc::MapEntry& entry : capture.maps) {
    if (!entry.exec || pc < entry.start || pc >= entry.end || !entry.is_file())
      continue;
    // First mapping of the file: for these PIE objects the load base.
    for (const proc::MapEntry& first : capture.maps) {
      if (first.inode != entry.inode || first.path != entry.path)
        continue;
      auto first_vaddr = unwind_fixtures::first_load_vaddr(entry.path);
      if (!first_vaddr)
        return "<" + first_vaddr.error().message + ">";
      uint64_t vaddr = pc - first.start + (*first_vaddr & ~uint64_t{0xfff}) + first.offset;
      auto frames = unwind_fixtures::addr2line(entry.path, vaddr);
      if (!frames)
        return "<" + frames.error().message + ">";
      return frames->back().function;
    }
  }
  return "<no mapping>";
}

class UnwindCaptureTest : public ::testing::TestWithParam<std::string> {};

// Our pcs after the leaf are exactly what glibc's backtrace() (libgcc's
// .eh_frame unwinder, running in the process) found, up to the root.
TEST_P(UnwindCaptureTest, MatchesGlibcBacktrace) {
  ASSERT_CAPTURE(capture, GetParam());
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
  for (const ModuleProblem& problem : modules.problems())
    ADD_FAILURE() << "module " << problem.path << ": " << problem.reason;
  Unwinder unwinder = make_unwinder();
  UnwindResult r = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);

  EXPECT_EQ(r.stop, UnwindStop::kRoot) << describe(r);
  ASSERT_FALSE(r.pcs.empty());
  EXPECT_EQ(r.pcs[0], capture->file.regs.ip);
  EXPECT_FALSE(r.return_address[0]);
  ASSERT_GT(capture->truth.frames.size(), 3u) << "glibc's backtrace found too few frames";
  std::vector<uint64_t> expected;
  for (size_t i = 1; i < capture->truth.frames.size(); ++i)
    expected.push_back(capture->truth.frames[i].address);
  std::vector<uint64_t> ours(r.pcs.begin() + 1, r.pcs.end());
  EXPECT_EQ(ours, expected) << describe(r);
  for (size_t i = 1; i < r.pcs.size(); ++i)
    EXPECT_TRUE(r.return_address[i]) << "frame " << i;

  // A second pass hits libunwind's cache and must agree.
  UnwindResult again = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);
  EXPECT_EQ(again.pcs, r.pcs);
  EXPECT_EQ(again.stop, r.stop);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, UnwindCaptureTest,
                         ::testing::Values("c-main", "c-thread", "c-cold", "cpp-main", "cpp-thread",
                                           "python-main", "python-thread"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(UnwindTest, MainThreadsEndAtStart) {
  for (const char* name : {"c-main", "cpp-main", "python-main"}) {
    ASSERT_CAPTURE(capture, name);
    ModuleCache cache;
    ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
    UnwindResult r = make_unwinder().unwind(capture->file.snapshot(), modules, kMaxFrames);
    ASSERT_EQ(r.stop, UnwindStop::kRoot) << name << ": " << describe(r);
    EXPECT_EQ(oracle_function(*capture, r, r.pcs.size() - 1), "_start") << name;
  }
}

TEST(UnwindTest, InterpreterStackPassesThroughTheEvalLoop) {
  for (const char* name : {"python-main", "python-thread"}) {
    ASSERT_CAPTURE(capture, name);
    ModuleCache cache;
    ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
    UnwindResult r = make_unwinder().unwind(capture->file.snapshot(), modules, kMaxFrames);
    ASSERT_EQ(r.stop, UnwindStop::kRoot) << name << ": " << describe(r);
    int eval_frames = 0;
    for (size_t i = 0; i < r.pcs.size(); ++i)
      if (oracle_function(*capture, r, i) == "_PyEval_EvalFrameDefault")
        ++eval_frames;
    EXPECT_GE(eval_frames, 1) << name << ": " << describe(r);
  }
}

// Code whose CFI is only in .debug_frame unwinds like the same code with
// .eh_frame: same number of frames, same functions.
TEST(UnwindTest, DebugFrameOnlyCodeUnwindsLikeEhFrameCode) {
  for (const auto& [df_name, eh_name] :
       {std::pair{"cdf-main", "c-main"}, std::pair{"cdf-thread", "c-thread"}}) {
    ASSERT_CAPTURE(df, df_name);
    ASSERT_CAPTURE(eh, eh_name);
    ModuleCache cache;
    ProcessModules df_modules = ProcessModules::from_maps(0, df->maps, cache);
    const Module* leaf = df_modules.find(df->file.regs.ip);
    ASSERT_NE(leaf, nullptr);
    FdeRef fde = leaf->file->find_fde(leaf->file_address(df->file.regs.ip));
    ASSERT_TRUE(fde) << "no CFI for the leaf of " << df_name;
    EXPECT_EQ(fde.table->source(), CfiTable::Source::kDebugFrame);

    Unwinder unwinder = make_unwinder();
    UnwindResult df_result = unwinder.unwind(df->file.snapshot(), df_modules, kMaxFrames);
    ProcessModules eh_modules = ProcessModules::from_maps(0, eh->maps, cache);
    UnwindResult eh_result = unwinder.unwind(eh->file.snapshot(), eh_modules, kMaxFrames);
    EXPECT_EQ(df_result.stop, UnwindStop::kRoot) << describe(df_result);
    ASSERT_EQ(df_result.pcs.size(), eh_result.pcs.size()) << describe(df_result);
    for (size_t i = 0; i < df_result.pcs.size(); ++i)
      EXPECT_EQ(oracle_function(*df, df_result, i), oracle_function(*eh, eh_result, i))
          << df_name << " frame " << i;
  }
}

// A copy cut short ends the walk early with kStackTruncated, and what it
// found is a prefix of the full walk.
TEST(UnwindTest, TruncatedCopiesGivePrefixes) {
  ASSERT_CAPTURE(capture, "python-main");
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
  Unwinder unwinder = make_unwinder();
  UnwindResult full = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);
  ASSERT_EQ(full.stop, UnwindStop::kRoot);
  size_t size = capture->file.stack.size();
  size_t truncated_seen = 0;
  // Odd lengths too: a word can straddle the end of the copy.
  for (size_t cut = 0; cut <= size; cut += (cut < 512 ? 3 : 200)) {
    StackSnapshot snapshot = capture->file.snapshot();
    snapshot.stack = snapshot.stack.subspan(0, cut);
    UnwindResult r = unwinder.unwind(snapshot, modules, kMaxFrames);
    ASSERT_LE(r.pcs.size(), full.pcs.size()) << "cut " << cut;
    EXPECT_TRUE(std::equal(r.pcs.begin(), r.pcs.end(), full.pcs.begin())) << "cut " << cut;
    if (r.pcs.size() < full.pcs.size()) {
      EXPECT_EQ(r.stop, UnwindStop::kStackTruncated) << "cut " << cut << ": " << describe(r);
      ++truncated_seen;
    } else {
      EXPECT_EQ(r.stop, UnwindStop::kRoot) << "cut " << cut;
    }
  }
  EXPECT_GT(truncated_seen, 10u);
  StackSnapshot empty = capture->file.snapshot();
  empty.stack = {};
  UnwindResult r = unwinder.unwind(empty, modules, kMaxFrames);
  EXPECT_EQ(r.pcs.size(), 1u);
  EXPECT_EQ(r.stop, UnwindStop::kStackTruncated);
}

TEST(UnwindTest, MaxFramesBoundsTheWalk) {
  ASSERT_CAPTURE(capture, "c-main");
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
  Unwinder unwinder = make_unwinder();
  UnwindResult full = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);
  ASSERT_GT(full.pcs.size(), 3u);
  UnwindResult r = unwinder.unwind(capture->file.snapshot(), modules, 3);
  EXPECT_EQ(r.stop, UnwindStop::kMaxFrames);
  EXPECT_EQ(r.pcs, std::vector<uint64_t>(full.pcs.begin(), full.pcs.begin() + 3));
  r = unwinder.unwind(capture->file.snapshot(), modules, 1);
  EXPECT_EQ(r.pcs.size(), 1u);
  EXPECT_EQ(r.stop, UnwindStop::kMaxFrames);
}

TEST(UnwindTest, RegistersPointingNowhere) {
  ASSERT_CAPTURE(capture, "c-main");
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
  Unwinder unwinder = make_unwinder();

  StackSnapshot snapshot = capture->file.snapshot();
  snapshot.regs.ip = 0;
  UnwindResult r = unwinder.unwind(snapshot, modules, kMaxFrames);
  EXPECT_EQ(r.pcs, std::vector<uint64_t>{0});
  EXPECT_EQ(r.stop, UnwindStop::kNoModule);

  snapshot = capture->file.snapshot();
  snapshot.regs.ip = snapshot.stack_start + 64;  // the stack is not code
  r = unwinder.unwind(snapshot, modules, kMaxFrames);
  EXPECT_EQ(r.pcs.size(), 1u);
  EXPECT_EQ(r.stop, UnwindStop::kNoModule);

  // A stack pointer below the copy: nothing there can be read.
  snapshot = capture->file.snapshot();
  snapshot.regs.sp = snapshot.stack_start - 4096;
  r = unwinder.unwind(snapshot, modules, kMaxFrames);
  EXPECT_EQ(r.pcs.size(), 1u);
  EXPECT_EQ(r.stop, UnwindStop::kBadFrame) << describe(r);

  // Above the copy: the data was not copied.
  snapshot = capture->file.snapshot();
  snapshot.regs.sp = snapshot.stack_start + snapshot.stack.size() + 4096;
  r = unwinder.unwind(snapshot, modules, kMaxFrames);
  EXPECT_EQ(r.pcs.size(), 1u);
  EXPECT_EQ(r.stop, UnwindStop::kStackTruncated) << describe(r);
}

// Random stack contents: every walk ends, within the frame limit, and a pc
// outside every module can only be the last one.
TEST(UnwindTest, RandomStacksEndInBoundedTime) {
  ASSERT_CAPTURE(capture, "python-main");
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
  Unwinder unwinder = make_unwinder();
  std::mt19937_64 random(12345);
  std::vector<uint8_t> bytes(capture->file.stack.size());
  std::vector<uint64_t> code;  // plausible return addresses
  for (const Module& m : modules.modules())
    code.push_back(m.start + (m.end - m.start) / 3);
  auto started = std::chrono::steady_clock::now();
  std::map<UnwindStop, int> stops;
  for (int round = 0; round < 300; ++round) {
    for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
      uint64_t word = random();
      // Mix in addresses inside modules and inside the stack, as real
      // garbage has.
      if (word % 4 == 0)
        word = code[word % code.size()] + (word >> 40) % 4096;
      else if (word % 4 == 1)
        word = capture->file.stack_start + (word >> 20) % bytes.size();
      std::memcpy(bytes.data() + i, &word, 8);
    }
    StackSnapshot snapshot = capture->file.snapshot();
    snapshot.stack = bytes;
    if (round % 3 == 1)
      snapshot.regs.ip = code[random() % code.size()] + random() % 65536;
    if (round % 3 == 2)
      snapshot.regs.bx = snapshot.regs.bp = snapshot.regs.r12 = random();
    UnwindResult r = unwinder.unwind(snapshot, modules, 64);
    ++stops[r.stop];
    ASSERT_LE(r.pcs.size(), 64u);
    ASSERT_EQ(r.pcs.size(), r.return_address.size());
    for (size_t i = 0; i + 1 < r.pcs.size(); ++i)
      ASSERT_NE(modules.find(r.lookup_pc(i)), nullptr) << "round " << round << " frame " << i;
    if (modules.find(r.lookup_pc(r.pcs.size() - 1)) == nullptr) {
      EXPECT_EQ(r.stop, UnwindStop::kNoModule);
    }
  }
  auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_LT(elapsed, std::chrono::seconds(20));
  EXPECT_GT(stops.size(), 1u) << "garbage should end in several ways";
}

// Address reuse across processes: the same addresses hold different code
// in two "processes"; neither walker's per-address knowledge may leak
// between them (libunwind's cache is flushed; the own walker's rows are
// keyed by file).
TEST(UnwindTest, CacheIsNotSharedBetweenDifferentFilesAtOneAddress) {
  ASSERT_CAPTURE(capture, "c-main");
  auto paths = unwind_fixtures::fixture_paths();
  ModuleCache cache;
  ProcessModules real = ProcessModules::from_maps(0, capture->maps, cache);
  ProcessModules other = ProcessModules::from_maps(
      0, with_file_replaced(capture->maps, paths.c, paths.c_debug_frame), cache);
  ASSERT_NE(other.find(capture->file.regs.ip), nullptr);
  ASSERT_NE(other.find(capture->file.regs.ip)->file, real.find(capture->file.regs.ip)->file);

  for (bool own_walker : {false, true}) {
    SCOPED_TRACE(own_walker ? "own walker" : "libunwind");
    UnwindResult expected = make_unwinder().unwind(capture->file.snapshot(), real, kMaxFrames);
    auto unwinder = Unwinder::create(UnwinderOptions{.own_walker = own_walker});
    ASSERT_TRUE(unwinder.ok());
    (void)unwinder->unwind(capture->file.snapshot(), other, kMaxFrames);
    UnwindResult r = unwinder->unwind(capture->file.snapshot(), real, kMaxFrames);
    EXPECT_EQ(r.pcs, expected.pcs);
    EXPECT_EQ(r.stop, expected.stop);
    if (!own_walker) {
      EXPECT_GE(unwinder->stats().cache_flushes, 1u);
    }
  }
}

// The own walker and libunwind agree, frame for frame and on why the walk
// ended, over real stacks, every cut of a copy, and garbage (random stack
// words, leaf pcs anywhere in a module, so rows mid-prologue and
// mid-epilogue too).
TEST(UnwindTest, OwnWalkerAgreesWithLibunwind) {
  auto own = Unwinder::create(UnwinderOptions{.own_walker = true});
  auto lib = Unwinder::create(UnwinderOptions{.own_walker = false});
  ASSERT_TRUE(own.ok() && lib.ok());
  size_t compared = 0;
  auto compare = [&](const StackSnapshot& snapshot, const ProcessModules& modules, size_t max,
                     const std::string& what) {
    UnwindResult a = own->unwind(snapshot, modules, max);
    UnwindResult b = lib->unwind(snapshot, modules, max);
    ++compared;
    EXPECT_EQ(a.pcs, b.pcs) << what << "\nown: " << describe(a) << "\nlibunwind: " << describe(b);
    EXPECT_EQ(a.return_address, b.return_address) << what;
    EXPECT_EQ(a.stop, b.stop) << what << "\nown: " << describe(a) << "\nlibunwind: " << describe(b);
  };
  std::mt19937_64 random(777);
  for (const char* name : {"c-main", "c-thread", "c-cold", "cpp-main", "cpp-thread", "python-main",
                           "python-thread", "cdf-main", "cdf-thread"}) {
    ASSERT_CAPTURE(capture, name);
    ModuleCache cache;
    ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
    const StackSnapshot full = capture->file.snapshot();
    compare(full, modules, kMaxFrames, name);
    for (size_t cut = 0; cut <= full.stack.size(); cut += 40) {
      StackSnapshot snapshot = full;
      snapshot.stack = full.stack.subspan(0, cut);
      compare(snapshot, modules, kMaxFrames, fmt::format("{} cut {}", name, cut));
    }
    std::vector<uint8_t> bytes(full.stack.size());
    for (int round = 0; round < 200; ++round) {
      StackSnapshot snapshot = full;
      const Module& m = modules.modules()[random() % modules.modules().size()];
      snapshot.regs.ip = m.start + random() % (m.end - m.start);
      if (round % 2 == 1) {
        for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
          uint64_t word = random();
          if (word % 3 == 0)
            word = full.stack_start + (word >> 20) % bytes.size();
          else if (word % 3 == 1)
            word = m.start + (word >> 20) % (m.end - m.start);
          std::memcpy(bytes.data() + i, &word, 8);
        }
        snapshot.stack = bytes;
        snapshot.regs.bp = full.stack_start + random() % bytes.size();
      }
      compare(snapshot, modules, 64,
              fmt::format("{} round {} ip {:#x}", name, round, snapshot.regs.ip));
    }
  }
  // Every byte at the start of each executable mapping: .init and the PLT,
  // whose rows are the linker's CFA expression, are there.
  {
    ASSERT_CAPTURE(capture, "python-main");
    ModuleCache cache;
    ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
    const uint64_t before = own->stats().libunwind_walks;
    for (const Module& m : modules.modules())
      for (uint64_t ip = m.start; ip < m.end && ip < m.start + 4096; ++ip) {
        StackSnapshot snapshot = capture->file.snapshot();
        snapshot.regs.ip = ip;
        compare(snapshot, modules, 8, fmt::format("{} {:#x}", m.path, ip - m.start));
      }
    EXPECT_LT((own->stats().libunwind_walks - before) * 2, own->stats().unwinds);
  }
  EXPECT_GT(compared, 1000u);
  // Most of it is the own walker's work, not libunwind's.
  EXPECT_LT(own->stats().libunwind_walks * 4, own->stats().unwinds) << own->stats().libunwind_walks;
}

// Real stacks of C, C++ and CPython (eval loop included) are walked without
// libunwind: no step of theirs takes libunwind's signal-blocking lock, so
// sampling them makes no system call in the unwinder. Walking them again
// finds every row cached.
TEST(UnwindTest, RealStacksNeedNoLibunwind) {
  Unwinder unwinder = make_unwinder();
  for (const char* name : {"c-main", "c-thread", "c-cold", "cpp-main", "cpp-thread", "python-main",
                           "python-thread", "cdf-main", "cdf-thread"}) {
    ASSERT_CAPTURE(capture, name);
    ModuleCache cache;
    ProcessModules modules = ProcessModules::from_maps(0, capture->maps, cache);
    UnwindResult first = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);
    EXPECT_EQ(first.stop, UnwindStop::kRoot) << name << ": " << describe(first);
    const uint64_t misses = unwinder.stats().rule_misses;
    UnwindResult again = unwinder.unwind(capture->file.snapshot(), modules, kMaxFrames);
    EXPECT_EQ(again.pcs, first.pcs) << name;
    EXPECT_EQ(unwinder.stats().rule_misses, misses) << name << ": a row was not cached";
  }
  EXPECT_EQ(unwinder.stats().libunwind_walks, 0u);
  EXPECT_EQ(unwinder.stats().libunwind_steps, 0u);
  EXPECT_GT(unwinder.stats().rule_hits, 0u);
}

// A module without any CFI: the walk stops there and says why.
TEST(UnwindTest, ModuleWithoutUnwindInfo) {
  ASSERT_CAPTURE(capture, "c-main");
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  auto paths = unwind_fixtures::fixture_paths();
  std::string bare = dir->path() + "/no-cfi";
  auto stripped =
      run_tool({"/usr/bin/objcopy", "--remove-section=.eh_frame", "--remove-section=.eh_frame_hdr",
                "--remove-section=.debug_frame", paths.c, bare});
  ASSERT_TRUE(stripped.ok()) << stripped.error().message;
  ModuleCache cache;
  ProcessModules modules =
      ProcessModules::from_maps(0, with_file_replaced(capture->maps, paths.c, bare), cache);
  const Module* leaf = modules.find(capture->file.regs.ip);
  ASSERT_NE(leaf, nullptr) << (modules.problems().empty() ? "" : modules.problems()[0].reason);
  EXPECT_FALSE(leaf->file->has_unwind_info());
  UnwindResult r = make_unwinder().unwind(capture->file.snapshot(), modules, kMaxFrames);
  EXPECT_EQ(r.pcs, std::vector<uint64_t>{capture->file.regs.ip});
  EXPECT_EQ(r.stop, UnwindStop::kNoUnwindInfo);
}

// Broken files: garbage in place of a library (not ELF at all) and a
// library whose .eh_frame is overwritten with random bytes.
TEST(UnwindTest, MalformedFilesEndTheWalkWithoutCrashing) {
  ASSERT_CAPTURE(capture, "c-main");
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  auto paths = unwind_fixtures::fixture_paths();
  ModuleCache cache;
  Unwinder unwinder = make_unwinder();
  ProcessModules good = ProcessModules::from_maps(0, capture->maps, cache);
  UnwindResult full = unwinder.unwind(capture->file.snapshot(), good, kMaxFrames);
  ASSERT_EQ(full.stop, UnwindStop::kRoot);
  // Frame 2 is in the library (leaf, callback, library).
  const Module* lib = good.find(full.lookup_pc(2));
  ASSERT_NE(lib, nullptr);
  ASSERT_NE(lib->path.find("libkrait_unwind_fixture"), std::string::npos) << lib->path;

  std::mt19937 random(7);
  std::string garbage = dir->path() + "/garbage.so";
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 20000; ++i)
      out.put(static_cast<char>(random()));
  }
  ProcessModules broken =
      ProcessModules::from_maps(0, with_file_replaced(capture->maps, lib->path, garbage), cache);
  ASSERT_FALSE(broken.problems().empty());
  EXPECT_NE(broken.problems()[0].path.find("garbage.so"), std::string::npos);
  UnwindResult r = unwinder.unwind(capture->file.snapshot(), broken, kMaxFrames);
  EXPECT_EQ(r.pcs, std::vector<uint64_t>(full.pcs.begin(), full.pcs.begin() + 3));
  EXPECT_EQ(r.stop, UnwindStop::kNoModule);

  // Random bytes over .eh_frame, at the offset readelf reports.
  auto sections = run_tool({"/usr/bin/readelf", "-SW", lib->path});
  ASSERT_TRUE(sections.ok()) << sections.error().message;
  uint64_t offset = 0, size = 0;
  std::istringstream in(*sections);
  for (std::string line; std::getline(in, line);) {
    auto at = line.find(" .eh_frame ");
    if (at == std::string::npos)
      continue;
    std::istringstream fields(line.substr(at + 11));
    std::string type, addr, off, sz;
    fields >> type >> addr >> off >> sz;
    offset = std::stoull(off, nullptr, 16);
    size = std::stoull(sz, nullptr, 16);
  }
  ASSERT_GT(size, 0u) << "readelf shows no .eh_frame in " << lib->path;
  for (int variant = 0; variant < 20; ++variant) {
    std::string corrupt = dir->path() + fmt::format("/corrupt{}.so", variant);
    copy_file(lib->path, corrupt);
    {
      std::fstream out(corrupt, std::ios::binary | std::ios::in | std::ios::out);
      // Variant 0 rewrites everything; the others flip a few bytes, which
      // keeps most entries parseable and the damage subtle.
      size_t flips = variant == 0 ? size : 1 + random() % 16;
      for (size_t i = 0; i < flips; ++i) {
        out.seekp(static_cast<std::streamoff>(offset + (variant == 0 ? i : random() % size)));
        out.put(static_cast<char>(random()));
      }
    }
    ModuleCache fresh;
    ProcessModules damaged =
        ProcessModules::from_maps(0, with_file_replaced(capture->maps, lib->path, corrupt), fresh);
    Unwinder u = make_unwinder();
    UnwindResult d = u.unwind(capture->file.snapshot(), damaged, kMaxFrames);
    ASSERT_GE(d.pcs.size(), 3u) << "variant " << variant;
    EXPECT_TRUE(std::equal(full.pcs.begin(), full.pcs.begin() + 3, d.pcs.begin()))
        << "variant " << variant;
    EXPECT_LE(d.pcs.size(), kMaxFrames);
  }
}

}  // namespace
}  // namespace krait::unwind
