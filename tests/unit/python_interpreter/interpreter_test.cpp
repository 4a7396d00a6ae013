// analyze_image on fake interpreters: which version a file is, from its
// name and the strings in its .rodata, when both are chosen by whoever made
// the file. The oracle is the version written into the fixture; hostile
// names and strings must give a version or a clean Error, never an
// exception or a crash.
#include "python/interpreter.h"

#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "elf/elf_file.h"

namespace krait::python {
namespace {

using namespace std::string_literals;

// What the fake interpreter holds: defined symbols (all in .symtab,
// pointing into .rodata) and the bytes of .rodata. When rodata_size is set,
// the section header claims that many bytes and the file is extended
// (sparsely) to hold them.
struct FakeImage {
  std::vector<std::string> symbols = {"_PyRuntime", "PyCode_Type"};
  std::string rodata;
  uint64_t rodata_size = 0;
};

template <typename T>
void put(std::string& out, size_t offset, const T& value) {
  if (out.size() < offset + sizeof(T))
    out.resize(offset + sizeof(T));
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

size_t align8(size_t n) {
  return (n + 7) & ~size_t{7};
}

// An ET_DYN x86_64 ELF file with no program headers and the sections
// .rodata, .symtab, .strtab and .shstrtab; .rodata comes last, so that a
// claimed size beyond its bytes covers nothing but the file's sparse tail.
void write_fake_image(const std::string& path, const FakeImage& image) {
  std::string strtab(1, '\0');
  std::vector<uint32_t> name_offsets;
  for (const auto& name : image.symbols) {
    name_offsets.push_back(static_cast<uint32_t>(strtab.size()));
    strtab += name;
    strtab += '\0';
  }
  const std::string shstrtab = std::string("\0.rodata\0.symtab\0.strtab\0.shstrtab\0", 35);
  constexpr uint32_t kRodataName = 1, kSymtabName = 9, kStrtabName = 17, kShstrtabName = 25;
  constexpr uint64_t kRodataAddr = 0x10000;

  std::string file;
  size_t offset = sizeof(Elf64_Ehdr);
  const size_t strtab_offset = offset;
  offset = align8(offset + strtab.size());
  const size_t symtab_offset = offset;
  const size_t symtab_size = (image.symbols.size() + 1) * sizeof(Elf64_Sym);
  offset += symtab_size;
  const size_t shstrtab_offset = offset;
  offset = align8(offset + shstrtab.size());
  const size_t shdr_offset = offset;
  constexpr size_t kSections = 5;
  offset += kSections * sizeof(Elf64_Shdr);
  const size_t rodata_offset = align8(offset);
  const uint64_t rodata_size = image.rodata_size != 0 ? image.rodata_size : image.rodata.size();

  Elf64_Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = ET_DYN;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_shoff = shdr_offset;
  ehdr.e_ehsize = sizeof(Elf64_Ehdr);
  ehdr.e_shentsize = sizeof(Elf64_Shdr);
  ehdr.e_shnum = kSections;
  ehdr.e_shstrndx = 4;
  put(file, 0, ehdr);
  file.replace(strtab_offset, strtab.size(), strtab);
  put(file, symtab_offset, Elf64_Sym{});
  for (size_t i = 0; i < image.symbols.size(); ++i) {
    Elf64_Sym sym{};
    sym.st_name = name_offsets[i];
    sym.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_OBJECT);
    sym.st_shndx = 1;
    sym.st_value = kRodataAddr + 8 * i;
    sym.st_size = 8;
    put(file, symtab_offset + (i + 1) * sizeof(Elf64_Sym), sym);
  }
  file.resize(shstrtab_offset);
  file += shstrtab;

  Elf64_Shdr shdrs[kSections] = {};
  shdrs[1] = Elf64_Shdr{.sh_name = kRodataName,
                        .sh_type = SHT_PROGBITS,
                        .sh_flags = SHF_ALLOC,
                        .sh_addr = kRodataAddr,
                        .sh_offset = rodata_offset,
                        .sh_size = rodata_size,
                        .sh_link = 0,
                        .sh_info = 0,
                        .sh_addralign = 1,
                        .sh_entsize = 0};
  shdrs[2] = Elf64_Shdr{.sh_name = kSymtabName,
                        .sh_type = SHT_SYMTAB,
                        .sh_flags = 0,
                        .sh_addr = 0,
                        .sh_offset = symtab_offset,
                        .sh_size = symtab_size,
                        .sh_link = 3,
                        .sh_info = 1,
                        .sh_addralign = 8,
                        .sh_entsize = sizeof(Elf64_Sym)};
  shdrs[3] = Elf64_Shdr{.sh_name = kStrtabName,
                        .sh_type = SHT_STRTAB,
                        .sh_flags = 0,
                        .sh_addr = 0,
                        .sh_offset = strtab_offset,
                        .sh_size = strtab.size(),
                        .sh_link = 0,
                        .sh_info = 0,
                        .sh_addralign = 1,
                        .sh_entsize = 0};
  shdrs[4] = Elf64_Shdr{.sh_name = kShstrtabName,
                        .sh_type = SHT_STRTAB,
                        .sh_flags = 0,
                        .sh_addr = 0,
                        .sh_offset = shstrtab_offset,
                        .sh_size = shstrtab.size(),
                        .sh_link = 0,
                        .sh_info = 0,
                        .sh_addralign = 1,
                        .sh_entsize = 0};
  for (size_t i = 0; i < kSections; ++i)
    put(file, shdr_offset + i * sizeof(Elf64_Shdr), shdrs[i]);
  file.resize(rodata_offset);
  file += image.rodata;

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, file.data(), file.size()), static_cast<ssize_t>(file.size()));
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(rodata_offset + rodata_size)), 0);
  ::close(fd);
}

class AnalyzeImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/krait_interp_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // analyze_image of a fake image, as if the process mapped it at `mapped_path`.
  Result<std::optional<InterpreterImage>> analyze(const FakeImage& image,
                                                  const std::string& mapped_path) {
    const std::string path = dir_ + "/image" + std::to_string(count_++);
    write_fake_image(path, image);
    auto elf = elf::ElfFile::open(path);
    if (!elf)
      return elf.error().context("the fixture does not open");
    return analyze_image(std::make_shared<const elf::ElfFile>(std::move(*elf)), mapped_path);
  }

  // The version analyze_image tells, "error: ..." or "not Python".
  std::string version_of(const FakeImage& image, const std::string& mapped_path) {
    auto result = analyze(image, mapped_path);
    if (!result)
      return "error: " + result.error().message;
    if (!result->has_value())
      return "not Python";
    return (*result)->version.str();
  }

  std::string dir_;
  int count_ = 0;
};

// NUL-terminated strings, one after the other, as in .rodata.
std::string strings(std::initializer_list<std::string_view> list) {
  std::string out;
  for (auto s : list) {
    out += s;
    out += '\0';
  }
  return out;
}

TEST_F(AnalyzeImageTest, TheFixtureIsAnInterpreterOnlyWithItsSymbols) {
  FakeImage image{.rodata = strings({"3.11.7"})};
  EXPECT_EQ(version_of(image, "/usr/bin/python3.11"), "3.11.7");
  image.symbols = {"PyCode_Type"};
  EXPECT_EQ(version_of(image, "/usr/bin/python3.11"), "not Python");
}

