#include "cli/commands.h"
#include "info/info.h"

namespace krait::cli {

Runner add_info_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto pids = std::make_shared<std::vector<pid_t>>();
  CLI::App* cmd =
      app.add_subcommand("info", "Show kernel features, permissions and the Python processes seen");
  cmd->add_flag("--json", *json, "Machine-readable output");
  cmd->add_option("-p,--pid", *pids,
                  "Only these processes (also shows why a pid is not profilable)")
      ->type_name("PID");
  return [json, pids]() -> Result<int> {
    const info::HostReport report = info::survey_host(*pids);
    if (*json)
      fmt::print("{}\n", info::report_json(report));
    else
      fmt::print("{}", info::report_text(report));
    return 0;
  };
}

}  // namespace krait::cli
