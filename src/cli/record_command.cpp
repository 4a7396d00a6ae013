#include "cli/commands.h"
#include "cli/option_flags.h"
#include "record/record_options.h"

namespace krait::cli {

Runner add_record_command(CLI::App& app) {
  auto flags = std::make_shared<OptionFlags>();
  CLI::App* cmd = app.add_subcommand(
      "record", "Sample Python processes and write a profile (Ctrl-C or SIGTERM stops and writes)");
  flags->add(*cmd, record::record_options(), OptionStyle{});
  return [flags]() -> Result<int> {
    auto options = record::parse_record_options(flags->given());
    if (!options)
      return options.error();
    return record::run_record(*options);
  };
}

}  // namespace krait::cli
