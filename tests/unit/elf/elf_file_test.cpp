// ElfFile against binutils (readelf, nm), the raw file bytes, the fixture
// sources and the real interpreters on this machine.
#include "elf/elf_file.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "test_support.h"

namespace krait::elf {
namespace {

using test::fixtures;

constexpr const char* kDebianPython = "/usr/bin/python3.11";

std::string pyenv_root() {
  if (const char* root = std::getenv("PYENV_ROOT"))
    return root;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/root") + "/.pyenv";
}
std::string pyenv_libpython312() {
  return pyenv_root() + "/versions/3.12.1/lib/libpython3.12.so.1.0";
}

const test::Oracle& oracle_for(const std::string& path) {
  static std::map<std::string, test::Oracle> cache;
  auto it = cache.find(path);
  if (it == cache.end())
    it = cache.emplace(path, test::readelf_oracle(path)).first;
  return it->second;
}

#define ASSERT_OPENS(var, path)                                   \
  auto var##_result = ElfFile::open(path);                        \
  ASSERT_TRUE(var##_result.ok()) << var##_result.error().message; \
  const ElfFile& var = *var##_result

#define ASSERT_ORACLE(var, path)                           \
  const test::Oracle& var = oracle_for(path);              \
  ASSERT_EQ(var.error, "") << "the readelf oracle failed"; \
  ASSERT_FALSE(var.segments.empty()) << "readelf printed no segments for " << path

#define REQUIRE_FIXTURES() ASSERT_EQ(test::missing_fixtures(), "")

#define REQUIRE_FILE(path) \
  ASSERT_EQ(::access((path).c_str(), R_OK), 0) << "test interpreter missing: " << (path)

uint8_t type_code(const std::string& name) {
  static const std::map<std::string, uint8_t> kTypes{
      {"NOTYPE", STT_NOTYPE}, {"OBJECT", STT_OBJECT},   {"FUNC", STT_FUNC},
      {"TLS", STT_TLS},       {"IFUNC", STT_GNU_IFUNC}, {"COMMON", STT_COMMON}};
  auto it = kTypes.find(name);
  return it == kTypes.end() ? 0xff : it->second;
}
uint8_t bind_code(const std::string& name) {
  static const std::map<std::string, uint8_t> kBinds{
      {"LOCAL", STB_LOCAL}, {"GLOBAL", STB_GLOBAL}, {"WEAK", STB_WEAK}, {"UNIQUE", STB_GNU_UNIQUE}};
  auto it = kBinds.find(name);
  return it == kBinds.end() ? 0xff : it->second;
}
std::optional<uint32_t> section_type_code(const std::string& name) {
  static const std::map<std::string, uint32_t> kTypes{
      {"PROGBITS", SHT_PROGBITS},     {"NOBITS", SHT_NOBITS},     {"NOTE", SHT_NOTE},
      {"DYNSYM", SHT_DYNSYM},         {"SYMTAB", SHT_SYMTAB},     {"STRTAB", SHT_STRTAB},
      {"DYNAMIC", SHT_DYNAMIC},       {"RELA", SHT_RELA},         {"INIT_ARRAY", SHT_INIT_ARRAY},
      {"FINI_ARRAY", SHT_FINI_ARRAY}, {"GNU_HASH", SHT_GNU_HASH}, {"VERSYM", SHT_GNU_versym}};
  auto it = kTypes.find(name);
  if (it == kTypes.end())
    return std::nullopt;
  return it->second;
}
uint32_t segment_flags(const std::string& flags) {
  uint32_t out = 0;
  for (char c : flags)
    out |= c == 'R' ? PF_R : c == 'W' ? PF_W : c == 'E' ? PF_X : 0;
  return out;
}

bool is_indexed(const test::OracleSymbol& s) {
  return s.ndx != "UND" && !s.name.empty() && s.type != "SECTION" && s.type != "FILE";
}

// Defined symbols of one table whose name occurs once in it, by name.
std::map<std::string, test::OracleSymbol> unique_defined(const test::Oracle& oracle,
                                                         const std::string& table) {
  std::map<std::string, test::OracleSymbol> out;
  std::set<std::string> duplicated;
  auto it = oracle.symbols.find(table);
  if (it == oracle.symbols.end())
    return out;
  for (const test::OracleSymbol& s : it->second) {
    if (!is_indexed(s))
      continue;
    if (!out.emplace(s.name, s).second)
      duplicated.insert(s.name);
  }
  for (const std::string& name : duplicated)
    out.erase(name);
  return out;
}

void expect_symbol_matches(const ElfFile& elf, const test::OracleSymbol& want) {
  auto got = elf.find_symbol(want.name);
  ASSERT_TRUE(got.has_value()) << want.name << " not found in " << elf.path();
  EXPECT_EQ(got->name, want.name);
  EXPECT_EQ(got->value, want.value) << want.name;
  EXPECT_EQ(got->size, want.size) << want.name;
  EXPECT_EQ(got->type, type_code(want.type)) << want.name << " " << want.type;
  EXPECT_EQ(got->bind, bind_code(want.bind)) << want.name << " " << want.bind;
}

// Every defined symbol readelf lists is found with readelf's value, .dynsym
// taking precedence over .symtab; undefined-only names are not found.
void check_symbols_against_readelf(const ElfFile& elf, const test::Oracle& oracle) {
  auto dynsym = unique_defined(oracle, ".dynsym");
  auto symtab = unique_defined(oracle, ".symtab");
  size_t checked = 0;
  for (const auto& [name, sym] : dynsym) {
    expect_symbol_matches(elf, sym);
    ++checked;
  }
  for (const auto& [name, sym] : symtab) {
    if (dynsym.count(name) != 0)
      continue;
    bool defined_in_dynsym_elsewhere = false;
    if (auto it = oracle.symbols.find(".dynsym"); it != oracle.symbols.end())
      for (const auto& s : it->second)
        defined_in_dynsym_elsewhere |= s.name == name && is_indexed(s);
    if (defined_in_dynsym_elsewhere)
      continue;
    expect_symbol_matches(elf, sym);
    ++checked;
  }
  EXPECT_GT(checked, 0u) << "no symbols compared for " << elf.path();

  std::set<std::string> defined;
  for (const auto& [table, symbols] : oracle.symbols)
    for (const auto& s : symbols)
      if (is_indexed(s))
        defined.insert(s.name);
  for (const auto& [table, symbols] : oracle.symbols)
    for (const auto& s : symbols)
      if (s.ndx == "UND" && !s.name.empty() && defined.count(s.name) == 0) {
        EXPECT_FALSE(elf.find_symbol(s.name).has_value()) << "undefined " << s.name << " found";
      }
}

void check_segments_against_readelf(const ElfFile& elf, const test::Oracle& oracle) {
  std::vector<test::OracleSegment> loads;
  for (const auto& seg : oracle.segments)
    if (seg.type == "LOAD")
      loads.push_back(seg);
  ASSERT_EQ(elf.load_segments().size(), loads.size());
  for (size_t i = 0; i < loads.size(); ++i) {
    const LoadSegment& got = elf.load_segments()[i];
    EXPECT_EQ(got.vaddr, loads[i].vaddr) << i;
    EXPECT_EQ(got.offset, loads[i].offset) << i;
    EXPECT_EQ(got.filesz, loads[i].filesz) << i;
    EXPECT_EQ(got.memsz, loads[i].memsz) << i;
    EXPECT_EQ(got.align, loads[i].align) << i;
    EXPECT_EQ(got.flags, segment_flags(loads[i].flags)) << i << " " << loads[i].flags;
  }
}

// Sections match readelf, and their bytes match the file at readelf's offset.
void check_sections_against_readelf(const ElfFile& elf, const test::Oracle& oracle) {
  std::vector<uint8_t> file = test::read_bytes(elf.path());
  ASSERT_FALSE(file.empty());
  std::set<std::string> seen;
  for (const auto& want : oracle.sections) {
    if (!seen.insert(want.name).second)
      continue;  // find_section returns the first of a name
    auto got = elf.find_section(want.name);
    ASSERT_TRUE(got.has_value()) << want.name;
    EXPECT_EQ(got->addr, want.addr) << want.name;
    EXPECT_EQ(got->offset, want.offset) << want.name;
    EXPECT_EQ(got->size, want.size) << want.name;
    if (auto type = section_type_code(want.type)) {
      EXPECT_EQ(got->type, *type) << want.name;
    }
    auto bytes = elf.section_bytes(want.name);
    if (want.type == "NOBITS") {
      EXPECT_FALSE(bytes.ok()) << want.name << " is NOBITS";
      continue;
    }
    ASSERT_TRUE(bytes.ok()) << bytes.error().message;
    ASSERT_LE(want.offset + want.size, file.size()) << want.name;
    ASSERT_EQ(bytes->size(), want.size) << want.name;
    EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), file.begin() + want.offset))
        << want.name << " differs from the file's bytes";
  }
  EXPECT_FALSE(elf.find_section(".no-such-section").has_value());
  EXPECT_FALSE(elf.section_bytes(".no-such-section").ok());
}

