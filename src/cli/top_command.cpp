#include "cli/commands.h"
#include "cli/option_flags.h"
#include "top/top_options.h"

namespace krait::cli {

Runner add_top_command(CLI::App& app) {
  auto flags = std::make_shared<OptionFlags>();
  CLI::App* cmd = app.add_subcommand(
      "top",
      "Live view of the functions using CPU in Python processes (q quits; plain text "
      "without a terminal or with --once)");
  flags->add(*cmd, top::top_options(), OptionStyle{});
  return [flags]() -> Result<int> {
    auto options = top::parse_top_options(flags->given());
    if (!options)
      return options.error();
    return top::run_top(*options);
  };
}

}  // namespace krait::cli
