// The per-thread /proc files `krait dump` reads (dump/task_files.h):
// /proc/PID/task/TID/stat, .../syscall and .../stack.
//
// Input: u8 selector (0 mod 3: stat, 1: syscall, 2: stack), then the file's
// text. Checks, besides memory safety: a state is a letter, a system call
// number is never negative and has a name, a blocked thread's registers are
// only given with a number or -1, kernel frames are bounded and clean.
#include "dump/task_files.h"
#include "fuzz_input.h"

using namespace krait;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const uint8_t which = in.take<uint8_t>() % 3;
  const std::string_view text = in.rest_text();
  if (which == 0) {
    auto state = dump::parse_stat_state(text);
    if (state) {
      KRAIT_FUZZ_CHECK(*state >= 'A' && *state <= 'z');
      KRAIT_FUZZ_CHECK(!dump::state_name(*state).empty());
    }
    return 0;
  }
  if (which == 1) {
    auto s = dump::parse_syscall(text);
    if (!s)
      return 0;
    if (s->kind == dump::TaskSyscall::Kind::kSyscall) {
      KRAIT_FUZZ_CHECK(s->number >= 0);
      KRAIT_FUZZ_CHECK(!dump::syscall_name(s->number).empty());
    } else {
      KRAIT_FUZZ_CHECK(s->number == -1);
    }
    if (s->kind == dump::TaskSyscall::Kind::kRunning)
      KRAIT_FUZZ_CHECK(s->sp == 0 && s->pc == 0);
    return 0;
  }
  const auto frames = dump::parse_kernel_stack(text);
  KRAIT_FUZZ_CHECK(frames.size() <= dump::kMaxKernelFrames);
  for (const std::string& f : frames) {
    KRAIT_FUZZ_CHECK(!f.empty() && f.size() <= 256);
    KRAIT_FUZZ_CHECK(f.find_first_of("+ \n") == std::string::npos);
  }
  return 0;
}
