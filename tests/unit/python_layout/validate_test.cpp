// validate_layout and its frame walk (walk_frames, src/python/attach.cpp)
// over process images captured from live interpreters: the code_reader
// fuzzer's seeds (tests/fuzz/code_reader/corpus, recorded by
// tests/fuzz/make_seeds.py), each the memory krait's own reads touched in a
// process running
//
//   class Base(object):
//       def method(self): <waits>
//   class Derived(Base): pass
//   Derived().method()
//
// with its layout (a built-in table of that version, or the process's own
// _Py_DebugOffsets) and the address of the interpreter list. The right
// layout passes and walks method <- <module> (Base.method from 3.11); a
// layout with one wrong
// offset is refused with a reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "proc/memory.h"
#include "python/attach.h"
#include "python/layout.h"
#include "python/offsets/debug_offsets.h"
#include "python/offsets/offset_table.h"

namespace krait::python {
namespace {

using ::testing::HasSubstr;

// A seed decoded: see tests/fuzz/code_reader/fuzz_memory.h for the format.
struct ProcessImage {
  std::string name;  // e.g. "pyenv-3.12.1-table"
  PyVersion version;
  PythonLayout layout;
  uint64_t code_type = 0;
  uint64_t interp_head = 0;
  proc::FakeMemory memory;
};

class Reader {
 public:
  explicit Reader(std::string bytes) : bytes_(std::move(bytes)) {}
  template <typename T>
  T take() {
    T v{};
    if (pos_ + sizeof v <= bytes_.size())
      std::memcpy(&v, bytes_.data() + pos_, sizeof v);
    else
      short_ = true;
    pos_ += sizeof v;
    return v;
  }
  std::vector<uint8_t> take_bytes(size_t n) {
    if (pos_ + n > bytes_.size()) {
      short_ = true;
      pos_ = bytes_.size();
      return {};
    }
    std::vector<uint8_t> out(bytes_.begin() + static_cast<ptrdiff_t>(pos_),
                             bytes_.begin() + static_cast<ptrdiff_t>(pos_ + n));
    pos_ += n;
    return out;
  }
  bool short_read() const { return short_; }

