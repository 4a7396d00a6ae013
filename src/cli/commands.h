// The subcommands of `krait`. Each registers its options on the CLI11 app
// and returns the exit status when run; errors are printed by main().
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "util/result.h"

namespace krait::cli {

using Runner = std::function<Result<int>()>;

Runner add_record_command(CLI::App& app);
Runner add_info_command(CLI::App& app);
Runner add_offsets_command(CLI::App& app);
Runner add_daemon_command(CLI::App& app);
Runner add_dump_command(CLI::App& app);
Runner add_convert_command(CLI::App& app);
Runner add_top_command(CLI::App& app);

}  // namespace krait::cli