// Every sized function in `table` is what function_at() returns for its
// first and last byte (or an alias at the same address).
void check_functions_against_readelf(const ElfFile& elf, const test::Oracle& oracle,
                                     const std::string& table) {
  auto it = oracle.symbols.find(table);
  ASSERT_NE(it, oracle.symbols.end()) << table;
  std::vector<test::OracleSymbol> functions;
  for (const auto& s : it->second)
    if ((s.type == "FUNC" || s.type == "IFUNC") && s.ndx != "UND" && s.size > 0)
      functions.push_back(s);
  ASSERT_FALSE(functions.empty());
  // Skip functions nested in or overlapping another: no single right answer.
  std::sort(functions.begin(), functions.end(),
            [](const auto& a, const auto& b) { return a.value < b.value; });
  size_t checked = 0;
  for (size_t i = 0; i < functions.size(); ++i) {
    const auto& f = functions[i];
    bool overlaps = (i > 0 && functions[i - 1].value != f.value &&
                     functions[i - 1].value + functions[i - 1].size > f.value) ||
                    (i + 1 < functions.size() && functions[i + 1].value != f.value &&
                     f.value + f.size > functions[i + 1].value);
    if (overlaps)
      continue;
    for (uint64_t address : {f.value, f.value + f.size - 1}) {
      const Symbol* got = elf.function_at(address);
      ASSERT_NE(got, nullptr) << f.name << " at " << std::hex << address;
      EXPECT_EQ(got->value, f.value)
          << f.name << " at " << std::hex << address << " gave " << got->name;
    }
    ++checked;
  }
  EXPECT_GT(checked, functions.size() / 2);
}

