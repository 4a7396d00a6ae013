// krait: entry point. Parses the command line and runs one subcommand; every
// error that reaches here is printed as one line and turned into an exit
// status.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"krait: a system-wide eBPF sampling profiler for CPython", "krait"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "krait 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Debug logging (includes libbpf and attach decisions)");

  auto record = krait::cli::add_record_command(app);
  auto info = krait::cli::add_info_command(app);
  auto offsets = krait::cli::add_offsets_command(app);
  auto daemon = krait::cli::add_daemon_command(app);
  auto top = krait::cli::add_top_command(app);

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
  if (app.got_subcommand("record"))
    result = record();
  else if (app.got_subcommand("info"))
    result = info();
  else if (app.got_subcommand("offsets"))
    result = offsets();
  else if (app.got_subcommand("daemon"))
    result = daemon();
  else if (app.got_subcommand("top"))
    result = top();
  if (!result) {
    std::fprintf(stderr, "krait: error: %s\n", result.error().message.c_str());
    return 1;
  }
  return *result;
}
