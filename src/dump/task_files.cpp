// The formats are the kernel's (fs/proc/base.c: proc_pid_syscall,
// proc_pid_stack; fs/proc/array.c: do_task_stat).
#include "dump/task_files.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "util/text.h"

namespace krait::dump {
namespace {

// A "0x..." field of .../syscall.
std::optional<uint64_t> parse_hex(std::string_view field) {
  if (!field.starts_with("0x"))
    return std::nullopt;
  return parse_unsigned<uint64_t>(field.substr(2), 16);
}

// The next space-separated field of `text`, removed from it.
std::string_view take_field(std::string_view& text) {
  while (!text.empty() && text.front() == ' ')
    text.remove_prefix(1);
  const size_t end = std::min(text.find(' '), text.size());
  std::string_view field = text.substr(0, end);
  text.remove_prefix(end);
  return field;
}

// The x86_64 system calls a blocked thread is commonly found in
// (asm/unistd_64.h), sorted by number.
constexpr std::pair<int, std::string_view> kSyscalls[] = {
    {0, "read"},
    {1, "write"},
    {2, "open"},
    {3, "close"},
    {7, "poll"},
    {8, "lseek"},
    {9, "mmap"},
    {10, "mprotect"},
    {11, "munmap"},
    {12, "brk"},
    {16, "ioctl"},
    {17, "pread64"},
    {18, "pwrite64"},
    {19, "readv"},
    {20, "writev"},
    {23, "select"},
    {24, "sched_yield"},
    {26, "msync"},
    {28, "madvise"},
    {32, "dup"},
    {33, "dup2"},
    {34, "pause"},
    {35, "nanosleep"},
    {40, "sendfile"},
    {41, "socket"},
    {42, "connect"},
    {43, "accept"},
    {44, "sendto"},
    {45, "recvfrom"},
    {46, "sendmsg"},
    {47, "recvmsg"},
    {48, "shutdown"},
    {49, "bind"},
    {50, "listen"},
    {54, "setsockopt"},
    {55, "getsockopt"},
    {56, "clone"},
    {60, "exit"},
    {61, "wait4"},
    {62, "kill"},
    {65, "semop"},
    {70, "msgrcv"},
    {72, "fcntl"},
    {73, "flock"},
    {74, "fsync"},
    {75, "fdatasync"},
    {128, "rt_sigtimedwait"},
    {130, "rt_sigsuspend"},
    {131, "sigaltstack"},
    {162, "sync"},
    {202, "futex"},
    {208, "io_getevents"},
    {219, "restart_syscall"},
    {220, "semtimedop"},
    {230, "clock_nanosleep"},
    {231, "exit_group"},
    {232, "epoll_wait"},
    {234, "tgkill"},
    {243, "mq_timedreceive"},
    {247, "waitid"},
    {257, "openat"},
    {262, "newfstatat"},
    {270, "pselect6"},
    {271, "ppoll"},
    {275, "splice"},
    {281, "epoll_pwait"},
    {286, "timerfd_settime"},
    {288, "accept4"},
    {289, "signalfd4"},
    {290, "eventfd2"},
    {293, "pipe2"},
    {299, "recvmmsg"},
    {307, "sendmmsg"},
    {318, "getrandom"},
    {332, "statx"},
    {426, "io_uring_enter"},
    {435, "clone3"},
    {441, "epoll_pwait2"},
    {449, "futex_waitv"},
};

}  // namespace

Result<char> parse_stat_state(std::string_view stat) {
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos || close + 2 >= stat.size() || stat[close + 1] != ' ')
    return make_error("no state field in /proc stat");
  const char state = stat[close + 2];
  if (state < 'A' || state > 'z')
    return make_error("a state field that is not a letter in /proc stat");
  return state;
}

Result<TaskSyscall> parse_syscall(std::string_view text) {
  text = trim(text.substr(0, text.find('\n')));
  TaskSyscall out;
  if (text == "running")
    return out;
  std::string_view first = take_field(text);
  if (first == "-1") {
    out.kind = TaskSyscall::Kind::kNoSyscall;
  } else {
    auto number = parse_unsigned<uint32_t>(first);
    if (!number)
      return make_error("a system call number that is not a number in /proc syscall");
    out.kind = TaskSyscall::Kind::kSyscall;
    out.number = *number;
    for (uint64_t& arg : out.args) {
      auto value = parse_hex(take_field(text));
      if (!value)
        return make_error("a system call argument that is not hexadecimal in /proc syscall");
      arg = *value;
    }
  }
  auto sp = parse_hex(take_field(text));
  auto pc = parse_hex(take_field(text));
  if (!sp || !pc || !trim(text).empty())
    return make_error("no stack pointer and pc in /proc syscall");
  out.sp = *sp;
  out.pc = *pc;
  return out;
}

std::vector<std::string> parse_kernel_stack(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty() && out.size() < kMaxKernelFrames) {
    std::string_view line = trim(take_line(text));
    // "[<address>] function+0xoff/0xsize", the address hidden as 0 unless
    // kptr_restrict allows it.
    if (!line.starts_with("[<"))
      continue;
    const size_t bracket = line.find(">] ");
    if (bracket == std::string_view::npos)
      continue;
    std::string_view symbol = line.substr(bracket + 3);
    symbol = symbol.substr(0, symbol.find_first_of("+ "));
    if (symbol.empty() || symbol.size() > 256)
      continue;
    out.emplace_back(symbol);
  }
  return out;
}

std::string syscall_name(int64_t number) {
  auto it = std::lower_bound(std::begin(kSyscalls), std::end(kSyscalls), number,
                             [](const auto& entry, int64_t n) { return entry.first < n; });
  if (it != std::end(kSyscalls) && it->first == number)
    return std::string(it->second);
  return fmt::format("syscall {}", number);
}

std::string state_name(char state) {
  switch (state) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk sleep";
    case 'T':
    case 't':
      return "stopped";
    case 'Z':
      return "zombie";
    case 'X':
      return "dead";
    case 'I':
      return "idle";
    case 'P':
      return "parked";
    default:
      return fmt::format("state {}", state);
  }
}

}  // namespace krait::dump