TEST(ElfFileTest, PieExecutableMatchesReadelf) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().pie);
  ASSERT_ORACLE(oracle, fixtures().pie);
  EXPECT_EQ(elf.path(), fixtures().pie);
  EXPECT_EQ(oracle.elf_type, "DYN");
  EXPECT_TRUE(elf.is_dyn());
  EXPECT_TRUE(elf.has_symtab());
  check_segments_against_readelf(elf, oracle);
  check_sections_against_readelf(elf, oracle);
  check_symbols_against_readelf(elf, oracle);
  check_functions_against_readelf(elf, oracle, ".symtab");
  EXPECT_EQ(elf.needed(), oracle.needed);
  EXPECT_NE(std::find(elf.needed().begin(), elf.needed().end(), "libkrait_elf_fixture.so.1"),
            elf.needed().end());
  EXPECT_EQ(elf.soname(), "");
  ASSERT_EQ(oracle.build_id.size(), 40u) << "the fixture is linked with --build-id=sha1";
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  EXPECT_FALSE(elf.debuglink().has_value());
}

TEST(ElfFileTest, SymbolsAgreeWithNm) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().pie);
  auto nm = test::nm_defined(fixtures().pie, false);
  ASSERT_EQ(nm.error, "");
  for (const char* name : {"krait_fixture_global", "krait_fixture_function", "krait_fixture_rodata",
                           "krait_fixture_local_counter", "main"}) {
    ASSERT_EQ(nm.values.count(name), 1u) << name;
    auto sym = elf.find_symbol(name);
    ASSERT_TRUE(sym.has_value()) << name;
    EXPECT_EQ(sym->value, nm.values.find(name)->second) << name;
  }
  EXPECT_EQ(elf.find_symbol("krait_fixture_function")->type, STT_FUNC);
  EXPECT_EQ(elf.find_symbol("krait_fixture_global")->type, STT_OBJECT);
  EXPECT_EQ(elf.find_symbol("krait_fixture_local_counter")->bind, STB_LOCAL);
  // Imported from the library: undefined here.
  EXPECT_FALSE(elf.find_symbol("krait_lib_function").has_value());
  EXPECT_FALSE(elf.find_symbol("").has_value());
  EXPECT_FALSE(elf.find_symbol("no_such_symbol_anywhere").has_value());
}

