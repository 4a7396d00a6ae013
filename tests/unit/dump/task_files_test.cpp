// The /proc parsers of `krait dump` on texts the kernel writes and on texts
// a hostile or exiting thread can produce (names with parentheses and
// newlines, cut files, garbage).
#include "dump/task_files.h"

#include <gtest/gtest.h>

#include <string>

#include "krait/off_cpu.h"

namespace krait::dump {
namespace {

TEST(StatState, TakesTheFieldAfterTheLastParenthesis) {
  EXPECT_EQ(*parse_stat_state("1234 (python3) S 1 1234 1234 0 -1 4194560 0 0"), 'S');
  EXPECT_EQ(*parse_stat_state("7 (a) R) (b) R 1 2 3"), 'R');  // a comm "a) R) (b"
  EXPECT_EQ(*parse_stat_state("7 (x\ny) D 1"), 'D');
  EXPECT_EQ(*parse_stat_state("7 () t 1"), 't');
}

TEST(StatState, RefusesTextWithoutAState) {
  for (const char* bad : {"", "1234", "1234 (python3", "1234 (python3)", "1234 (python3) ",
                          "1234 (python3)S", "1234 (python3) 5", "1234 (python3) \x01"})
    EXPECT_FALSE(parse_stat_state(bad).ok()) << bad;
}

TEST(Syscall, ReadsABlockedThread) {
  auto s = parse_syscall(
      "230 0x0 0x0 0x7ffc5d1bd0d0 0x7ffc5d1bd0d0 0x0 0x0 0x7ffc5d1bd088 0x7f3e1c4e5e3a\n");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->kind, TaskSyscall::Kind::kSyscall);
  EXPECT_EQ(s->number, 230);
  EXPECT_EQ(s->sp, 0x7ffc5d1bd088u);
  EXPECT_EQ(s->pc, 0x7f3e1c4e5e3au);
  EXPECT_EQ(syscall_name(s->number), "clock_nanosleep");
}

TEST(Syscall, ReadsRunningAndNotInASyscall) {
  auto running = parse_syscall("running\n");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->kind, TaskSyscall::Kind::kRunning);
  auto fault = parse_syscall("-1 0x7ffc5d1bd088 0x55d0c0ffee00\n");
  ASSERT_TRUE(fault.ok()) << fault.error().message;
  EXPECT_EQ(fault->kind, TaskSyscall::Kind::kNoSyscall);
  EXPECT_EQ(fault->sp, 0x7ffc5d1bd088u);
  EXPECT_EQ(fault->pc, 0x55d0c0ffee00u);
}

TEST(Syscall, RefusesCutAndMalformedText) {
  for (const char* bad : {"", "\n", "runnin", "230", "230 0x0 0x0 0x0 0x0 0x0 0x0 0x1",
                          "230 0x0 0x0 0x0 0x0 0x0 0x0 0x1 0x2 0x3", "-1 0x1", "-2 0x1 0x2",
                          "x 0x0 0x0 0x0 0x0 0x0 0x0 0x1 0x2", "230 0 0 0 0 0 0 1 2",
                          "230 0x0 0x0 0x0 0x0 0x0 0x0 0x1 0xfffffffffffffffff",
                          "99999999999 0x0 0x0 0x0 0x0 0x0 0x0 0x1 0x2", "-1 0x 0x"})
    EXPECT_FALSE(parse_syscall(bad).ok()) << bad;
  std::string huge(1 << 16, '7');
  EXPECT_FALSE(parse_syscall(huge).ok());
}

TEST(KernelStack, KeepsFunctionNamesLeafFirst) {
  auto frames = parse_kernel_stack(
      "[<0>] hrtimer_nanosleep+0xc7/0x1b0\n"
      "[<0>] common_nsleep_timens+0x4f/0x70\n"
      "[<ffffffff8f8a1234>] __x64_sys_clock_nanosleep+0xd2/0x150\n"
      "[<0>] do_syscall_64+0x55/0xb0\n"
      "[<0>] entry_SYSCALL_64_after_hwframe+0x6e/0xd8\n");
  EXPECT_EQ(frames, (std::vector<std::string>{"hrtimer_nanosleep", "common_nsleep_timens",
                                              "__x64_sys_clock_nanosleep", "do_syscall_64",
                                              "entry_SYSCALL_64_after_hwframe"}));
}

