// What this host and this process can do: capabilities, kernel features,
// the sampling event. Probed on demand (cheap), reported by `krait info`,
// and checked before a recording so a missing permission is one clear
// sentence instead of a failed syscall deep in a load.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace krait::bpf {

struct Capabilities {
  bool bpf = false;         // CAP_BPF (or CAP_SYS_ADMIN)
  bool perfmon = false;     // CAP_PERFMON (or CAP_SYS_ADMIN)
  bool sys_ptrace = false;  // reading other processes' memory
  bool sys_admin = false;
};

Capabilities effective_capabilities();

// nullopt when a recording can run; else the sentence to print.
std::optional<std::string> missing_capabilities(const Capabilities& caps);

struct KernelFeatures {
  std::string release;        // uname -r
  bool btf = false;           // /sys/kernel/btf/vmlinux
  bool cycles_event = false;  // hardware PMU cycles
  bool cpu_clock_event = false;
  bool bpf_stats_enabled = false;  // kernel.bpf_stats_enabled
  int online_cpus = 0;
  std::vector<std::string> notes;  // anything that limits krait here
};

KernelFeatures probe_kernel_features();

}  // namespace krait::bpf
