// `krait daemon`'s command line: --config, --print-config and one flag per
// configuration key (daemon::daemon_options()). Apart from daemon_command
// so that the configuration tests parse command lines as `krait` does.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/option_flags.h"
#include "daemon/config.h"

namespace krait::cli {

class DaemonCommandFlags {
 public:
  // Registers the flags on `command`; this object must outlive the parse.
  void add(CLI::App& command);
  // After parsing: what daemon::resolve_config() takes.
  const daemon::DaemonFlags& collect();

 private:
  daemon::DaemonFlags flags_;
  OptionFlags options_;
};

}  // namespace krait::cli
