// `krait top`: a live view of where the host's Python processes spend
// their CPU, refreshed every interval; or, without a terminal (or with
// --once), plain-text snapshots for scripts and tests.
//
// Threads: the run loop (this thread) drives the engine around one epoll
// set: the ring buffer, a signalfd (SIGINT, SIGTERM, SIGWINCH), the
// interval timer, the terminal's input and an eventfd through which the
// builder thread hands over each interval's profile. The terminal is
// restored on every way out (q, a signal, an error).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "top/table.h"
#include "util/result.h"

namespace krait::top {

using bpf::StackMode;

struct TopOptions {
  double interval_s = 1.0;
  bool once = false;        // one plain snapshot, even on a terminal
  uint32_t iterations = 1;  // plain mode: snapshots to print
  size_t max_rows = 0;      // plain mode: rows per snapshot (0: all)
  Grouping grouping = Grouping::kFunctions;
  SortKey sort = SortKey::kOwn;
  std::string filter;          // a pid or a piece of a process name
  bool native_frames = false;  // start with native and kernel frames as rows (k toggles)
  std::vector<pid_t> pids;     // empty: every Python process
  uint32_t frequency_hz = 99;
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  bpf::EventSource event = bpf::EventSource::kAuto;
  StackMode stacks = StackMode::kMixed;
  bpf::TimeMode mode = bpf::TimeMode::kCpu;  // wall/off-cpu: shares of a thread's time
  uint32_t switch_every = 1;
  uint32_t switch_budget = bpf::kDefaultSwitchBudget;
  bool kernel_stacks = true;
  uint32_t user_stack_bytes = KRAIT_USER_STACK_DEFAULT;
  int ready_fd = -1;  // written "ready\n" once sampling runs (tests)
};

// Returns the exit status; an Error for what stops it before it starts.
Result<int> run_top(const TopOptions& options);

}  // namespace krait::top
