// A thread of C only in a process forked from C (issue 14): the child keeps
// the thread states of its parent's other threads, and glibc gives the
// child's next thread one of those threads' stacks, so its pthread_t (the
// thread pointer the sampler looks states up by) is the one a stale state
// still holds. tests/workloads/fork_from_c.py sets that up and says whether
// the stack was reused; the thread of C must get no Python frames at all,
// and the child's main thread, which runs the forking thread's state, its
// own stack.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/mixed_harness.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;
using namespace mixed;

constexpr double kExactFraction = 0.95;

struct ForkTruth {
  int64_t child = 0;
  int64_t native_tid = 0;
  bool reused = false;
  std::string stale_function;
  std::vector<Frame> stack;
};

Result<ForkTruth> read_fork_truth(ChildProcess& parent) {
  ForkTruth t;
  bool parent_seen = false;
  while (t.child == 0 || !parent_seen) {
    auto line = parent.read_line(60s);
    if (!line)
      return line.error().context("fork_from_c.py");
    auto json = parse_json(*line);
    if (!json)
      return json.error().context(*line);
    auto kind = json_string(*json, "kind");
    if (!kind)
      return kind.error().context(*line);
    if (*kind == "parent") {
      parent_seen = true;
      continue;
    }
    auto pid = json_int(*json, "pid");
    auto native = json_int(*json, "native_tid");
    auto stale = json_string(*json, "stale_function");
    auto stack = json_array(*json, "stack");
    const JsonValue* reused = json->find("stale_ident_reused");
    if (!pid || !native || !stale || !stack || !reused || !reused->is_bool())
      return make_error("fork_from_c.py: a child line without its fields: {}", *line);
    auto frames = parse_stack(**stack);
    if (!frames)
      return frames.error();
    t.child = *pid;
    t.native_tid = *native;
    t.reused = reused->boolean;
    t.stale_function = *stale;
    t.stack = std::move(*frames);
  }
  return t;
}

using ForkedFromC = PerInterpreter;

TEST_P(ForkedFromC, AThreadOnAStaleStatesStackGetsNoPythonFrames) {
  TempDir build;
  auto so = build_extension(interp_, build);
  ASSERT_TRUE(so.ok()) << so.error().message;
  auto parent =
      ChildProcess::spawn(workload_options(interp_, "fork_from_c.py", {"--ext-dir", build.path()}));
  ASSERT_TRUE(parent.ok()) << parent.error().message;
  auto truth = read_fork_truth(*parent);
  ASSERT_TRUE(truth.ok()) << truth.error().message << "\n" << parent->stderr_text();
  struct KillChild {
    pid_t pid;
    ~KillChild() { ::kill(pid, SIGKILL); }
  } kill_child{static_cast<pid_t>(truth->child)};
  // The case under test: without the reuse there is nothing to confuse.
  ASSERT_TRUE(truth->reused) << "glibc gave the child's new thread a stack of its own";

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(truth->child), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, truth->child);

  Tally native;
  for (const auto& s : samples_of_tid(mine, truth->native_tid))
    native.add(s, s.stack.empty(), "Python frames on a thread of C only");
  EXPECT_GE(native.total(), 100) << "too few samples of the thread of C\n" << r->stderr_text;
  EXPECT_EQ(native.fraction(), 1.0) << native.describe();

  const auto main_thread = samples_of_tid(mine, truth->child);
  ASSERT_GE(total(main_thread), 100) << "too few samples of the child's main thread\n"
                                     << r->stderr_text;
  const int64_t exact = count_exact(main_thread, truth->stack);
  EXPECT_GE(exact, kExactFraction * total(main_thread))
      << describe_mismatches(main_thread, truth->stack);
  Tally stale;
  for (const auto& s : mine)
    stale.add(s,
              std::none_of(s.stack.begin(), s.stack.end(),
                           [&](const Frame& f) { return f.function == truth->stale_function; }),
              "a stale state's frames");
  EXPECT_EQ(stale.fraction(), 1.0) << stale.describe();
}

// PyThreadState.native_thread_id, which tells the states apart, exists from
// 3.11 on. sid's 3.14 and 3.15 give the new thread a stack of its own.
INSTANTIATE_TEST_SUITE_P(Interpreters, ForkedFromC,
                         ::testing::Values("pyenv-3.11.7", "debian-3.11.2", "pyenv-3.12.1",
                                           "pyenv-3.13.0"),
                         interpreter_test_name);

}  // namespace
}  // namespace krait::test
