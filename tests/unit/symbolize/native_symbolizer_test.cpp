// Naming native frames of self-captured stacks, checked against binutils
// addr2line (-f -i -C) on the same files and against the fixtures' source;
// separate debug files (debuglink, build-id directory, CRC); caches.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "fixture_support.h"
#include "symbolize/demangle.h"
#include "symbolize/native_symbolizer.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "unwind/unwinder.h"

namespace krait::symbolize {
namespace {

using unwind_fixtures::Capture;
using unwind_fixtures::OracleFrame;
using unwind_fixtures::TempDir;

using unwind_fixtures::capture_errors;
using unwind_fixtures::find_capture;

Result<std::string> run_tool(const std::vector<std::string>& argv,
                             const std::string& cwd_note = "") {
  auto run = unwind_fixtures::run_program(argv);
  if (!run)
    return run.error();
  if (run->exit_code != 0)
    return make_error("{} failed{}: {}", argv[0], cwd_note, run->err);
  return run->out;
}

// A process address as (mapped file, file virtual address), computed from
// the maps and readelf, not from our ProcessModules.
struct OracleAddress {
  std::string path;
  uint64_t vaddr = 0;
};
std::optional<OracleAddress> oracle_address(const Capture& capture, uint64_t pc) {
  for (const proc::MapEntry& entry : capture.maps) {
    if (!entry.exec || pc < entry.start || pc >= entry.end || !entry.is_file())
      continue;
    for (const proc::MapEntry& first : capture.maps) {
      if (first.inode != entry.inode || first.path != entry.path)
        continue;
      auto first_vaddr = unwind_fixtures::first_load_vaddr(entry.path);
      if (!first_vaddr)
        return std::nullopt;
      return OracleAddress{entry.path,
                           pc - first.start + (*first_vaddr & ~uint64_t{0xfff}) + first.offset};
    }
  }
  return std::nullopt;
}

// addr2line prints DW_AT_name for functions without a linkage name, where
// we may have demangled the ELF symbol: "trampoline" vs
// "(anonymous namespace)::trampoline(int)".
bool same_function(const std::string& ours, const std::string& oracle) {
  if (ours == oracle)
    return true;
  std::string base = ours;
  if (!base.empty() && base.back() == ')') {
    int depth = 0;
    for (size_t i = base.size(); i-- > 0;) {
      if (base[i] == ')')
        ++depth;
      else if (base[i] == '(' && --depth == 0) {
        base.resize(i);
        break;
      }
    }
  }
  return base.size() > oracle.size() + 2 &&
         base.compare(base.size() - oracle.size() - 2, std::string::npos, "::" + oracle) == 0;
}

std::string describe(const NativeFrames& frames) {
  std::string out;
  for (const NativeFrame& f : frames)
    out += fmt::format("[{}{} {}:{}] ", f.inlined ? "inline " : "", f.function, f.file, f.line);
  return out;
}

std::string describe(const std::vector<OracleFrame>& frames) {
  std::string out;
  for (const OracleFrame& f : frames)
    out += fmt::format("[{} {}:{}] ", f.function, f.file, f.line);
  return out;
}

struct Symbolized {
  unwind::UnwindResult unwound;
  std::vector<NativeFrames> frames;  // per pc
};

Symbolized symbolize_capture(const Capture& capture, unwind::ModuleCache& cache,
                             NativeSymbolizer& symbolizer) {
  Symbolized out;
  unwind::ProcessModules modules = unwind::ProcessModules::from_maps(0, capture.maps, cache);
  auto unwinder = unwind::Unwinder::create();
  EXPECT_TRUE(unwinder.ok());
  out.unwound = unwinder->unwind(capture.file.snapshot(), modules, 256);
  EXPECT_EQ(out.unwound.stop, unwind::UnwindStop::kRoot) << capture.name;
  for (size_t i = 0; i < out.unwound.pcs.size(); ++i) {
    uint64_t pc = out.unwound.lookup_pc(i);
    const unwind::Module* module = modules.find(pc);
    if (module == nullptr) {
      out.frames.push_back({NativeFrame{}});
      continue;
    }
    out.frames.push_back(symbolizer.symbolize(*module->file, module->file_address(pc)));
  }
  return out;
}

std::vector<std::string> flat_functions(const Symbolized& s) {
  std::vector<std::string> out;
  for (const NativeFrames& frames : s.frames)
    for (const NativeFrame& f : frames)
      out.push_back(f.function);
  return out;
}

class SymbolizeCaptureTest : public ::testing::TestWithParam<std::string> {};

// Every frame of every capture, every inline level: addr2line and we agree
// on function, file and line.
TEST_P(SymbolizeCaptureTest, MatchesAddr2line) {
  ASSERT_CAPTURE(capture, GetParam());
  unwind::ModuleCache cache;
  NativeSymbolizer symbolizer;
  Symbolized s = symbolize_capture(*capture, cache, symbolizer);
  size_t compared = 0;
  for (size_t i = 0; i < s.frames.size(); ++i) {
    uint64_t pc = s.unwound.lookup_pc(i);
    auto where = oracle_address(*capture, pc);
    ASSERT_TRUE(where) << "frame " << i << " pc " << std::hex << pc << " is in no file mapping";
    auto oracle = unwind_fixtures::addr2line(where->path, where->vaddr);
    ASSERT_TRUE(oracle.ok()) << oracle.error().message;
    auto eu = unwind_fixtures::eu_addr2line(where->path, where->vaddr);
    ASSERT_TRUE(eu.ok()) << eu.error().message;
    const NativeFrames& ours = s.frames[i];
    std::string context =
        fmt::format("frame {} ({} {:#x}): ours {} addr2line {} eu-addr2line {}", i, where->path,
                    where->vaddr, describe(ours), describe(*oracle), describe(*eu));
    // No debug information and no symbol covering the address: addr2line
    // says "??" (binutils may instead name the nearest exported symbol
    // below, which need not contain the address); nothing to compare but
    // that we do not invent a location or a name from thin air.
    if (eu->size() == 1 && eu->front().function == "??") {
      EXPECT_TRUE(ours.back().function.empty() ||
                  same_function(ours.back().function, oracle->back().function))
          << context;
      EXPECT_EQ(ours.size(), 1u) << context;
      EXPECT_EQ(ours.back().line, 0) << context;
      continue;
    }
    if (oracle->size() == 1 && oracle->front().function == "??") {
      EXPECT_EQ(ours.size(), 1u) << context;
      EXPECT_EQ(ours.back().line, 0) << context;
      continue;
    }
    ASSERT_EQ(ours.size(), oracle->size()) << context;
    ASSERT_EQ(ours.size(), eu->size()) << context;
    for (size_t k = 0; k < ours.size(); ++k) {
      EXPECT_TRUE(same_function(ours[k].function, (*oracle)[k].function) ||
                  same_function(ours[k].function, (*eu)[k].function))
          << context;
      // The two tools disagree now and then (binutils on DWARF 5 file
      // numbers, elfutils on addresses outside every unit); where they
      // agree on the line we must match both, else one of them.
      const OracleFrame& a = (*oracle)[k];
      const OracleFrame& e = (*eu)[k];
      bool matches_eu = ours[k].file == e.file && ours[k].line == e.line;
      bool matches_binutils =
          ours[k].line == a.line && (ours[k].file == a.file || ours[k].file == e.file);
      if (a.line == e.line) {
        EXPECT_TRUE(matches_eu) << context;
      } else {
        EXPECT_TRUE(matches_eu || matches_binutils) << context;
      }
      EXPECT_EQ(ours[k].inlined, k + 1 < ours.size()) << context;
      ++compared;
    }
  }
  EXPECT_GE(compared, 5u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SymbolizeCaptureTest,
                         ::testing::Values("c-main", "c-thread", "c-cold", "cpp-main", "cpp-thread",
                                           "python-main", "python-thread"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// The line of `needle` in a fixture source file, read from the file.
int source_line(const std::string& file, const std::string& needle) {
  std::ifstream in(file);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find(needle) != std::string::npos)
      return number;
  }
  return -1;
}

std::string fixture_source(const std::string& name) {
  return std::filesystem::path(unwind_fixtures::fixture_paths().python_script)
      .parent_path()
      .append(name)
      .string();
}

// The names the fixtures' source code spells out, in call order.
TEST(SymbolizeTest, FixtureChainsHaveTheirSourceNames) {
  unwind::ModuleCache cache;
  NativeSymbolizer symbolizer;
  for (const char* name : {"c-main", "c-thread"}) {
    ASSERT_CAPTURE(capture, name);
    Symbolized s = symbolize_capture(*capture, cache, symbolizer);
    std::vector<std::string> functions = flat_functions(s);
    std::vector<std::string> expected = {"krait_fixture_leaf", "inlined_step",
                                         "krait_fixture_callback", "krait_unwind_lib_call",
                                         "chain_static"};
    ASSERT_GE(functions.size(), expected.size());
    EXPECT_EQ(std::vector<std::string>(functions.begin(), functions.begin() + 5), expected);
    EXPECT_EQ(s.frames[0][0].line,
              source_line(fixture_source("fixture_c.c"), "KRAIT_CAPTURE(capture_name)"));
    EXPECT_EQ(s.frames[1][0].line,
              source_line(fixture_source("fixture_c.c"), "int y = krait_fixture_leaf(x + 1);"));
    EXPECT_TRUE(s.frames[1][0].inlined);
    EXPECT_FALSE(s.frames[1][1].inlined);
    if (std::string(name) == "c-main") {
      EXPECT_EQ(functions.back(), "_start");
    } else {
      EXPECT_EQ(functions[5], "thread_main");
      // glibc's thread entry; named from libc's separate debug file (its
      // .dynsym does not export it).
      std::set<std::string> roots = {"clone3", "__clone3", "clone", "__clone"};
      EXPECT_TRUE(roots.count(functions.back()))
          << "the thread's root is named \"" << functions.back()
          << "\"; without libc's debug file (Debian: libc6-dbg) it cannot be named";
    }
  }
  for (const char* name : {"cpp-main", "cpp-thread"}) {
    ASSERT_CAPTURE(capture, name);
    Symbolized s = symbolize_capture(*capture, cache, symbolizer);
    std::vector<std::string> functions = flat_functions(s);
    std::vector<std::string> expected = {
        "long krait_fixture::leaf<long>(long)",   "int krait_fixture::scaled<3>(int)",
        "(anonymous namespace)::trampoline(int)", "krait_unwind_lib_call",
        "krait_fixture::Worker<int>::run(int)",   "krait_fixture::Driver::start(int)"};
    ASSERT_GE(functions.size(), expected.size());
    EXPECT_EQ(std::vector<std::string>(functions.begin(), functions.begin() + 6), expected);
    EXPECT_EQ(s.frames[0][0].system_name, "_ZN13krait_fixture4leafIlEET_S1_");
  }
  for (const char* name : {"python-main", "python-thread"}) {
    ASSERT_CAPTURE(capture, name);
    Symbolized s = symbolize_capture(*capture, cache, symbolizer);
    std::vector<std::string> functions = flat_functions(s);
    ASSERT_FALSE(functions.empty());
    EXPECT_EQ(functions.front(), "krait_capture_capture");
    EXPECT_NE(std::find(functions.begin(), functions.end(), "_PyEval_EvalFrameDefault"),
              functions.end());
    if (std::string(name) == "python-main") {
      EXPECT_EQ(functions.back(), "_start");
    }
  }
}

// nm -S: value and size of `symbol` in `path`.
std::optional<std::pair<uint64_t, uint64_t>> nm_symbol(const std::string& path,
                                                       const std::string& symbol) {
  auto out = run_tool({"/usr/bin/nm", "-S", path});
  if (!out)
    return std::nullopt;
  std::istringstream in(*out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string value, size, type, name;
    if (fields >> value >> size >> type >> name && name == symbol)
      return std::pair{std::stoull(value, nullptr, 16), std::stoull(size, nullptr, 16)};
  }
  return std::nullopt;
}

// A capture taken inside the part GCC split off into krait_fixture_split.cold:
// unwound (see the parameterized tests) and named after the function.
TEST(SymbolizeTest, ColdPartsAreNamedAfterTheirFunction) {
  ASSERT_CAPTURE(capture, "c-cold");
  auto paths = unwind_fixtures::fixture_paths();
  auto cold = nm_symbol(paths.c, "krait_fixture_split.cold");
  ASSERT_TRUE(cold) << "GCC did not split krait_fixture_split.cold off";
  auto leaf = oracle_address(*capture, capture->file.regs.ip);
  ASSERT_TRUE(leaf);
  ASSERT_GE(leaf->vaddr, cold->first);
  ASSERT_LT(leaf->vaddr, cold->first + cold->second) << "the capture is not in the cold part";
  unwind::ModuleCache cache;
  NativeSymbolizer symbolizer;
  Symbolized s = symbolize_capture(*capture, cache, symbolizer);
  ASSERT_GE(s.frames.size(), 2u);
  EXPECT_EQ(s.frames[0].back().function, "krait_fixture_split");
  EXPECT_EQ(s.frames[0].back().system_name, "krait_fixture_split.cold");
  EXPECT_EQ(s.frames[1].back().function, "main");

  // CPython's own split eval loop: covered by CFI and named.
  std::string libpython = unwind_fixtures::fixture_paths().libpython;
  auto eval_cold = nm_symbol(libpython, "_PyEval_EvalFrameDefault.cold");
  ASSERT_TRUE(eval_cold) << "no _PyEval_EvalFrameDefault.cold in " << libpython;
  auto file = unwind::ModuleFile::open(libpython);
  ASSERT_TRUE(file.ok()) << file.error().message;
  for (uint64_t offset : {uint64_t{0}, eval_cold->second / 2, eval_cold->second - 1}) {
    uint64_t vaddr = eval_cold->first + offset;
    EXPECT_TRUE((*file)->find_fde(vaddr)) << "no CFI at " << std::hex << vaddr;
    NativeFrames frames = symbolizer.symbolize(**file, vaddr);
    EXPECT_EQ(frames.back().function, "_PyEval_EvalFrameDefault") << describe(frames);
  }
}

// Stripped builds (Debian's static CPython) keep exported functions'
// symbols but not their cold parts': the part is named from the CFI that
// ties it to its function, and only when that function's symbol is there.
TEST(SymbolizeTest, StrippedColdPartsAreNamedAfterTheFunctionTheyWereSplitFrom) {
  auto paths = unwind_fixtures::fixture_paths();
  auto cold = nm_symbol(paths.c, "krait_fixture_split.cold");
  ASSERT_TRUE(cold) << "GCC did not split krait_fixture_split.cold off";
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  const std::string kept = dir->path() + "/kept";
  const std::string bare = dir->path() + "/bare";
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--strip-all", "--keep-symbol=krait_fixture_split",
                        paths.c, kept})
                  .ok());
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--strip-all", paths.c, bare}).ok());
  ASSERT_FALSE(nm_symbol(kept, "krait_fixture_split.cold")) << "objcopy kept the cold symbol";
  // One symbolizer per file, so that neither sees the other's cache.
  NativeSymbolizer symbolizer;
  NativeSymbolizer bare_symbolizer;
  auto with_parent = unwind::ModuleFile::open(kept, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(with_parent.ok()) << with_parent.error().message;
  auto without = unwind::ModuleFile::open(bare, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(without.ok()) << without.error().message;
  for (uint64_t offset : {uint64_t{0}, cold->second / 2, cold->second - 1}) {
    const uint64_t vaddr = cold->first + offset;
    NativeFrames named = symbolizer.symbolize(**with_parent, vaddr);
    // Named as its symbol would name it, without DWARF to say more.
    EXPECT_EQ(named.back().function, "krait_fixture_split.cold") << describe(named);
    NativeFrames unnamed = bare_symbolizer.symbolize(**without, vaddr);
    EXPECT_EQ(unnamed.back().function, "") << describe(unnamed);
  }
  // The function itself keeps its own name, and code after it that no
  // symbol covers is not taken for one of its parts.
  auto parent = nm_symbol(paths.c, "krait_fixture_split");
  ASSERT_TRUE(parent);
  EXPECT_EQ(symbolizer.symbolize(**with_parent, parent->first).back().system_name,
            "krait_fixture_split");
  auto after = (*with_parent)->find_fde(parent->first + parent->second);
  if (after) {
    NativeFrames next = symbolizer.symbolize(**with_parent, after.fde->start);
    EXPECT_EQ(next.back().function, "") << describe(next);
  }
}

// The linker writes the FDE of .plt right after crt1's FDE for _start, and
// .plt lies below _start: a PLT stub is not "_start.cold" but the call it
// makes, "getenv@plt" (ElfFileTest checks the stub names against objdump).
TEST(SymbolizeTest, PltStubsAreNamedAfterTheirTargetNotAsColdParts) {
  auto paths = unwind_fixtures::fixture_paths();
  auto start = nm_symbol(paths.c, "_start");
  ASSERT_TRUE(start);
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  const std::string kept = dir->path() + "/kept";
  ASSERT_TRUE(
      run_tool({"/usr/bin/objcopy", "--strip-all", "--keep-symbol=_start", paths.c, kept}).ok());
  auto file = unwind::ModuleFile::open(kept, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto plt = (*file)->elf().find_section(".plt");
  ASSERT_TRUE(plt && plt->size > 0) << paths.c << " has no .plt";
  auto stub = (*file)->find_fde(plt->addr);
  ASSERT_TRUE(stub) << "no FDE covers .plt";
  const unwind::FdeEntry* before = stub.table->emitted_before(*stub.fde);
  ASSERT_TRUE(before && before->start == start->first)
      << "the FDE before .plt's is not _start's: the case this test is about does not arise";
  NativeSymbolizer symbolizer;
  NativeFrames frames = symbolizer.symbolize(**file, plt->addr + 16);
  auto target = (*file)->elf().plt_target(plt->addr + 16);
  ASSERT_TRUE(target) << "the first stub of .plt has no target";
  EXPECT_EQ(frames.back().function, *target + "@plt") << describe(frames);
  EXPECT_EQ(frames.size(), 1u) << describe(frames);
}

// The leaf of the C capture, as (fixture executable, file address).
std::optional<OracleAddress> c_leaf() {
  const Capture* capture = find_capture("c-main");
  if (capture == nullptr)
    return std::nullopt;
  return oracle_address(*capture, capture->file.regs.ip);
}

// The frames at the C leaf, symbolized from the unstripped fixture.
NativeFrames reference_frames(const OracleAddress& leaf) {
  auto file = unwind::ModuleFile::open(leaf.path, unwind::ModuleFileOptions{.debug_roots = {}});
  EXPECT_TRUE(file.ok()) << file.error().message;
  NativeSymbolizer symbolizer;
  return symbolizer.symbolize(**file, leaf.vaddr);
}

TEST(DebugFileTest, DebuglinkBesideTheFile) {
  auto leaf = c_leaf();
  ASSERT_TRUE(leaf) << "no c-main capture: " << capture_errors();
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  std::string debug = dir->path() + "/fixture.debug";
  std::string stripped = dir->path() + "/fixture";
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--only-keep-debug", leaf->path, debug}).ok());
  auto linked = run_tool(
      {"/usr/bin/objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug, leaf->path, stripped});
  ASSERT_TRUE(linked.ok()) << linked.error().message;

  auto file = unwind::ModuleFile::open(stripped, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  ASSERT_NE((*file)->debug_elf(), nullptr) << "debuglink target not found";
  EXPECT_EQ((*file)->debug_elf()->path(), debug);
  NativeSymbolizer symbolizer;
  NativeFrames frames = symbolizer.symbolize(**file, leaf->vaddr);
  EXPECT_EQ(frames, reference_frames(*leaf)) << describe(frames);
  EXPECT_GT(frames.back().line, 0);

  // In a .debug subdirectory as well.
  std::filesystem::create_directory(dir->path() + "/.debug");
  std::filesystem::rename(debug, dir->path() + "/.debug/fixture.debug");
  auto moved = unwind::ModuleFile::open(stripped, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(moved.ok());
  ASSERT_NE((*moved)->debug_elf(), nullptr);
  EXPECT_EQ((*moved)->debug_elf()->path(), dir->path() + "/.debug/fixture.debug");
}

TEST(DebugFileTest, BuildIdDirectory) {
  auto leaf = c_leaf();
  ASSERT_TRUE(leaf) << "no c-main capture: " << capture_errors();
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto notes = run_tool({"/usr/bin/readelf", "-n", leaf->path});
  ASSERT_TRUE(notes.ok()) << notes.error().message;
  auto at = notes->find("Build ID: ");
  ASSERT_NE(at, std::string::npos) << "the fixture has no build-id";
  std::string build_id = notes->substr(at + 10, notes->find('\n', at) - at - 10);
  std::string root = dir->path() + "/debug";
  std::filesystem::create_directories(root + "/.build-id/" + build_id.substr(0, 2));
  std::string debug =
      root + "/.build-id/" + build_id.substr(0, 2) + "/" + build_id.substr(2) + ".debug";
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--only-keep-debug", leaf->path, debug}).ok());
  std::string stripped = dir->path() + "/fixture.stripped";
  ASSERT_TRUE(run_tool({"/usr/bin/strip", "--strip-all", "-o", stripped, leaf->path}).ok());

  unwind::ModuleFileOptions options{.debug_roots = {root}};
  auto file = unwind::ModuleFile::open(stripped, options);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_FALSE((*file)->elf().has_symtab());
  ASSERT_NE((*file)->debug_elf(), nullptr) << "not found under " << root;
  NativeSymbolizer symbolizer;
  NativeFrames frames = symbolizer.symbolize(**file, leaf->vaddr);
  EXPECT_EQ(frames, reference_frames(*leaf)) << describe(frames);

  // Another file's debug information under this build-id is refused.
  auto lib_debug = run_tool(
      {"/usr/bin/objcopy", "--only-keep-debug", unwind_fixtures::fixture_paths().lib, debug});
  ASSERT_TRUE(lib_debug.ok());
  auto wrong = unwind::ModuleFile::open(stripped, options);
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ((*wrong)->debug_elf(), nullptr);
  // A new symbolizer, as a fresh start (the file is another one anyway).
  NativeSymbolizer fresh;
  NativeFrames bare = fresh.symbolize(**wrong, leaf->vaddr);
  ASSERT_EQ(bare.size(), 1u);
  EXPECT_EQ(bare[0].line, 0);
}

// Without a build-id the debuglink's CRC decides.
TEST(DebugFileTest, DebuglinkCrcWithoutBuildId) {
  auto leaf = c_leaf();
  ASSERT_TRUE(leaf) << "no c-main capture: " << capture_errors();
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  std::string plain = dir->path() + "/plain";
  std::string debug = dir->path() + "/plain.debug";
  std::string stripped = dir->path() + "/plain.stripped";
  ASSERT_TRUE(
      run_tool({"/usr/bin/objcopy", "--remove-section=.note.gnu.build-id", leaf->path, plain})
          .ok());
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--only-keep-debug", plain, debug}).ok());
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug, plain,
                        stripped})
                  .ok());
  unwind::ModuleFileOptions options{.debug_roots = {}};
  auto file = unwind::ModuleFile::open(stripped, options);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_TRUE((*file)->build_id().empty());
  ASSERT_NE((*file)->debug_elf(), nullptr) << "CRC-checked debuglink not followed";
  NativeSymbolizer symbolizer;
  NativeFrames frames = symbolizer.symbolize(**file, leaf->vaddr);
  EXPECT_EQ(frames, reference_frames(*leaf)) << describe(frames);

  std::ofstream(debug, std::ios::app) << "changed";
  auto changed = unwind::ModuleFile::open(stripped, options);
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ((*changed)->debug_elf(), nullptr) << "a debug file with the wrong CRC was used";
}

// .debug_frame that only the debug file carries still unwinds.
TEST(DebugFileTest, DebugFrameFromTheDebugFile) {
  auto paths = unwind_fixtures::fixture_paths();
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  std::string debug = dir->path() + "/cdf.debug";
  std::string stripped = dir->path() + "/cdf";
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--only-keep-debug", paths.c_debug_frame, debug}).ok());
  ASSERT_TRUE(run_tool({"/usr/bin/objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug,
                        paths.c_debug_frame, stripped})
                  .ok());
  auto nm = run_tool({"/usr/bin/nm", paths.c_debug_frame});
  ASSERT_TRUE(nm.ok());
  auto at = nm->find(" T krait_fixture_leaf");
  ASSERT_NE(at, std::string::npos);
  uint64_t leaf = std::stoull(nm->substr(nm->rfind('\n', at) + 1, 16), nullptr, 16);

  auto file = unwind::ModuleFile::open(stripped, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_FALSE((*file)->elf().find_section(".debug_frame").has_value());
  unwind::FdeRef fde = (*file)->find_fde(leaf);
  ASSERT_TRUE(fde) << "no CFI for krait_fixture_leaf";
  EXPECT_EQ(fde.table->source(), unwind::CfiTable::Source::kDebugFrame);
  EXPECT_EQ(fde.fde->start, leaf);
}

// One file opened twice (two ModuleFiles of one inode, as two caches would
// make) shares one cache entry.
TEST(SymbolizerCacheTest, OneEntryPerFile) {
  auto paths = unwind_fixtures::fixture_paths();
  auto a = unwind::ModuleFile::open(paths.lib);
  auto b = unwind::ModuleFile::open(paths.lib);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_NE((*a)->serial(), (*b)->serial());
  ASSERT_EQ((*a)->identity(), (*b)->identity());
  auto symbol = (*a)->elf().find_symbol("krait_unwind_lib_call");
  ASSERT_TRUE(symbol);
  NativeSymbolizer symbolizer;
  NativeFrames from_a = symbolizer.symbolize(**a, symbol->value + 4);
  NativeFrames from_b = symbolizer.symbolize(**b, symbol->value + 4);
  EXPECT_EQ(from_a, from_b);
  EXPECT_EQ(from_a.back().function, "krait_unwind_lib_call");
  EXPECT_EQ(symbolizer.file_count(), 1u);
  EXPECT_EQ(symbolizer.stats().files_opened, 1u);
}

// A file that claims another's build-id (the fixture library's note on
// other contents: its function renamed everywhere, DWARF included) keeps
// its own names. The cache was keyed by build-id, so whichever file was
// looked at first named both.
TEST(SymbolizerCacheTest, AFileClaimingAnotherBuildIdKeepsItsOwnNames) {
  auto paths = unwind_fixtures::fixture_paths();
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  std::ifstream in(paths.lib, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const std::string real = "krait_unwind_lib_call";
  const std::string fake = "krait_IMPOSTOR_lib_cx";
  size_t renamed = 0;
  for (size_t at = bytes.find(real); at != std::string::npos; at = bytes.find(real, at)) {
    bytes.replace(at, real.size(), fake);
    ++renamed;
  }
  ASSERT_GE(renamed, 2u);
  const std::string impostor = dir->path() + "/libimpostor.so";
  std::ofstream(impostor, std::ios::binary) << bytes;

  auto a = unwind::ModuleFile::open(paths.lib, unwind::ModuleFileOptions{.debug_roots = {}});
  auto b = unwind::ModuleFile::open(impostor, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ((*a)->build_id(), (*b)->build_id()) << "the impostor lost the claim";
  EXPECT_NE((*a)->identity(), (*b)->identity());
  auto symbol = (*a)->elf().find_symbol(real);
  ASSERT_TRUE(symbol);
  NativeSymbolizer symbolizer;
  NativeFrames from_real = symbolizer.symbolize(**a, symbol->value + 4);
  NativeFrames from_fake = symbolizer.symbolize(**b, symbol->value + 4);
  EXPECT_EQ(from_real.back().function, real) << describe(from_real);
  EXPECT_EQ(from_fake.back().function, fake) << describe(from_fake);
  EXPECT_EQ(symbolizer.file_count(), 2u);
  // And the other way round, in a fresh symbolizer.
  NativeSymbolizer reversed;
  EXPECT_EQ(reversed.symbolize(**b, symbol->value + 4).back().function, fake);
  EXPECT_EQ(reversed.symbolize(**a, symbol->value + 4).back().function, real);
}

// Tiny limits: results stay right while files and addresses are evicted.
TEST(SymbolizerCacheTest, BoundedCachesStayCorrect) {
  ASSERT_CAPTURE(capture, "cpp-main");
  unwind::ModuleCache cache;
  NativeSymbolizer unbounded;
  Symbolized reference = symbolize_capture(*capture, cache, unbounded);
  NativeSymbolizer tiny(NativeSymbolizerOptions{.max_files = 1, .max_addresses_per_file = 2});
  for (int round = 0; round < 3; ++round) {
    Symbolized s = symbolize_capture(*capture, cache, tiny);
    ASSERT_EQ(s.frames.size(), reference.frames.size());
    for (size_t i = 0; i < s.frames.size(); ++i)
      EXPECT_EQ(s.frames[i], reference.frames[i]) << "round " << round << " frame " << i;
  }
  EXPECT_EQ(tiny.file_count(), 1u);
  EXPECT_GT(tiny.stats().files_evicted, 0u);
}

// A file's address cache holds its bound whatever number of addresses is
// looked up: the least recently used goes, and the counters show it.
TEST(SymbolizerCacheTest, AddressCacheHoldsItsBound) {
  auto paths = unwind_fixtures::fixture_paths();
  auto file = unwind::ModuleFile::open(paths.lib);
  ASSERT_TRUE(file.ok());
  auto symbol = (*file)->elf().find_symbol("krait_unwind_lib_call");
  ASSERT_TRUE(symbol);
  constexpr size_t kBound = 4;
  constexpr size_t kLookups = 3 * kBound;
  NativeSymbolizer symbolizer(NativeSymbolizerOptions{.max_addresses_per_file = kBound});
  for (size_t i = 0; i < kLookups; ++i) {
    symbolizer.lookup(**file, symbol->value + i);
    ASSERT_LE(symbolizer.stats().address_cache.entries, kBound) << i;
  }
  CacheStats s = symbolizer.stats().address_cache;
  EXPECT_EQ(s.misses, kLookups);
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.entries, kBound);
  EXPECT_EQ(s.evictions, kLookups - kBound);
  // The most recent addresses are still there; the first one is gone.
  symbolizer.lookup(**file, symbol->value + kLookups - 1);
  EXPECT_EQ(symbolizer.stats().address_cache.hits, 1u);
  symbolizer.lookup(**file, symbol->value);
  EXPECT_EQ(symbolizer.stats().address_cache.misses, kLookups + 1);
}

TEST(SymbolizerCacheTest, ConcurrentLookupsAgree) {
  ASSERT_CAPTURE(capture, "python-main");
  unwind::ModuleCache cache;
  NativeSymbolizer reference_symbolizer;
  Symbolized reference = symbolize_capture(*capture, cache, reference_symbolizer);
  NativeSymbolizer shared;
  std::vector<Symbolized> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t)
    threads.emplace_back([&, t] { results[t] = symbolize_capture(*capture, cache, shared); });
  for (std::thread& t : threads)
    t.join();
  for (const Symbolized& r : results)
    EXPECT_EQ(r.frames, reference.frames);
}

TEST(SymbolizeTest, VdsoFunctionsHaveNames) {
  unwind::ModuleCache cache;
  auto vdso = cache.vdso();
  ASSERT_TRUE(vdso.ok()) << vdso.error().message;
  EXPECT_TRUE((*vdso)->has_unwind_info());
  auto symbol = (*vdso)->elf().find_symbol("__vdso_clock_gettime");
  ASSERT_TRUE(symbol) << "the vDSO has no __vdso_clock_gettime";
  EXPECT_TRUE((*vdso)->find_fde(symbol->value + 1));
  NativeSymbolizer symbolizer;
  NativeFrames frames = symbolizer.symbolize(**vdso, symbol->value + 1);
  ASSERT_EQ(frames.size(), 1u);
  std::set<std::string> names = {"__vdso_clock_gettime", "clock_gettime"};
  EXPECT_TRUE(names.count(frames[0].function)) << frames[0].function;
}

TEST(SymbolizeTest, UnnamedAddressesGiveOneEmptyFrame) {
  auto file = unwind::ModuleFile::open(unwind_fixtures::fixture_paths().lib);
  ASSERT_TRUE(file.ok());
  NativeSymbolizer symbolizer;
  for (uint64_t vaddr : {uint64_t{0}, uint64_t{0x10}, ~uint64_t{0} - 1}) {
    NativeFrames frames = symbolizer.symbolize(**file, vaddr);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "");
    EXPECT_EQ(frames[0].line, 0);
  }
}

TEST(DemangleTest, MatchesCxxFilt) {
  std::vector<std::string> names = {"_ZN13krait_fixture4leafIlEET_S1_",
                                    "_Z3foov.cold",
                                    "_ZN12_GLOBAL__N_110trampolineEi",
                                    "main",
                                    "_Znot_mangled",
                                    "_ZNSt6vectorIiSaIiEE9push_backEOi"};
  std::vector<std::string> argv = {"/usr/bin/c++filt"};
  argv.insert(argv.end(), names.begin(), names.end());
  auto out = run_tool(argv);
  ASSERT_TRUE(out.ok()) << out.error().message;
  std::istringstream in(*out);
  for (const std::string& name : names) {
    std::string expected;
    std::getline(in, expected);
    EXPECT_EQ(demangle(name), expected) << name;
  }
}

}  // namespace
}  // namespace krait::symbolize
