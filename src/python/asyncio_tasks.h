// Reading the asyncio tasks of a Python process from outside it: for one
// thread state, the event loop it runs, its running task, and every task of
// the thread with its name, state, coroutine chain (leaf first, as
// WalkedFrame records the frame walk gives, named by the caller like any
// frame) and the tasks that await it. `krait dump --tasks` shows them.
//
// What CPython publishes, and what this reader relies on, per version:
//
// 3.14 and 3.15 (the only versions read). The _asyncio module holds
// `_Py_AsyncioModuleDebugOffsets _AsyncioDebug` in its own ELF section
// `.AsyncioDebug` (Modules/_asynciomodule.c): 13 uint64 offsets,
//   asyncio_task_object { size, task_name, task_awaited_by, task_is_task,
//                         task_awaited_by_is_set, task_coro, task_node }
//   asyncio_interpreter_state { size, asyncio_tasks_head }
//   asyncio_thread_state { size, asyncio_running_loop, asyncio_running_task,
//                          asyncio_tasks_head }
// The section is in lib-dynload/_asyncio.cpython-3XX-*.so when _asyncio is
// a shared module (sid 3.14: mapped only once asyncio is imported), or in
// the interpreter image when it is built in (sid 3.15). CPython's own
// reader (Modules/_remote_debugging, asyncio/tools.py) finds it the same way.
// - The thread state (_PyThreadStateImpl) holds the running loop and task
//   (strong references, set by _asyncio's enter_task) and the head of a
//   circular list (struct llist_node {next, prev}) of the tasks created on
//   that thread, linked through TaskObj.task_node. A task leaves the list
//   when it completes, so listed tasks are pending or running. Tasks of a
//   thread that exited move to the interpreter's list. Tasks that are not
//   _asyncio.Task instances (third-party task classes) are in no list.
// - task_name is a str, or an int N for the default name "Task-N"
//   (formatted lazily). task_coro is the coroutine. task_awaited_by is
//   NULL, one waiter, or (task_awaited_by_is_set) a set of waiters: the
//   tasks that await this one through `await task`, gather() and TaskGroup
//   (asyncio.futures.future_add_to_awaited_by).
// - Not published but fixed by FutureObj_HEAD / TaskObj in 3.14 and 3.15,
//   and checked against the published offsets before use: the loop is the
//   first field after PyObject_HEAD; `fut_state` (int: 0 pending, 1
//   cancelled, 2 finished) sits 8 bytes after task_awaited_by and 4 before
//   task_is_task; task_fut_waiter (the future the task waits on) is the
//   pointer before task_coro.
// - A coroutine (PyGenObject, offsets from _Py_DebugOffsets.gen_object)
//   embeds its interpreter frame at gi_iframe. gi_frame_state says whether
//   it is suspended in `await` (FRAME_SUSPENDED_YIELD_FROM: -1 in 3.14; 2,
//   or 3 while locked, in 3.15) and cleared (4 in 3.14, 5 in 3.15). While
//   suspended in `await`, the awaited object is on the frame's value stack:
//   stackpointer[-1] in 3.14, stackpointer[-2] in 3.15 (checked on sid
//   3.14.10 and 3.15.2 against cr_await). The chain goes on while that object
//   has the coroutine's own type, as CPython's reader does: at a Future
//   (its __await__ iterator) the chain ends.
// - The running task's coroutine is executing: its frames are the thread's
//   frames from the leaf up to the coroutine's own frame (coro + gi_iframe).
// - A set's table is (mask + 1) entries of {key, hash}; a deleted entry
//   holds the dummy key with hash -1.
//
// Before 3.14 there is no published layout, no per-thread task list and no
// awaited_by link; docs/versions.md ("asyncio tasks") says what reading
// 3.11 - 3.13 takes.
//
// Limits: every count read from the process is bounded (tasks per list,
// frames per chain, entries per awaited_by set, characters per name), lists
// and chains are checked for cycles, reads go through the caller's
// BudgetedReader. A task that cannot be read whole carries an error; a list
// that breaks ends with one. Not thread-safe; one reader per process read.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "python/frame_walk.h"
#include "python/layout.h"
#include "python/offsets/offset_table.h"
#include "python/offsets/version.h"
#include "util/result.h"

