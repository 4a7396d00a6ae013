// Mixed stacks (`krait record`, default --stacks mixed) against real
// processes whose truth is known by other means:
//  - a C extension built here for every interpreter of the manifest
//    (tests/fixtures/cext/krait_cext.c): Python -> C, C -> Python callback,
//    and a pthread that never touches Python; the Python frames come from
//    the workload (CPython's own view), the C names from nm of the built file;
//  - a system call (tests/workloads/kernel_read.py): kernel frames, named as
//    in /proc/kallsyms, leafward of the Python line that made the call.
// mixed_native_test.cpp has Debian's own libraries, native unwinding to the
// thread's root and a non-Python process; mixed_harness.h what both share.
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/mixed_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;
using namespace mixed;

// ---------------------------------------------------------------------------
// 1 and 5a: Python -> C, C -> Python, and a thread of C only.

using CExtension = PerInterpreter;

TEST_P(CExtension, PythonAndCFramesInterleaveAsTheyCalledEachOther) {
  TempDir build;
  auto so = build_extension(interp_, build);
  ASSERT_TRUE(so.ok()) << so.error().message;
  auto symbols = nm_symbols(*so, false);
  ASSERT_TRUE(symbols.ok()) << symbols.error().message;

  auto w = start_workload(interp_, "cext.py", {"--ext-dir", build.path()});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  const int64_t pid = truth.pid;
  ASSERT_EQ(truth.threads.size(), 2u);
  const ThreadTruth& spin = truth.threads[0];
  const ThreadTruth& callback = truth.threads[1];
  ASSERT_EQ(spin.name, "cext-spin");
  ASSERT_EQ(callback.name, "cext-callback");
  const std::string spin_fn = truth_string(truth, "c_function", "cext-spin");
  const std::string callback_fn = truth_string(truth, "c_function", "cext-callback");
  const std::string worker_fn = truth_string(truth, "native_thread", "function");
  const int64_t native_tid = truth_int(truth, "native_thread", "tid");
  const std::string ext = real_path(truth_string(truth, "extension"));
  ASSERT_EQ(ext, real_path(*so)) << "the workload imported another krait_cext";
  const JsonValue* cb_frames = truth.json.find("callback_frames");
  ASSERT_TRUE(cb_frames && cb_frames->is_int() && cb_frames->integer >= 1);
  const size_t callback_frames = static_cast<size_t>(cb_frames->integer);
  ASSERT_GT(callback.stack.size(), callback_frames);
  // The names the extension gives itself are symbols of the file built.
  for (const auto& name : {spin_fn, callback_fn, worker_fn}) {
    bool found = false;
    for (const auto& s : *symbols)
      found |= s.name == name;
    ASSERT_TRUE(found) << name << " is not in nm's symbols of " << ext;
  }
  const std::set<std::string> interpreter = interpreter_files(pid);

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(pid), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, pid);

  // A: <truth's Python frames> > ...C... > krait_cext_spin > (kernel only).
  Tally a;
  for (const auto& s : samples_of_tid(mine, spin.tid)) {
    if (s.stack != spin.stack) {
      a.add(s, false, "Python frames");
      continue;
    }
    const size_t last_py = indexes_of(s, kPythonMapping).back();
    const size_t c = find_frame(s, spin_fn, ext, last_py + 1);
    bool leaf = c != std::string::npos;
    for (size_t i = c + 1; leaf && i < s.full_stack.size(); ++i)
      leaf = s.mappings[i] == kKernelMapping;
    a.add(s, leaf && !has_mapping(s, kSyntheticMapping), "C leaf");
  }
  EXPECT_GE(a.total(), 40) << "too few samples of the C loop\n" << r->stderr_text;
  EXPECT_GE(a.fraction(), kInterleavedFraction) << "part A (Python -> C):\n" << a.describe();

  // B: <caller's Python frames> > ...C... > krait_cext_call_back >
  //    <interpreter's C frames> > callback_hot (hot line) > (any C, kernel).
  // `hot` is the callback's first (root-most) Python frame.
  Tally b;
  for (const auto& s : samples_of_tid(mine, callback.tid)) {
    if (s.stack != callback.stack) {
      b.add(s, false, "Python frames");
      continue;
    }
    const auto py = indexes_of(s, kPythonMapping);
    const size_t caller = py[py.size() - 1 - callback_frames];
    const size_t hot = py[py.size() - callback_frames];
    const size_t c = find_frame(s, callback_fn, ext, caller + 1);
    bool interp_between = false;
    for (size_t i = c + 1; c != std::string::npos && i < hot; ++i)
      interp_between |= interpreter.count(s.mappings[i]) > 0;
    if (c == std::string::npos || c > hot)
      b.add(s, false, "C caller between the Python frames");
    else
      b.add(s, interp_between && !has_mapping(s, kSyntheticMapping), "interpreter frames");
  }
  EXPECT_GE(b.total(), 40) << "too few samples of the callback\n" << r->stderr_text;
  EXPECT_GE(b.fraction(), kInterleavedFraction) << "part B (C -> Python):\n" << b.describe();

  // A thread of C only: its native stack under the process's labels.
  Tally n;
  const std::string process_name = comm_of(pid);
  for (const auto& s : samples_of_tid(mine, native_tid)) {
    EXPECT_EQ(label(s, "pid"), std::to_string(pid));
    EXPECT_EQ(label(s, "process_name"), process_name);
    EXPECT_EQ(label(s, "thread_name"), truth_string(truth, "native_thread", "name"));
    // The root is glibc's clone3 (or clone). A stripped libc without debug
    // info (Debian sid's, unpacked for 3.13+) leaves it unnamed; it must
    // then still be libc's, and an incomplete unwind would have added a
    // synthetic reason frame.
    const bool root =
        !s.full_stack.empty() &&
        std::filesystem::path(s.mappings.front()).filename().string().rfind("libc.so", 0) == 0 &&
        (is_root_name(s.full_stack.front().function) || s.full_stack.front().function[0] == '[');
    n.add(s,
          s.stack.empty() && root && find_frame(s, worker_fn, ext) != std::string::npos &&
              !has_mapping(s, kSyntheticMapping),
          "native thread");
  }
  EXPECT_EQ(truth_string(truth, "native_thread", "name"), "cext-native");
  EXPECT_GE(n.total(), 40) << "too few samples of the native thread\n" << r->stderr_text;
  EXPECT_GE(n.fraction(), kInterleavedFraction) << "native thread:\n" << n.describe();
  // Its samples are its native stacks, not samples lost for want of Python
  // state (the sampler still counts the status per process).
  const JsonValue* losses = r->stats.find("losses");
  ASSERT_NE(losses, nullptr) << "no losses in --stats-json";
  EXPECT_EQ(losses->find("no Python thread state"), nullptr)
      << "the native thread's samples were summarized as lost";

  auto checked = check_names_against_nm(r->pprof, pid, ext, false);
  ASSERT_TRUE(checked.ok()) << checked.error().message;
  EXPECT_GE(*checked, 3) << "the extension's frames were named";
}

