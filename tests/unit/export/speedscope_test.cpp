// speedscope output (export/speedscope.h): the document parses back to the
// fixture's samples per thread and weight, validates against a JSON Schema
// transcribed from speedscope's documented format (a broken document does
// not), and hostile names stay inert text.
#include "export/speedscope.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fixture_profile.h"
#include "formats_support.h"
#include "support/json.h"
#include "test_support.h"

namespace krait::exporter {
namespace {

TEST(Speedscope, EachThreadHoldsTheFixturesStacksWeightedByPeriod) {
  auto fx = test::make_fixture();
  const std::string text = encode_speedscope(fx.profile, "fixture");
  auto doc = test::parse_json(text);
  ASSERT_TRUE(doc.ok()) << doc.error().message;
  EXPECT_EQ(doc->find("$schema")->string, "https://www.speedscope.app/file-format-schema.json");
  EXPECT_EQ(doc->find("exporter")->string, "krait");
  EXPECT_EQ(doc->find("name")->string, "fixture");
  auto stacks = test::speedscope_stacks(*doc);
  ASSERT_TRUE(stacks.ok()) << stacks.error().message;
  EXPECT_EQ(*stacks, test::expected_speedscope(fx.expected, test::kFixturePeriodNs));
  const auto& profiles = doc->find("profiles")->items;
  ASSERT_EQ(profiles.size(), 3u);
  EXPECT_EQ(profiles[0].find("name")->string, "python3 (100) / MainThread (100)");
  for (const auto& p : profiles) {
    EXPECT_EQ(p.find("type")->string, "sampled");
    EXPECT_EQ(p.find("unit")->string, "nanoseconds");
    EXPECT_EQ(p.find("startValue")->integer, 0);
    int64_t sum = 0;
    for (const auto& w : p.find("weights")->items)
      sum += w.integer;
    EXPECT_EQ(p.find("endValue")->integer, sum);
  }
}

TEST(Speedscope, WithoutAPeriodWeightsAreCounts) {
  auto fx = test::make_fixture();
  fx.profile.meta().period_ns = 0;
  auto doc = test::parse_json(encode_speedscope(fx.profile, "x"));
  ASSERT_TRUE(doc.ok());
  for (const auto& p : doc->find("profiles")->items)
    EXPECT_EQ(p.find("unit")->string, "none");
  auto stacks = test::speedscope_stacks(*doc);
  ASSERT_TRUE(stacks.ok());
  EXPECT_EQ(*stacks, test::expected_speedscope(fx.expected, 0));
}

TEST(Speedscope, HostileNamesStayTextAndTheDocumentStaysJson) {
  profile::Profile p({0, 0, 1000, {}});
  const std::string hostile[] = {"</script><script>alert(1)</script>", "a\"b\\c", "line\nbreak",
                                 "bad \xff\xfe utf8",
                                 "sep\xe2\x80\xa8"
                                 "ar"};
  std::vector<profile::FrameId> stack;
  for (const auto& name : hostile)
    stack.push_back(p.intern_frame({profile::FrameKind::kPython, name, "", name, 1, 2, 0, 0}));
  p.add_sample(stack, p.intern_labels({{"pid", "1"}, {"process_name", "\"evil\"\n"}}), 4);
  auto doc = test::parse_json(encode_speedscope(p, "t\"itle"));
  ASSERT_TRUE(doc.ok()) << doc.error().message;
  std::vector<std::string> names;
  for (const auto& f : doc->find("shared")->find("frames")->items)
    names.push_back(f.find("name")->string);
  ASSERT_EQ(names.size(), 5u);
  EXPECT_EQ(names[4], hostile[0]);  // root first: the stack was leaf first
  EXPECT_EQ(names[3], hostile[1]);
  EXPECT_EQ(names[2], hostile[2]);
  EXPECT_EQ(names[1], "bad ?? utf8");
  EXPECT_EQ(names[0], hostile[4]);
  EXPECT_EQ(doc->find("profiles")->items.at(0).find("name")->string, "\"evil\"\n (1)");
}

// Runs Debian's python3-jsonschema over `document` with the checked-in
// schema; true when it validates.
Result<bool> validates(const std::string& document) {
  test::TempDir dir;
  const std::string path = dir.path() + "/doc.json";
  std::ofstream(path) << document;
  const std::string schema =
      std::string(KRAIT_SOURCE_DIR) + "/tests/fixtures/speedscope/file-format-schema.json";
  auto child = test::run_child({"/usr/bin/python3", "-c",
                                "import json, sys, jsonschema\n"
                                "schema = json.load(open(sys.argv[1]))\n"
                                "jsonschema.Draft7Validator.check_schema(schema)\n"
                                "jsonschema.validate(json.load(open(sys.argv[2])), schema)\n",
                                schema, path},
                               {"PATH=/usr/bin:/bin"});
  if (!child)
    return child.error();
  if (child->exit_code != 0 && child->err.find("ValidationError") == std::string::npos)
    return make_error("jsonschema did not run: {}", child->err);
  return child->exit_code == 0;
}

TEST(Speedscope, OutputValidatesAgainstTheFileFormatSchema) {
  auto fx = test::make_fixture();
  auto ok = validates(encode_speedscope(fx.profile, "fixture"));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_TRUE(*ok);
  fx.profile.meta().period_ns = 0;
  ok = validates(encode_speedscope(fx.profile, "no period"));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_TRUE(*ok);
}

TEST(Speedscope, SchemaRejectsABrokenDocument) {
  auto fx = test::make_fixture();
  std::string text = encode_speedscope(fx.profile, "fixture");
  // A unit speedscope does not know, and a frame index that is a string.
  const std::string unit = "\"unit\":\"nanoseconds\"";
  ASSERT_NE(text.find(unit), std::string::npos);
  std::string bad_unit = text;
  bad_unit.replace(bad_unit.find(unit), unit.size(), "\"unit\":\"furlongs\"");
  auto ok = validates(bad_unit);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_FALSE(*ok);
  std::string bad_index = text;
  const size_t samples = bad_index.find("\"samples\":[[");
  ASSERT_NE(samples, std::string::npos);
  bad_index.insert(samples + 12, "\"0\",");
  ok = validates(bad_index);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_FALSE(*ok);
}

}  // namespace
}  // namespace krait::exporter
