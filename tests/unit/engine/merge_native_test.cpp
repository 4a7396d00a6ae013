// StackBuilder's merge of native and Python stacks (merge_native, reached
// through add() with a mixed SampleJob): every native frame of the eval loop
// is replaced by the Python frames that C call runs, matched from the leaf
// by the frames' entry marks, and stacks that do not match end with a reason
// frame. The native material is real: stacks a CPython 3.12 process captured
// of itself (tests/unit/unwind/fixtures: "python-main" runs the eval loop
// once on the C stack, "python-nested" twice, through map()), unwound and
// named by the builder; the Python frames are made up here, so
// each case chooses how many groups there are.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/sample_job.h"
#include "engine/stack_builder.h"
#include "fixture_support.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

namespace krait::engine {
namespace {

constexpr std::string_view kMismatch = "[native and Python stacks do not match]";

struct Named {
  profile::FrameKind kind;
  std::string function;
  bool operator==(const Named&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Named& f) {
  const char* kind = f.kind == profile::FrameKind::kPython   ? "py"
                     : f.kind == profile::FrameKind::kNative ? "native"
                     : f.kind == profile::FrameKind::kKernel ? "kernel"
                                                             : "synthetic";
  return os << kind << ":" << f.function;
}

std::string describe(const std::vector<Named>& stack) {
  std::string out;
  for (const Named& f : stack) {
    std::ostringstream one;
    one << f;
    out += "\n  " + one.str();
  }
  return out;
}

bool is_eval(const Named& f) {
  return f.kind == profile::FrameKind::kNative &&
         f.function.starts_with("_PyEval_EvalFrameDefault");
}

PythonFrameRef py(const std::string& name, bool entry) {
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kPython;
  f->function = name;
  f->file = "/srv/app.py";
  f->line = 7;
  return {f, entry};
}

Named named_py(const std::string& name) {
  return {profile::FrameKind::kPython, name};
}

class MergeNativeTest : public ::testing::Test {
 protected:
  // A mixed job over capture `name`: its registers and stack copy, its
  // modules, the Python frames `python` (leaf first).
  SampleJob job(const unwind_fixtures::Capture& capture, std::vector<PythonFrameRef> python) {
    SampleJob j;
    j.process_key = 1;
    j.labels = std::make_shared<const profile::Labels>();
    j.python = std::move(python);
    j.python_process = true;
    j.native = true;
    j.native_flags = KRAIT_NATIVE_CAPTURED;
    const unwind::Registers& r = capture.file.regs;
#define KRAIT_COPY_REGISTER(name) j.regs.name = r.name;
    KRAIT_USER_REGS(KRAIT_COPY_REGISTER)
#undef KRAIT_COPY_REGISTER
    // The builder finds the copy's start from sp and the red-zone flag.
    if (capture.file.stack_start + KRAIT_RED_ZONE_BYTES == r.sp)
      j.native_flags |= KRAIT_NATIVE_RED_ZONE;
    EXPECT_TRUE(capture.file.stack_start == r.sp ||
                capture.file.stack_start + KRAIT_RED_ZONE_BYTES == r.sp)
        << "the capture's stack starts neither at sp nor at the red zone";
    j.user_stack = capture.file.stack;
    j.modules = std::make_shared<ModulesSlot>();
    j.modules->set(std::make_shared<const unwind::ProcessModules>(
        unwind::ProcessModules::from_maps(0, capture.maps, cache_)));
    return j;
  }

  // The one stack a fresh builder makes of `j`, leaf first.
  std::vector<Named> build(const SampleJob& j) {
    auto builder = StackBuilder::create(BuilderOptions{.native = true, .kernel = false});
    EXPECT_TRUE(builder) << builder.error().message;
    if (!builder)
      return {};
    (*builder)->add(j);
    auto profiles = (*builder)->take_profiles(1);
    EXPECT_EQ(profiles.size(), 1u);
    if (profiles.size() != 1)
      return {};
    const profile::Profile& p = profiles[0].profile;
    auto samples = p.samples();
    EXPECT_EQ(samples.size(), 1u);
    if (samples.size() != 1)
      return {};
    std::vector<Named> out;
    for (profile::FrameId id : samples[0].stack)
      out.push_back({p.frames()[id].kind, p.frames()[id].function});
    return out;
  }

  // The stack of capture `name` with no Python frames: the native frames
  // as the builder names them, eval frames included.
  std::vector<Named> native_only(const unwind_fixtures::Capture& capture) {
    return build(job(capture, {}));
  }

