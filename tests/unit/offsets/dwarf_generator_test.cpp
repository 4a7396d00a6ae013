#include "python/offsets/dwarf_generator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "python/offsets/debug_offsets.h"
#include "support/temp_dir.h"
#include "test_support.h"

namespace krait::python {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

bool update_mode() {
  const char* env = std::getenv("KRAIT_UPDATE_OFFSETS");
  return env && std::string(env) == "1";
}

std::string table_path(const std::string& version) {
  return testing::source_dir() + "/offsets/tables/cpython-" + version + ".txt";
}

// Generated once per version and shared by the tests below.
const Result<OffsetTable>& generated(const std::string& version) {
  static std::map<std::string, Result<OffsetTable>> cache;
  auto it = cache.find(version);
  if (it == cache.end())
    it = cache.emplace(version, generate_offset_table(testing::pyenv_python(version))).first;
  return it->second;
}

class PerInterpreter : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(testing::pyenv_python(GetParam())))
        << "pyenv interpreter " << GetParam() << " is missing at "
        << testing::pyenv_python(GetParam()) << ": install it with `pyenv install " << GetParam()
        << "` (set PYENV_ROOT if pyenv lives elsewhere)";
  }
};

// The checked-in table is exactly what the generator produces from the
// interpreter today. KRAIT_UPDATE_OFFSETS=1 rewrites the file instead.
TEST_P(PerInterpreter, CheckedInTableIsReproducible) {
  const auto& table = generated(GetParam());
  ASSERT_TRUE(table) << table.error().message;
  const std::string text = format_offset_table(*table);
  const std::string path = table_path(GetParam());
  if (update_mode()) {
    ASSERT_TRUE(testing::write_text_file(path, text)) << "cannot write " << path;
  }
  auto checked_in = testing::read_text_file(path);
  ASSERT_TRUE(checked_in) << path << " is missing: run with KRAIT_UPDATE_OFFSETS=1 or "
                          << "offsets/regenerate.sh";
  EXPECT_TRUE(*checked_in == text)
      << path << " differs from the generator output (-file +generated):\n"
      << testing::line_diff(*checked_in, text)
      << "regenerate with offsets/regenerate.sh if the change is intended";
}

TEST_P(PerInterpreter, VersionComesFromTheBinary) {
  const auto& table = generated(GetParam());
  ASSERT_TRUE(table) << table.error().message;
  // pyenv names each installation after its exact version.
  EXPECT_EQ(table->version.str(), GetParam());
  EXPECT_THAT(table->source, ::testing::StartsWith("dwarf:libpython"));
  EXPECT_THAT(table->source, HasSubstr(" build-id "));
}

TEST_P(PerInterpreter, ExecutableAndLibpythonGiveTheSameTable) {
  std::string lib = testing::pyenv_libpython(GetParam());
  ASSERT_FALSE(lib.empty()) << "no libpython*.so.1.0 in the pyenv " << GetParam() << " prefix";
  const auto& from_exe = generated(GetParam());
  auto from_lib = generate_offset_table(lib);
  ASSERT_TRUE(from_exe) << from_exe.error().message;
  ASSERT_TRUE(from_lib) << from_lib.error().message;
  EXPECT_EQ(*from_exe, *from_lib);
}