INSTANTIATE_TEST_SUITE_P(Interpreters, CExtension, ::testing::ValuesIn(interpreter_names()),
                         interpreter_test_name);

// ---------------------------------------------------------------------------
// 2: kernel frames of a system call, leafward of the Python line.

// Names of /proc/kallsyms (text symbols), the kernel's own list.
std::set<std::string> kallsyms_names() {
  std::set<std::string> out;
  auto text = read_file("/proc/kallsyms", size_t{256} << 20);
  if (!text)
    return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string address, type, name;
    if (l >> address >> type >> name && (type == "T" || type == "t"))
      out.insert(name);
  }
  return out;
}

using KernelFrames = PerInterpreter;

TEST_P(KernelFrames, ShowUnderThePythonLineThatMadeTheCall) {
  auto w = start_workload(interp_, "kernel_read.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const auto& thread = w->truth.threads.at(0);
  const auto kallsyms = kallsyms_names();
  ASSERT_GT(kallsyms.size(), 1000u) << "/proc/kallsyms unreadable";

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(w->truth.pid), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  Tally t;
  int64_t unknown_names = 0;
  for (const auto& s : samples_of_pid(r->samples, w->truth.pid)) {
    if (s.stack != thread.stack) {
      t.add(s, false, "Python frames");
      continue;
    }
    const size_t last_py = indexes_of(s, kPythonMapping).back();
    const auto kernel = indexes_of(s, kKernelMapping);
    bool vfs_read = false;
    for (size_t i : kernel) {
      vfs_read |= s.full_stack[i].function == "vfs_read";
      if (!kallsyms.count(s.full_stack[i].function))
        unknown_names += s.count;
    }
    // Kernel frames are the leaf end, all of them after the Python frame.
    const bool leafward = !kernel.empty() && kernel.front() > last_py &&
                          kernel.back() == s.full_stack.size() - 1 &&
                          kernel.back() - kernel.front() + 1 == kernel.size();
    t.add(s, leafward && vfs_read && !has_mapping(s, kSyntheticMapping), "kernel frames");
  }
  EXPECT_GE(t.total(), 100) << r->stderr_text;
  EXPECT_GE(t.fraction(), kKernelFraction) << t.describe();
  EXPECT_EQ(unknown_names, 0) << "kernel frames whose names /proc/kallsyms does not list";
}

INSTANTIATE_TEST_SUITE_P(SharedAndStatic, KernelFrames,
                         ::testing::Values("pyenv-3.12.1", "debian-3.11.2"), interpreter_test_name);

TEST(Mixed, NoKernelLeavesOutKernelFrames) {
  require_root();
  const Interpreter interp = interpreter_named("pyenv-3.12.1");
  ASSERT_FALSE(interp.executable.empty());
  auto w = start_workload(interp, "kernel_read.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const auto& thread = w->truth.threads.at(0);
  TempDir dir;
  auto rec = Recording::start(
      {"-p", std::to_string(w->truth.pid), "-d", "2", "-r", "199", "--no-kernel"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, w->truth.pid);
  Tally t;
  int64_t with_kernel = 0;
  for (const auto& s : mine) {
    if (has_mapping(s, kKernelMapping))
      with_kernel += s.count;
    // Still a mixed stack: native frames leafward of the Python line.
    const auto py = indexes_of(s, kPythonMapping);
    t.add(s,
          s.stack == thread.stack && py.back() + 1 < s.full_stack.size() &&
              !has_mapping(s, kSyntheticMapping),
          "Python line then native frames");
  }
  EXPECT_GE(t.total(), 60) << r->stderr_text;
  EXPECT_EQ(with_kernel, 0) << "samples with kernel frames under --no-kernel";
  EXPECT_GE(t.fraction(), kKernelFraction) << t.describe();
}

}  // namespace
}  // namespace krait::test
