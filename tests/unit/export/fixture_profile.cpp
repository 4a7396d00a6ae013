#include "fixture_profile.h"

namespace krait::test {
namespace {

using profile::FrameKind;

constexpr uint64_t kLibcStart = 0x7f1000000000;
constexpr uint64_t kExtStart = 0x7f2000000000;
constexpr uint64_t kKernelStart = 0xffffffff81000000;

const std::string kLibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const std::string kExt = "/opt/app/_native.cpython-312-x86_64-linux-gnu.so";

FrameFacts kernel(std::string fn, uint64_t address, bool mapped = true) {
  return {FrameKind::kKernel, std::move(fn), "", "", 0, 0, address, mapped ? kKernelFile : "", ""};
}

FrameFacts python(std::string fn, std::string file, int64_t start, int64_t line) {
  return {FrameKind::kPython, std::move(fn), "", std::move(file), start, line, 0, "", ""};
}

}  // namespace

Fixture make_fixture() {
  const FrameFacts k_syscall = kernel("do_syscall_64", 0xffffffff81001234);
  const FrameFacts k_entry = kernel("entry_SYSCALL_64_after_hwframe", 0xffffffff81e00010);
  const FrameFacts k_unmapped = kernel("irq_exit_rcu", 0xffffffff81002000, false);
  const FrameFacts n_read = {FrameKind::kNative,   "__libc_read", "__read",  "", 0, 0,
                             kLibcStart + 0x11000, kLibc,         "0123abcd"};
  const FrameFacts n_cpp = {FrameKind::kNative,
                            "std::vector<int>::push_back(int const&)",
                            "_ZNSt6vectorIiSaIiEE9push_backERKi",
                            "/src/ext.cpp",
                            80,
                            88,
                            kExtStart + 0x2040,
                            kExt,
                            "ffee00"};
  const FrameFacts n_unsymbolized = {FrameKind::kNative,   "",    "",        "", 0, 0,
                                     kLibcStart + 0x22222, kLibc, "0123abcd"};
  const FrameFacts n_unmapped = {FrameKind::kNative, "jit_stub", "", "", 0, 0, 0x500000, "", ""};
  const FrameFacts p_run17 = python("Worker.run", "/app/work.py", 10, 17);
  const FrameFacts p_run19 = python("Worker.run", "/app/work.py", 10, 19);
  const FrameFacts p_module = python("<module>", "/app/main.py", 1, 3);
  const FrameFacts p_lambda = python("<lambda>", "/app/main.py", 20, 21);
  const FrameFacts s_truncated = {FrameKind::kSynthetic, "[truncated]", "", "", 0, 0, 0, "", ""};

  const profile::Labels main_thread = {
      {"pid", "100"}, {"process_name", "python3"}, {"thread_name", "MainThread"}, {"tid", "100"}};
  const profile::Labels worker = {
      {"pid", "100"}, {"process_name", "python3"}, {"thread_name", "worker-1"}, {"tid", "102"}};
  const profile::Labels pid_only = {{"pid", "200"}};

  Fixture fx{profile::Profile({kFixtureStartNs,
                               kFixtureDurationNs,
                               kFixturePeriodNs,
                               {"krait 0.1.0 test", "dropped 3 samples: ring buffer full"}}),
             {},
             {}};
  fx.adds = {
      {{k_syscall, k_entry, n_read, p_run17, p_module}, main_thread, 5},
      {{n_cpp, p_lambda, p_module}, main_thread, 3},
      {{p_run19, p_module}, worker, 2},
      {{k_unmapped, n_unmapped, p_run19, p_module}, worker, 1},
      {{p_run19, p_module}, worker, 4},
      {{n_unsymbolized, p_run17, s_truncated}, pid_only, 1},
      {{k_syscall, k_entry, n_read, p_run17, p_module}, main_thread, 2},
  };

  auto& p = fx.profile;
  auto mapping_of = [&](const FrameFacts& f) -> uint32_t {
    if (f.mapping_file.empty())
      return 0;
    if (f.mapping_file == kKernelFile)
      return p.intern_mapping({kKernelFile, "", kKernelStart, kKernelStart + 0x2000000, 0});
    const uint64_t start = f.mapping_file == kLibc ? kLibcStart : kExtStart;
    return p.intern_mapping({f.mapping_file, f.build_id, start, start + 0x200000, 0x1000});
  };
  for (const auto& add : fx.adds) {
    std::vector<profile::FrameId> stack;
    for (const auto& f : add.stack) {
      profile::Frame frame;
      frame.kind = f.kind;
      frame.function = f.function;
      frame.system_name = f.system_name;
      frame.file = f.file;
      frame.start_line = f.start_line;
      frame.line = f.line;
      frame.address = f.address;
      frame.mapping = mapping_of(f);
      stack.push_back(p.intern_frame(frame));
    }
    p.add_sample(stack, p.intern_labels(add.labels), add.count);
    fx.expected[{add.stack, add.labels}] += add.count;
  }
  return fx;
}

std::string expected_pprof_mapping(const FrameFacts& f) {
  if (!f.mapping_file.empty())
    return f.mapping_file;
  switch (f.kind) {
    case FrameKind::kPython:
      return "[python]";
    case FrameKind::kKernel:
      return kKernelFile;
    case FrameKind::kNative:
      return "[unknown]";
    case FrameKind::kSynthetic:
      return "[synthetic]";
  }
  return "?";
}

}  // namespace krait::test
