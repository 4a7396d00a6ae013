// ElfFile on hostile input: non-ELF files, wrong classes and machines,
// truncated copies and corrupted headers of a real ELF. Built twice: as is
// and with ElfFile under AddressSanitizer + UndefinedBehaviorSanitizer.
//
// The oracle for corrupted copies of the PIE fixture is the intact fixture:
// whatever a damaged copy still answers must equal the original's answer
// where the bytes involved are untouched, and every answer must be
// self-consistent (sizes as asked). Crashes, sanitizer reports and hangs fail
// the test by themselves.
#include <elf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "elf/elf_file.h"
#include "test_support.h"

namespace krait::elf {
namespace {

using test::fixtures;

#define REQUIRE_FIXTURES() ASSERT_EQ(test::missing_fixtures(), "")

// The sanitizer build registers its tests under its own suite name, so the
// two binaries' tests stay distinct in ctest.
#ifndef KRAIT_MALFORMED_SUITE
#define KRAIT_MALFORMED_SUITE ElfMalformedTest
#endif

const char* const kProbeSymbols[] = {"krait_fixture_global", "krait_fixture_function",
                                     "krait_fixture_rodata", "main", "krait_lib_function"};

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

// Runs every accessor; returns how many checks ran, so callers can assert
// that the file was really exercised.
size_t exercise(const ElfFile& elf) {
  size_t checks = 0;
  for (const char* name : kProbeSymbols) {
    auto sym = elf.find_symbol(name);
    if (sym) {
      EXPECT_EQ(sym->name, name);
    }
    ++checks;
  }
  std::vector<std::string> names;
  for (const char* name : {".text", ".rodata", ".data", ".bss", ".dynsym", ".symtab", ".dynamic",
                           ".note.gnu.build-id", ".gnu_debuglink", ".shstrtab", ""}) {
    names.emplace_back(name);
  }
  for (const std::string& name : names) {
    auto section = elf.find_section(name);
    auto bytes = elf.section_bytes(name);
    if (bytes.ok()) {
      EXPECT_TRUE(section.has_value()) << name;
      if (section) {
        EXPECT_EQ(bytes->size(), section->size) << name;
      }
      // Touch every byte so ASan sees out-of-bounds spans.
      uint8_t sum = 0;
      for (uint8_t b : *bytes)
        sum = static_cast<uint8_t>(sum + b);
      (void)sum;
    }
    ++checks;
  }
  for (const LoadSegment& seg : elf.load_segments()) {
    for (uint64_t delta : {uint64_t{0}, seg.filesz / 2, seg.filesz}) {
      auto bytes = elf.read_vaddr(seg.vaddr + delta, 16);
      if (bytes.ok()) {
        EXPECT_EQ(bytes->size(), 16u);
      }
      ++checks;
    }
    const Symbol* fn = elf.function_at(seg.vaddr + seg.memsz / 2);
    if (fn != nullptr) {
      EXPECT_LE(fn->value, seg.vaddr + seg.memsz / 2);
    }
  }
  // PLT stubs: damaged sections, relocations and dynamic symbols give a
  // name or none, never a read outside the file.
  for (const char* name : {".plt", ".plt.sec", ".plt.got"}) {
    auto section = elf.find_section(name);
    if (!section)
      continue;
    for (uint64_t delta : {uint64_t{0}, uint64_t{16}, section->size / 2, section->size})
      (void)elf.plt_target(section->addr + delta);
    ++checks;
  }
  (void)elf.build_id();
  (void)elf.needed();
  (void)elf.soname();
  (void)elf.debuglink();
  (void)elf.has_symtab();
  (void)elf.is_dyn();
  return checks;
}

// Answers of the intact fixture, to compare damaged copies with.
struct Reference {
  std::vector<uint8_t> bytes;
  std::map<std::string, uint64_t> symbol_values;
  std::map<std::string, std::vector<uint8_t>> section_contents;
  std::map<std::string, Section> sections;
};

const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    r.bytes = test::read_bytes(fixtures().pie);
    auto elf = ElfFile::open(fixtures().pie);
    if (!elf.ok())
      return r;
    for (const char* name : kProbeSymbols)
      if (auto sym = elf->find_symbol(name))
        r.symbol_values[name] = sym->value;
    for (const char* name : {".text", ".rodata", ".data", ".dynsym", ".dynamic"}) {
      if (auto section = elf->find_section(name))
        r.sections[name] = *section;
      if (auto bytes = elf->section_bytes(name); bytes.ok())
        r.section_contents[name] = std::vector<uint8_t>(bytes->begin(), bytes->end());
    }
    return r;
  }();
  return ref;
}

