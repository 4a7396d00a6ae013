// `krait dump`: the current stack of every thread of Python processes, read
// at once from user space without stopping them (process_vm_readv and
// /proc only: no ptrace, no BPF). Idle and blocked threads are there too,
// which the sampler never sees: what "why is it stuck" needs.
//
// Per process: attach (python/attach: the validated layout), walk every
// interpreter's thread states, map each to its kernel thread, walk its
// frames as the sampler would (python/frame_walk) and name them as the
// pipeline does (code objects, line tables, method classes before 3.11).
// Per thread, from /proc/PID/task/TID: name, scheduler state, the system
// call it is blocked in, the kernel stack (root only). With `native`, a
// blocked thread's user stack is copied from the sp its syscall file gives
// and unwound and merged with the Python frames by the engine's
// StackBuilder, the same merge as `record`'s mixed stacks.
//
// Threading: dump_processes() reads each process on an Inspector worker, so
// a process whose reads block (a stuck mapping) costs a deadline, not a
// hang. Limits: DumpOptions::max_threads thread states per process (the cut
// is reported), max_depth frames per thread, a read budget per process, and
// bounded reads of every /proc file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "krait/abi.h"

namespace krait::dump {

struct DumpOptions {
  std::vector<pid_t> pids;  // empty: every Python process of the host
  bool native = false;      // native and kernel frames, merged
  size_t max_threads = KRAIT_THREAD_WALK_DEFAULT;
  size_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
};

enum class FrameKind : uint8_t { kPython, kNative, kKernel, kNote };

struct DumpFrame {
  FrameKind kind = FrameKind::kPython;
  std::string function;
  std::string file;  // empty when unknown
  int64_t line = 0;  // 0 when unknown
};

enum class Gil : uint8_t { kUnknown, kHeld, kNotHeld };

struct ThreadDump {
  int64_t tid = -1;  // kernel thread id as the host sees it; -1: unknown (tid_error says why)
  std::string tid_error;
  std::string name;     // comm
  bool python = false;  // has a PyThreadState
  // "running" (on a CPU), "runnable" (waiting for one), "blocked", or the
  // scheduler state's name ("stopped", "zombie", ...); "" when unreadable.
  std::string state;
  char kernel_state = 0;  // the letter of /proc stat, 0 unknown
  std::string syscall;    // the system call a blocked thread is in; "" none or unknown
  // Why it waits there, as off-CPU samples say it: sleep, io, lock, gil,
  // other; "" when not blocked in a system call.
  std::string waiting;
  Gil gil = Gil::kUnknown;
  std::vector<DumpFrame> frames;  // leaf first
  bool truncated = false;         // more Python frames than max_depth
  std::string error;              // why the Python stack is missing or incomplete
  std::string native_error;       // with native: why native frames are missing
};

struct ProcessDump {
  pid_t pid = 0;
  std::string name;     // comm
  std::string version;  // Python version
  std::string command;  // command line, cut
  std::vector<ThreadDump> threads;
  std::string error;               // the process could not be dumped; threads then empty
  std::vector<std::string> notes;  // limits hit (threads cut, read budget)
};

struct DumpReport {
  std::vector<ProcessDump> processes;
  // One line per named pid that is not Python, is gone or cannot be read.
  std::vector<std::string> failures;
};

DumpReport dump_processes(const DumpOptions& options);

std::string dump_text(const DumpReport& report);
std::string dump_json(const DumpReport& report);

}  // namespace krait::dump
