// Options as TOML: keys and sections, one-line errors with file and line,
// and printing that reads back to the same values.
#include "options/toml.h"

#include <gtest/gtest.h>

namespace krait::options {
namespace {

struct Config {
  std::string name = "x";
  int64_t count = 3;
  double timeout = 1.5;
  bool on = false;
  std::vector<std::string> names;
  std::map<std::string, std::string> labels;
  uint64_t size = 1 << 20;
};

std::vector<Option<Config>> table() {
  std::vector<Option<Config>> t;
  t.push_back(bind<Config>({.key = "name", .flags = "--name", .help = "The name"}, &Config::name));
  t.push_back(bind<Config>(
      {.key = "run.count", .flags = "--count", .kind = Kind::kInteger, .min = 0, .max = 9},
      &Config::count));
  t.push_back(bind<Config>({.key = "run.timeout_s",
                            .flags = "--timeout",
                            .kind = Kind::kSeconds,
                            .min_seconds = 0.001,
                            .max_seconds = 60},
                           &Config::timeout));
  t.push_back(bind<Config>({.key = "run.on", .flags = "--on", .kind = Kind::kToggle}, &Config::on));
  t.push_back(
      bind<Config>({.key = "run.names", .flags = "--n", .kind = Kind::kList}, &Config::names));
  t.push_back(
      bind<Config>({.key = "run.size", .flags = "--size", .kind = Kind::kBytes}, &Config::size));
  t.push_back(
      bind<Config>({.key = "labels", .flags = "--label", .kind = Kind::kLabels}, &Config::labels));
  return t;
}

Result<Config> read(std::string_view text) {
  Config c;
  KRAIT_TRY(read_toml(text, "t.toml", table(), c));
  return c;
}

TEST(OptionTomlTest, ReadsKeysOfSections) {
  auto c = read(
      "name = \"n\"\n[run]\ncount = 9\ntimeout_s = 2\non = true\nnames = [\"a\"]\n"
      "size = \"2KiB\"\n[labels]\nenv = \"prod\"\n");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->name, "n");
  EXPECT_EQ(c->count, 9);
  EXPECT_EQ(c->timeout, 2.0);
  EXPECT_TRUE(c->on);
  EXPECT_EQ(c->names, std::vector<std::string>{"a"});
  EXPECT_EQ(c->size, 2048u);
  EXPECT_EQ(c->labels.at("env"), "prod");
}

TEST(OptionTomlTest, ErrorsNameTheFileLineAndKey) {
  struct Case {
    const char* toml;
    const char* error;
  };
  const Case cases[] = {
      {"[run]\ncount = 10\n", "t.toml:2: run.count: must be between 0 and 9, got 10"},
      {"[run]\ncount = \"1\"\n", "t.toml:2: run.count: expected an integer, got a string"},
      {"[run]\non = 1\n", "t.toml:2: run.on: expected true or false, got an integer"},
      {"[run]\ntimeout_s = 0\n", "t.toml:2: run.timeout_s: must be between 0.001 and 60 seconds"},
      {"[runn]\ncount = 1\n", "t.toml:1: unknown key 'runn'"},
      {"run.cnt = 1\n", "t.toml:1: unknown key 'run.cnt'"},
      {"[labels]\nenv = 1\n", "labels: label env must be a string, got an integer"},
      {"[run]\nsize = -1\n", "run.size: must not be negative, got -1"},
  };
  for (const Case& c : cases) {
    auto config = read(c.toml);
    ASSERT_FALSE(config.ok()) << c.toml;
    EXPECT_NE(config.error().message.find(c.error), std::string::npos) << config.error().message;
    EXPECT_EQ(config.error().message.find('\n'), std::string::npos);
  }
}

TEST(OptionTomlTest, PrintedReadsBackEqual) {
  Config c;
  c.name = "quote \" and \\ and \n";
  c.count = 4;
  c.timeout = 3;
  c.on = true;
  c.names = {"a", "b"};
  c.labels = {{"env", "prod"}, {"odd key", "v"}};
  c.size = 3 * 1024 * 1024 + 1;
  const std::string printed = format_toml("a header", table(), c);
  EXPECT_EQ(printed.rfind("# a header\n", 0), 0u) << printed;
  EXPECT_NE(printed.find("# The name (--name)\nname = "), std::string::npos) << printed;
  EXPECT_NE(printed.find("timeout_s = 3.0\n"), std::string::npos) << printed;
  auto again = read(printed);
  ASSERT_TRUE(again.ok()) << again.error().message << "\n" << printed;
  EXPECT_EQ(again->name, c.name);
  EXPECT_EQ(again->count, c.count);
  EXPECT_EQ(again->timeout, c.timeout);
  EXPECT_EQ(again->on, c.on);
  EXPECT_EQ(again->names, c.names);
  EXPECT_EQ(again->labels, c.labels);
  EXPECT_EQ(again->size, c.size);
}

}  // namespace
}  // namespace krait::options
