// The option model: values checked against their Spec (ranges, choices,
// sizes, files), bound to fields, and flag errors that name the flag.
#include "options/option.h"

#include <gtest/gtest.h>

#include "bpf/sampling_options.h"
#include "options/sampling.h"

namespace krait::options {
namespace {

enum class Color : uint8_t { kRed, kGreen };

struct Target {
  uint32_t count = 7;
  Color color = Color::kRed;
  bool on = true;
  std::optional<double> seconds;
  std::vector<int> ids;
  std::map<std::string, std::string> labels{{"a", "1"}};
  uint64_t size = 1 << 20;
};

Spec count_spec() {
  return {.flags = "-n,--count", .type = "N", .kind = Kind::kInteger, .min = 1, .max = 100};
}

Spec color_spec() {
  return {.key = "look.color",
          .flags = "--color,--colour",
          .kind = Kind::kChoice,
          .choices = {{"red", static_cast<int>(Color::kRed)},
                      {"green", static_cast<int>(Color::kGreen)}},
          .ignore_case = true};
}

std::vector<Option<Target>> table() {
  std::vector<Option<Target>> t;
  t.push_back(bind<Target>(count_spec(), &Target::count));
  t.push_back(bind<Target>(color_spec(), &Target::color));
  t.push_back(
      bind<Target>({.flags = "--off", .kind = Kind::kToggle, .flag_sets = false}, &Target::on));
  t.push_back(bind<Target>({.flags = "--seconds",
                            .kind = Kind::kSeconds,
                            .min_seconds = 0,
                            .max_seconds = 10,
                            .min_exclusive = true},
                           &Target::seconds));
  t.push_back(
      bind<Target>({.flags = "--id", .kind = Kind::kIntegers, .min = 1, .max = 9}, &Target::ids));
  t.push_back(
      bind<Target>({.key = "labels", .flags = "--label", .kind = Kind::kLabels}, &Target::labels));
  t.push_back(bind<Target>({.flags = "--size", .kind = Kind::kBytes}, &Target::size));
  return t;
}

std::string flag_error(const GivenFlags& given) {
  Target t;
  auto applied = apply_flags(table(), given, t);
  EXPECT_FALSE(applied.ok());
  if (applied.ok())
    return "";
  EXPECT_EQ(applied.error().message.find('\n'), std::string::npos);
  return applied.error().message;
}

TEST(OptionTest, NamesComeFromTheFlags) {
  EXPECT_EQ(count_spec().name(), "--count");
  EXPECT_EQ(count_spec().long_flags(), "--count");
  EXPECT_EQ(color_spec().long_flags(), "--color,--colour");
  EXPECT_EQ(color_spec().type_name(), "red|green");
  EXPECT_EQ(count_spec().type_name(), "N");
}

TEST(OptionTest, GivenFlagsSetTheirFields) {
  Target t;
  ASSERT_TRUE(apply_flags(table(),
                          {{"--count", {"5", "42"}},
                           {"--color", {"GREEN"}},
                           {"--off", {}},
                           {"--seconds", {"2.5"}},
                           {"--id", {"3", "4"}},
                           {"--label", {"b=2", "a=x=y"}},
                           {"--size", {"2KiB"}}},
                          t)
                  .ok());
  EXPECT_EQ(t.count, 42u);  // the last one wins
  EXPECT_EQ(t.color, Color::kGreen);
  EXPECT_FALSE(t.on);
  EXPECT_EQ(t.seconds, 2.5);
  EXPECT_EQ(t.ids, (std::vector<int>{3, 4}));
  EXPECT_EQ(t.labels, (std::map<std::string, std::string>{{"a", "x=y"}, {"b", "2"}}));
  EXPECT_EQ(t.size, 2048u);
}

TEST(OptionTest, AbsentFlagsKeepTheDefaults) {
  Target t;
  ASSERT_TRUE(apply_flags(table(), {}, t).ok());
  EXPECT_EQ(t.count, 7u);
  EXPECT_TRUE(t.on);
  EXPECT_FALSE(t.seconds.has_value());
}

TEST(OptionTest, ErrorsAreOneLineNamingTheFlag) {
  EXPECT_EQ(flag_error({{"--count", {"0"}}}), "--count: must be between 1 and 100, got 0");
  EXPECT_EQ(flag_error({{"--count", {"1x"}}}), "--count: expected an integer, got \"1x\"");
  EXPECT_EQ(flag_error({{"--color", {"blue"}}}),
            "--color,--colour: expected one of red|green, got \"blue\"");
  EXPECT_EQ(flag_error({{"--seconds", {"0"}}}),
            "--seconds: must be between 0 and 10 seconds, got 0");
  EXPECT_EQ(flag_error({{"--seconds", {"soon"}}}),
            "--seconds: expected a number of seconds, got \"soon\"");
  EXPECT_EQ(flag_error({{"--id", {"3", "10"}}}), "--id: must be between 1 and 9, got 10");
  EXPECT_EQ(flag_error({{"--label", {"novalue"}}}),
            "--label: expected NAME=VALUE, got \"novalue\"");
  EXPECT_NE(flag_error({{"--size", {"3 parsecs"}}}).find("unknown size unit"), std::string::npos);
}

TEST(OptionTest, ChoicesAreExactUnlessCaseIsIgnored) {
  Spec exact = color_spec();
  exact.ignore_case = false;
  EXPECT_FALSE(value_from_flag(exact, {"Red"}).ok());
  auto v = value_from_flag(color_spec(), {"Red"});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::get<std::string>(*v), "red");  // the canonical spelling
}

TEST(OptionTest, FilesMustExistWhenTheSpecSaysSo) {
  const Spec file{.flags = "--file", .kind = Kind::kList, .existing_file = true};
  EXPECT_TRUE(value_from_flag(file, {"/proc/self/status"}).ok());
  auto missing = value_from_flag(file, {"/proc/self/status", "/nonexistent/x"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "file does not exist: /nonexistent/x");
}

TEST(OptionTest, DefaultsAsHelpShowsThem) {
  const auto t = table();
  const Target defaults;
  EXPECT_EQ(value_text(t[0].spec, t[0].get(defaults)), "7");
  EXPECT_EQ(value_text(t[1].spec, t[1].get(defaults)), "red");
  EXPECT_EQ(value_text(t.back().spec, t.back().get(defaults)), "1MiB");
}

TEST(OptionTest, ByteSizes) {
  EXPECT_EQ(*parse_byte_size("64MiB"), 64u << 20);
  EXPECT_EQ(*parse_byte_size("1g"), 1u << 30);
  EXPECT_EQ(*parse_byte_size("512"), 512u);
  EXPECT_FALSE(parse_byte_size("99999999999T").ok());
  EXPECT_EQ(format_byte_size(3u << 20), "3MiB");
  EXPECT_EQ(format_byte_size(1000), "1000");
}

// The sampling options are one description whichever command uses them.
TEST(OptionTest, SamplingOptionsMatchTheSamplersLimits) {
  const Spec rate = sampling::rate_hz();
  EXPECT_EQ(rate.key, "sampling.rate_hz");
  EXPECT_EQ(rate.name(), "--rate");
  EXPECT_EQ(rate.min, bpf::kMinFrequencyHz);
  EXPECT_EQ(rate.max, bpf::kMaxFrequencyHz);
  EXPECT_EQ(sampling::stack_mode().type_name(), "python|mixed");
  EXPECT_EQ(sampling::kernel_frames().flag_sets, false);
  EXPECT_EQ(sampling::all_processes().key, "sampling.all_processes");
}

}  // namespace
}  // namespace krait::options