  static size_t count_eval(const std::vector<Named>& stack) {
    return static_cast<size_t>(std::count_if(stack.begin(), stack.end(), is_eval));
  }

  // `native` with its eval frames replaced, leaf first, by `groups` (the
  // first group replaces the leaf-most eval frame); eval frames past the
  // last group are kept.
  static std::vector<Named> replaced(const std::vector<Named>& native,
                                     const std::vector<std::vector<std::string>>& groups) {
    std::vector<Named> out;
    size_t g = 0;
    for (const Named& f : native) {
      if (is_eval(f) && g < groups.size()) {
        for (const std::string& name : groups[g])
          out.push_back(named_py(name));
        ++g;
        continue;
      }
      out.push_back(f);
    }
    return out;
  }

  unwind::ModuleCache cache_;
};

// Without Python frames the eval loop's frames stay as they are, and the
// stack ends at the thread's root without any reason frame.
TEST_F(MergeNativeTest, NoPythonFramesKeepsTheEvalFrames) {
  for (const char* name : {"python-main", "python-thread", "python-nested"}) {
    ASSERT_CAPTURE(capture, name);
    auto stack = native_only(*capture);
    ASSERT_FALSE(stack.empty()) << name;
    EXPECT_GE(count_eval(stack), 1u) << name << describe(stack);
    for (const Named& f : stack) {
      EXPECT_EQ(f.kind, profile::FrameKind::kNative) << name << describe(stack);
      EXPECT_FALSE(f.function.starts_with("[")) << name << describe(stack);
    }
    // The leaf is the capturing C function of the fixture's module.
    EXPECT_NE(stack.front().function.find("capture"), std::string::npos) << name << describe(stack);
  }
}

// One group per eval frame: every eval frame is replaced by its group, in
// place, and nothing else changes.
TEST_F(MergeNativeTest, EachEvalFrameIsReplacedByItsGroup) {
  ASSERT_CAPTURE(capture, "python-nested");
  const auto native = native_only(*capture);
  const size_t evals = count_eval(native);
  ASSERT_EQ(evals, 2u) << "map() runs the lambda in a second eval call" << describe(native);
  std::vector<PythonFrameRef> python;
  std::vector<std::vector<std::string>> groups(evals);
  for (size_t g = 0; g < evals; ++g) {
    for (int k = 0; k < 2; ++k) {
      const std::string fn = "g" + std::to_string(g) + "_f" + std::to_string(k);
      python.push_back(py(fn, /*entry=*/k == 1));
      groups[g].push_back(fn);
    }
  }
  auto stack = build(job(*capture, python));
  EXPECT_EQ(stack, replaced(native, groups)) << describe(stack);
  EXPECT_EQ(count_eval(stack), 0u);
}

// Entry marks decide the groups, not the count of frames: the frames up to
// and including an entry frame belong to one eval call, so shim-marked
// boundaries move frames between eval frames.
TEST_F(MergeNativeTest, EntryMarksSplitTheGroups) {
  ASSERT_CAPTURE(capture, "python-nested");
  const auto native = native_only(*capture);
  ASSERT_EQ(count_eval(native), 2u) << describe(native);
  // inner, middle | outer, run, _bootstrap_inner, _bootstrap
  auto stack = build(
      job(*capture, {py("inner", false), py("middle", true), py("outer", false), py("run", false),
                     py("_bootstrap_inner", false), py("_bootstrap", true)}));
  EXPECT_EQ(stack, replaced(native, {{"inner", "middle"},
                                     {"outer", "run", "_bootstrap_inner", "_bootstrap"}}))
      << describe(stack);
  // The same frames with the boundary one frame further: a different split.
  auto moved = build(
      job(*capture, {py("inner", true), py("middle", false), py("outer", false), py("run", false),
                     py("_bootstrap_inner", false), py("_bootstrap", true)}));
  EXPECT_EQ(moved, replaced(native, {{"inner"},
                                     {"middle", "outer", "run", "_bootstrap_inner", "_bootstrap"}}))
      << describe(moved);
  // Frames after the last entry mark belong to the last group.
  auto unmarked = build(job(*capture, {py("a", true), py("b", false), py("c", false)}));
  EXPECT_EQ(unmarked, replaced(native, {{"a"}, {"b", "c"}})) << describe(unmarked);
}

// More eval frames than groups: the eval frames nothing replaced stay, and
// the sample says the stacks do not match.
TEST_F(MergeNativeTest, MoreEvalFramesThanPythonGroups) {
  ASSERT_CAPTURE(capture, "python-nested");
  const auto native = native_only(*capture);
  ASSERT_EQ(count_eval(native), 2u) << describe(native);
  auto stack = build(job(*capture, {py("inner", false), py("middle", true)}));
  auto expected = replaced(native, {{"inner", "middle"}});
  expected.push_back({profile::FrameKind::kSynthetic, std::string(kMismatch)});
  EXPECT_EQ(stack, expected) << describe(stack);
  EXPECT_EQ(count_eval(stack), 1u);

  // A Python walk cut at the depth limit explains the missing groups: no
  // reason frame then.
  auto truncated_job = job(*capture, {py("inner", false), py("middle", true)});
  truncated_job.python_truncated = true;
  auto truncated = build(truncated_job);
  EXPECT_EQ(truncated, replaced(native, {{"inner", "middle"}})) << describe(truncated);
}

// Fewer eval frames than groups: the groups the native stack did not reach
// go to the root end, after the native frames, with the mismatch reason.
TEST_F(MergeNativeTest, FewerEvalFramesThanPythonGroups) {
  ASSERT_CAPTURE(capture, "python-main");
  const auto native = native_only(*capture);
  const size_t evals = count_eval(native);
  ASSERT_GE(evals, 1u) << describe(native);
  std::vector<PythonFrameRef> python;
  std::vector<std::vector<std::string>> groups;
  for (size_t g = 0; g < evals; ++g) {
    python.push_back(py("placed" + std::to_string(g), true));
    groups.push_back({"placed" + std::to_string(g)});
  }
  python.push_back(py("left_over_a", false));
  python.push_back(py("left_over_b", true));
  auto stack = build(job(*capture, python));
  auto expected = replaced(native, groups);
  expected.push_back(named_py("left_over_a"));
  expected.push_back(named_py("left_over_b"));
  expected.push_back({profile::FrameKind::kSynthetic, std::string(kMismatch)});
  EXPECT_EQ(stack, expected) << describe(stack);
}

// A stack copy cut short: the unwind stops before the eval frames, so every
// Python frame goes to the root end after the native frames reached, and
// the reason says the native stack is incomplete (not a mismatch).
TEST_F(MergeNativeTest, AStackCutShortPlacesThePythonFramesAndSaysWhy) {
  ASSERT_CAPTURE(capture, "python-nested");
  auto j = job(*capture, {py("inner", false), py("middle", true), py("outer", true)});
  j.user_stack.resize(std::min<size_t>(j.user_stack.size(), 256));
  j.native_flags |= KRAIT_NATIVE_STACK_SHORT;
  auto stack = build(j);
  ASSERT_GE(stack.size(), 4u) << describe(stack);
  EXPECT_EQ(count_eval(stack), 0u) << describe(stack);
  const Named& why = stack.back();
  EXPECT_EQ(why.kind, profile::FrameKind::kSynthetic) << describe(stack);
  EXPECT_TRUE(why.function.starts_with("[native stack incomplete:")) << describe(stack);
  const std::vector<Named> python(stack.end() - 4, stack.end() - 1);
  EXPECT_EQ(python, (std::vector<Named>{named_py("inner"), named_py("middle"), named_py("outer")}))
      << describe(stack);
}

// Kernel frames come first (leaf side), in the sampled order, above the
// merged user stack.
TEST_F(MergeNativeTest, KernelFramesStayOnTop) {
  ASSERT_CAPTURE(capture, "python-main");
  const auto native = native_only(*capture);
  const size_t evals = count_eval(native);
  std::vector<PythonFrameRef> python;
  std::vector<std::vector<std::string>> groups;
  for (size_t g = 0; g < evals; ++g) {
    python.push_back(py("f" + std::to_string(g), true));
    groups.push_back({"f" + std::to_string(g)});
  }
  auto j = job(*capture, python);
  j.kernel_ips = {0xffffffff81000010ull, 0xffffffff81000020ull};
  auto stack = build(j);
  std::vector<Named> expected = {{profile::FrameKind::kKernel, "[kernel 0xffffffff81000010]"},
                                 {profile::FrameKind::kKernel, "[kernel 0xffffffff81000020]"}};
  auto merged = replaced(native, groups);
  expected.insert(expected.end(), merged.begin(), merged.end());
  EXPECT_EQ(stack, expected) << describe(stack);
}

}  // namespace
}  // namespace krait::engine
