#include "python/offsets/debug_offsets.h"

#include <fcntl.h>
#include <gelf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libelf.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include "test_support.h"

namespace krait::python {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSizeValue = 1 << 20;

// Bytes of a _Py_DebugOffsets for `layout` in which every canonical field
// has a distinct value (sizes large, offsets small), plus those values.
struct Blob {
  std::vector<uint8_t> bytes;
  std::map<std::string, uint64_t> canonical;
  std::map<std::string, uint64_t> raw;
};

Blob make_blob(const DebugOffsetsLayout& layout, PyVersion v) {
  Blob blob;
  blob.bytes.resize(layout.size_bytes());
  std::memcpy(blob.bytes.data(), kDebugOffsetsCookie.data(), 8);
  for (size_t i = 1; i < layout.slots.size(); ++i) {
    const auto& slot = layout.slots[i];
    uint64_t value;
    if (i == 1)
      value = v.hex();
    else if (slot.canonical.empty())
      value = 7000 + i;
    else if (auto it = blob.canonical.find(slot.canonical); it != blob.canonical.end())
      value = it->second;  // names shared by several slots carry one value
    else if (slot.canonical.starts_with("sizeof("))
      value = kSizeValue + i;
    else
      value = 8 * i;
    if (!slot.canonical.empty())
      blob.canonical[slot.canonical] = value;
    blob.raw[slot.path] = value;
    std::memcpy(blob.bytes.data() + 8 * i, &value, 8);
  }
  return blob;
}

TEST(DebugOffsetsLayout, ParsesSlotsAndCanonicalNames) {
  auto layout = parse_debug_offsets_layout(
      "# comment\ncookie\nversion\n\nthread_state.size = sizeof(PyThreadState)\n"
      "  thread_state.next=PyThreadState.next  \nfree_threaded\n",
      3, 13);
  ASSERT_TRUE(layout) << layout.error().message;
  ASSERT_EQ(layout->slots.size(), 5u);
  EXPECT_EQ(layout->size_bytes(), 40u);
  EXPECT_EQ(layout->slots[2].path, "thread_state.size");
  EXPECT_EQ(layout->slots[2].canonical, "sizeof(PyThreadState)");
  EXPECT_EQ(layout->slots[3].path, "thread_state.next");
  EXPECT_EQ(layout->slots[3].canonical, "PyThreadState.next");
  EXPECT_EQ(layout->slots[4].canonical, "");
}

TEST(DebugOffsetsLayout, RejectsBrokenLayouts) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"version\ncookie\n", "first slots must be `cookie` and `version`"},
      {"cookie\n", "first slots must be `cookie` and `version`"},
      {"cookie\nversion\na.b\na.b\n", "line 4: slot a.b appears twice"},
      {"cookie\nversion\na b\n", "line 3: bad slot name"},
      {"cookie\nversion\na = \n", "line 3: bad canonical name"},
  };
  for (const auto& c : cases) {
    auto layout = parse_debug_offsets_layout(c.text, 3, 13);
    ASSERT_FALSE(layout) << c.text;
    EXPECT_THAT(layout.error().message, HasSubstr(c.message)) << c.text;
  }
}

std::string minor_name(const DebugOffsetsLayout& layout) {
  return std::to_string(layout.major) + "." + std::to_string(layout.minor);
}

TEST(DebugOffsets, EveryLayoutFileIsBuiltIn) {
  namespace fs = std::filesystem;
  std::set<std::string> files;
  for (const auto& entry :
       fs::directory_iterator(fs::path(testing::source_dir()) / "offsets" / "debug_offsets"))
    files.insert(entry.path().filename().string());
  std::set<std::string> built_in;
  for (const auto& layout : builtin_debug_offsets_layouts())
    built_in.insert(minor_name(layout) + ".txt");
  EXPECT_EQ(built_in, files) << "a layout file failed to parse or cmake was not re-run";
  for (int minor : {13, 14, 15})
    EXPECT_NE(find_debug_offsets_layout(3, minor), nullptr) << "3." << minor;
}