std::string write_temp(const test::TempDir& dir, const std::string& name,
                       const std::vector<uint8_t>& bytes) {
  std::string path = dir.file(name);
  test::write_bytes(path, bytes, false);
  return path;
}

TEST(KRAIT_MALFORMED_SUITE, NotAnElfFile) {
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());

  auto empty = ElfFile::open(write_temp(dir, "empty", {}));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find("empty"), std::string::npos) << empty.error().message;

  auto directory = ElfFile::open(dir.path());
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.error().message.find("directory"), std::string::npos)
      << directory.error().message;

  auto missing = ElfFile::open(dir.file("does-not-exist"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("No such file"), std::string::npos)
      << missing.error().message;

  // A FIFO with no writer: must be refused, not block in open() or read().
  std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto from_fifo = ElfFile::open(fifo);
  ASSERT_FALSE(from_fifo.ok());
  EXPECT_NE(from_fifo.error().message.find("not a regular file"), std::string::npos)
      << from_fifo.error().message;

  auto text = ElfFile::open(write_temp(dir, "script", {'#', '!', '/', 'b', 'i', 'n', '\n'}));
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.error().message.find("not an ELF file"), std::string::npos)
      << text.error().message;

  std::mt19937_64 rng(12345);
  for (size_t size : {1, 3, 4, 16, 63, 64, 65, 1000, 4096, 100000}) {
    std::vector<uint8_t> noise(size);
    for (auto& b : noise)
      b = static_cast<uint8_t>(rng());
    auto random = ElfFile::open(write_temp(dir, "random", noise));
    EXPECT_FALSE(random.ok()) << size;
    // The same noise behind a valid ELF64 x86_64 identification.
    if (size >= 64) {
      const uint8_t ident[] = {0x7f, 'E', 'L', 'F', ELFCLASS64, ELFDATA2LSB, EV_CURRENT};
      std::memcpy(noise.data(), ident, sizeof ident);
      auto disguised = ElfFile::open(write_temp(dir, "disguised", noise));
      if (disguised.ok())
        exercise(*disguised);
    }
  }
}

TEST(KRAIT_MALFORMED_SUITE, WrongClassEndiannessMachineOrType) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::vector<uint8_t>& original = reference().bytes;
  ASSERT_GT(original.size(), sizeof(Elf64_Ehdr));

  struct Case {
    const char* name;
    size_t offset;
    uint16_t value;
    bool byte;
    const char* message;
  };
  const Case cases[] = {
      {"class32", EI_CLASS, ELFCLASS32, true, "32-bit"},
      {"classnone", EI_CLASS, 7, true, "ELF"},
      {"bigendian", EI_DATA, ELFDATA2MSB, true, "little-endian"},
      {"aarch64", offsetof(Elf64_Ehdr, e_machine), EM_AARCH64, false, "x86_64"},
      {"i386", offsetof(Elf64_Ehdr, e_machine), EM_386, false, "x86_64"},
      {"relocatable", offsetof(Elf64_Ehdr, e_type), ET_REL, false, "ELF type"},
      {"core", offsetof(Elf64_Ehdr, e_type), ET_CORE, false, "ELF type"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bytes = original;
    if (c.byte)
      bytes[c.offset] = static_cast<uint8_t>(c.value);
    else
      store<uint16_t>(bytes, c.offset, c.value);
    auto elf = ElfFile::open(write_temp(dir, c.name, bytes));
    ASSERT_FALSE(elf.ok()) << c.name;
    EXPECT_NE(elf.error().message.find(c.message), std::string::npos)
        << c.name << ": " << elf.error().message;
  }

  // A hand-made 32-bit i386 executable header, nothing else.
  Elf32_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = ELFCLASS32;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = ET_EXEC;
  header.e_machine = EM_386;
  header.e_version = EV_CURRENT;
  header.e_ehsize = sizeof header;
  std::vector<uint8_t> bytes(sizeof header);
  std::memcpy(bytes.data(), &header, sizeof header);
  auto elf32 = ElfFile::open(write_temp(dir, "elf32", bytes));
  ASSERT_FALSE(elf32.ok());
  EXPECT_NE(elf32.error().message.find("32-bit"), std::string::npos) << elf32.error().message;
}

