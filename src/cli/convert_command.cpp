// `krait convert IN -f FORMAT [-o OUT]`: reads a pprof file (one krait
// recorded, or any gzipped pprof) and writes it in another format.
// The input is treated as untrusted: read bounded, validated, imported
// without trusting any id (export/pprof_import.h). Every failure is one line
// naming the file and the problem, exit status 1.
#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>

#include "cli/commands.h"
#include "export/pprof.h"
#include "export/pprof_import.h"
#include "export/write_profile.h"

namespace krait::cli {
namespace {

struct ConvertArgs {
  std::string input;
  std::string format;
  std::string output;
};

// IN without a pprof file's usual ending, then the format's extension:
// profile.pb.gz -> profile.html.
std::string default_output(std::string_view input, exporter::OutputFormat format) {
  for (std::string_view ending : {".pb.gz", ".pprof.gz", ".pprof", ".gz"}) {
    if (input.size() > ending.size() && input.ends_with(ending)) {
      input.remove_suffix(ending.size());
      break;
    }
  }
  return fmt::format("{}.{}", input, exporter::output_format_info(format).extension);
}

Result<int> convert(const ConvertArgs& args) {
  auto format = exporter::parse_output_format(args.format);
  if (!format)
    return format.error();
  struct stat st {};
  if (::stat(args.input.c_str(), &st) != 0)
    return make_error("cannot read {}: {}", args.input, std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return make_error("{} is not a regular file; give a pprof file (.pb.gz)", args.input);
  auto pprof = exporter::read_pprof_file(args.input);
  if (!pprof)
    return make_error("{} is not a readable pprof file: {}", args.input, pprof.error().message);
  auto profile = exporter::profile_from_pprof(*pprof);
  if (!profile)
    return make_error("{} is a corrupt pprof file: {}", args.input, profile.error().message);
  const std::string output =
      args.output.empty() ? default_output(args.input, *format) : args.output;
  if (output == args.input)
    return make_error("the output would replace the input {}; name another with -o", args.input);
  auto written = exporter::write_profile_file(*profile, *format, output);
  if (!written)
    return make_error("writing {}: {}", output, written.error().message);
  fmt::print(stderr, "krait: wrote {} ({} samples, {} stacks)\n", output, profile->total_count(),
             profile->distinct_samples());
  return 0;
}

}  // namespace

Runner add_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  std::string names;
  for (const auto& info : exporter::output_formats())
    names += fmt::format("{}{}", names.empty() ? "" : ", ", info.name);
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a recorded pprof file to another format (" + names + ")");
  std::string choices;
  for (const auto& info : exporter::output_formats())
    choices += fmt::format("{}{}", choices.empty() ? "" : "|", info.name);
  cmd->add_option("input", args->input, "pprof file (.pb.gz) to read")
      ->required()
      ->type_name("FILE");
  cmd->add_option("-f,--format", args->format, "Output format")->required()->type_name(choices);
  cmd->add_option("-o,--output", args->output,
                  "Output file (default: the input's name with the format's extension)")
      ->type_name("FILE");
  return [args]() { return convert(*args); };
}

}  // namespace krait::cli