namespace krait::python {

// _Py_AsyncioModuleDebugOffsets, as the section holds it.
struct AsyncioDebugOffsets {
  uint64_t task_size = 0, task_name = 0, task_awaited_by = 0, task_is_task = 0,
           task_awaited_by_is_set = 0, task_coro = 0, task_node = 0;
  uint64_t interp_size = 0, interp_tasks_head = 0;
  uint64_t tstate_size = 0, tstate_running_loop = 0, tstate_running_task = 0, tstate_tasks_head = 0;
};
inline constexpr size_t kAsyncioDebugBytes = 13 * 8;

// Decodes the section's bytes; fails when a size is zero or implausible or
// an offset lies outside its struct.
Result<AsyncioDebugOffsets> decode_asyncio_debug(std::span<const uint8_t> bytes);

// The .AsyncioDebug section of the process: looked for in the mapped files
// named _asyncio* and in the interpreter image (`image_path`, as mapped).
// nullopt when none has it (asyncio not imported, or a version without it).
Result<std::optional<AsyncioDebugOffsets>> find_asyncio_debug(pid_t pid,
                                                              const proc::RemoteMemory& memory,
                                                              const std::string& image_path);

// Everything the task reader reads, for one interpreter build.
struct AsyncioLayout {
  AsyncioDebugOffsets debug;
  uint64_t fut_loop = 0, fut_state = 0, task_fut_waiter = 0;  // see the facts above
  uint64_t ob_type = 0, tp_name = 0, tp_flags = 0;
  uint64_t gen_iframe = 0, gen_frame_state = 0;
  uint64_t frame_owner = 0, frame_stackpointer = 0;
  uint64_t set_used = 0, set_table = 0, set_mask = 0;
  uint64_t long_tag = 0, long_digits = 0;
  uint64_t llist_next = 0;
  int8_t state_yield_from = 0, state_yield_from_locked = 0, state_cleared = 0;
  uint8_t owned_by_generator = 1;
  uint8_t awaited_slot = 1;  // the awaited object is stackpointer[-awaited_slot]
};

// Fails naming the field the table lacks, the fact that does not hold, or
// the version this reader does not know (anything but 3.14 and 3.15).
Result<AsyncioLayout> build_asyncio_layout(const AsyncioDebugOffsets& debug,
                                           const OffsetTable& table, PyVersion version);

enum class TaskState : uint8_t { kUnknown, kRunning, kPending, kCancelled, kDone };
const char* task_state_name(TaskState state);

struct AsyncTask {
  uint64_t address = 0;  // the task's id
  uint64_t loop = 0;
  std::string name;
  TaskState state = TaskState::kUnknown;
  // Leaf first. The running task: the thread's frames down to its
  // coroutine's frame; the others: each suspended coroutine, the one
  // awaiting it after it. status/reason say where a chain broke.
  FrameChain coroutine;
  std::vector<uint64_t> awaited_by;  // the objects awaiting it (tasks, as a rule)
  bool awaited_by_cut = false;       // a set larger than the limit
  uint64_t waiter = 0;               // the future it waits on (fut_waiter), 0 none
  std::string waiter_type;           // that future's type name
  std::string error;                 // the task could not be read whole
};

struct LoopTasks {
  uint64_t loop = 0;          // the thread's running loop, 0 none
  uint64_t running_task = 0;  // 0 none
  std::vector<AsyncTask> tasks;
  bool cut = false;   // more tasks than the limit
  std::string error;  // the list could not be read to its end
};

struct TaskLimits {
  size_t max_tasks = 10'000;  // per list
  size_t max_depth = 256;     // frames per coroutine chain
  size_t max_awaiters = 4096;
};

// The loop, the running task and the task list of the thread state
// `tstate` (with the running task added if it is not in the list).
LoopTasks read_thread_tasks(BudgetedReader& reader, const PythonLayout& layout,
                            const AsyncioLayout& asyncio, uint64_t code_type, uint64_t tstate,
                            const TaskLimits& limits);

// The tasks of the interpreter's own list (created by threads that have
// exited); each carries its loop, running is never set.
LoopTasks read_interpreter_tasks(BudgetedReader& reader, const PythonLayout& layout,
                                 const AsyncioLayout& asyncio, uint64_t code_type, uint64_t interp,
                                 const TaskLimits& limits);

}  // namespace krait::python