// The fields the sampler relies on, by version, as CPython's history has
// them (each release's Include/ headers): present where the version has the member, absent
// where it does not.
TEST_P(PerInterpreter, HasTheFieldsOfItsVersion) {
  const auto& table = generated(GetParam());
  ASSERT_TRUE(table) << table.error().message;
  const PyVersion v = table->version;
  auto expect = [&](const char* name, bool present) {
    EXPECT_EQ(table->get(name).has_value(), present)
        << name << (present ? " missing from " : " unexpectedly in ") << v.str();
  };
  const bool py3 = v.major == 3;
  auto at_least = [&](int minor) { return py3 && v.minor >= minor; };
  auto at_most = [&](int minor) { return !py3 || v.minor <= minor; };

  for (const char* always :
       {"PyInterpreterState.next", "PyInterpreterState.tstate_head", "PyInterpreterState.modules",
        "PyThreadState.next", "PyThreadState.interp", "PyThreadState.thread_id",
        "sizeof(PyThreadState)", "PyCodeObject.co_firstlineno", "PyCodeObject.co_filename",
        "PyCodeObject.co_name", "PyCodeObject.co_flags", "PyCodeObject.co_argcount",
        "PyObject.ob_type", "PyVarObject.ob_size", "PyTupleObject.ob_item"})
    expect(always, true);

  expect("_PyRuntimeState.interpreters.head", at_least(7));
  expect("_PyRuntimeState.interpreters.main", at_least(7));
  expect("_PyRuntimeState.gilstate.tstate_current", at_least(7) && at_most(11));
  expect("_PyRuntimeState.gilstate.autoTSSkey", at_least(7));
  expect("_PyRuntimeState.ceval.gil.locked", at_least(7) && at_most(11));
  expect("_PyRuntimeState.ceval.gil.last_holder", at_least(7) && at_most(11));
  expect("PyInterpreterState.ceval.gil", at_least(12));
  expect("PyInterpreterState._gil.locked", at_least(12));
  expect("PyInterpreterState._gil.last_holder", at_least(12));
  expect("PyThreadState.frame", at_most(10));
  expect("PyThreadState.cframe", at_least(10) && at_most(12));
  expect("PyThreadState.current_frame", at_least(13));
  // Added in 3.11 (threading.get_native_id() of 3.8 does not store it).
  expect("PyThreadState.native_thread_id", at_least(11));
  expect("_PyCFrame.current_frame", at_least(11) && at_most(12));
  expect("PyFrameObject.f_code", at_most(10));
  expect("PyFrameObject.f_lasti", at_most(10));
  expect("PyFrameObject.f_back", true);
  expect("PyFrameObject.f_lineno", true);
  expect("_PyInterpreterFrame.previous", at_least(11));
  expect("_PyInterpreterFrame.executable", at_least(11));
  expect("_PyInterpreterFrame.instr_ptr", at_least(11));
  // 3.11 has `owner` too; FRAME_OWNED_BY_CSTACK only comes with 3.12.
  expect("_PyInterpreterFrame.owner", at_least(11));
  expect("_PyInterpreterFrame.is_entry", py3 && v.minor == 11);
  expect("PyCodeObject.co_qualname", at_least(11));
  expect("PyCodeObject.co_lnotab", at_most(9));
  expect("PyCodeObject.co_linetable", at_least(10));
  expect("PyCodeObject.co_code", at_most(10));
  expect("PyCodeObject.co_code_adaptive", at_least(11));
  expect("PyCodeObject.co_varnames", at_most(10));
  expect("PyCodeObject.co_localsplusnames", at_least(11));
  expect("PyBytesObject.ob_sval", py3);
  expect("PyStringObject.ob_sval", !py3);
  expect("PyASCIIObject.length", py3);
  expect("PyASCIIObject.state", py3);
  expect("sizeof(PyASCIIObject)", py3);
  expect("sizeof(PyCompactUnicodeObject)", py3);
  expect("PyASCIIObject.state.kind.bit", py3);
  expect("PyASCIIObject.state.kind.bits", py3);
  expect("PyASCIIObject.state.compact.bit", py3);
  expect("PyASCIIObject.state.ascii.bit", py3);
  expect("PyASCIIObject.state.ready.bit", py3 && v.minor <= 11);
  if (py3) {
    // PEP 393: kind is 3 bits wide (1, 2 or 4), compact and ascii 1 bit.
    EXPECT_EQ(table->get("PyASCIIObject.state.kind.bits"), 3u);
    EXPECT_EQ(table->get("PyASCIIObject.state.compact.bits"), 1u);
    EXPECT_EQ(table->get("PyASCIIObject.state.ascii.bits"), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(Pyenv, PerInterpreter, ::testing::ValuesIn(testing::pyenv_versions()),
                         [](const auto& info) {
                           std::string name = "v" + info.param;
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

// ---------------------------------------------------------------------------
// gdb as an independent reader of the same DWARF.

struct GdbCase {
  std::string version;
  std::string gdb_type;
  std::string canonical_type;
};

class AgreesWithGdb : public ::testing::TestWithParam<GdbCase> {};

TEST_P(AgreesWithGdb, EveryFieldOfTheType) {
  const GdbCase& c = GetParam();
  std::string lib = testing::pyenv_libpython(c.version);
  ASSERT_FALSE(lib.empty()) << "pyenv " << c.version << " is missing under "
                            << testing::pyenv_root();
  testing::GdbLayout gdb = testing::gdb_ptype(lib, c.gdb_type);
  ASSERT_TRUE(gdb.error.empty()) << gdb.error;
  const auto& table = generated(c.version);
  ASSERT_TRUE(table) << table.error().message;

  ASSERT_TRUE(gdb.size);
  EXPECT_EQ(table->get("sizeof(" + c.canonical_type + ")"), *gdb.size);
  size_t compared = 0;
  const std::string prefix = c.canonical_type + ".";
  for (const auto& [name, value] : table->fields) {
    if (!name.starts_with(prefix))
      continue;
    std::string path = name.substr(prefix.size());
    if (path.ends_with(".bits"))
      continue;  // gdb's ptype /o does not print widths in a parseable column
    if (path.ends_with(".bit")) {
      path.resize(path.size() - 4);
      auto it = gdb.members.find(path);
      ASSERT_NE(it, gdb.members.end()) << path;
      ASSERT_TRUE(it->second.bit) << path << " is not a bitfield for gdb";
      std::string parent = path.substr(0, path.rfind('.'));
      uint64_t parent_offset = gdb.members.at(parent).offset;
      EXPECT_EQ(value, (it->second.offset - parent_offset) * 8 + *it->second.bit) << name;
      ++compared;
      continue;
    }
    auto it = gdb.members.find(path);
    if (it == gdb.members.end())
      continue;  // a canonical alias of a renamed member, checked below
    EXPECT_EQ(value, it->second.offset) << name;
    ++compared;
  }
  EXPECT_GE(compared, 3u) << "too few fields compared for " << c.gdb_type;
}

INSTANTIATE_TEST_SUITE_P(Pyenv, AgreesWithGdb,
                         ::testing::Values(GdbCase{"2.7.18", "struct _ts", "PyThreadState"},
                                           GdbCase{"3.9.18", "struct _ts", "PyThreadState"},
                                           GdbCase{"3.12.1", "struct _ts", "PyThreadState"},
                                           GdbCase{"3.13.0", "struct _ts", "PyThreadState"},
                                           GdbCase{"3.9.18", "PyASCIIObject", "PyASCIIObject"},
                                           GdbCase{"3.12.1", "PyASCIIObject", "PyASCIIObject"},
                                           GdbCase{"3.10.13", "PyCodeObject", "PyCodeObject"},
                                           GdbCase{"3.11.7", "struct _PyInterpreterFrame",
                                                   "_PyInterpreterFrame"}),
                         [](const auto& info) {
                           std::string name =
                               "v" + info.param.version + "_" + info.param.canonical_type;
                           for (char& ch : name)
                             if (!isalnum(static_cast<unsigned char>(ch)))
                               ch = '_';
                           return name;
                         });

TEST(AgreesWithGdbRenamed, CanonicalAliasesPointAtTheRenamedMembers) {
  struct Case {
    std::string type, member, canonical;
  };
  const std::map<std::string, std::vector<Case>> cases = {
      {"3.10.13", {{"struct _is", "tstate_head", "PyInterpreterState.tstate_head"}}},
      {"3.11.7",
       {{"struct _PyInterpreterFrame", "prev_instr", "_PyInterpreterFrame.instr_ptr"},
        {"struct _PyInterpreterFrame", "f_code", "_PyInterpreterFrame.executable"},
        {"struct _is", "threads.head", "PyInterpreterState.tstate_head"},
        {"struct pyruntimestate", "ceval.gil.locked", "_PyRuntimeState.ceval.gil.locked"},
        {"struct pyruntimestate", "ceval.gil.last_holder", "_PyRuntimeState.ceval.gil.last_holder"},
        {"struct pyruntimestate", "gilstate.autoTSSkey", "_PyRuntimeState.gilstate.autoTSSkey"}}},
      {"3.12.1",
       {{"struct _is", "threads.head", "PyInterpreterState.tstate_head"},
        {"struct _is", "imports.modules", "PyInterpreterState.modules"},
        {"struct _is", "_gil.locked", "PyInterpreterState._gil.locked"},
        {"struct pyruntimestate", "autoTSSkey", "_PyRuntimeState.gilstate.autoTSSkey"},
        {"PyLongObject", "long_value.ob_digit", "PyLongObject.ob_digit"}}},
      {"3.13.0",
       {{"struct _PyInterpreterFrame", "f_executable", "_PyInterpreterFrame.executable"},
        {"struct _PyInterpreterFrame", "instr_ptr", "_PyInterpreterFrame.instr_ptr"}}},
      {"3.7.16",
       {{"struct pyruntimestate", "finalizing", "_PyRuntimeState._finalizing"},
        {"struct pyruntimestate", "interpreters.head", "_PyRuntimeState.interpreters.head"}}},
  };
  for (const auto& [version, list] : cases) {
    std::string lib = testing::pyenv_libpython(version);
    ASSERT_FALSE(lib.empty()) << "pyenv " << version << " is missing";
    std::vector<std::pair<std::string, std::string>> members;
    for (const auto& c : list)
      members.emplace_back(c.type, c.member);
    auto offsets = testing::gdb_offsetof(lib, members);
    const auto& table = generated(version);
    ASSERT_TRUE(table) << table.error().message;
    for (size_t i = 0; i < list.size(); ++i) {
      ASSERT_TRUE(offsets[i]) << "gdb could not evaluate offsetof(" << list[i].type << ", "
                              << list[i].member << ") in " << lib;
      EXPECT_EQ(table->get(list[i].canonical), *offsets[i]) << version << " " << list[i].canonical;
    }
  }
}

// ---------------------------------------------------------------------------
// Failures are reported, not papered over.

using test::TempDir;

TEST(GenerateOffsetTable, FileWithoutDwarfIsAnError) {
  std::string lib = testing::pyenv_libpython("3.12.1");
  ASSERT_FALSE(lib.empty()) << "pyenv 3.12.1 is missing";
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  std::string stripped = dir.path() + "/libpython3.12.so.1.0";
  auto r = testing::run_command("objcopy --strip-debug '" + lib + "' '" + stripped + "'");
  ASSERT_EQ(r.status, 0) << "objcopy (binutils) is needed for this test: " << r.output;
  auto table = generate_offset_table(stripped);
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().message,
            "no DWARF in " + stripped + ": install its debug symbols or use a build with -g");
}

TEST(GenerateOffsetTable, NotAnElfFileIsAnError) {
  TempDir dir;
  std::string text = dir.path() + "/python3.12";
  ASSERT_TRUE(testing::write_text_file(text, "#!/bin/sh\n"));
  auto table = generate_offset_table(text);
  ASSERT_FALSE(table);
  EXPECT_THAT(table.error().message, HasSubstr("is not an ELF file"));
}

TEST(GenerateOffsetTable, MissingFileIsAnError) {
  auto table = generate_offset_table("/nonexistent/bin/python3.12");
  ASSERT_FALSE(table);
  EXPECT_THAT(table.error().message, HasSubstr("/nonexistent/bin/python3.12"));
}

TEST(GenerateOffsetTable, FollowsOriginRelativeRunpathAndReportsAMissingLibpython) {
  std::string lib = testing::pyenv_libpython("3.12.1");
  ASSERT_FALSE(lib.empty()) << "pyenv 3.12.1 is missing";
  TempDir dir;
  fs::create_directories(dir.path() + "/bin");
  const std::string exe = dir.path() + "/bin/python3.12";
  fs::copy_file(fs::canonical(testing::pyenv_python("3.12.1")), exe);
  auto r = testing::run_command("patchelf --set-rpath '$ORIGIN/../lib' '" + exe + "'");
  ASSERT_EQ(r.status, 0) << "patchelf is needed for this test: " << r.output;

  auto missing = generate_offset_table(exe);
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message,
              HasSubstr("needs libpython3.12.so.1.0, which is neither in its RUNPATH nor in "
                        "../lib: pass the libpython file instead"));

  fs::create_directories(dir.path() + "/lib");
  fs::copy_file(lib, dir.path() + "/lib/libpython3.12.so.1.0");
  auto found = generate_offset_table(exe);
  ASSERT_TRUE(found) << found.error().message;
  const auto& reference = generated("3.12.1");
  ASSERT_TRUE(reference) << reference.error().message;
  EXPECT_EQ(*found, *reference);
}

TEST(GenerateOffsetTable, EmitsOnlyDeclaredCanonicalNames) {
  // Every name the generator emits is one it declares.
  std::set<std::string> known;
  for (const auto& n : dwarf_canonical_fields())
    EXPECT_TRUE(known.insert(n).second) << n << " declared twice";
  for (const auto& version : testing::pyenv_versions()) {
    const auto& table = generated(version);
    ASSERT_TRUE(table) << version << ": " << table.error().message;
    for (const auto& [name, value] : table->fields)
      EXPECT_TRUE(known.count(name)) << name;
  }
}

TEST(GenerateOffsetTable, DebugOffsetLayoutsUseTheGeneratorsCanonicalNames) {
  std::set<std::string> known;
  for (const auto& n : dwarf_canonical_fields())
    known.insert(n);
  for (const auto& layout : builtin_debug_offsets_layouts()) {
    for (const auto& slot : layout.slots) {
      if (!slot.canonical.empty()) {
        EXPECT_TRUE(known.count(slot.canonical))
            << layout.major << "." << layout.minor << " " << slot.path << " maps to "
            << slot.canonical << ", which the DWARF generator does not know";
      }
    }
  }
}

}  // namespace
}  // namespace krait::python