TEST(ElfFileTest, ReadVaddrReturnsInitialisedDataFromTheSource) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().pie);
  auto global = elf.find_symbol("krait_fixture_global");
  ASSERT_TRUE(global.has_value());
  auto bytes = elf.read_vaddr(global->value, sizeof(int32_t));
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  int32_t value = 0;
  std::memcpy(&value, bytes->data(), sizeof value);
  EXPECT_EQ(value, 1234);  // fixture_program.c

  auto rodata = elf.find_symbol("krait_fixture_rodata");
  ASSERT_TRUE(rodata.has_value());
  const std::string expected("krait fixture rodata", sizeof("krait fixture rodata"));
  ASSERT_EQ(rodata->size, expected.size());
  auto text = elf.read_vaddr(rodata->value, expected.size());
  ASSERT_TRUE(text.ok()) << text.error().message;
  EXPECT_EQ(std::string(text->begin(), text->end()), expected);

  // .bss has no bytes in the file.
  auto counter = elf.find_symbol("krait_fixture_local_counter");
  ASSERT_TRUE(counter.has_value());
  EXPECT_FALSE(elf.read_vaddr(counter->value, 4).ok());

  // Past every segment, and straddling the end of one.
  uint64_t end = 0;
  for (const auto& seg : elf.load_segments())
    end = std::max(end, seg.vaddr + seg.memsz);
  EXPECT_FALSE(elf.read_vaddr(end + 0x100000, 1).ok());
  const LoadSegment& first = elf.load_segments().front();
  EXPECT_FALSE(elf.read_vaddr(first.vaddr + first.filesz - 2, 4).ok());
  EXPECT_FALSE(elf.read_vaddr(first.vaddr, SIZE_MAX).ok());
  auto whole = elf.read_vaddr(first.vaddr, first.filesz);
  ASSERT_TRUE(whole.ok()) << whole.error().message;
  std::vector<uint8_t> file = test::read_bytes(elf.path());
  ASSERT_GE(file.size(), first.offset + first.filesz);
  EXPECT_TRUE(std::equal(whole->begin(), whole->end(), file.begin() + first.offset));
}

TEST(ElfFileTest, FunctionAtFindsTheFixtureFunction) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().pie);
  auto fn = elf.find_symbol("krait_fixture_function");
  ASSERT_TRUE(fn.has_value());
  ASSERT_GT(fn->size, 2u);
  const Symbol* got = elf.function_at(fn->value + fn->size / 2);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->name, "krait_fixture_function");
  auto global = elf.find_symbol("krait_fixture_global");
  ASSERT_TRUE(global.has_value());
  EXPECT_EQ(elf.function_at(global->value), nullptr) << "data is not in a function";
  EXPECT_EQ(elf.function_at(0), nullptr);
  EXPECT_EQ(elf.function_at(UINT64_MAX), nullptr);
}

