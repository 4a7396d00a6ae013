#include "options/sampling.h"

#include <fmt/format.h>

#include "bpf/sampler.h"
#include "krait/abi.h"

namespace krait::options::sampling {

template <typename E>
static Choice choice(const char* name, E value) {
  return {name, static_cast<int>(value)};
}

Spec rate_hz() {
  return {.key = "sampling.rate_hz",
          .flags = "-r,--rate",
          .type = "HZ",
          .help = "Samples per second per CPU",
          .kind = Kind::kInteger,
          .min = bpf::kMinFrequencyHz,
          .max = bpf::kMaxFrequencyHz};
}

// Case is ignored as `krait record` always did.
Spec stack_mode() {
  return {.key = "sampling.stack_mode",
          .flags = "--stacks,--stack-mode",
          .help = "python: Python frames only; mixed: Python, native and kernel frames",
          .kind = Kind::kChoice,
          .choices = {choice("python", bpf::StackMode::kPython),
                      choice("mixed", bpf::StackMode::kMixed)},
          .ignore_case = true};
}

Spec kernel_frames() {
  return {.key = "sampling.kernel",
          .flags = "--no-kernel",
          .help = "Leave kernel frames out of mixed stacks",
          .kind = Kind::kToggle,
          .flag_sets = false};
}

Spec all_processes() {
  return {.key = "sampling.all_processes",
          .flags = "--all-processes",
          .help =
              "Also profile processes that are not Python, with native and kernel stacks (the "
              "process selection applies to them too)",
          .kind = Kind::kToggle};
}

Spec time_mode() {
  return {.key = "sampling.mode",
          .flags = "--mode",
          .help =
              "cpu: threads on a CPU; off-cpu: the time threads wait, where they wait (labelled "
              "reason=sleep|io|lock|gil|runnable|other); wall: both, so each thread's samples add "
              "up to its wall-clock time",
          .kind = Kind::kChoice,
          .choices = {choice("cpu", bpf::TimeMode::kCpu), choice("off-cpu", bpf::TimeMode::kOffCpu),
                      choice("wall", bpf::TimeMode::kWall)},
          .ignore_case = true};
}

Spec switch_every() {
  return {.key = "sampling.switch_every",
          .flags = "--switch-every",
          .type = "N",
          .help =
              "Off-CPU and wall modes: walk one context switch in N, at random, and count it N "
              "times (for hosts that switch very often)",
          .kind = Kind::kInteger,
          .min = 1,
          .max = bpf::kMaxSwitchEvery};
}

Spec switch_budget() {
  return {.key = "sampling.switch_budget",
          .flags = "--switch-budget",
          .type = "N",
          .help = fmt::format(
              "Off-CPU and wall modes: walk about N context switches per second per CPU at most; "
              "above that, one in as many as it takes, at random, each counted that many times "
              "(0: walk every switch; default {})",
              bpf::kDefaultSwitchBudget),
          .kind = Kind::kInteger,
          .min = 0,
          .max = bpf::kMaxSwitchBudget};
}

Spec event() {
  return {.flags = "--event",
          .help = "Sampling event: auto (cycles where the host has a PMU, else cpu-clock)",
          .kind = Kind::kChoice,
          .choices = {choice("auto", bpf::EventSource::kAuto),
                      choice("cycles", bpf::EventSource::kCycles),
                      choice("cpu-clock", bpf::EventSource::kCpuClock)},
          .ignore_case = true};
}

Spec max_depth() {
  return {.flags = "--max-depth",
          .type = "FRAMES",
          .help = "Python frames per stack; deeper are truncated",
          .kind = Kind::kInteger,
          .min = 1,
          .max = KRAIT_PY_FRAMES_CAP};
}

Spec user_stack_size() {
  return {.flags = "--user-stack-size",
          .type = "BYTES",
          .help = "Bytes of user stack copied per sample for native unwinding",
          .kind = Kind::kInteger,
          .min = 1024,
          .max = KRAIT_USER_STACK_CAP};
}

Spec gil_only() {
  return {.flags = "--gil-only",
          .help = "Record only threads that hold the GIL (samples are labelled gil=held|released)",
          .kind = Kind::kToggle};
}

}  // namespace krait::options::sampling
