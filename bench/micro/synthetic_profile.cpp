#include "synthetic_profile.h"

#include <fmt/format.h>

#include <random>
#include <string>

namespace krait::bench {
namespace {

using profile::Frame;
using profile::FrameKind;

constexpr uint64_t kLibpythonStart = 0x7f0000000000;
constexpr uint64_t kLibcStart = 0x7f1000000000;
constexpr uint64_t kKernelStart = 0xffffffff81000000;
constexpr int kPythonFunctions = 400;
constexpr int kPythonFiles = 40;
constexpr int kThreads = 8;

// The ids intern_stacks() gets for its mappings in an empty profile, in the
// order it interns them.
constexpr uint32_t kLibpythonMapping = 1;
constexpr uint32_t kLibcMapping = 2;
constexpr uint32_t kKernelMapping = 3;

Frame python_frame(std::mt19937_64& rng) {
  const int fn = static_cast<int>(rng() % kPythonFunctions);
  const int64_t first = 10 + (fn % 50) * 20;
  return {FrameKind::kPython,
          fmt::format("Service{}.handler_{}", fn % 17, fn),
          "",
          fmt::format("/srv/app/pkg{}/module_{}.py", fn % 5, fn % kPythonFiles),
          first,
          first + static_cast<int64_t>(rng() % 15),
          0,
          0};
}

Frame native_frame(std::mt19937_64& rng, bool libc) {
  static constexpr const char* kPy[] = {"_PyEval_EvalFrameDefault", "_PyObject_Call",
                                        "PyObject_Vectorcall", "_PyFunction_Vectorcall",
                                        "method_vectorcall"};
  static constexpr const char* kC[] = {"__libc_read", "__memmove_avx_unaligned_erms", "malloc",
                                       "__GI___poll"};
  const uint64_t offset = (rng() % 4096) * 16;
  if (libc)
    return {FrameKind::kNative, kC[rng() % 4], "", "", 0, 0, kLibcStart + 0x20000 + offset,
            kLibcMapping};
  return {FrameKind::kNative, kPy[rng() % 5], "", "", 0, 0, kLibpythonStart + 0x100000 + offset,
          kLibpythonMapping};
}

Frame kernel_frame(std::mt19937_64& rng) {
  static constexpr const char* kK[] = {"entry_SYSCALL_64_after_hwframe", "do_syscall_64",
                                       "__x64_sys_read", "vfs_read",
                                       "asm_sysvec_apic_timer_interrupt"};
  const size_t i = rng() % 5;
  return {FrameKind::kKernel, kK[i], "", "", 0, 0, kKernelStart + 0x1000 * (i + 1) + rng() % 256,
          kKernelMapping};
}

}  // namespace

std::vector<SyntheticStack> make_stacks(size_t count) {
  std::mt19937_64 rng(42);
  std::vector<SyntheticStack> stacks(count);
  for (auto& stack : stacks) {
    const size_t kernel = rng() % 4 == 0 ? 2 + rng() % 4 : 0;  // a quarter in syscalls
    const size_t python = 14 + rng() % 40;
    for (size_t i = 0; i < kernel; ++i)
      stack.frames.push_back(kernel_frame(rng));
    if (kernel > 0)
      stack.frames.push_back(native_frame(rng, true));
    for (size_t i = 0; i < python; ++i) {
      stack.frames.push_back(python_frame(rng));
      // The eval loop's native frames, between runs of Python frames.
      if (i % 6 == 5)
        stack.frames.push_back(native_frame(rng, false));
    }
    const int thread = static_cast<int>(rng() % kThreads);
    stack.labels = {
        {"pid", std::to_string(1000 + thread / 4)},
        {"tid", std::to_string(2000 + thread)},
        {"thread_name", thread % 4 == 0 ? "MainThread" : fmt::format("worker-{}", thread)},
        {"process_name", "python3"}};
  }
  return stacks;
}

Result<InternedStacks> intern_stacks(profile::Profile& profile,
                                     const std::vector<SyntheticStack>& stacks) {
  const uint32_t libpython =
      profile.intern_mapping({"/usr/lib/libpython3.12.so.1.0", "5f1ab2c3d4e5f60718293a4b5c6d7e8f",
                              kLibpythonStart, kLibpythonStart + 0x400000, 0});
  const uint32_t libc = profile.intern_mapping({"/usr/lib/x86_64-linux-gnu/libc.so.6",
                                                "0123456789abcdef0123456789abcdef01234567",
                                                kLibcStart, kLibcStart + 0x200000, 0});
  const uint32_t kernel =
      profile.intern_mapping({"[kernel.kallsyms]", "", kKernelStart, kKernelStart + 0x2000000, 0});
  if (libpython != kLibpythonMapping || libc != kLibcMapping || kernel != kKernelMapping)
    return make_error("intern_stacks needs an empty profile (mapping ids {} {} {})", libpython,
                      libc, kernel);
  InternedStacks out;
  for (const auto& stack : stacks) {
    std::vector<profile::FrameId> ids;
    for (const Frame& frame : stack.frames)
      ids.push_back(profile.intern_frame(frame));
    out.frame_ids.push_back(std::move(ids));
    out.labels.push_back(profile.intern_labels(stack.labels));
  }
  return out;
}

}  // namespace krait::bench