// Every PLT stub objdump names ("<read@plt>") is named the same, at its
// first and last byte; what objdump does not name so (PLT0, an IBT build's
// lazy stubs) is not named at all. Lazy .plt (PIE), .plt.got (the library)
// and IBT's .plt.sec.
TEST(ElfFileTest, PltStubsAreNamedAsObjdumpNamesThem) {
  REQUIRE_FIXTURES();
  for (const std::string& path : {fixtures().pie, fixtures().lib, fixtures().ibt}) {
    SCOPED_TRACE(path);
    ASSERT_OPENS(elf, path);
    test::CommandResult dump = test::run_command(
        {fixtures().objdump, "-d", "-j", ".plt", "-j", ".plt.sec", "-j", ".plt.got", path});
    ASSERT_EQ(dump.exit_code, 0) << "objdump -d failed on " << path;
    // "0000000000001030 <getenv@plt>:"
    static const std::regex label(R"(^([0-9a-f]+) <(.+)>:$)");
    std::vector<std::pair<uint64_t, std::string>> labels;
    std::istringstream lines(dump.out);
    for (std::string line; std::getline(lines, line);)
      if (std::smatch m; std::regex_match(line, m, label))
        labels.emplace_back(std::stoull(m[1], nullptr, 16), m[2]);
    int named = 0;
    for (const auto& [address, name] : labels) {
      SCOPED_TRACE(name);
      const bool stub = name.size() > 4 && name.ends_with("@plt");
      const std::optional<std::string> want =
          stub ? std::optional(name.substr(0, name.size() - 4)) : std::nullopt;
      EXPECT_EQ(elf.plt_target(address), want);
      // Stubs of .plt.got are 8 bytes without IBT; 16 elsewhere.
      auto section = elf.find_section(".plt.got");
      const bool small = section && address >= section->addr &&
                         address < section->addr + section->size && section->entsize == 8;
      EXPECT_EQ(elf.plt_target(address + (small ? 7 : 15)), want);
      named += stub ? 1 : 0;
    }
    EXPECT_GE(named, 1) << "objdump names no stub";
  }
  ASSERT_OPENS(ibt, fixtures().ibt);
  EXPECT_TRUE(ibt.find_section(".plt.sec")) << "the IBT fixture has no .plt.sec";
  ASSERT_OPENS(pie, fixtures().pie);
  auto main_fn = pie.find_symbol("main");
  ASSERT_TRUE(main_fn);
  EXPECT_EQ(pie.plt_target(main_fn->value), std::nullopt) << "main is no PLT stub";
}

TEST(ElfFileTest, SharedLibraryMatchesReadelf) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().lib);
  ASSERT_ORACLE(oracle, fixtures().lib);
  EXPECT_TRUE(elf.is_dyn());
  EXPECT_EQ(oracle.soname, "libkrait_elf_fixture.so.1");
  EXPECT_EQ(elf.soname(), oracle.soname);
  EXPECT_EQ(elf.needed(), oracle.needed);
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  EXPECT_FALSE(elf.build_id().empty());
  check_segments_against_readelf(elf, oracle);
  check_sections_against_readelf(elf, oracle);
  check_symbols_against_readelf(elf, oracle);
  auto data = elf.find_symbol("krait_lib_data");
  ASSERT_TRUE(data.has_value());
  auto bytes = elf.read_vaddr(data->value, 4);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  int32_t value = 0;
  std::memcpy(&value, bytes->data(), sizeof value);
  EXPECT_EQ(value, 4242);  // fixture_lib.c
}

TEST(ElfFileTest, StaticExecutableMatchesReadelf) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().static_exe);
  ASSERT_ORACLE(oracle, fixtures().static_exe);
  EXPECT_EQ(oracle.elf_type, "EXEC");
  EXPECT_FALSE(elf.is_dyn());
  EXPECT_TRUE(elf.needed().empty());
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  EXPECT_FALSE(elf.build_id().empty());
  check_segments_against_readelf(elf, oracle);
  check_sections_against_readelf(elf, oracle);
  check_symbols_against_readelf(elf, oracle);
  check_functions_against_readelf(elf, oracle, ".symtab");
}

TEST(ElfFileTest, StrippedCopyFallsBackToDynsym) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().stripped);
  ASSERT_ORACLE(oracle, fixtures().stripped);
  ASSERT_EQ(oracle.symbols.count(".symtab"), 0u) << "strip left a .symtab";
  EXPECT_FALSE(elf.has_symtab());
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  EXPECT_EQ(elf.build_id(), oracle_for(fixtures().pie).build_id);
  check_symbols_against_readelf(elf, oracle);
  auto nm = test::nm_defined(fixtures().stripped, true);
  ASSERT_EQ(nm.error, "");
  ASSERT_EQ(nm.values.count("krait_fixture_global"), 1u) << "--export-dynamic missing";
  auto global = elf.find_symbol("krait_fixture_global");
  ASSERT_TRUE(global.has_value());
  EXPECT_EQ(global->value, nm.values.find("krait_fixture_global")->second);
  // Static symbols live only in .symtab, which is gone.
  EXPECT_FALSE(elf.find_symbol("krait_fixture_local_counter").has_value());
  check_functions_against_readelf(elf, oracle, ".dynsym");
}

