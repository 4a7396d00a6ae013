#include "top/top_options.h"

#include <limits>

#include "options/sampling.h"

namespace krait::top {
namespace {

using options::Kind;
using options::Spec;

template <typename Access>
options::Option<TopOptions> bind(Spec spec, Access access) {
  return options::bind<TopOptions>(std::move(spec), access);
}

std::vector<options::Option<TopOptions>> make_options() {
  namespace sampling = options::sampling;
  using T = TopOptions;
  std::vector<options::Option<TopOptions>> o;
  o.push_back(bind({.flags = "-p,--pid",
                    .type = "PID",
                    .help = "Profile only these processes (repeatable)",
                    .kind = Kind::kIntegers,
                    .min = 1,
                    .max = std::numeric_limits<pid_t>::max()},
                   &T::pids));
  o.push_back(bind({.flags = "-i,--interval",
                    .type = "SECONDS",
                    .help = "Seconds between refreshes (and what one screen covers)",
                    .kind = Kind::kSeconds,
                    .min_seconds = 0.1,
                    .max_seconds = 3600},
                   &T::interval_s)
                  .with_default_shown());
  o.push_back(bind({.flags = "--once",
                    .help = "Print one plain-text snapshot and exit (also when stdout is not a "
                            "terminal)",
                    .kind = Kind::kToggle},
                   &T::once));
  o.push_back(bind({.flags = "-n,--iterations",
                    .type = "N",
                    .help = "Plain mode: snapshots to print, one per interval",
                    .kind = Kind::kInteger,
                    .min = 1,
                    .max = 1'000'000},
                   &T::iterations)
                  .with_default_shown());
  o.push_back(bind({.flags = "--rows",
                    .type = "N",
                    .help = "Plain mode: rows per snapshot (0: all)",
                    .kind = Kind::kInteger,
                    .min = 0,
                    .max = 1'000'000},
                   &T::max_rows));
  o.push_back(bind({.flags = "--sort",
                    .help = "Order of the rows: own samples, total samples or name",
                    .kind = Kind::kChoice,
                    .choices = {{"own", static_cast<int>(SortKey::kOwn)},
                                {"total", static_cast<int>(SortKey::kTotal)},
                                {"name", static_cast<int>(SortKey::kName)}},
                    .ignore_case = true},
                   &T::sort));
  o.push_back(bind({.flags = "--group",
                    .help = "Rows of functions, lines, processes or threads",
                    .kind = Kind::kChoice,
                    .choices = {{"functions", static_cast<int>(Grouping::kFunctions)},
                                {"lines", static_cast<int>(Grouping::kLines)},
                                {"processes", static_cast<int>(Grouping::kProcesses)},
                                {"threads", static_cast<int>(Grouping::kThreads)}},
                    .ignore_case = true},
                   &T::grouping));
  o.push_back(bind({.flags = "--filter",
                    .type = "PID|NAME",
                    .help = "Show only this pid, or processes whose name contains NAME",
                    .kind = Kind::kText},
                   &T::filter));
  o.push_back(bind({.flags = "--native-frames",
                    .help = "Start with native and kernel frames as rows (the k key toggles them)",
                    .kind = Kind::kToggle},
                   &T::native_frames));
  o.push_back(bind(sampling::rate_hz(), &T::frequency_hz).with_default_shown());
  o.push_back(bind(sampling::time_mode(), &T::mode));
  o.push_back(bind(sampling::switch_every(), &T::switch_every));
  o.push_back(bind(sampling::switch_budget(), &T::switch_budget));
  o.push_back(bind(sampling::stack_mode(), &T::stacks));
  o.push_back(bind(sampling::kernel_frames(), &T::kernel_stacks));
  o.push_back(bind(sampling::max_depth(), &T::max_depth).with_default_shown());
  o.push_back(bind(sampling::event(), &T::event));
  o.push_back(bind(sampling::user_stack_size(), &T::user_stack_bytes).with_default_shown());
  Spec ready{.flags = "--ready-fd",
             .type = "FD",
             .help = "Write \"ready\" to this fd once sampling runs (for scripts and tests)",
             .kind = Kind::kInteger,
             .min = -1,
             .max = std::numeric_limits<int>::max()};
  o.push_back(bind(std::move(ready), &T::ready_fd));
  return o;
}

}  // namespace

const std::vector<options::Option<TopOptions>>& top_options() {
  static const std::vector<options::Option<TopOptions>> kOptions = make_options();
  return kOptions;
}

Result<TopOptions> parse_top_options(const options::GivenFlags& given) {
  TopOptions options;
  KRAIT_TRY(options::apply_flags(top_options(), given, options));
  return options;
}

}  // namespace krait::top