 private:
  std::string bytes_;
  size_t pos_ = 0;
  bool short_ = false;
};

Result<ProcessImage> load_image(const std::string& name) {
  const std::string path = std::string(KRAIT_CODE_READER_CORPUS) + "/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error("cannot open {}", path);
  Reader r(std::string(std::istreambuf_iterator<char>(in), {}));
  ProcessImage image;
  image.name = name;
  const auto flags = r.take<uint8_t>();
  (void)r.take<uint8_t>();  // the table's index when recorded: found by version below
  const auto debug = r.take_bytes(r.take<uint16_t>());
  image.code_type = r.take<uint64_t>();
  (void)r.take<uint64_t>();  // code
  (void)r.take<uint32_t>();  // token
  (void)r.take<uint32_t>();  // instr
  (void)r.take<uint64_t>();  // frame
  image.interp_head = r.take<uint64_t>();
  (void)r.take_bytes(r.take<uint16_t>());  // the code capture event
  const auto regions = r.take<uint8_t>();
  for (unsigned i = 0; i < regions; ++i) {
    const auto address = r.take<uint64_t>();
    image.memory.add(address, r.take_bytes(r.take<uint32_t>()));
  }
  if (r.short_read())
    return make_error("{}: truncated", path);

  // "<source>-<version>-<table|debug>"
  const size_t first = name.find('-'), last = name.rfind('-');
  auto version = PyVersion::parse(name.substr(first + 1, last - first - 1));
  if (!version)
    return make_error("{}: no version in the name", name);
  image.version = *version;
  std::optional<OffsetTable> decoded;
  const OffsetTable* table = nullptr;
  if (flags & 1) {
    auto t = decode_debug_offsets(debug);
    if (!t)
      return t.error().context(name);
    decoded = std::move(*t);
    table = &*decoded;
  } else {
    table = find_table(*version);
    if (!table)
      table = nearest_table_same_minor(*version);
    if (!table)
      return make_error("{}: no built-in table", name);
  }
  auto layout = build_layout(*table, *version);
  if (!layout)
    return layout.error().context(name);
  image.layout = std::move(*layout);
  return image;
}

// The seeds this test reads: before 3.11 (frame objects, 2.7's bytes
// names, 3.6's and 3.10's thread lists), 3.11 (interpreter frames in a
// _PyCFrame), 3.12 (shim frames), 3.13+ (from _Py_DebugOffsets too).
const std::vector<std::string> kImages = {
    "pyenv-2.7.18-table", "pyenv-3.6.15-table", "pyenv-3.10.13-table", "pyenv-3.11.7-table",
    "pyenv-3.12.1-table", "pyenv-3.13.0-table", "pyenv-3.13.0-debug",  "sid-3.14.10-debug",
};

// The first thread state of the first interpreter.
Result<uint64_t> first_thread(const ProcessImage& image) {
  auto interp = image.memory.read_value<uint64_t>(image.interp_head);
  if (!interp)
    return interp.error().context("interpreter list");
  auto tstate = image.memory.read_value<uint64_t>(*interp + image.layout.bpf.interp_tstate_head);
  if (!tstate)
    return tstate.error().context("thread list");
  return *tstate;
}

TEST(ValidateLayout, TheRecordedLayoutPasses) {
  for (const std::string& name : kImages) {
    auto image = load_image(name);
    ASSERT_TRUE(image) << image.error().message;
    Validation v = validate_layout(image->memory, ::getpid(), image->layout, image->interp_head,
                                   image->code_type);
    EXPECT_EQ(v.status, AttachStatus::kAttached) << name << ": " << v.reason;
    EXPECT_EQ(v.reason, "") << name;
  }
}

// One wrong offset at a time, each where validation reads: refused, with a
// reason that says what did not check out.
TEST(ValidateLayout, AWrongOffsetIsRefusedWithAReason) {
  struct Mutation {
    const char* what;
    void (*apply)(PythonLayout&);
    const char* reason;  // a part of the expected reason
    // Frames whose code is not a code object are skipped from 3.13 on
    // (bpf.skip_non_code), so wrong code pointers there are not refused.
    bool needs_code_check = false;
  };
  const Mutation mutations[] = {
      {"thread state's interpreter",
       [](PythonLayout& l) { l.tstate_interp = static_cast<uint16_t>(l.tstate_interp + 8); },
       "does not point back to its interpreter"},
      {"frame's code object",
       [](PythonLayout& l) { l.bpf.frame_code = static_cast<uint16_t>(l.bpf.frame_code + 8); },
       "frame at 0x", true},
      {"code object's name", [](PythonLayout& l) { l.bpf.code_name = l.bpf.code_type; },
       "a function name does not decode"},
      {"code object's type",
       [](PythonLayout& l) { l.bpf.code_type = static_cast<uint16_t>(l.bpf.code_type + 8); },
       "does not point to a code object", true},
      {"thread list head",
       [](PythonLayout& l) {
         l.bpf.interp_tstate_head = static_cast<uint16_t>(l.bpf.interp_tstate_head + 8);
       },
       ""},
  };
  for (const std::string& name : kImages) {
    auto image = load_image(name);
    ASSERT_TRUE(image) << image.error().message;
    for (const Mutation& m : mutations) {
      if (std::string(m.what) == "thread state's interpreter" &&
          image->layout.tstate_interp == KRAIT_OFFSET_NONE)
        continue;
      if (m.needs_code_check && image->layout.bpf.skip_non_code)
        continue;
      PythonLayout wrong = image->layout;
      m.apply(wrong);
      Validation v =
          validate_layout(image->memory, ::getpid(), wrong, image->interp_head, image->code_type);
      EXPECT_EQ(v.status, AttachStatus::kRefused) << name << ", wrong " << m.what;
      EXPECT_FALSE(v.reason.empty()) << name << ", wrong " << m.what;
      EXPECT_THAT(v.reason, HasSubstr(m.reason)) << name << ", wrong " << m.what;
    }
  }
}

// The frame walk names the thread's frames, leaf first, as the process ran
// them; shim frames (3.12+) are not frames of the walk.
TEST(WalkFrames, NamesTheThreadsFrames) {
  for (const std::string& name : kImages) {
    auto image = load_image(name);
    ASSERT_TRUE(image) << image.error().message;
    auto tstate = first_thread(*image);
    ASSERT_TRUE(tstate) << name << ": " << tstate.error().message;
    FrameWalk walk = walk_frames(image->memory, image->layout, *tstate, image->code_type);
    EXPECT_EQ(walk.validation.status, AttachStatus::kAttached)
        << name << ": " << walk.validation.reason;
    // co_qualname from 3.11 on.
    const std::string method = image->version >= PyVersion{3, 11, 0} ? "Base.method" : "method";
    EXPECT_EQ(walk.functions, (std::vector<std::string>{method, "<module>"})) << name;
  }
}

// With a wrong link to the calling frame the walk leaves the process's
// frames: it stops with a reason instead of naming what it finds there.
TEST(WalkFrames, AWrongBackLinkStopsWithAReason) {
  for (const std::string& name : kImages) {
    auto image = load_image(name);
    ASSERT_TRUE(image) << image.error().message;
    auto tstate = first_thread(*image);
    ASSERT_TRUE(tstate) << name << ": " << tstate.error().message;
    PythonLayout wrong = image->layout;
    wrong.bpf.frame_back = static_cast<uint16_t>(wrong.bpf.frame_back + 8);
    FrameWalk walk = walk_frames(image->memory, wrong, *tstate, image->code_type);
    EXPECT_EQ(walk.validation.status, AttachStatus::kRefused) << name;
    EXPECT_FALSE(walk.validation.reason.empty()) << name;
    EXPECT_LT(walk.functions.size(), 2u) << name;
  }
}

}  // namespace
}  // namespace krait::python
