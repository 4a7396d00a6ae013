#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "daemon/config.h"
#include "daemon/daemon.h"

namespace krait::cli {

Runner add_daemon_command(CLI::App& app) {
  auto flags = std::make_shared<daemon::DaemonFlags>();
  auto ready_fd = std::make_shared<int>(-1);
  CLI::App* cmd = app.add_subcommand(
      "daemon",
      "Profile every Python process continuously and export a profile per application every "
      "interval (Pyroscope and/or a directory); SIGHUP reloads the configuration");
  daemon::add_daemon_options(*cmd, *flags);
  cmd->add_option("--ready-fd", *ready_fd,
                  "Write \"ready\" to this fd once sampling runs (for service managers and tests)");
  return [flags, ready_fd]() -> Result<int> {
    auto config = daemon::resolve_config(*flags);
    if (!config)
      return config.error();
    if (flags->print_config) {
      fmt::print("{}", daemon::format_config_toml(*config));
      return 0;
    }
    spdlog::set_level(spdlog::level::from_str(config->log_level));
    daemon::DaemonRunOptions options;
    options.config = std::move(*config);
    options.flags = flags.get();
    options.ready_fd = *ready_fd;
    return daemon::run_daemon(std::move(options));
  };
}

}  // namespace krait::cli
