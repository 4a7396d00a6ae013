#include "record/record_options.h"

#include <limits>

#include "options/sampling.h"

namespace krait::record {
namespace {

using options::Kind;
using options::Spec;

template <typename Access>
options::Option<RecordOptions> bind(Spec spec, Access access) {
  return options::bind<RecordOptions>(std::move(spec), access);
}

Spec toggle(const char* flags, const char* help, bool flag_sets = true) {
  return {.flags = flags, .help = help, .kind = Kind::kToggle, .flag_sets = flag_sets};
}

Spec text(const char* flags, const char* type, const char* help) {
  return {.flags = flags, .type = type, .help = help, .kind = Kind::kText};
}

// Every format export/write_profile.h knows, by the names it parses.
std::vector<options::Choice> format_choices() {
  std::vector<options::Choice> choices;
  for (const auto& info : exporter::output_formats())
    choices.push_back({std::string(info.name), static_cast<int>(info.format)});
  return choices;
}

std::vector<options::Option<RecordOptions>> make_options() {
  namespace sampling = options::sampling;
  using R = RecordOptions;
  std::vector<options::Option<RecordOptions>> o;
  o.push_back(bind({.flags = "-d,--duration",
                    .type = "SECONDS",
                    .help = "Seconds to record (default: until Ctrl-C)",
                    .kind = Kind::kSeconds,
                    .min_seconds = 0,
                    .max_seconds = std::numeric_limits<double>::max(),
                    .min_exclusive = true},
                   &R::duration_s));
  o.push_back(bind(
      text("-o,--output", "FILE",
           "Output file (default: krait-<host>-<time>.pb.gz, .folded, .speedscope.json or .html)"),
      &R::output));
  o.push_back(bind({.flags = "-p,--pid",
                    .type = "PID",
                    .help = "Profile only these processes (repeatable)",
                    .kind = Kind::kIntegers,
                    .min = 1,
                    .max = std::numeric_limits<pid_t>::max()},
                   &R::pids));
  o.push_back(bind(sampling::rate_hz(), &R::frequency_hz).with_default_shown());
  o.push_back(bind({.flags = "-f,--format",
                    .help = "pprof (gzipped profile.proto), folded text, speedscope JSON or html "
                            "(a self-contained flame graph page)",
                    .kind = Kind::kChoice,
                    .choices = format_choices(),
                    .ignore_case = true},
                   &R::format));
  o.push_back(bind(sampling::max_depth(), &R::max_depth).with_default_shown());
  o.push_back(bind(sampling::event(), &R::event));
  o.push_back(bind({.flags = "--offsets",
                    .type = "FILE",
                    .help = "Offsets table for a custom interpreter build (from `krait offsets "
                            "generate`)",
                    .kind = Kind::kList,
                    .existing_file = true},
                   &R::offsets_files));
  o.push_back(bind({.flags = "--ready-fd",
                    .type = "FD",
                    .help = "Write \"ready\" to this fd once sampling runs (for scripts and tests)",
                    .kind = Kind::kInteger,
                    .min = -1,
                    .max = std::numeric_limits<int>::max()},
                   &R::ready_fd));
  o.push_back(bind(sampling::time_mode(), &R::mode));
  o.push_back(bind(sampling::switch_every(), &R::switch_every));
  o.push_back(bind(sampling::switch_budget(), &R::switch_budget));
  o.push_back(bind(sampling::stack_mode(), &R::stacks));
  o.push_back(bind(sampling::kernel_frames(), &R::kernel_stacks));
  o.push_back(bind(sampling::all_processes(), &R::all_processes));
  o.push_back(bind(sampling::user_stack_size(), &R::user_stack_bytes).with_default_shown());
  o.push_back(bind(sampling::gil_only(), &R::gil_only));
  o.push_back(bind(text("--stats-json", "FILE",
                        "Also write the end-of-run summary (per-process samples, losses, costs) "
                        "as JSON"),
                   &R::stats_json));
  o.push_back(bind(toggle("--measure-sampler-cost",
                          "Time every stack walk in the kernel and report its distribution "
                          "(benchmarks)"),
                   &R::measure_cost));
  Spec no_builtin = toggle("--no-builtin-offsets", "Ignore the built-in offset tables (tests)",
                           /*flag_sets=*/false);
  no_builtin.hidden = true;
  o.push_back(bind(std::move(no_builtin), &R::builtin_offsets));
  return o;
}

}  // namespace

const std::vector<options::Option<RecordOptions>>& record_options() {
  static const std::vector<options::Option<RecordOptions>> kOptions = make_options();
  return kOptions;
}

Result<RecordOptions> parse_record_options(const options::GivenFlags& given) {
  RecordOptions options;
  KRAIT_TRY(options::apply_flags(record_options(), given, options));
  return options;
}

}  // namespace krait::record