TEST(ElfFileTest, DebuglinkNamesTheDebugFile) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().debuglinked);
  ASSERT_ORACLE(oracle, fixtures().debuglinked);
  EXPECT_EQ(oracle.debuglink, "krait_elf_fixture_pie.debug");
  ASSERT_TRUE(elf.debuglink().has_value());
  EXPECT_EQ(*elf.debuglink(), oracle.debuglink);
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  EXPECT_TRUE(elf.has_symtab()) << "--strip-debug keeps .symtab";
  check_symbols_against_readelf(elf, oracle);
}

TEST(ElfFileTest, SeparateDebugFileOpensAndHasSymbols) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().debug_file);
  ASSERT_ORACLE(oracle, fixtures().debug_file);
  EXPECT_TRUE(elf.has_symtab());
  EXPECT_EQ(elf.build_id(), oracle_for(fixtures().pie).build_id);
  check_symbols_against_readelf(elf, oracle);
  // Its sections are NOBITS: no file-backed code to read.
  EXPECT_FALSE(elf.section_bytes(".text").ok());
}

// Without section headers (as left by sstrip), the build-id comes from
// PT_NOTE and DT_NEEDED / DT_SONAME from PT_DYNAMIC; symbols are gone.
TEST(ElfFileTest, WithoutSectionHeadersUsesProgramHeaders) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (const std::string& original : {fixtures().pie, fixtures().lib}) {
    ASSERT_ORACLE(oracle, original);
    ASSERT_FALSE(oracle.needed.empty() && oracle.soname.empty()) << "nothing to compare";
    std::vector<uint8_t> bytes = test::read_bytes(original);
    ASSERT_GE(bytes.size(), sizeof(Elf64_Ehdr));
    Elf64_Ehdr ehdr;
    std::memcpy(&ehdr, bytes.data(), sizeof ehdr);
    ehdr.e_shoff = 0;
    ehdr.e_shnum = 0;
    ehdr.e_shstrndx = SHN_UNDEF;
    std::memcpy(bytes.data(), &ehdr, sizeof ehdr);
    std::string path = dir.file("no-sections");
    test::write_bytes(path, bytes, false);

    ASSERT_OPENS(elf, path);
    EXPECT_FALSE(elf.find_section(".text").has_value());
    EXPECT_FALSE(elf.has_symtab());
    EXPECT_EQ(elf.build_id(), oracle.build_id);
    EXPECT_EQ(elf.needed(), oracle.needed);
    EXPECT_EQ(elf.soname(), oracle.soname);
    EXPECT_FALSE(elf.find_symbol("main").has_value());
    check_segments_against_readelf(elf, oracle);
  }
}

TEST(ElfFileTest, ConcurrentFirstLookupsAgree) {
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, fixtures().pie);
  auto nm = test::nm_defined(fixtures().pie, false);
  ASSERT_EQ(nm.error, "");
  const uint64_t want = nm.values.find("krait_fixture_function")->second;
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (size_t i = 0; i < ok.size(); ++i) {
    threads.emplace_back([&elf, &ok, i, want] {
      auto sym = i % 2 == 0 ? elf.find_symbol("krait_fixture_function") : std::nullopt;
      const Symbol* fn = elf.function_at(want + 1);
      auto rodata = elf.section_bytes(".rodata");
      ok[i] = (i % 2 != 0 || (sym && sym->value == want)) && fn != nullptr && fn->value == want &&
              rodata.ok() && !rodata->empty();
    });
  }
  for (auto& t : threads)
    t.join();
  for (size_t i = 0; i < ok.size(); ++i)
    EXPECT_TRUE(ok[i]) << "thread " << i;
}

TEST(ElfFileTest, MoveKeepsTheFileUsable) {
  REQUIRE_FIXTURES();
  auto opened = ElfFile::open(fixtures().pie);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  ElfFile first = std::move(opened).value();
  ElfFile second = std::move(first);
  auto sym = second.find_symbol("krait_fixture_global");
  ASSERT_TRUE(sym.has_value());
  auto lib = ElfFile::open(fixtures().lib);
  ASSERT_TRUE(lib.ok());
  second = std::move(lib).value();
  EXPECT_EQ(second.soname(), "libkrait_elf_fixture.so.1");
}

// --- the real interpreters ---------------------------------------------------