TEST(DebugOffsets, EveryLayoutMapsWhatTheSamplerNeeds) {
  for (const auto& layout : builtin_debug_offsets_layouts()) {
    EXPECT_EQ(debug_offsets_read_size(layout.major, layout.minor), layout.size_bytes());
    std::set<std::string> names;
    for (const auto& s : layout.slots)
      names.insert(s.canonical);
    for (const char* needed :
         {"_PyRuntimeState.interpreters.head", "PyInterpreterState.tstate_head",
          "PyThreadState.next", "PyThreadState.current_frame", "PyThreadState.native_thread_id",
          "PyThreadState.thread_id", "_PyInterpreterFrame.previous",
          "_PyInterpreterFrame.executable", "_PyInterpreterFrame.instr_ptr",
          "_PyInterpreterFrame.owner", "PyCodeObject.co_qualname", "PyCodeObject.co_filename",
          "PyCodeObject.co_linetable", "PyCodeObject.co_firstlineno",
          "PyCodeObject.co_code_adaptive", "sizeof(PyASCIIObject)", "PyASCIIObject.state"})
      EXPECT_TRUE(names.count(needed)) << minor_name(layout) << " lacks " << needed;
  }
  EXPECT_EQ(debug_offsets_read_size(3, 12), 0u);
  EXPECT_EQ(debug_offsets_read_size(3, 99), 0u);
}

TEST(DebugOffsets, DecodesSyntheticBlobOfEveryBuiltInLayout) {
  for (const auto& layout : builtin_debug_offsets_layouts()) {
    PyVersion v{layout.major, layout.minor, 4};
    Blob blob = make_blob(layout, v);
    auto table = decode_debug_offsets(blob.bytes);
    ASSERT_TRUE(table) << table.error().message;
    EXPECT_EQ(table->version, v);
    EXPECT_EQ(table->source, "_Py_DebugOffsets");
    for (const auto& [name, value] : blob.canonical)
      EXPECT_EQ(table->get(name), value) << name;
    for (const auto& [path, value] : blob.raw)
      EXPECT_EQ(table->get(std::string(kDebugOffsetsRawPrefix) + path), value) << path;
    EXPECT_EQ(table->get("_Py_DebugOffsets.cookie"), std::nullopt);
    EXPECT_EQ(table->fields.size(), blob.canonical.size() + blob.raw.size());
  }
}

TEST(DebugOffsets, ExtraBytesAfterTheStructAreIgnored) {
  const DebugOffsetsLayout* layout = find_debug_offsets_layout(3, 13);
  ASSERT_NE(layout, nullptr);
  Blob blob = make_blob(*layout, {3, 13, 0});
  auto exact = decode_debug_offsets(blob.bytes);
  blob.bytes.resize(blob.bytes.size() + 64, 0xab);
  auto longer = decode_debug_offsets(blob.bytes);
  ASSERT_TRUE(exact && longer);
  EXPECT_EQ(*exact, *longer);
}

TEST(DebugOffsets, Errors) {
  const DebugOffsetsLayout* layout = find_debug_offsets_layout(3, 13);
  ASSERT_NE(layout, nullptr);
  const Blob good = make_blob(*layout, {3, 13, 0});

  auto expect_error = [](std::span<const uint8_t> bytes, const std::string& message) {
    auto t = decode_debug_offsets(bytes);
    ASSERT_FALSE(t) << "expected an error containing: " << message;
    EXPECT_THAT(t.error().message, HasSubstr(message));
  };

  expect_error(std::span(good.bytes).first(15), "needs at least 16 bytes");
  expect_error(std::span(good.bytes).first(layout->size_bytes() - 8), "needs 584 bytes");

  Blob bad_cookie = good;
  bad_cookie.bytes[0] = 'X';
  expect_error(bad_cookie.bytes, "no _Py_DebugOffsets cookie");

  Blob future = good;
  uint64_t v316 = PyVersion{3, 16, 0}.hex();
  std::memcpy(future.bytes.data() + 8, &v316, 8);
  expect_error(future.bytes,
               "no _Py_DebugOffsets layout for 3.16: add offsets/debug_offsets/3.16.txt");

  // tuple_object.ob_size and list_object.ob_size are both PyVarObject.ob_size.
  Blob inconsistent = good;
  size_t list_ob_size = 0;
  for (size_t i = 0; i < layout->slots.size(); ++i) {
    if (layout->slots[i].path == "list_object.ob_size")
      list_ob_size = i;
  }
  ASSERT_NE(list_ob_size, 0u);
  uint64_t other = 12345;
  std::memcpy(inconsistent.bytes.data() + 8 * list_ob_size, &other, 8);
  expect_error(inconsistent.bytes, "PyVarObject.ob_size is both");

  // thread_state.next beyond sizeof(PyThreadState).
  Blob beyond = good;
  for (size_t i = 0; i < layout->slots.size(); ++i) {
    if (layout->slots[i].path == "thread_state.next") {
      uint64_t huge = kSizeValue * 4;
      std::memcpy(beyond.bytes.data() + 8 * i, &huge, 8);
    }
  }
  expect_error(beyond.bytes, "PyThreadState.next = 4194304 lies beyond sizeof(PyThreadState)");

  const DebugOffsetsLayout* layout14 = find_debug_offsets_layout(3, 14);
  ASSERT_NE(layout14, nullptr);
  auto mismatch = decode_debug_offsets(good.bytes, *layout14);
  ASSERT_FALSE(mismatch);
  EXPECT_THAT(mismatch.error().message, HasSubstr("layout given is for 3.14"));
}

