// `krait record`: one recording from start to written file.
//
// Threads: everything runs on the calling thread, around one epoll set (the
// ring buffer, a signalfd for SIGINT/SIGTERM, a timerfd for --duration), so
// stopping is a matter of leaving the loop, draining what the kernel still
// holds, and writing the file: a signal never loses collected samples.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "bpf/sampler.h"
#include "export/write_profile.h"
#include "util/result.h"

namespace krait::record {

// pprof, folded, speedscope, html: one list for record and convert.
using OutputFormat = exporter::OutputFormat;
using bpf::StackMode;

struct RecordOptions {
  std::optional<double> duration_s;  // nullopt: until SIGINT/SIGTERM
  std::string output;                // empty: a name from host and time
  OutputFormat format = OutputFormat::kPprof;
  std::vector<pid_t> pids;  // empty: every Python process
  uint32_t frequency_hz = 99;
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  bpf::EventSource event = bpf::EventSource::kAuto;
  std::vector<std::string> offsets_files;    // --offsets
  bool builtin_offsets = true;               // tests: simulate a release with no table
  int ready_fd = -1;                         // written "ready\n" once sampling runs
  std::string stats_json;                    // write the run summary as JSON here
  bool measure_cost = false;                 // time every walk (benchmarks)
  bool gil_only = false;                     // only samples of threads holding the GIL
  StackMode stacks = StackMode::kMixed;      // Python frames only, or with native and kernel
  bpf::TimeMode mode = bpf::TimeMode::kCpu;  // on-CPU, off-CPU or wall-clock time
  uint32_t switch_every = 1;                 // off CPU: one context switch in N is walked
  uint32_t switch_budget = bpf::kDefaultSwitchBudget;  // off CPU: walks per second per CPU
  bool kernel_stacks = true;                           // mixed: kernel frames too
  uint32_t user_stack_bytes = KRAIT_USER_STACK_DEFAULT;
  bool all_processes = false;  // also processes that are not Python
};

// Returns the process exit status (0, or 1 when nothing could be
// profiled); an Error for failures that stop the run before it starts.
Result<int> run_record(const RecordOptions& options);

std::string default_output_name(OutputFormat format);

}  // namespace krait::record
