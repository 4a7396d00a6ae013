// `krait info`: what this host lets krait do (kernel features,
// permissions), which interpreter layouts it knows, and how every Python
// process looks to the attach (profilable, or refused and why). The report
// is gathered once, then printed as text or JSON.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "bpf/features.h"
#include "python/attach.h"

namespace krait::info {

struct ProcessReport {
  pid_t pid;
  std::string name;
  python::Attachment attachment;
};

struct HostReport {
  bpf::KernelFeatures features;
  bpf::Capabilities capabilities;
  std::optional<std::string> missing;  // capabilities `record` lacks
  std::vector<std::string> offset_tables;
  std::vector<std::string> debug_offsets_layouts;
  // Python processes (every process of `only`, Python or not).
  std::vector<ProcessReport> processes;
};

// Looks at every process (or those of `only`) on Inspector workers: one that
// does not answer within 30 s is reported as stalled, never waited for.
HostReport survey_host(const std::vector<pid_t>& only);
std::string report_text(const HostReport& report);
std::string report_json(const HostReport& report);

}  // namespace krait::info
