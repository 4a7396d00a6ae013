// The merge rule (engine/merge_native.h) on made-up stacks: eval frames
// replaced by their Python groups, and a greenlet's native stack cut at its
// bootstrap frame (g_initialstub in greenlet's module), under which lie the
// frames of whatever ran on that C stack before, with eval frames that are
// not this greenlet's. merge_native_test.cpp has the rule on real stacks.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/merge_native.h"

namespace krait::engine {
namespace {

constexpr NativeRole kC{};                 // any native frame
constexpr NativeRole kEval{.eval = true};  // _PyEval_EvalFrameDefault
constexpr NativeRole kBase{.greenlet_base = true};

// Steps as "n<i>" (native frame i) and "p<i>" (Python frame i), leaf first.
std::vector<std::string> steps(const MergeResult& r) {
  std::vector<std::string> out;
  for (const MergeStep& s : r.steps)
    out.push_back((s.python ? "p" : "n") + std::to_string(s.index));
  return out;
}

// A greenlet's stack as the unwinder finds it (greenlet 2 on 3.11, from a
// gevent recording): its leaf C call, the eval frame running its two Python
// frames, the C call into Python, inner_bootstrap, g_initialstub; then the
// hub's g_switch and loop, with the hub's own eval frame, the hub's
// bootstrap, and the main greenlet's frames with their eval frame.
const std::vector<NativeRole> kGreenlet = {
    kC,     // 0 leaf C function
    kEval,  // 1 the greenlet's Python frames
    kC,     // 2 _PyFunction_Vectorcall
    kC,     // 3 inner_bootstrap
    kBase,  // 4 g_initialstub
    kC,     // 5 UserGreenlet::g_switch (the hub's)
    kEval,  // 6 the hub's eval call
    kBase,  // 7 the hub's g_initialstub
    kC,     // 8 g_switch (main's)
    kEval,  // 9 main's eval call
    kC,     // 10 _start
};

TEST(MergeRule, AGreenletsStackEndsAtItsBootstrap) {
  const std::vector<PythonRole> python = {{false}, {true}};
  const MergeResult r = merge_stacks(kGreenlet, python, true, false, true);
  EXPECT_EQ(steps(r), (std::vector<std::string>{"n0", "p0", "p1", "n2", "n3", "n4"}));
  EXPECT_EQ(r.verdict, MergeVerdict::kExact);
  EXPECT_TRUE(r.greenlet);
}

// What the unwinder makes of the frames past the bootstrap does not matter:
// the greenlet's own stack was reached in full.
TEST(MergeRule, AnUnwindStoppingPastTheBootstrapIsComplete) {
  const std::vector<NativeRole> cut(kGreenlet.begin(), kGreenlet.begin() + 7);
  const MergeResult r = merge_stacks(cut, std::vector<PythonRole>{{true}}, false, false, true);
  EXPECT_EQ(steps(r), (std::vector<std::string>{"n0", "p0", "n2", "n3", "n4"}));
  EXPECT_EQ(r.verdict, MergeVerdict::kExact);
}

// The same frames without the bootstrap recognized (a thread's own stack):
// the eval frames rootward are left over and the stacks do not match.
TEST(MergeRule, WithoutTheBootstrapTheLeftOverEvalFramesAreAMismatch) {
  std::vector<NativeRole> plain = kGreenlet;
  for (NativeRole& n : plain)
    n.greenlet_base = false;
  const MergeResult r =
      merge_stacks(plain, std::vector<PythonRole>{{false}, {true}}, true, false, true);
  EXPECT_EQ(r.verdict, MergeVerdict::kMismatch);
  EXPECT_FALSE(r.greenlet);
  EXPECT_EQ(r.steps.size(), plain.size() - 1 + 2);  // every native frame but the replaced one
}

// A real mismatch inside the greenlet's stack is still one: more Python
// groups than eval frames above the bootstrap. The frames left over go after
// the bootstrap, never into the frames past it.
TEST(MergeRule, AMismatchAboveTheBootstrapIsStillFlagged) {
  const std::vector<PythonRole> python = {{true}, {false}, {true}};
  const MergeResult r = merge_stacks(kGreenlet, python, true, false, true);
  EXPECT_EQ(steps(r), (std::vector<std::string>{"n0", "p0", "n2", "n3", "n4", "p1", "p2"}));
  EXPECT_EQ(r.verdict, MergeVerdict::kMismatch);
  EXPECT_TRUE(r.greenlet);

  // And an eval frame of the greenlet's own that no group replaced.
  std::vector<NativeRole> two_evals = kGreenlet;
  two_evals[2] = kEval;
  const MergeResult extra =
      merge_stacks(two_evals, std::vector<PythonRole>{{false}, {true}}, true, false, true);
  EXPECT_EQ(extra.verdict, MergeVerdict::kMismatch);
}

// Greenlets started from a greenlet sit on their parent's stack: the first
// bootstrap from the leaf is the running greenlet's.
TEST(MergeRule, TheFirstBootstrapFromTheLeafCuts) {
  const std::vector<NativeRole> nested = {kEval, kC, kBase, kEval, kC, kBase, kEval, kC};
  const MergeResult r = merge_stacks(nested, std::vector<PythonRole>{{true}}, true, false, true);
  EXPECT_EQ(steps(r), (std::vector<std::string>{"p0", "n1", "n2"}));
  EXPECT_EQ(r.verdict, MergeVerdict::kExact);
}

// A thread's stack (the main greenlet, or no greenlets): the rule is the
// eval-frame rule alone, incomplete when the unwind did not reach the root.
TEST(MergeRule, WithoutAGreenletNothingIsCut) {
  const std::vector<NativeRole> thread = {kC, kEval, kC, kEval, kC};
  const std::vector<PythonRole> python = {{true}, {false}, {true}};
  const MergeResult r = merge_stacks(thread, python, true, false, true);
  EXPECT_EQ(steps(r), (std::vector<std::string>{"n0", "p0", "n2", "p1", "p2", "n4"}));
  EXPECT_EQ(r.verdict, MergeVerdict::kExact);
  EXPECT_FALSE(r.greenlet);
  EXPECT_EQ(merge_stacks(thread, python, false, false, true).verdict, MergeVerdict::kIncomplete);
}

// Only greenlet's own bootstrap, in greenlet's own module, is a base.
TEST(MergeRule, TheBootstrapIsRecognizedNarrowly) {
  const std::string module =
      "/usr/lib/python3/dist-packages/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so";
  EXPECT_TRUE(is_greenlet_base(module, "greenlet::UserGreenlet::g_initialstub(void*)"));
  EXPECT_TRUE(is_greenlet_base(module, "greenlet::UserGreenlet::g_initialstub"));
  EXPECT_TRUE(is_greenlet_base("/venv/site-packages/greenlet/_greenlet.so", "g_initialstub"));
  // Greenlet's other frames: leafward of the base, or a switch in progress.
  EXPECT_FALSE(is_greenlet_base(
      module,
      "greenlet::UserGreenlet::inner_bootstrap(greenlet::refs::_OwnedGreenlet<_greenlet, "
      "&greenlet::refs::GreenletChecker>&)"));
  EXPECT_FALSE(is_greenlet_base(module, "greenlet::UserGreenlet::g_switch()"));
  EXPECT_FALSE(is_greenlet_base(module, "greenlet::Greenlet::g_switchstack()"));
  EXPECT_FALSE(is_greenlet_base(module, "[_greenlet.cpython-311-x86_64-linux-gnu.so+0xf900]"));
  EXPECT_FALSE(is_greenlet_base(module, "g_initialstub_helper"));
  // The name in another module is not greenlet's.
  EXPECT_FALSE(is_greenlet_base("/usr/lib/libfake.so", "greenlet::UserGreenlet::g_initialstub"));
  EXPECT_FALSE(is_greenlet_base("/opt/greenlet/libother.so", "g_initialstub"));
}

}  // namespace
}  // namespace krait::engine