// Every prefix of the fixture: an error, or answers equal to the intact
// file's for everything the prefix still contains.
TEST(KRAIT_MALFORMED_SUITE, TruncatedCopies) {
  REQUIRE_FIXTURES();
  const Reference& ref = reference();
  ASSERT_GT(ref.bytes.size(), 4096u);
  ASSERT_EQ(ref.symbol_values.size(), 4u) << "the intact fixture lost its symbols";
  test::TempDir dir;
  std::vector<size_t> lengths;
  for (size_t n = 1; n <= 600; ++n)
    lengths.push_back(n);
  for (size_t n = 600; n < ref.bytes.size(); n += 97)
    lengths.push_back(n);
  for (size_t back = 1; back <= 300; ++back)
    lengths.push_back(ref.bytes.size() - back);

  size_t opened = 0;
  for (size_t len : lengths) {
    std::vector<uint8_t> prefix(ref.bytes.begin(), ref.bytes.begin() + static_cast<long>(len));
    auto elf = ElfFile::open(write_temp(dir, "truncated", prefix));
    if (len < sizeof(Elf64_Ehdr)) {
      EXPECT_FALSE(elf.ok()) << "a " << len << "-byte prefix has no full ELF header";
      continue;
    }
    if (!elf.ok())
      continue;
    ++opened;
    EXPECT_GT(exercise(*elf), 0u);
    for (const auto& [name, value] : ref.symbol_values) {
      auto sym = elf->find_symbol(name);
      if (sym) {
        EXPECT_EQ(sym->value, value) << name << " at length " << len;
      }
    }
    for (const auto& [name, contents] : ref.section_contents) {
      auto bytes = elf->section_bytes(name);
      if (!bytes.ok())
        continue;
      EXPECT_LE(ref.sections.at(name).offset + bytes->size(), len)
          << name << " returned bytes that are not in a " << len << "-byte file";
      EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), contents.begin(), contents.end()))
          << name << " at length " << len;
    }
    for (const LoadSegment& seg : elf->load_segments()) {
      auto bytes = elf->read_vaddr(seg.vaddr, 16);
      if (!bytes.ok())
        continue;
      EXPECT_LE(seg.offset + 16, len) << "read past the end of a " << len << "-byte file";
      EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), ref.bytes.begin() + seg.offset))
          << "segment at " << seg.vaddr << ", length " << len;
    }
  }
  // The file ends with the section headers; most prefixes lose them and
  // some still open (headers and program headers are at the front).
  EXPECT_GT(opened, 0u) << "no prefix opened: the comparison above never ran";
}

