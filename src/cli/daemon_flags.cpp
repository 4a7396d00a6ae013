#include "cli/daemon_flags.h"

namespace krait::cli {

void DaemonCommandFlags::add(CLI::App& command) {
  command.add_option("-c,--config", flags_.config_file, "TOML configuration file")
      ->type_name("FILE");
  command.add_flag("--print-config", flags_.print_config,
                   "Print the effective configuration as TOML and exit");
  options_.add(command, daemon::daemon_options(),
               OptionStyle{.group = "Daemon options", .key_in_help = true, .repeatable = true});
}

const daemon::DaemonFlags& DaemonCommandFlags::collect() {
  flags_.given = options_.given();
  return flags_;
}

}  // namespace krait::cli
