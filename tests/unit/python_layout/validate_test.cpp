// validate_layout and its frame walk (walk_frames, src/python/attach.cpp)
// over process images captured from live interpreters (process_image.h).
// The right layout passes and walks method <- <module> (Base.method from
// 3.11); a layout with one wrong offset is refused with a reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "proc/memory.h"
#include "process_image.h"
#include "python/attach.h"
#include "python/layout.h"

namespace krait::python {
namespace {

using ::testing::HasSubstr;

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