// `python3.99999999999` defining _PyRuntime and PyCode_Type aborted krait
// record, info and daemon: std::stoi threw std::out_of_range.
TEST_F(AnalyzeImageTest, AMinorVersionBeyondAnyIntInTheNameTellsNothing) {
  const FakeImage image{.rodata = strings({"3.11.7"})};
  for (const char* name :
       {"/tmp/python3.99999999999", "/tmp/libpython3.99999999999.so.1.0", "/tmp/python3.2147483648",
        "/tmp/python2.4294967296", "/tmp/python3.18446744073709551616d"})
    EXPECT_EQ(version_of(image, name), "3.11.7") << name;
  const std::string many_digits = "/tmp/python3." + std::string(50'000, '9');
  EXPECT_EQ(version_of(image, many_digits), "3.11.7");
  // Without a version string there is nothing to go by: a clean Error.
  const std::string unknown = version_of(FakeImage{}, "/tmp/python3.99999999999");
  EXPECT_TRUE(unknown.starts_with("error: cannot tell which Python version")) << unknown;
}

TEST_F(AnalyzeImageTest, TheNameChoosesAmongVersionStrings) {
  EXPECT_EQ(version_of({.rodata = strings({"3.9.18", "3.10.2"})}, "/usr/bin/python3.9"), "3.9.18");
  EXPECT_EQ(version_of({.rodata = strings({"3.9.18", "3.10.2"})}, "/usr/bin/python3.10"), "3.10.2");
  EXPECT_EQ(version_of({.rodata = strings({"3.12.1", "3.11.7"})}, "/usr/bin/python3.12d"),
            "3.12.1");
  // 3.6: no _PyRuntime; interp_head stands for the interpreter list.
  const FakeImage py36{.symbols = {"PyInterpreterState_Head", "PyCode_Type", "interp_head"},
                       .rodata = strings({"3.6.15", "3.7.1"})};
  EXPECT_EQ(version_of(py36, "/usr/lib/libpython3.6m.so.1.0"), "3.6.15");
  // The first "python" that is followed by a version counts.
  EXPECT_EQ(
      version_of({.rodata = strings({"3.9.18", "3.10.2"})}, "/opt/bin/python-embed-python3.10"),
      "3.10.2");
  // A name without a version leaves the choice to the strings.
  EXPECT_EQ(version_of({.rodata = strings({"3.8.18"})}, "/usr/bin/python"), "3.8.18");
  EXPECT_EQ(version_of({.rodata = strings({"3.8.18"})}, "/usr/bin/python3."), "3.8.18");
  const std::string two = version_of({.rodata = strings({"3.9.18", "3.10.2"})}, "/usr/bin/python");
  EXPECT_TRUE(two.starts_with("error: cannot tell which Python version")) << two;
  EXPECT_NE(two.find("(2 candidate version strings)"), std::string::npos) << two;
}

TEST_F(AnalyzeImageTest, AStandaloneVersionBeatsTheTailOfAString) {
  EXPECT_EQ(version_of({.rodata = strings({"/build/Python-3.9.18"})}, "/usr/bin/python3.9"),
            "3.9.18");
  EXPECT_EQ(
      version_of({.rodata = strings({"/build/Python-3.9.18", "3.9.17"})}, "/usr/bin/python3.9"),
      "3.9.17");
  // The last string of the section needs no NUL.
  EXPECT_EQ(version_of({.rodata = "x\0"
                                  "3.9.16"s},
                       "/usr/bin/python3.9"),
            "3.9.16");
}

TEST_F(AnalyzeImageTest, OddVersionStringsAreNoCandidates) {
  const std::vector<std::string_view> odd = {"3.99999999999.1",
                                             "3.1.",
                                             "2.",
                                             "3.",
                                             "3..1",
                                             ".3.9.1",
                                             "x13.9.18",
                                             "3.9.1234",
                                             "3.123.1",
                                             "4.0.0",
                                             "1.2.3",
                                             "3.9.18rc1",
                                             "3.9.18.",
                                             "3.9",
                                             "99999999999999999999999999999999",
                                             "3.9.99999999999",
                                             "2.99999999999999999999.1"};
  for (std::string_view s : odd) {
    const std::string alone = version_of({.rodata = strings({s})}, "/usr/bin/python");
    EXPECT_EQ(alone,
              "error: cannot tell which Python version /usr/bin/python is (0 candidate "
              "version strings)")
        << s;
  }
  std::string all;
  for (std::string_view s : odd)
    all += std::string(s) + '\0';
  EXPECT_EQ(version_of({.rodata = all + strings({"3.9.18"})}, "/usr/bin/python3.99999999999"),
            "3.9.18");
}

TEST_F(AnalyzeImageTest, ATenMegabyteStringWithoutNulIsScannedOnce) {
  const std::string digits(10'000'000, '3');
  EXPECT_TRUE(version_of({.rodata = digits}, "/usr/bin/python3.9").starts_with("error: "));
  std::string dotted;
  while (dotted.size() < 10'000'000)
    dotted += "3.";
  EXPECT_TRUE(version_of({.rodata = dotted}, "/usr/bin/python").starts_with("error: "));
  EXPECT_EQ(version_of({.rodata = std::string(10'000'000, 'x') + "-3.9.18"}, "/usr/bin/python3.9"),
            "3.9.18");
}

TEST_F(AnalyzeImageTest, RefusesARodataSectionLargerThanTheCap) {
  constexpr uint64_t kCap = uint64_t{64} << 20;
  FakeImage image{.rodata = strings({"3.9.18"}), .rodata_size = kCap + 1};
  auto result = analyze(image, "/usr/lib/libpython3.9.so.1.0");
  ASSERT_FALSE(result.ok());
  const std::string& message = result.error().message;
  EXPECT_NE(message.find("/usr/lib/libpython3.9.so.1.0"), std::string::npos) << message;
  EXPECT_NE(message.find(".rodata section of 67108865 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("67108864"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  // At the cap the section is read (the rest of it is the file's zeros).
  image.rodata_size = kCap;
  EXPECT_EQ(version_of(image, "/usr/lib/libpython3.9.so.1.0"), "3.9.18");
}

}  // namespace
}  // namespace krait::python