// Corrupted counts, offsets, sizes and links in the headers of the fixture.
TEST(KRAIT_MALFORMED_SUITE, CorruptedHeaders) {
  REQUIRE_FIXTURES();
  const std::vector<uint8_t>& original = reference().bytes;
  ASSERT_GT(original.size(), 4096u);
  auto ehdr = load<Elf64_Ehdr>(original, 0);
  ASSERT_EQ(ehdr.e_shentsize, sizeof(Elf64_Shdr));
  ASSERT_EQ(ehdr.e_phentsize, sizeof(Elf64_Phdr));
  test::TempDir dir;

  auto shdr_offset = [&](size_t index) { return ehdr.e_shoff + index * sizeof(Elf64_Shdr); };
  auto phdr_offset = [&](size_t index) { return ehdr.e_phoff + index * sizeof(Elf64_Phdr); };
  auto find_section_index = [&](uint32_t type) -> size_t {
    for (size_t i = 1; i < ehdr.e_shnum; ++i)
      if (load<Elf64_Shdr>(original, shdr_offset(i)).sh_type == type)
        return i;
    return 0;
  };
  auto find_phdr_index = [&](uint32_t type) -> size_t {
    for (size_t i = 0; i < ehdr.e_phnum; ++i)
      if (load<Elf64_Phdr>(original, phdr_offset(i)).p_type == type)
        return i;
    return SIZE_MAX;
  };
  const size_t dynsym = find_section_index(SHT_DYNSYM);
  const size_t symtab = find_section_index(SHT_SYMTAB);
  const size_t note = find_section_index(SHT_NOTE);
  const size_t dynamic = find_section_index(SHT_DYNAMIC);
  const size_t pt_load = find_phdr_index(PT_LOAD);
  const size_t pt_note = find_phdr_index(PT_NOTE);
  const size_t pt_dynamic = find_phdr_index(PT_DYNAMIC);
  ASSERT_NE(dynsym, 0u);
  ASSERT_NE(symtab, 0u);
  ASSERT_NE(note, 0u);
  ASSERT_NE(dynamic, 0u);
  ASSERT_NE(pt_load, SIZE_MAX);
  ASSERT_NE(pt_note, SIZE_MAX);
  ASSERT_NE(pt_dynamic, SIZE_MAX);

  using Patch = std::function<void(std::vector<uint8_t>&)>;
  auto ehdr_field = [](size_t offset, auto value) -> Patch {
    return [=](std::vector<uint8_t>& b) { store(b, offset, value); };
  };
  auto shdr_field = [&](size_t index, size_t field, auto value) -> Patch {
    size_t at = shdr_offset(index) + field;
    return [=](std::vector<uint8_t>& b) { store(b, at, value); };
  };
  auto phdr_field = [&](size_t index, size_t field, auto value) -> Patch {
    size_t at = phdr_offset(index) + field;
    return [=](std::vector<uint8_t>& b) { store(b, at, value); };
  };
  const uint64_t huge = uint64_t{1} << 62;
  const std::vector<std::pair<std::string, Patch>> patches = {
      {"e_phnum max", ehdr_field(offsetof(Elf64_Ehdr, e_phnum), uint16_t{0xffff})},
      {"e_phnum extended", ehdr_field(offsetof(Elf64_Ehdr, e_phnum), uint16_t{PN_XNUM})},
      {"e_shnum max", ehdr_field(offsetof(Elf64_Ehdr, e_shnum), uint16_t{0xfffe})},
      {"e_shnum zero", ehdr_field(offsetof(Elf64_Ehdr, e_shnum), uint16_t{0})},
      {"e_shoff huge", ehdr_field(offsetof(Elf64_Ehdr, e_shoff), huge)},
      {"e_shoff at end", ehdr_field(offsetof(Elf64_Ehdr, e_shoff), uint64_t{original.size() - 8})},
      {"e_phoff huge", ehdr_field(offsetof(Elf64_Ehdr, e_phoff), huge)},
      {"e_phoff misaligned", ehdr_field(offsetof(Elf64_Ehdr, e_phoff), uint64_t{3})},
      {"e_shstrndx out of range", ehdr_field(offsetof(Elf64_Ehdr, e_shstrndx), uint16_t{0xfffe})},
      {"e_shstrndx is dynsym",
       ehdr_field(offsetof(Elf64_Ehdr, e_shstrndx), static_cast<uint16_t>(dynsym))},
      {"e_shentsize wrong", ehdr_field(offsetof(Elf64_Ehdr, e_shentsize), uint16_t{12})},
      {"e_phentsize wrong", ehdr_field(offsetof(Elf64_Ehdr, e_phentsize), uint16_t{12})},
      {"dynsym link out of range",
       shdr_field(dynsym, offsetof(Elf64_Shdr, sh_link), uint32_t{0xffff})},
      {"dynsym link to itself",
       shdr_field(dynsym, offsetof(Elf64_Shdr, sh_link), static_cast<uint32_t>(dynsym))},
      {"dynsym size huge", shdr_field(dynsym, offsetof(Elf64_Shdr, sh_size), huge)},
      {"dynsym size odd", shdr_field(dynsym, offsetof(Elf64_Shdr, sh_size), uint64_t{25})},
      {"dynsym offset huge", shdr_field(dynsym, offsetof(Elf64_Shdr, sh_offset), huge)},
      {"dynsym entsize zero", shdr_field(dynsym, offsetof(Elf64_Shdr, sh_entsize), uint64_t{0})},
      {"symtab size huge", shdr_field(symtab, offsetof(Elf64_Shdr, sh_size), huge)},
      {"symtab offset past end",
       shdr_field(symtab, offsetof(Elf64_Shdr, sh_offset), uint64_t{original.size() - 4})},
      {"symtab is nobits", shdr_field(symtab, offsetof(Elf64_Shdr, sh_type), uint32_t{SHT_NOBITS})},
      {"note size huge", shdr_field(note, offsetof(Elf64_Shdr, sh_size), huge)},
      {"dynamic link out of range",
       shdr_field(dynamic, offsetof(Elf64_Shdr, sh_link), uint32_t{0xffff})},
      {"dynamic size huge", shdr_field(dynamic, offsetof(Elf64_Shdr, sh_size), huge)},
      {"load filesz huge", phdr_field(pt_load, offsetof(Elf64_Phdr, p_filesz), huge)},
      {"load offset huge", phdr_field(pt_load, offsetof(Elf64_Phdr, p_offset), huge)},
      {"load vaddr wraps", phdr_field(pt_load, offsetof(Elf64_Phdr, p_vaddr), ~uint64_t{0} - 4)},
      {"pt_note size huge", phdr_field(pt_note, offsetof(Elf64_Phdr, p_filesz), huge)},
      {"pt_note offset huge", phdr_field(pt_note, offsetof(Elf64_Phdr, p_offset), huge)},
      {"pt_dynamic size huge", phdr_field(pt_dynamic, offsetof(Elf64_Phdr, p_filesz), huge)},
  };
  for (const auto& [name, patch] : patches) {
    std::vector<uint8_t> bytes = original;
    patch(bytes);
    if (HasFatalFailure())
      return;
    auto elf = ElfFile::open(write_temp(dir, "patched", bytes));
    if (!elf.ok()) {
      EXPECT_FALSE(elf.error().message.empty()) << name;
      continue;
    }
    EXPECT_GT(exercise(*elf), 0u) << name;
  }

  // Symbol names pointing outside the string table: those symbols vanish,
  // the others are still found with their original values.
  {
    std::vector<uint8_t> bytes = original;
    auto shdr = load<Elf64_Shdr>(original, shdr_offset(symtab));
    size_t count = shdr.sh_size / sizeof(Elf64_Sym);
    ASSERT_GT(count, 4u);
    size_t broken = 0;
    std::string broken_name;
    for (size_t i = 1; i < count; ++i) {
      size_t at = shdr.sh_offset + i * sizeof(Elf64_Sym);
      auto sym = load<Elf64_Sym>(original, at);
      auto strtab = load<Elf64_Shdr>(original, shdr_offset(shdr.sh_link));
      std::string name(
          reinterpret_cast<const char*>(original.data() + strtab.sh_offset + sym.st_name));
      if (name == "krait_fixture_local_counter") {
        sym.st_name = 0xfffffff0;
        store(bytes, at, sym);
        broken_name = name;
        ++broken;
      }
    }
    ASSERT_EQ(broken, 1u);
    auto elf = ElfFile::open(write_temp(dir, "bad-st-name", bytes));
    ASSERT_TRUE(elf.ok()) << elf.error().message;
    EXPECT_FALSE(elf->find_symbol(broken_name).has_value());
    auto global = elf->find_symbol("krait_fixture_global");
    ASSERT_TRUE(global.has_value());
    EXPECT_EQ(global->value, reference().symbol_values.at("krait_fixture_global"));
  }

  // Every sized function made zero-sized: function_at finds nothing, and
  // find_symbol still works.
  {
    std::vector<uint8_t> bytes = original;
    for (size_t table : {dynsym, symtab}) {
      auto shdr = load<Elf64_Shdr>(original, shdr_offset(table));
      for (size_t i = 1; i < shdr.sh_size / sizeof(Elf64_Sym); ++i) {
        size_t at = shdr.sh_offset + i * sizeof(Elf64_Sym);
        auto sym = load<Elf64_Sym>(original, at);
        sym.st_size = 0;
        store(bytes, at, sym);
      }
    }
    auto elf = ElfFile::open(write_temp(dir, "zero-sizes", bytes));
    ASSERT_TRUE(elf.ok()) << elf.error().message;
    auto fn = elf->find_symbol("krait_fixture_function");
    ASSERT_TRUE(fn.has_value());
    EXPECT_EQ(fn->size, 0u);
    EXPECT_EQ(elf->function_at(fn->value), nullptr);
  }
}

