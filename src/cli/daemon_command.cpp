#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/daemon_flags.h"
#include "daemon/daemon.h"

namespace krait::cli {

Runner add_daemon_command(CLI::App& app) {
  auto flags = std::make_shared<DaemonCommandFlags>();
  auto ready_fd = std::make_shared<int>(-1);
  CLI::App* cmd = app.add_subcommand(
      "daemon",
      "Profile every Python process continuously and export a profile per application every "
      "interval (Pyroscope and/or a directory); SIGHUP reloads the configuration");
  flags->add(*cmd);
  cmd->add_option("--ready-fd", *ready_fd,
                  "Write \"ready\" to this fd once sampling runs (for service managers and tests)")
      ->type_name("FD");
  return [flags, ready_fd]() -> Result<int> {
    const daemon::DaemonFlags& given = flags->collect();
    auto config = daemon::resolve_config(given);
    if (!config)
      return config.error();
    if (given.print_config) {
      fmt::print("{}", daemon::format_config_toml(*config));
      return 0;
    }
    spdlog::set_level(spdlog::level::from_str(config->log_level));
    daemon::DaemonRunOptions options;
    options.config = std::move(*config);
    options.flags = &given;
    options.ready_fd = *ready_fd;
    return daemon::run_daemon(std::move(options));
  };
}

}  // namespace krait::cli
