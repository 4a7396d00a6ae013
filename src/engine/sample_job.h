// What the reader thread hands the stack builder for one sample: the Python
// frames already named (code objects must be read while they live), and the
// raw native material (registers, stack copy, kernel addresses) to unwind
// and name on the builder's thread.
//
// Frames and labels are shared, immutable values: the reader caches them, a
// job only holds references.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "krait/abi.h"
#include "profile/profile.h"
#include "unwind/process_modules.h"

namespace krait::engine {

using FrameRef = std::shared_ptr<const profile::Frame>;
using LabelsRef = std::shared_ptr<const profile::Labels>;

// Where a sample's profile goes: one profile per series. `krait record`
// writes a single one (no series); the daemon one per application and set
// of series labels (service_name, hostname, container...).
struct Series {
  std::string application;
  profile::Labels labels;  // besides service_name, sorted
};
using SeriesRef = std::shared_ptr<const Series>;

// The newest executable mappings of a process: replaced by reloads (on the
// reader thread, as Inspector completions), read by the stack builder when
// it unwinds, so a sample queued before a reload still gets the mappings
// the reload found.
class ModulesSlot {
 public:
  std::shared_ptr<const unwind::ProcessModules> get() const { return modules_.load(); }
  void set(std::shared_ptr<const unwind::ProcessModules> modules) {
    modules_.store(std::move(modules));
  }

 private:
  std::atomic<std::shared_ptr<const unwind::ProcessModules>> modules_;
};

struct PythonFrameRef {
  FrameRef frame;
  // The oldest frame of one C-level call of the eval loop: every frame before
  // 3.11, the frames the interpreter marks from 3.11 on.
  bool entry = false;
};

struct SampleJob {
  uint64_t process_key = 0;  // the reader's id of the process incarnation (stats)
  uint64_t ktime_ns = 0;     // when it was sampled (CLOCK_MONOTONIC)
  SeriesRef series;          // null: the single profile of a recording
  LabelsRef labels;
  // Not a sample: the end of an interval at `ktime_ns` (daemon).
  bool interval_end = false;
  // Off-CPU and wall modes. An off-CPU sample (off_cpu) is held by the
  // builder until its thread runs again; block_end (not a sample) is that
  // moment, `ktime_ns`, for the sample of (tid, block_start_ns). Each stands
  // for `weight` context switches.
  bool off_cpu = false;
  bool block_end = false;
  uint32_t tid = 0;
  uint64_t block_start_ns = 0;
  uint16_t weight = 1;
  std::vector<PythonFrameRef> python;  // leaf first
  // Why the Python part is incomplete or absent, root side ("[...]"); empty
  // when complete. truncated: the Python walk hit the depth limit.
  std::vector<FrameRef> python_reasons;
  bool python_truncated = false;
  bool python_process = false;  // the process runs Python (else: native only)

  // Mixed mode.
  bool native = false;
  krait_user_regs regs{};
  uint16_t native_flags = 0;
  std::vector<uint8_t> user_stack;   // from regs.sp (less the red zone, see native_flags) up
  std::vector<uint64_t> kernel_ips;  // leaf first
  std::shared_ptr<ModulesSlot> modules;

  size_t bytes() const { return sizeof(*this) + user_stack.size() + kernel_ips.size() * 8; }
};

}  // namespace krait::engine