// ---------------------------------------------------------------------------
// Real bytes: _PyRuntime is initialised data, so the debug offsets of a
// libpython are in the file itself.

std::vector<uint8_t> read_symbol_bytes(const std::string& file, const char* symbol, size_t size,
                                       std::string& error) {
  elf_version(EV_CURRENT);
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open " + file;
    return {};
  }
  std::vector<uint8_t> out;
  Elf* elf = elf_begin(fd, ELF_C_READ, nullptr);
  Elf_Scn* scn = nullptr;
  while (elf && out.empty() && (scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr shdr;
    if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_DYNSYM)
      continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    for (size_t i = 0; data && i < shdr.sh_size / shdr.sh_entsize; ++i) {
      GElf_Sym sym;
      gelf_getsym(data, static_cast<int>(i), &sym);
      const char* name = elf_strptr(elf, shdr.sh_link, sym.st_name);
      if (!name || std::strcmp(name, symbol) != 0)
        continue;
      GElf_Shdr target;
      gelf_getshdr(elf_getscn(elf, sym.st_shndx), &target);
      if (target.sh_type != SHT_PROGBITS) {
        error = std::string(symbol) + " is not in a PROGBITS section";
        break;
      }
      out.resize(size);
      if (::pread(fd, out.data(), size,
                  static_cast<off_t>(target.sh_offset + sym.st_value - target.sh_addr)) !=
          static_cast<ssize_t>(size)) {
        error = "short read";
        out.clear();
      }
      break;
    }
  }
  if (elf)
    elf_end(elf);
  ::close(fd);
  if (out.empty() && error.empty())
    error = std::string("no symbol ") + symbol + " in " + file;
  return out;
}

TEST(DebugOffsets, RealBytesOfPyenv3130AgreeWithItsDwarfTable) {
  std::string lib = testing::pyenv_libpython("3.13.0");
  ASSERT_FALSE(lib.empty()) << "pyenv 3.13.0 is missing under " << testing::pyenv_root()
                            << ": install it with `pyenv install 3.13.0`";
  std::string error;
  std::vector<uint8_t> bytes =
      read_symbol_bytes(lib, "_PyRuntime", debug_offsets_read_size(3, 13), error);
  ASSERT_FALSE(bytes.empty()) << error;

  auto decoded = decode_debug_offsets(bytes);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->version, (PyVersion{3, 13, 0}));
  EXPECT_EQ(decoded->get("_Py_DebugOffsets.free_threaded"), 0u);

  const OffsetTable* dwarf = find_table({3, 13, 0});
  ASSERT_NE(dwarf, nullptr) << "offsets/tables/cpython-3.13.0.txt is not built in";
  size_t compared = 0;
  for (const auto& [name, value] : decoded->fields) {
    if (name.starts_with(kDebugOffsetsRawPrefix))
      continue;
    auto expected = dwarf->get(name);
    ASSERT_TRUE(expected) << name << " is in _Py_DebugOffsets but not in the DWARF table";
    EXPECT_EQ(value, *expected) << name;
    ++compared;
  }
  // Every canonical slot of the 3.13 layout took part.
  std::set<std::string> canonical;
  for (const auto& s : find_debug_offsets_layout(3, 13)->slots)
    if (!s.canonical.empty())
      canonical.insert(s.canonical);
  EXPECT_EQ(compared, canonical.size());
}

// ---------------------------------------------------------------------------
// The layout files against independent descriptions of the struct.

std::vector<std::string> paths_of(const DebugOffsetsLayout& layout) {
  std::vector<std::string> out;
  for (const auto& s : layout.slots)
    out.push_back(s.path);
  return out;
}

