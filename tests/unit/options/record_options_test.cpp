// `krait record`'s options as the command line gives them: defaults, every
// flag, one-line errors naming the flag, and the sampling options spelled
// and checked as `krait daemon` has them.
#include "record/record_options.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "cli/option_flags.h"
#include "daemon/config.h"

namespace krait::test {
namespace {

using record::RecordOptions;

// Parses `args` as the `record` subcommand would.
Result<RecordOptions> parse(std::vector<std::string> args) {
  CLI::App app{"test"};
  cli::OptionFlags flags;
  flags.add(app, record::record_options(), cli::OptionStyle{});
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return make_error("CLI11: {}", e.what());
  }
  return record::parse_record_options(flags.given());
}

std::string error_of(std::vector<std::string> args) {
  auto options = parse(std::move(args));
  EXPECT_FALSE(options.ok());
  if (options.ok())
    return "";
  EXPECT_EQ(options.error().message.find('\n'), std::string::npos) << options.error().message;
  return options.error().message;
}

TEST(RecordOptionsTest, NoFlagsGiveTheDefaults) {
  auto options = parse({});
  ASSERT_TRUE(options.ok()) << options.error().message;
  const RecordOptions defaults;
  EXPECT_EQ(options->frequency_hz, defaults.frequency_hz);
  EXPECT_EQ(options->max_depth, defaults.max_depth);
  EXPECT_EQ(options->user_stack_bytes, defaults.user_stack_bytes);
  EXPECT_EQ(options->stacks, defaults.stacks);
  EXPECT_EQ(options->kernel_stacks, defaults.kernel_stacks);
  EXPECT_EQ(options->builtin_offsets, defaults.builtin_offsets);
  EXPECT_EQ(options->ready_fd, -1);
  EXPECT_FALSE(options->duration_s.has_value());
}

TEST(RecordOptionsTest, EveryFlagSetsItsField) {
  auto o = parse({"-d",
                  "2.5",
                  "-o",
                  "out.pb.gz",
                  "-p",
                  "12",
                  "34",
                  "-r",
                  "250",
                  "-f",
                  "FOLDED",
                  "--max-depth",
                  "64",
                  "--event",
                  "cpu-clock",
                  "--offsets",
                  "/proc/self/status",
                  "--ready-fd",
                  "3",
                  "--stack-mode",
                  "python",
                  "--no-kernel",
                  "--all-processes",
                  "--user-stack-size",
                  "8192",
                  "--gil-only",
                  "--stats-json",
                  "s.json",
                  "--measure-sampler-cost",
                  "--no-builtin-offsets"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->duration_s, 2.5);
  EXPECT_EQ(o->output, "out.pb.gz");
  EXPECT_EQ(o->pids, (std::vector<pid_t>{12, 34}));
  EXPECT_EQ(o->frequency_hz, 250u);
  EXPECT_EQ(o->format, record::OutputFormat::kFolded);
  EXPECT_EQ(o->max_depth, 64u);
  EXPECT_EQ(o->event, bpf::EventSource::kCpuClock);
  EXPECT_EQ(o->offsets_files, std::vector<std::string>{"/proc/self/status"});
  EXPECT_EQ(o->ready_fd, 3);
  EXPECT_EQ(o->stacks, record::StackMode::kPython);
  EXPECT_FALSE(o->kernel_stacks);
  EXPECT_TRUE(o->all_processes);
  EXPECT_EQ(o->user_stack_bytes, 8192u);
  EXPECT_TRUE(o->gil_only);
  EXPECT_EQ(o->stats_json, "s.json");
  EXPECT_TRUE(o->measure_cost);
  EXPECT_FALSE(o->builtin_offsets);
}

TEST(RecordOptionsTest, FormatAcceptsEveryOutputFormat) {
  EXPECT_EQ(parse({"-f", "speedscope"})->format, record::OutputFormat::kSpeedscope);
  EXPECT_EQ(parse({"--format", "HTML"})->format, record::OutputFormat::kHtml);
  EXPECT_FALSE(parse({"-f", "svg"}).ok());
}

TEST(RecordOptionsTest, OutOfRangeIsOneLineNamingTheFlag) {
  EXPECT_EQ(error_of({"--rate", "0"}), "--rate: must be between 1 and 10000, got 0");
  EXPECT_EQ(error_of({"-r", "20000"}), "--rate: must be between 1 and 10000, got 20000");
  EXPECT_EQ(error_of({"--rate", "fast"}), "--rate: expected an integer, got \"fast\"");
  EXPECT_EQ(error_of({"--max-depth", "0"}), "--max-depth: must be between 1 and 1024, got 0");
  EXPECT_EQ(error_of({"--user-stack-size", "512"}),
            "--user-stack-size: must be between 1024 and 65536, got 512");
  EXPECT_EQ(error_of({"-d", "0"}), "--duration: must be more than 0 seconds, got 0");
  EXPECT_EQ(error_of({"-f", "xml"}),
            "--format: expected one of pprof|folded|speedscope|html, got \"xml\"");
  EXPECT_EQ(error_of({"--stacks", "native"}),
            "--stacks,--stack-mode: expected one of python|mixed, got \"native\"");
  EXPECT_EQ(error_of({"-p", "0"}), "--pid: must be between 1 and 2147483647, got 0");
  EXPECT_EQ(error_of({"--offsets", "/nonexistent/offsets.json"}),
            "--offsets: file does not exist: /nonexistent/offsets.json");
}

// One description: record and daemon spell, explain and limit the sampling
// options alike.
TEST(RecordOptionsTest, SamplingOptionsAreTheDaemons) {
  std::map<std::string, const options::Spec*> daemon_flags;
  for (const auto& o : daemon::daemon_options())
    daemon_flags[o.spec.name()] = &o.spec;
  int shared = 0;
  for (const auto& o : record::record_options()) {
    auto it = daemon_flags.find(o.spec.name());
    if (it == daemon_flags.end())
      continue;
    ++shared;
    EXPECT_EQ(o.spec.flags, it->second->flags);
    EXPECT_EQ(o.spec.help, it->second->help);
    EXPECT_EQ(o.spec.min, it->second->min);
    EXPECT_EQ(o.spec.max, it->second->max);
    EXPECT_EQ(o.spec.type_name(), it->second->type_name());
  }
  // --rate, --stacks, --no-kernel, --all-processes, --mode, --switch-every,
  // --switch-budget
  EXPECT_EQ(shared, 7);
}

}  // namespace
}  // namespace krait::test
