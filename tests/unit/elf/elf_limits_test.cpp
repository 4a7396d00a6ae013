// ElfFile on files whose headers claim sizes they do not hold: sparse files
// (a few KiB on disk, hundreds of MiB or GiB long) whose section headers
// point into the hole. Each would make an unchecked reader allocate what
// the header claims; here every such call must fail (or leave the table
// out) with the heap grown by no more than a few MiB.
//
// The heap is measured with mallinfo2() (libelf allocates with malloc), so
// these tests are not built under AddressSanitizer, whose allocator glibc's
// counters do not see.
#include <elf.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "elf/elf_file.h"
#include "test_support.h"

namespace krait::elf {
namespace {

using test::fixtures;

#define REQUIRE_FIXTURES() ASSERT_EQ(test::missing_fixtures(), "")

constexpr uint64_t kMiB = uint64_t{1} << 20;
// What a refused call may still allocate (headers, messages, small tables).
constexpr uint64_t kSmallGrowth = 16 * kMiB;
// What the crafted headers claim: far above any limit, far below this
// machine's memory, so that a reader without limits really allocates it.
constexpr uint64_t kClaimed = 300 * kMiB;

// Bytes of heap in use: small chunks plus mmap()ed large ones.
uint64_t heap_in_use() {
  struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

uint64_t grown_since(uint64_t before) {
  uint64_t now = heap_in_use();
  return now > before ? now - before : 0;
}

template <typename T>
T load(const std::vector<uint8_t>& bytes, size_t offset) {
  T out{};
  if (offset <= bytes.size() && sizeof(T) <= bytes.size() - offset)
    std::memcpy(&out, bytes.data() + offset, sizeof(T));
  return out;
}
template <typename T>
void store(std::vector<uint8_t>& bytes, size_t offset, const T& value) {
  ASSERT_LE(offset + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

// The file offset of the section header named `name`, or 0.
size_t section_header(const std::vector<uint8_t>& bytes, const std::string& name) {
  auto ehdr = load<Elf64_Ehdr>(bytes, 0);
  auto names = load<Elf64_Shdr>(bytes, ehdr.e_shoff + ehdr.e_shstrndx * sizeof(Elf64_Shdr));
  for (size_t i = 1; i < ehdr.e_shnum; ++i) {
    size_t at = ehdr.e_shoff + i * sizeof(Elf64_Shdr);
    auto shdr = load<Elf64_Shdr>(bytes, at);
    size_t name_at = names.sh_offset + shdr.sh_name;
    if (name_at < bytes.size() &&
        std::strncmp(reinterpret_cast<const char*>(bytes.data() + name_at), name.c_str(),
                     bytes.size() - name_at) == 0)
      return at;
  }
  return 0;
}

// The PIE fixture with section `name` moved past the end of the file into a
// hole of `claimed` bytes: the file is that long, sparse, and nearly all
// zeros.
std::string sparse_copy_with_huge_section(const test::TempDir& dir, const std::string& name,
                                          uint64_t claimed) {
  std::vector<uint8_t> bytes = test::read_bytes(fixtures().pie);
  size_t header = section_header(bytes, name);
  EXPECT_NE(header, 0u) << "the fixture has no " << name;
  if (header == 0)
    return "";
  const uint64_t hole = (bytes.size() + 4095) & ~uint64_t{4095};
  store<uint64_t>(bytes, header + offsetof(Elf64_Shdr, sh_offset), hole);
  store<uint64_t>(bytes, header + offsetof(Elf64_Shdr, sh_size), claimed);
  std::string path = dir.file("sparse-" + name.substr(1));
  test::write_bytes(path, bytes, false);
  EXPECT_EQ(::truncate(path.c_str(), static_cast<off_t>(hole + claimed)), 0);
  return path;
}

// A 16 KiB file claiming a 300 MiB .rodata: section_bytes() used to read
// it whole (a 300 MiB allocation for a file that holds 16 KiB).
TEST(ElfLimitsTest, SectionLargerThanTheLimitIsRefusedBeforeAllocating) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  std::string path = sparse_copy_with_huge_section(dir, ".rodata", kClaimed);
  ASSERT_FALSE(path.empty());
  const uint64_t before = heap_in_use();
  auto elf = ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  auto rodata = elf->section_bytes(".rodata");
  const uint64_t grown = grown_since(before);
  EXPECT_FALSE(rodata.ok()) << "a " << kClaimed << "-byte section was read";
  if (!rodata.ok()) {
    EXPECT_NE(rodata.error().message.find("more than"), std::string::npos)
        << rodata.error().message;
  }
  EXPECT_LT(grown, kSmallGrowth) << "the heap grew by " << grown << " bytes";
  // The rest of the file still answers.
  EXPECT_TRUE(elf->section_bytes(".text").ok());
  EXPECT_TRUE(elf->find_symbol("krait_fixture_global").has_value());
}

// The same for a symbol table: it is left out of the index, and the other
// table still answers.
TEST(ElfLimitsTest, SymbolTableLargerThanTheLimitIsNotIndexed) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  std::string path = sparse_copy_with_huge_section(dir, ".symtab", kClaimed);
  ASSERT_FALSE(path.empty());
  const uint64_t before = heap_in_use();
  auto elf = ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  // Exported: in .dynsym as well.
  auto global = elf->find_symbol("krait_fixture_global");
  (void)elf->function_at(global ? global->value : 0);
  const uint64_t grown = grown_since(before);
  EXPECT_TRUE(global.has_value());
  EXPECT_LT(grown, kSmallGrowth) << "the heap grew by " << grown << " bytes";
}

// A 64 GiB sparse file (a few KiB on disk) is refused by its size alone.
TEST(ElfLimitsTest, FileLargerThanTheLimitIsRefused) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  std::string path = dir.file("libpython3.99.so");
  test::write_bytes(path, test::read_bytes(fixtures().pie), false);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(uint64_t{64} << 30)), 0);
  auto elf = ElfFile::open(path);
  ASSERT_FALSE(elf.ok()) << "a 64 GiB file was opened";
  EXPECT_NE(elf.error().message.find("larger than"), std::string::npos) << elf.error().message;
}

// Extended section numbering (e_shnum 0, the count in section header 0)
// claiming a million sections over a sparse tail: libelf would allocate a
// structure per section, and the section list one entry each.
TEST(ElfLimitsTest, SectionCountLargerThanTheLimitIsRefused) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  std::vector<uint8_t> bytes = test::read_bytes(fixtures().pie);
  auto ehdr = load<Elf64_Ehdr>(bytes, 0);
  const uint64_t sections = uint64_t{1} << 20;
  store<uint16_t>(bytes, offsetof(Elf64_Ehdr, e_shnum), 0);
  store<uint64_t>(bytes, ehdr.e_shoff + offsetof(Elf64_Shdr, sh_size), sections);
  std::string path = dir.file("many-sections");
  test::write_bytes(path, bytes, false);
  ASSERT_EQ(::truncate(path.c_str(),
                       static_cast<off_t>(ehdr.e_shoff + sections * sizeof(Elf64_Shdr) + 4096)),
            0);
  const uint64_t before = heap_in_use();
  auto elf = ElfFile::open(path);
  const uint64_t grown = grown_since(before);
  EXPECT_FALSE(elf.ok()) << "a file claiming " << sections << " sections was opened";
  if (!elf.ok()) {
    EXPECT_NE(elf.error().message.find("section headers"), std::string::npos)
        << elf.error().message;
  }
  EXPECT_LT(grown, kSmallGrowth) << "the heap grew by " << grown << " bytes";
}

}  // namespace
}  // namespace krait::elf
