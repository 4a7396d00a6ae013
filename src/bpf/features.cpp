#include "bpf/features.h"

#include <linux/capability.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>

#include "util/files.h"
#include "util/unique_fd.h"

namespace krait::bpf {
namespace {

bool has_cap(const __user_cap_data_struct (&data)[2], int cap) {
  return (data[cap / 32].effective >> (cap % 32)) & 1;
}

bool event_opens(uint32_t type, uint64_t config) {
  perf_event_attr attr{};
  attr.size = sizeof attr;
  attr.type = type;
  attr.config = config;
  attr.disabled = 1;
  attr.sample_period = 1'000'000;
  UniqueFd fd(
      static_cast<int>(::syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)));
  return fd.valid();
}

}  // namespace

Capabilities effective_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  Capabilities caps;
  if (::syscall(SYS_capget, &header, data) != 0)
    return caps;
  caps.sys_admin = has_cap(data, CAP_SYS_ADMIN);
  caps.bpf = has_cap(data, CAP_BPF) || caps.sys_admin;
  caps.perfmon = has_cap(data, CAP_PERFMON) || caps.sys_admin;
  caps.sys_ptrace = has_cap(data, CAP_SYS_PTRACE);
  return caps;
}

std::optional<std::string> missing_capabilities(const Capabilities& caps) {
  std::string missing;
  auto add = [&](const char* name) {
    if (!missing.empty())
      missing += ", ";
    missing += name;
  };
  if (!caps.bpf)
    add("CAP_BPF");
  if (!caps.perfmon)
    add("CAP_PERFMON");
  if (!caps.sys_ptrace)
    add("CAP_SYS_PTRACE");
  if (missing.empty())
    return std::nullopt;
  return "krait needs CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE; missing " + missing +
         ": run it as root (sudo) or grant those capabilities";
}

KernelFeatures probe_kernel_features() {
  KernelFeatures f;
  utsname u{};
  if (uname(&u) == 0)
    f.release = u.release;
  std::error_code ec;
  f.btf = std::filesystem::exists("/sys/kernel/btf/vmlinux", ec);
  if (!f.btf)
    f.notes.push_back("no kernel BTF (/sys/kernel/btf/vmlinux): the sampler cannot load");
  f.cycles_event = event_opens(PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES);
  f.cpu_clock_event = event_opens(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK);
  if (!f.cycles_event)
    f.notes.push_back("no hardware cycles event: sampling uses cpu-clock");
  if (auto stats = read_file("/proc/sys/kernel/bpf_stats_enabled"))
    f.bpf_stats_enabled = !stats->empty() && (*stats)[0] == '1';
  f.online_cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  return f;
}

}  // namespace krait::bpf