// Random byte flips in the regions libelf parses (ELF header, program
// headers, notes, dynamic and symbol tables, section headers), fixed seed.
TEST(KRAIT_MALFORMED_SUITE, RandomCorruption) {
  REQUIRE_FIXTURES();
  const std::vector<uint8_t>& original = reference().bytes;
  ASSERT_GT(original.size(), 4096u);
  auto ehdr = load<Elf64_Ehdr>(original, 0);
  const size_t head = std::min<size_t>(original.size(), 4096);
  const size_t shoff = std::min<size_t>(ehdr.e_shoff, original.size());
  test::TempDir dir;
  std::mt19937_64 rng(20240601);
  size_t opened = 0;
  constexpr int kRounds = 1500;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<uint8_t> bytes = original;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      bool in_head = rng() % 2 == 0 || shoff >= original.size();
      size_t at = in_head ? rng() % head : shoff + rng() % (original.size() - shoff);
      bytes[at] = static_cast<uint8_t>(rng());
    }
    auto elf = ElfFile::open(write_temp(dir, "fuzzed", bytes));
    if (!elf.ok())
      continue;
    ++opened;
    exercise(*elf);
    if (HasFailure())
      FAIL() << "round " << round;
  }
  EXPECT_GT(opened, kRounds / 10u) << "almost nothing opened: corruption too coarse";
}

}  // namespace
}  // namespace krait::elf
