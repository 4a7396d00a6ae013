// `krait dump [-p PID ...] [--native] [--tasks] [--json]`: every thread's current
// stack of the named (or every) Python process, without stopping them.
#include <fmt/format.h>

#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "dump/dump.h"

namespace krait::cli {

Runner add_dump_command(CLI::App& app) {
  auto options = std::make_shared<dump::DumpOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "dump", "Print the current stack of every thread of Python processes, without stopping them");
  cmd->add_option("-p,--pid", options->pids,
                  "Only these processes (exit 1 if one is not Python or cannot be read)")
      ->type_name("PID");
  cmd->add_flag("--native", options->native,
                "Native and kernel frames too, merged with the Python frames (blocked threads)");
  cmd->add_flag("--tasks,--asyncio", options->tasks,
                "The asyncio tasks of each event-loop thread: name, state, coroutine chain, who "
                "awaits whom (Python 3.14+)");
  cmd->add_flag("--json", *json, "Machine-readable output");
  cmd->add_option("--max-depth", options->max_depth,
                  fmt::format("Python frames shown per thread (1 to {})", KRAIT_PY_FRAMES_CAP))
      ->type_name("FRAMES")
      ->default_str(std::to_string(options->max_depth))
      // Checked, but not described: the help says the range in words.
      ->check(CLI::Validator(CLI::Range(1, KRAIT_PY_FRAMES_CAP)).description(""));
  return [options, json]() -> Result<int> {
    const dump::DumpReport report = dump::dump_processes(*options);
    std::fputs((*json ? dump::dump_json(report) : dump::dump_text(report)).c_str(), stdout);
    std::fflush(stdout);
    for (const std::string& failure : report.failures)
      std::fprintf(stderr, "krait: dump: %s\n", failure.c_str());
    return report.failures.empty() ? 0 : 1;
  };
}

}  // namespace krait::cli
