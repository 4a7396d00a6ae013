// Which processes `krait daemon` profiles, from the configuration's
// `processes` section.
//
// With no include criterion every process qualifies (the daemon still
// profiles only those that turn out to run Python). Otherwise a process
// qualifies when it matches ANY include criterion:
// - names: equal to the process's comm, its executable's base name, or its
//   default application or program name (app_name.h), so "celery" selects
//   `python -m celery -A proj worker` whose comm is "python3", as "proj" does;
// - cmdline_regex: found anywhere in the command line (arguments joined by
//   single spaces; RE2 syntax, cmdline_regex.h);
// - cgroups: the process's cgroup path (container.h) is this path or below
//   it ("/system.slice/app.service" selects that service);
// - container_ids: the container id starts with this (case-insensitive).
// Exclusions (exclude_names, exclude_cmdline_regex, same matching) win
// over inclusions.
//
// Threading: immutable after create(); thread-safe.
#pragma once

#include <string>
#include <vector>

#include "daemon/app_name.h"
#include "daemon/cmdline_regex.h"
#include "daemon/config.h"
#include "proc/container.h"
#include "util/result.h"

namespace krait::daemon {

class ProcessFilter {
 public:
  // Error names the key whose regex does not compile.
  static Result<ProcessFilter> create(const ProcessSelection& selection);

  bool matches(const ProcessIdentity& process, const proc::ContainerInfo& container) const;
  // True when no include criterion is set.
  bool selects_all() const { return selects_all_; }

 private:
  ProcessFilter() = default;
  ProcessSelection selection_;
  std::vector<CmdlineRegex> include_regex_;
  std::vector<CmdlineRegex> exclude_regex_;
  bool selects_all_ = true;
};

}  // namespace krait::daemon
