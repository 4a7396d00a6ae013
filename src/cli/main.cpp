// krait: entry point. Parses the command line and runs one subcommand; every
// error that reaches here is printed as one line and turned into an exit
// status.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <utility>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"krait: a system-wide eBPF sampling profiler for CPython", "krait"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "krait 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Debug logging (includes libbpf and attach decisions)");

  // In --help order: the everyday commands first.
  using krait::cli::Runner;
  const std::pair<const char*, Runner> commands[] = {
      {"record", krait::cli::add_record_command(app)},
      {"top", krait::cli::add_top_command(app)},
      {"dump", krait::cli::add_dump_command(app)},
      {"convert", krait::cli::add_convert_command(app)},
      {"daemon", krait::cli::add_daemon_command(app)},
      {"info", krait::cli::add_info_command(app)},
      {"offsets", krait::cli::add_offsets_command(app)},
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto logger = spdlog::stderr_color_mt("krait");
  logger->set_pattern("krait: %^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);

  krait::Result<int> result = 0;
  for (const auto& [name, run] : commands)
    if (app.got_subcommand(name))
      result = run();
  if (!result) {
    std::fprintf(stderr, "krait: error: %s\n", result.error().message.c_str());
    return 1;
  }
  return *result;
}
