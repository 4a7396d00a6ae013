// What a forked process legitimately inherits in its thread states.
//
// fork() copies the forking thread's PyThreadState into the child with the
// parent's native thread id in it. CPython corrects that field only when it
// forks itself (os.fork runs PyOS_AfterFork_Child); a server that loads the
// application and then calls fork() from C (uWSGI, its master forking the
// workers) leaves every worker with a thread state naming the master's
// thread. Such an id is not a sign of a wrong layout: it is a thread of a
// process the child descends from, or, once that parent is gone, the id of
// the thread whose pthread_t the state still holds, which glibc rewrote to
// the child's own main thread when it forked.
//
// Reads /proc only (status files and task directories), every read bounded;
// whatever a process writes there at most makes its own fork look
// unexplained, so it is refused with the usual reason.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace krait::python {

// glibc x86-64: where struct pthread keeps the kernel thread id (pthread_t
// points to the struct). A forked child's copy of the forking thread's
// struct holds the child's tid; the other threads' copies hold 0.
inline constexpr uint64_t kPthreadTidOffset = 0x2d0;

// The chain of processes `pid` was forked from, read once on first use.
class Ancestry {
 public:
  explicit Ancestry(pid_t pid, std::string proc_root = "/proc")
      : pid_(pid), proc_root_(std::move(proc_root)) {}

  // True when `tid`, as the process's own PID namespace numbers threads
  // (what PyThreadState.native_thread_id holds), is a live thread of one
  // of its ancestors. The host's init (pid 1 outside a namespace) never
  // explains an id: a field that reads 1 is likelier a wrong offset.
  bool has_thread(uint64_t tid);

  // True when `tid` is the process's own main thread (its pid, as the host
  // or its own namespace numbers it): the thread fork() leaves running in
  // a child is its main thread, whatever thread of the parent forked.
  bool is_main_thread(uint64_t tid);

  // The ancestors found, nearest first: host pid and innermost pid.
  const std::vector<std::pair<pid_t, uint64_t>>& chain();

 private:
  void load();

  pid_t pid_;
  std::string proc_root_;
  bool loaded_ = false;
  bool in_namespace_ = false;
  uint64_t inner_pid_ = 0;
  std::vector<std::pair<pid_t, uint64_t>> chain_;
};

}  // namespace krait::python
