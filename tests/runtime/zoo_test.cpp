// The hostile zoo (issue 8): krait runs as root beside processes that any
// user can start, and must survive all of them at once without losing the
// one normal process it is there for.
//
// Every process of the zoo runs as nobody (uid/gid 65534), each burning CPU
// so that it is sampled:
//   version-name  an executable `python3.99999999999` exporting _PyRuntime
//                 and PyCode_Type
//   odd-versions  `python3.12` whose .rodata holds odd version strings (and a
//                 1 MiB one without a NUL) and whose _PyRuntime is garbage
//   cycles        a fake CPython 3.12.1 whose thread list and frame chains
//                 are cycles
//   flood         a well-formed fake CPython 3.12.1 running 10,000 code
//                 objects with 4,096-character astral names that share one
//                 64 MiB line table
//   argv          pyenv 3.12.1 with argv[0] "python" + 50,000 digits and
//                 128 KiB arguments
//   maps          a Python process with 60,000 mappings of its executable,
//                 every other one executable
//   sparse        a process mapping a sparse 64 GiB `libpython3.12.so.1.0`
//                 whose ELF sections claim enormous sizes
//   fifo          a Python process calling into copies of a library whose
//                 paths became FIFOs after they were mapped: one unlinked and
//                 replaced, the others swapped with FIFOs without end
//   buildid       a Python process with an LD_PRELOADed library that claims
//                 libc's build-id, started before the normal process
//   codegen       a Python process creating code objects without end
//   pid-reuse     a Python process that exits while krait runs, and a new one
//                 given the same pid (/proc/sys/kernel/ns_last_pid)
// beside the normal process: tests/workloads/chain.py under pyenv 3.12.1.
//
// Oracles: the truth lines the Python workloads print about their own stacks
// (chain.py, also run inside the hostile Python processes), the kernel's
// accounting of their CPU time (/proc/PID/stat) for how many samples they
// must get, krait's own /proc/PID/status and stat (peak RSS, CPU time),
// `go tool pprof -raw` for the profile, and, for the process claiming libc's
// build-id, the names of functions that never run.
//
// A run that goes wrong must fail, never hang or take the host down: the
// test kills krait past kRssKillMiB of RSS and when it does not start or stop
// within a generous deadline, and says which of krait's threads were stuck
// where.
//
// KRAIT_ZOO_ONLY=cycles,flood (names as above, comma separated) starts only
// those hostile processes: for checking one fix at a time. Unset (as in CI),
// the whole zoo runs.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "runtime/zoo_harness.h"
#include "support/manifest.h"

namespace krait::test {
namespace {

using namespace zoo;

// One zoo for both runs: it takes a while to start on a busy host (the
// flood's 330 MiB of names, 60,000 mmap calls), and nothing in it depends on
// which krait looked at it before. Each run gets its own pid-reuse pair.
class Zoo : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { zoo_.reset(); }

  void run_mode(Mode mode) {
    ASSERT_NO_FATAL_FAILURE(start_once());
    zoo_->forget_pid_reuse();
    const KraitRun result = mode == Mode::kRecord ? run_record(*zoo_) : run_daemon(*zoo_);
    judge(*zoo_, result);
  }

 private:
  static std::string start_zoo() {
    const Interpreter* pyenv = nullptr;
    const auto interpreters = load_manifest();
    for (const auto& i : interpreters)
      if (i.origin == "pyenv" && i.version == "3.12.1")
        pyenv = &i;
    if (pyenv == nullptr)
      return fmt::format("the zoo needs pyenv's 3.12.1 in {} (scripts/provision-pythons)",
                         manifest_path());
    auto zoo = std::make_unique<ZooProcesses>();
    if (auto prepared = zoo->prepare(*pyenv); !prepared)
      return prepared.error().message;
    const auto starting = Clock::now();
    if (auto started = zoo->start(); !started)
      return started.error().message;
    const Member* slowest = nullptr;
    for (const Member& m : zoo->members())
      if (!slowest || m.seconds_to_steady > slowest->seconds_to_steady)
        slowest = &m;
    std::cout << fmt::format(
        "[ zoo      ] {} processes in their steady state after {:.1f} s (the slowest: {}, {:.1f} "
        "s)\n",
        zoo->members().size(), std::chrono::duration<double>(Clock::now() - starting).count(),
        info(slowest->kind).name, slowest->seconds_to_steady);
    zoo_ = std::move(zoo);
    return "";
  }

  static inline std::unique_ptr<ZooProcesses> zoo_;
  static inline std::string setup_error_;

 protected:
  void start_once() {
    ASSERT_NO_FATAL_FAILURE(require_root());
    if (!zoo_ && setup_error_.empty())
      setup_error_ = start_zoo();
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  ZooProcesses& zoo() { return *zoo_; }
};

TEST_F(Zoo, RecordSurvivesTheZooAndKeepsTheNormalProcess) {
  run_mode(Mode::kRecord);
}

TEST_F(Zoo, DaemonSurvivesTheZooAndKeepsTheNormalProcess) {
  run_mode(Mode::kDaemon);
}

// `krait dump` reads every process of the host from user space: the zoo
// must not make it hang, crash or lose the normal process, whose main
// thread (a one-line hot loop) must show the truth's exact stack.
TEST_F(Zoo, DumpSurvivesTheZooAndShowsTheNormalProcess) {
  ASSERT_NO_FATAL_FAILURE(start_once());
  const Member* normal = zoo().find(Kind::kNormal);
  ASSERT_TRUE(normal && normal->truth && normal->truth->threads.size() == 1);
  const ThreadTruth& truth = normal->truth->threads[0];
  std::string last;
  // A dump catches the loop's rare bookkeeping line now and then: a few
  // tries, each of which must succeed in time.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const auto start = Clock::now();
    auto r = run_krait({"dump", "--json"}, 120s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(r->status.success()) << r->status.describe() << ": " << r->stderr_text;
    auto json = parse_json(r->stdout_text);
    ASSERT_TRUE(json.ok()) << json.error().message;
    std::cout << fmt::format("[ zoo      ] krait dump of the host: {:.1f} s\n",
                             std::chrono::duration<double>(Clock::now() - start).count());
    std::vector<Frame> stack;
    for (const JsonValue& p : json->find("processes")->items) {
      if (p.find("pid")->integer != normal->pid)
        continue;
      for (const JsonValue& t : p.find("threads")->items) {
        if (!t.find("tid")->is_int() || t.find("tid")->integer != truth.tid)
          continue;
        for (const JsonValue& f : t.find("frames")->items)
          stack.insert(stack.begin(), Frame{f.find("function")->string, f.find("file")->string,
                                            f.find("line")->integer});
      }
    }
    if (stack == truth.stack)
      return;
    last = format_stack(stack);
  }
  ADD_FAILURE() << "the normal process's stack: " << last << "\nwant " << format_stack(truth.stack);
}

}  // namespace
}  // namespace krait::test