TEST(KernelStack, SkipsWhatIsNotAFrameAndBoundsTheCount) {
  EXPECT_TRUE(parse_kernel_stack("").empty());
  EXPECT_TRUE(parse_kernel_stack("garbage\n[<0>]\n[<0>] \n[<0] x\n").empty());
  std::string many;
  for (int i = 0; i < 1000; ++i)
    many += "[<0>] f+0x1/0x2\n";
  EXPECT_EQ(parse_kernel_stack(many).size(), kMaxKernelFrames);
  EXPECT_TRUE(parse_kernel_stack("[<0>] " + std::string(10'000, 'a') + "\n").empty());
}

TEST(Names, SyscallsAndStates) {
  EXPECT_EQ(syscall_name(45), "recvfrom");
  EXPECT_EQ(syscall_name(202), "futex");
  EXPECT_EQ(syscall_name(232), "epoll_wait");
  EXPECT_EQ(syscall_name(0), "read");
  EXPECT_EQ(syscall_name(100000), "syscall 100000");
  EXPECT_EQ(syscall_name(-5), "syscall -5");
  EXPECT_EQ(state_name('S'), "sleeping");
  EXPECT_EQ(state_name('R'), "running");
  EXPECT_EQ(state_name('Q'), "state Q");
}

// The reason a wait is given, from the system call and its arguments: the
// same function the sampler runs at a context switch.
TEST(Waiting, ReasonsFromTheSystemCallAndItsArguments) {
  auto reason = [](std::string_view line, uint64_t gil_addr = 0, uint32_t gil_size = 0) {
    auto sys = parse_syscall(line);
    EXPECT_TRUE(sys.ok()) << line;
    return std::string(krait_off_cpu_reason_name(
        krait_off_cpu_reason(sys->number, sys->args[0], sys->args[1], gil_addr, gil_size)));
  };
  const char* futex = "202 0x7f0000001040 0x89 0x0 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa";
  EXPECT_EQ(reason(futex, 0x7f0000001000, 0x100), "gil");
  EXPECT_EQ(reason(futex, 0x7f0000001000, 0x40), "lock");  // one byte past the GIL
  EXPECT_EQ(reason(futex), "lock");
  EXPECT_EQ(reason("230 0x1 0x0 0x7ffd 0x7ffd 0x0 0x0 0x7ffd5c0 0x7f12aa"), "sleep");
  // select: time.sleep before 3.11 has no descriptors.
  EXPECT_EQ(reason("23 0x0 0x0 0x0 0x0 0x7ffd 0x0 0x7ffd5c0 0x7f12aa"), "sleep");
  EXPECT_EQ(reason("23 0x6 0x7ffd 0x0 0x0 0x7ffd 0x0 0x7ffd5c0 0x7f12aa"), "io");
  // poll: the count is the second argument.
  EXPECT_EQ(reason("7 0x7ffd 0x0 0x3e8 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa"), "sleep");
  EXPECT_EQ(reason("7 0x7ffd 0x2 0x3e8 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa"), "io");
  EXPECT_EQ(reason("0 0x3 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa"), "io");
  EXPECT_EQ(reason("45 0x3 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa"), "io");
  EXPECT_EQ(reason("61 0xffffffffffffffff 0x7ffd 0x0 0x0 0x0 0x0 0x7ffd5c0 0x7f12aa"), "other");
  EXPECT_STREQ(krait_off_cpu_reason_name(KRAIT_OFF_RUNNABLE), "runnable");
}

}  // namespace
}  // namespace krait::dump