TEST(DebugOffsets, Layout313MatchesTheDwarfOfPyenv3130) {
  std::string lib = testing::pyenv_libpython("3.13.0");
  ASSERT_FALSE(lib.empty()) << "pyenv 3.13.0 is missing under " << testing::pyenv_root();
  testing::GdbLayout gdb = testing::gdb_ptype(lib, "struct _Py_DebugOffsets");
  ASSERT_TRUE(gdb.error.empty()) << gdb.error;
  const DebugOffsetsLayout* layout = find_debug_offsets_layout(3, 13);
  ASSERT_NE(layout, nullptr);
  EXPECT_EQ(paths_of(*layout), gdb.order);
  ASSERT_TRUE(gdb.size);
  EXPECT_EQ(layout->size_bytes(), *gdb.size);
  for (size_t i = 0; i < layout->slots.size(); ++i)
    EXPECT_EQ(gdb.members[layout->slots[i].path].offset, 8 * i) << layout->slots[i].path;
}

// Member paths of struct _Py_DebugOffsets as declared in a CPython header.
std::vector<std::string> header_slots(const std::string& text) {
  std::vector<std::string> out;
  size_t begin = text.find("typedef struct _Py_DebugOffsets {");
  size_t end = text.find("} _Py_DebugOffsets;");
  if (begin == std::string::npos || end == std::string::npos)
    return out;
  std::istringstream in(text.substr(begin, end - begin));
  std::string line;
  std::getline(in, line);  // the typedef line itself
  static const std::regex open(R"(^\s*struct\s*\w*\s*\{\s*$)");
  static const std::regex close(R"(^\s*\}\s*(\w+)\s*;\s*$)");
  static const std::regex member(R"(^\s*(?:uint64_t|char)\s+(\w+)\s*(?:\[\d+\])?[^;]*;\s*$)");
  std::vector<std::vector<std::string>> stack(1);
  std::smatch m;
  while (std::getline(in, line)) {
    if (size_t c = line.find("//"); c != std::string::npos)
      line.resize(c);
    if (std::regex_match(line, open)) {
      stack.emplace_back();
    } else if (std::regex_match(line, m, close) && stack.size() > 1) {
      std::vector<std::string> inner = std::move(stack.back());
      stack.pop_back();
      for (const auto& n : inner)
        stack.back().push_back(std::string(m[1]) + "." + n);
    } else if (std::regex_match(line, m, member)) {
      stack.back().push_back(m[1]);
    }
  }
  return stack.front();
}

// Include directory of CPython <minor> ("3.14"): $KRAIT_PYHEADERS/python<minor> when
// set, else the Debian sid prefix scripts/provision-pythons unpacked (it
// installs libpython3.X-dev there).
std::string pyheaders_dir(const std::string& minor) {
  if (const char* env = std::getenv("KRAIT_PYHEADERS"); env && *env)
    return std::string(env) + "/python" + minor;
  const char* cache = std::getenv("KRAIT_PYTHON_CACHE");
  std::string root = cache && *cache ? cache : "/var/cache/krait/pythons";
  return root + "/sid-" + minor + "/usr/include/python" + minor;
}

// The struct moved from pycore_runtime.h (3.13) to pycore_debug_offsets.h (3.14+).
std::string debug_offsets_header(const std::string& include_dir) {
  std::string moved = include_dir + "/internal/pycore_debug_offsets.h";
  return std::filesystem::exists(moved) ? moved : include_dir + "/internal/pycore_runtime.h";
}

TEST(DebugOffsets, LayoutsMatchTheCPythonHeaders) {
  std::vector<std::pair<const DebugOffsetsLayout*, std::string>> cases;
  cases.emplace_back(
      find_debug_offsets_layout(3, 13),
      debug_offsets_header(testing::pyenv_root() + "/versions/3.13.0/include/python3.13"));
  for (const auto& layout : builtin_debug_offsets_layouts())
    cases.emplace_back(&layout, debug_offsets_header(pyheaders_dir(minor_name(layout))));
  for (const auto& [layout, header] : cases) {
    ASSERT_NE(layout, nullptr);
    auto text = testing::read_text_file(header);
    ASSERT_TRUE(text) << "missing CPython header " << header << " (the python"
                      << minor_name(*layout)
                      << " headers: run scripts/provision-pythons, which unpacks Debian's "
                         "libpython3.x-dev, or point $KRAIT_PYHEADERS at an include root)";
    std::vector<std::string> slots = header_slots(*text);
    ASSERT_FALSE(slots.empty()) << "no struct _Py_DebugOffsets in " << header;
    EXPECT_EQ(paths_of(*layout), slots) << header;
  }
}

}  // namespace
}  // namespace krait::python
