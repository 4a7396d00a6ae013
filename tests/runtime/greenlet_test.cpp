// Greenlets (Debian's python3-gevent on its python3.11): several greenlets
// burn CPU on one thread (tests/workloads/greenlets.py), each reporting its
// own Python stack and run function. Greenlets share the thread's C stack,
// so unwinding from a greenlet's leaf passes its bootstrap frames
// (greenlet::UserGreenlet::inner_bootstrap, g_initialstub) and goes on into
// frames of whatever ran on that stack before it, which are not the Python
// frames the thread state holds. Mixed stacks must end at the greenlet's
// bootstrap, with every Python frame merged in place and no mismatch, and
// carry the greenlet's run function as a label; Python-only stacks must be
// the same Python frames.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/mixed_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;
using namespace mixed;

constexpr double kExactFraction = 0.95;
constexpr std::string_view kMismatch = "[native and Python stacks do not match]";
constexpr const char* kInterpreter = "debian-3.11.2";

struct GreenletTruth {
  std::string name;
  std::string root;  // qualified name of the greenlet's run function
  std::vector<Frame> stack;
};

std::vector<GreenletTruth> greenlets_of(const Truth& truth) {
  std::vector<GreenletTruth> out;
  const JsonValue* list = truth.json.find("greenlets");
  if (!list || !list->is_array())
    return out;
  for (const JsonValue& g : list->items) {
    GreenletTruth t;
    if (const JsonValue* v = g.find("name"); v && v->is_string())
      t.name = v->string;
    if (const JsonValue* v = g.find("root"); v && v->is_string())
      t.root = v->string;
    if (const JsonValue* stack = g.find("stack"); stack && stack->is_array()) {
      for (const JsonValue& f : stack->items) {
        Frame frame;
        if (const JsonValue* v = f.find("function"); v && v->is_string())
          frame.function = v->string;
        if (const JsonValue* v = f.find("file"); v && v->is_string())
          frame.file = v->string;
        if (const JsonValue* v = f.find("line"); v && v->is_int())
          frame.line = v->integer;
        t.stack.push_back(frame);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

const GreenletTruth* greenlet_with_stack(const std::vector<GreenletTruth>& all,
                                         const std::vector<Frame>& stack) {
  for (const GreenletTruth& g : all)
    if (g.stack == stack)
      return &g;
  return nullptr;
}

bool in_greenlet_module(const std::string& mapping) {
  return std::filesystem::path(mapping).filename().string().starts_with("_greenlet");
}

// Why a mixed sample of a greenlet is not the exact merged stack, "" when it
// is: root first, greenlet's g_initialstub, inner_bootstrap, native frames
// of the call into Python, the greenlet's Python frames in one run (3.11
// runs Python-to-Python calls in one eval call), then native and kernel
// frames only, no eval frame left and no reason frame.
std::string mixed_defect(const ProfileSample& s) {
  const auto py = indexes_of(s, kPythonMapping);
  if (py.empty())
    return "no Python frames";
  if (s.full_stack.size() < 2 || !in_greenlet_module(s.mappings[0]) ||
      !s.full_stack[0].function.starts_with("greenlet::UserGreenlet::g_initialstub") ||
      !in_greenlet_module(s.mappings[1]) ||
      !s.full_stack[1].function.starts_with("greenlet::UserGreenlet::inner_bootstrap"))
    return "root is not the greenlet's bootstrap";
  if (py.back() - py.front() + 1 != py.size())
    return "Python frames not contiguous";
  for (size_t i = 0; i < s.full_stack.size(); ++i) {
    const std::string& m = s.mappings[i];
    if (m == kSyntheticMapping)
      return "reason frame";
    if (m == kPythonMapping)
      continue;
    if (i < py.front() && m == kKernelMapping)
      return "kernel frame rootward of Python";
    if (s.full_stack[i].function.starts_with("_PyEval_EvalFrameDefault"))
      return "eval frame left";
  }
  return "";
}

struct GreenletRun {
  std::optional<RunningWorkload> workload;
  std::vector<GreenletTruth> greenlets;
  RecordingResult result;
  std::vector<ProfileSample> samples;  // of the workload's thread
};

void record(const std::vector<std::string>& extra, GreenletRun& run) {
  require_root();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const Interpreter interp = interpreter_named(kInterpreter);
  ASSERT_FALSE(interp.executable.empty());
  auto w = start_workload(interp, "greenlets.py", {"--greenlets", "3", "--seconds", "60"});
  ASSERT_TRUE(w.ok()) << w.error().message << " (is python3-gevent installed?)";
  run.workload.emplace(std::move(*w));
  const Truth& truth = run.workload->truth;
  run.greenlets = greenlets_of(truth);
  ASSERT_EQ(run.greenlets.size(), 3u) << "the truth has no three greenlets";
  ASSERT_EQ(truth.threads.size(), 1u);
  const int64_t pid = truth.pid;
  std::vector<std::string> args = {"-p", std::to_string(pid), "-d", "3", "-r", "199"};
  args.insert(args.end(), extra.begin(), extra.end());
  TempDir dir;
  auto rec = Recording::start(args, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  run.result = std::move(*r);
  run.samples = samples_of_tid(samples_of_pid(run.result.samples, pid), truth.threads[0].tid);
  ASSERT_GE(total(run.samples), 100) << run.result.stderr_text;
}

// Mixed stacks: each greenlet's Python frames merged with the native frames
// of its own C stack, cut at its bootstrap; none flagged as a mismatch; the
// greenlet label names the greenlet's run function.
TEST(Greenlets, MixedStacksEndAtEachGreenletsBootstrap) {
  GreenletRun run;
  record({}, run);
  if (HasFatalFailure())
    return;
  Tally exact;
  int64_t mismatched = 0;
  std::map<std::string, int64_t> per_greenlet;
  for (const ProfileSample& s : run.samples) {
    for (const Frame& f : s.full_stack)
      mismatched += f.function == kMismatch ? s.count : 0;
    const GreenletTruth* g = greenlet_with_stack(run.greenlets, s.stack);
    if (!g) {
      exact.add(s, false, "Python frames of no greenlet");
      continue;
    }
    const std::string defect = mixed_defect(s);
    if (!defect.empty()) {
      exact.add(s, false, defect);
      continue;
    }
    if (label(s, "greenlet") != g->root) {
      exact.add(s, false, "greenlet label '" + label(s, "greenlet") + "'");
      continue;
    }
    exact.add(s, true);
    per_greenlet[g->name] += s.count;
  }
  EXPECT_EQ(mismatched, 0) << "samples flagged as mismatch\n" << exact.describe();
  EXPECT_GE(exact.fraction(), kExactFraction) << exact.describe();
  for (const GreenletTruth& g : run.greenlets)
    EXPECT_GE(per_greenlet[g.name], 20) << g.name << " (" << g.root << "): too few exact samples";
  std::printf("greenlets, mixed: %s\n", exact.describe().c_str());
}

// Python-only stacks: the same Python frames, nothing native.
TEST(Greenlets, PythonStacksAreEachGreenletsFrames) {
  GreenletRun run;
  record({"--stacks", "python"}, run);
  if (HasFatalFailure())
    return;
  Tally exact;
  std::map<std::string, int64_t> per_greenlet;
  for (const ProfileSample& s : run.samples) {
    const GreenletTruth* g = greenlet_with_stack(run.greenlets, s.stack);
    const bool python_only = indexes_of(s, kPythonMapping).size() == s.full_stack.size();
    exact.add(s, g && python_only, g ? "native or reason frames" : "Python frames of no greenlet");
    if (g && python_only)
      per_greenlet[g->name] += s.count;
  }
  EXPECT_GE(exact.fraction(), kExactFraction) << exact.describe();
  for (const GreenletTruth& g : run.greenlets)
    EXPECT_GE(per_greenlet[g.name], 20) << g.name << ": too few exact samples";
  std::printf("greenlets, python: %s\n", exact.describe().c_str());
}

}  // namespace
}  // namespace krait::test
