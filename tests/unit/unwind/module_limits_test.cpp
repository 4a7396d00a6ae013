// ModuleFile on compressed .debug_frame sections whose header claims more
// than is there, and on real compressed ones.
//
// The claim is checked by indexing in a child process whose address space
// (RLIMIT_AS) leaves room for the test but not for what the header claims:
// an allocation of the claimed size fails there, and the child dies of the
// uncaught std::bad_alloc. Not built under AddressSanitizer, which reserves
// terabytes of address space and cannot run under such a limit.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fixture_support.h"
#include "module_test_support.h"
#include "unwind/module_file.h"

namespace krait::unwind {
namespace {

using module_test::run_tool;
using unwind_fixtures::TempDir;

// This process's address space in bytes (/proc/self/statm, first field).
uint64_t address_space() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  return pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Runs `f` in a child whose address space may grow by at most `headroom`;
// the child's exit status (as waitpid gives it).
template <typename F>
int in_limited_child(uint64_t headroom, F f) {
  pid_t pid = ::fork();
  if (pid == 0) {
    rlimit limit{};
    limit.rlim_cur = limit.rlim_max = address_space() + headroom;
    if (::setrlimit(RLIMIT_AS, &limit) != 0)
      ::_exit(3);
    ::_exit(f() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// A .debug_frame section (as a debug file compresses it: Elf64_Chdr, then
// zlib) whose header claims `claimed` bytes while the stream inflates to a
// few hundred.
std::vector<uint8_t> lying_compressed_section(uint64_t claimed) {
  std::vector<uint8_t> plain(256, 0);
  uLongf compressed_size = compressBound(static_cast<uLong>(plain.size()));
  std::vector<uint8_t> compressed(compressed_size);
  EXPECT_EQ(
      compress(compressed.data(), &compressed_size, plain.data(), static_cast<uLong>(plain.size())),
      Z_OK);
  compressed.resize(compressed_size);
  std::vector<uint8_t> section(24, 0);
  const uint32_t zlib = 1;  // ELFCOMPRESS_ZLIB
  const uint64_t align = 8;
  std::memcpy(section.data(), &zlib, sizeof zlib);
  std::memcpy(section.data() + 8, &claimed, sizeof claimed);
  std::memcpy(section.data() + 16, &align, sizeof align);
  section.insert(section.end(), compressed.begin(), compressed.end());
  return section;
}

// A compressed .debug_frame claiming 300 MiB (the limit is 64 MiB, and a
// few dozen bytes of zlib cannot inflate to more than ~1032 times their
// size): refused before anything is allocated. Indexing used to allocate
// whatever the header claimed, up to 2 GiB.
TEST(ModuleLimitsTest, CompressedDebugFrameClaimingTooMuchIsNotInflated) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string blob = dir->path() + "/debug_frame.bin";
  std::vector<uint8_t> section = lying_compressed_section(uint64_t{300} << 20);
  std::ofstream(blob, std::ios::binary)
      .write(reinterpret_cast<const char*>(section.data()),
             static_cast<std::streamsize>(section.size()));
  const std::string lib = dir->path() + "/liblying.so";
  auto added =
      run_tool({"/usr/bin/objcopy", "--add-section", ".debug_frame=" + blob, paths.lib, lib});
  ASSERT_TRUE(added.ok()) << added.error().message;

  int status = in_limited_child(uint64_t{128} << 20, [&] {
    auto file = ModuleFile::open(lib, ModuleFileOptions{.debug_roots = {}});
    // .eh_frame is intact: the library still unwinds.
    return file.ok() && (*file)->has_unwind_info();
  });
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status)
                                 << ": the claimed size was allocated";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A real compressed .debug_frame (objcopy --compress-debug-sections) is
// still inflated and used.
TEST(ModuleLimitsTest, RealCompressedDebugFrameIsUsed) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string compressed = dir->path() + "/cdf.compressed";
  auto made = run_tool(
      {"/usr/bin/objcopy", "--compress-debug-sections=zlib", paths.c_debug_frame, compressed});
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto sections = run_tool({"/usr/bin/readelf", "-SW", compressed});
  ASSERT_TRUE(sections.ok());
  auto at = sections->find(".debug_frame");
  ASSERT_NE(at, std::string::npos);
  const std::string line = sections->substr(at, sections->find('\n', at) - at);
  ASSERT_NE(line.find('C'), std::string::npos) << "not compressed: " << line;

  auto nm = run_tool({"/usr/bin/nm", paths.c_debug_frame});
  ASSERT_TRUE(nm.ok());
  auto leaf_at = nm->find(" T krait_fixture_leaf");
  ASSERT_NE(leaf_at, std::string::npos);
  uint64_t leaf = std::stoull(nm->substr(nm->rfind('\n', leaf_at) + 1, 16), nullptr, 16);
  auto file = ModuleFile::open(compressed, ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  FdeRef fde = (*file)->find_fde(leaf);
  ASSERT_TRUE(fde) << "no CFI for krait_fixture_leaf from the compressed .debug_frame";
  EXPECT_EQ(fde.table->source(), CfiTable::Source::kDebugFrame);
  EXPECT_EQ(fde.fde->start, leaf);
}

}  // namespace
}  // namespace krait::unwind
