// The two frame walks agree on the same memory: the sampler's BPF walk
// (bpf/python_walk.bpf.h, run by `krait record`) and user space's
// (walk_frames in src/python/attach.cpp, the walk that validates a layout).
// native_libs.py keeps two threads in one Python stack each while they burn
// CPU in libz and libcrypto, so every sample of a thread sees the same
// frames; the recording names them, then the user-space walk reads the
// same process's thread states, and both must give each thread the same
// function sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "proc/memory.h"
#include "python/attach.h"
#include "python/interpreter.h"
#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

// Before 3.11 and after: frame objects and interpreter frames (3.11), shim
// frames (3.12), _Py_DebugOffsets (3.13).
const std::vector<std::string> kInterpreters = {"pyenv-3.9.18", "pyenv-3.10.13", "pyenv-3.11.7",
                                                "pyenv-3.12.1", "pyenv-3.13.0"};

// Before 3.11 code objects have no qualified name: the recording names a
// method after its class (found from the frame), validation's walk has the
// bare co_name. Both are compared by the name the code object holds.
std::string code_name(const std::string& function, bool qualified) {
  if (qualified)
    return function;
  const size_t dot = function.rfind('.');
  return dot == std::string::npos ? function : function.substr(dot + 1);
}

using WalkAgreement = InterpreterTest;

TEST_P(WalkAgreement, BpfAndUserSpaceWalksNameTheSameFrames) {
  auto w = start_workload(interp_, "native_libs.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const auto pid = w->truth.pid;
  ASSERT_EQ(w->truth.threads.size(), 2u);
  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(pid), "-d", "5"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  // The user-space walk, over the live process's thread states.
  python::ImageCache images;
  python::Attachment att = python::attach_process(static_cast<pid_t>(pid), images, {});
  ASSERT_EQ(att.status, python::AttachStatus::kAttached) << att.reason;
  const python::PythonLayout& layout = *att.layout;
  const bool qualified = layout.version >= python::PyVersion{3, 11, 0};
  proc::ProcessMemory memory(static_cast<pid_t>(pid));
  auto interp = memory.read_value<uint64_t>(att.info.interp_head_addr);
  ASSERT_TRUE(interp && *interp != 0);
  auto tstate = memory.read_value<uint64_t>(*interp + layout.bpf.interp_tstate_head);
  ASSERT_TRUE(tstate);
  // Thread states are told apart by their thread identifier (pthread_self,
  // threading.get_ident(), which the workload reports as `ident`).
  std::map<int64_t, std::vector<std::string>> walked;  // ident -> names, root first
  for (uint64_t t = *tstate; t != 0;) {
    auto tid = memory.read_value<uint64_t>(t + layout.bpf.tstate_thread_id);
    ASSERT_TRUE(tid);
    python::FrameWalk walk = python::walk_frames(memory, layout, t, att.info.code_type_addr);
    ASSERT_EQ(walk.validation.status, python::AttachStatus::kAttached)
        << "thread " << *tid << ": " << walk.validation.reason;
    std::vector<std::string> names;
    for (auto it = walk.functions.rbegin(); it != walk.functions.rend(); ++it)
      names.push_back(code_name(*it, qualified));
    walked[static_cast<int64_t>(*tid)] = names;
    auto next = memory.read_value<uint64_t>(t + layout.bpf.tstate_next);
    ASSERT_TRUE(next);
    t = *next;
  }

  const auto mine = samples_of_pid(r->samples, pid);
  for (const ThreadTruth& thread : w->truth.threads) {
    SCOPED_TRACE("thread " + thread.name);
    // The recording's stack of the thread: the one nearly all its samples
    // carry (a sample may catch the loop between two native calls).
    std::map<std::vector<std::string>, int64_t> stacks;
    int64_t samples = 0;
    for (const ProfileSample& s : mine) {
      if (s.tid() != thread.tid)
        continue;
      std::vector<std::string> names;
      for (const Frame& f : s.stack)
        names.push_back(code_name(f.function, qualified));
      stacks[names] += s.count;
      samples += s.count;
    }
    // ~500 on an idle machine; a few dozen still show which stack the
    // thread holds when other work shares the two CPUs.
    ASSERT_GE(samples, 20) << "a thread burning CPU for 5 s at 99 Hz\n" << r->stderr_text;
    auto most = std::max_element(stacks.begin(), stacks.end(),
                                 [](const auto& a, const auto& b) { return a.second < b.second; });
    EXPECT_GE(most->second, 0.9 * static_cast<double>(samples))
        << describe_mismatches(samples_of_pid(mine, pid), thread.stack);
    std::vector<std::string> truth;
    for (const Frame& f : thread.stack)
      truth.push_back(code_name(f.function, qualified));
    EXPECT_EQ(most->first, truth) << "the recording against the workload's own truth";

    auto user = walked.find(thread.ident);
    ASSERT_NE(user, walked.end()) << "no thread state of thread ident " << thread.ident;
    EXPECT_EQ(user->second, most->first) << "user-space walk against the BPF walk";
    std::cout << fmt::format("[ walks    ] {} {}: {} frames agree ({} of {} samples)\n",
                             interp_.name, thread.name, user->second.size(), most->second, samples);
  }
}

INSTANTIATE_TEST_SUITE_P(Interpreters, WalkAgreement, ::testing::ValuesIn(kInterpreters),
                         interpreter_test_name);

}  // namespace
}  // namespace krait::test