TEST(ElfFileTest, DebianPythonRuntimeSymbolAndSection) {
  std::string path = kDebianPython;
  REQUIRE_FILE(path);
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, path);
  ASSERT_ORACLE(oracle, path);
  EXPECT_EQ(oracle.elf_type, "EXEC");
  EXPECT_FALSE(elf.is_dyn());
  EXPECT_FALSE(elf.has_symtab()) << "Debian's python3.11 is stripped";
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  check_segments_against_readelf(elf, oracle);
  check_sections_against_readelf(elf, oracle);

  auto dynsym = unique_defined(oracle, ".dynsym");
  for (const char* name : {"_PyRuntime", "PyCode_Type", "Py_Version"}) {
    ASSERT_EQ(dynsym.count(name), 1u) << name << " not exported per readelf";
    expect_symbol_matches(elf, dynsym.at(name));
  }
  auto runtime = elf.find_symbol("_PyRuntime");
  auto section = elf.find_section(".PyRuntime");
  ASSERT_TRUE(runtime.has_value());
  ASSERT_TRUE(section.has_value());
  auto want = std::find_if(oracle.sections.begin(), oracle.sections.end(),
                           [](const auto& s) { return s.name == ".PyRuntime"; });
  ASSERT_NE(want, oracle.sections.end());
  EXPECT_EQ(section->addr, want->addr);
  EXPECT_EQ(section->size, want->size);
  EXPECT_GE(runtime->value, section->addr);
  EXPECT_LE(runtime->value + runtime->size, section->addr + section->size);

  // Py_Version holds PY_VERSION_HEX; the interpreter itself reports it.
  test::CommandResult hexversion =
      test::run_command({path, "-c", "import sys; print(sys.hexversion); print(sys.version)"});
  ASSERT_EQ(hexversion.exit_code, 0);
  std::istringstream lines(hexversion.out);
  uint64_t want_hex = 0;
  std::string version;
  lines >> want_hex >> version;
  auto py_version = elf.find_symbol("Py_Version");
  auto bytes = elf.read_vaddr(py_version->value, 4);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  uint32_t got_hex = 0;
  std::memcpy(&got_hex, bytes->data(), 4);
  EXPECT_EQ(got_hex, want_hex);

  // The version string is in .rodata.
  auto rodata = elf.section_bytes(".rodata");
  ASSERT_TRUE(rodata.ok()) << rodata.error().message;
  std::string_view text(reinterpret_cast<const char*>(rodata->data()), rodata->size());
  EXPECT_NE(text.find(version), std::string_view::npos) << version;
}

TEST(ElfFileTest, PyenvLibpythonAgainstNm) {
  std::string path = pyenv_libpython312();
  REQUIRE_FILE(path);
  REQUIRE_FIXTURES();
  ASSERT_OPENS(elf, path);
  ASSERT_ORACLE(oracle, path);
  EXPECT_TRUE(elf.is_dyn());
  EXPECT_TRUE(elf.has_symtab());
  EXPECT_EQ(elf.soname(), oracle.soname);
  EXPECT_EQ(elf.soname(), "libpython3.12.so.1.0");
  EXPECT_EQ(elf.needed(), oracle.needed);
  EXPECT_EQ(elf.build_id(), oracle.build_id);
  check_segments_against_readelf(elf, oracle);
  check_sections_against_readelf(elf, oracle);
  check_symbols_against_readelf(elf, oracle);
  check_functions_against_readelf(elf, oracle, ".symtab");
  auto nm = test::nm_defined(path, true);
  ASSERT_EQ(nm.error, "");
  for (const char* name : {"_PyRuntime", "PyCode_Type", "Py_Version", "_PyEval_EvalFrameDefault"}) {
    ASSERT_EQ(nm.values.count(name), 1u) << name;
    auto sym = elf.find_symbol(name);
    ASSERT_TRUE(sym.has_value()) << name;
    EXPECT_EQ(sym->value, nm.values.find(name)->second) << name;
  }
  auto eval = elf.find_symbol("_PyEval_EvalFrameDefault");
  const Symbol* fn = elf.function_at(eval->value + eval->size / 2);
  ASSERT_NE(fn, nullptr);
  EXPECT_EQ(fn->name, "_PyEval_EvalFrameDefault");
}

}  // namespace
}  // namespace krait::elf
