// CfiTable: the CFI index against readelf's own decoding, its caps, and
// damaged input.
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

// A section of tiny entries, each FDE with a CIE of its own: indexing stops
// at the cap on distinct CIEs instead of growing with the section (each
// parsed CIE and indexed FDE costs more memory than its bytes).
TEST(CfiTableTest, DistinctCiesAreCapped) {
  auto elf = elf::ElfFile::open(unwind_fixtures::fixture_paths().lib);
  ASSERT_TRUE(elf.ok());
  auto bytes = elf->section_bytes(".eh_frame");
  ASSERT_TRUE(bytes.ok());
  // The section starts with a CIE, then the first FDE (lengths exclude
  // their own 4 bytes).
  uint32_t cie_length = 0;
  std::memcpy(&cie_length, bytes->data(), 4);
  const size_t cie_size = 4 + cie_length;
  uint32_t fde_length = 0;
  ASSERT_LT(cie_size + 8, bytes->size());
  std::memcpy(&fde_length, bytes->data() + cie_size, 4);
  const size_t fde_size = 4 + fde_length;
  ASSERT_LE(cie_size + fde_size, bytes->size());
  std::vector<uint8_t> pair(bytes->begin(),
                            bytes->begin() + static_cast<long>(cie_size + fde_size));
  const uint32_t cie_pointer = static_cast<uint32_t>(cie_size + 4);  // back from the FDE's id field
  std::memcpy(pair.data() + cie_size + 4, &cie_pointer, 4);
  const size_t pairs = 300'000;
  std::vector<uint8_t> section;
  section.reserve(pairs * pair.size() + 4);
  for (size_t i = 0; i < pairs; ++i)
    section.insert(section.end(), pair.begin(), pair.end());
  section.insert(section.end(), 4, 0);
  auto table = CfiTable::from_eh_frame(section, 0x10000);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_GT(table->size(), 1000u);
  EXPECT_LE(table->size(), size_t{1} << 18) << "indexed past the cap on distinct CIEs";
}

// One CIE (version 1, no augmentation, return address in 16, `cie_program`)
// and one FDE (absolute 8-byte addresses [0x1000, 0x1100), `fde_program`),
// then the terminator: a .eh_frame laid out by hand.
std::vector<uint8_t> eh_frame_of(const std::vector<uint8_t>& cie_program,
                                 const std::vector<uint8_t>& fde_program) {
  std::vector<uint8_t> out;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto u64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  std::vector<uint8_t> cie = {1, 0, 1, 0x78, 16};  // version, "", code 1, data -8, ra 16
  cie.insert(cie.end(), cie_program.begin(), cie_program.end());
  u32(static_cast<uint32_t>(4 + cie.size()));
  u32(0);  // CIE id
  out.insert(out.end(), cie.begin(), cie.end());
  const size_t fde_at = out.size();
  u32(static_cast<uint32_t>(4 + 16 + fde_program.size()));
  u32(static_cast<uint32_t>(fde_at + 4));  // back to the CIE at 0
  u64(0x1000);
  u64(0x100);
  out.insert(out.end(), fde_program.begin(), fde_program.end());
  u32(0);
  return out;
}

// A library chooses its own CFI: an entry that names a register libunwind
// keeps no slot for (DW_CFA_register r16 in r1791 made libunwind 1.6 write
// far outside its state) is not indexed; the same entry with a real register is.
TEST(CfiTableTest, EntriesNamingRegistersLibunwindLacksAreDropped) {
  const std::vector<uint8_t> def_cfa = {0x0c, 7, 8, 0x90, 1};  // def_cfa rsp+8; r16 at cfa-8
  auto good = CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x09, 16, 3}), 0);
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_NE(good->find(0x1010), nullptr);

  // DW_CFA_register r16, r1791 (uleb 0xff 0x0d), in the CIE and in the FDE.
  std::vector<uint8_t> hostile = def_cfa;
  hostile.insert(hostile.end(), {0x09, 16, 0xff, 0x0d});
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(hostile, {}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x09, 16, 0xff, 0x0d}), 0).ok());
  // DW_CFA_offset of register 40, DW_CFA_expression of register 17, and an
  // opcode no x86-64 tool emits.
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x80 | 40, 1}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x10, 17, 1, 0x96}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x3f}), 0).ok());
  // A return address column other than 16.
  auto other_ra = eh_frame_of(def_cfa, {});
  other_ra[8 + 4] = 17;
  EXPECT_FALSE(CfiTable::from_eh_frame(other_ra, 0).ok());
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
