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
// StackBuilder, the same merge as `record`'s mixed stacks. With `tasks`
// (3.14+), each thread that runs an asyncio event loop also gets its tasks
// (python/asyncio_tasks.h): name, state, coroutine chain, who awaits whom.
//
// Threading: dump_processes() reads each process on an Inspector worker, so
// a process whose reads block (a stuck mapping) costs a deadline, not a
// hang. Limits: DumpOptions::max_threads thread states per process (the cut
// is reported), max_depth frames per thread, a read budget per process, and
// bounded reads of every /proc file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "krait/abi.h"

namespace krait::dump {

struct DumpOptions {
  std::vector<pid_t> pids;  // empty: every Python process of the host
  bool native = false;      // native and kernel frames, merged
  bool tasks = false;       // asyncio tasks of event-loop threads (3.14+)
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

// One asyncio task (python/asyncio_tasks.h says where each part comes from).
struct TaskDump {
  uint64_t id = 0;                   // the task object's address
  std::string name;                  // Task.get_name()
  std::string state;                 // "running", "pending", "cancelled", "done", "unknown"
  std::vector<DumpFrame> frames;     // its coroutine chain, leaf first
  bool truncated = false;            // more frames than max_depth
  std::vector<uint64_t> awaits;      // ids of the tasks it awaits
  std::vector<uint64_t> awaited_by;  // ids of the tasks awaiting it
  std::string waiting_on;            // type name of the future it waits on; "" none
  std::string error;                 // what of it could not be read
};

// The event loop a thread runs, with its tasks.
struct AsyncioDump {
  uint64_t loop = 0;          // the running loop object, 0 none
  uint64_t running_task = 0;  // 0 none
  std::vector<TaskDump> tasks;
  bool truncated = false;  // more tasks than the limit
  std::string error;       // the task list could not be read to its end
};

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
  std::vector<DumpFrame> frames;       // leaf first
  bool truncated = false;              // more Python frames than max_depth
  std::string error;                   // why the Python stack is missing or incomplete
  std::string native_error;            // with native: why native frames are missing
  std::optional<AsyncioDump> asyncio;  // with tasks: the thread runs an event loop or has tasks
};

struct ProcessDump {
  pid_t pid = 0;
  std::string name;     // comm
  std::string version;  // Python version
  std::string command;  // command line, cut
  std::vector<ThreadDump> threads;
  std::string error;               // the process could not be dumped; threads then empty
  std::vector<std::string> notes;  // limits hit (threads cut, read budget)
  std::string tasks_error;         // with tasks: why no thread's tasks could be read
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
