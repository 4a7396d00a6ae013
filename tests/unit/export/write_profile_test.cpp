// export/write_profile.h: format names, default extensions, and that every
// format written to a path carries the profile's samples.
#include "export/write_profile.h"

#include <gtest/gtest.h>

#include "export/folded.h"
#include "export/pprof.h"
#include "export/pprof_import.h"
#include "fixture_profile.h"
#include "formats_support.h"
#include "support/json.h"
#include "test_support.h"
#include "util/files.h"

namespace krait::exporter {
namespace {

TEST(WriteProfile, FormatNamesParseIgnoringCase) {
  EXPECT_EQ(*parse_output_format("pprof"), OutputFormat::kPprof);
  EXPECT_EQ(*parse_output_format("Folded"), OutputFormat::kFolded);
  EXPECT_EQ(*parse_output_format("SPEEDSCOPE"), OutputFormat::kSpeedscope);
  EXPECT_EQ(*parse_output_format("html"), OutputFormat::kHtml);
  auto bad = parse_output_format("svg");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "unknown output format 'svg'; use one of: pprof, folded, speedscope, html");
  EXPECT_EQ(output_format_info(OutputFormat::kSpeedscope).extension, "speedscope.json");
  EXPECT_EQ(output_format_info(OutputFormat::kHtml).extension, "html");
}

TEST(WriteProfile, EveryFormatWrittenToAPathCarriesTheSamples) {
  auto fx = test::make_fixture();
  test::TempDir dir;
  for (const auto& info : output_formats()) {
    const std::string path = dir.path() + "/out." + std::string(info.extension);
    ASSERT_TRUE(write_profile_file(fx.profile, info.format, path).ok()) << info.name;
    auto text = read_file(path, size_t{64} << 20);
    ASSERT_TRUE(text.ok()) << text.error().message;
    switch (info.format) {
      case OutputFormat::kPprof: {
        auto decoded = decode_pprof(*text);
        ASSERT_TRUE(decoded.ok());
        auto imported = profile_from_pprof(*decoded);
        ASSERT_TRUE(imported.ok());
        EXPECT_EQ(imported->total_count(), fx.profile.total_count());
        break;
      }
      case OutputFormat::kFolded:
        EXPECT_EQ(*text, encode_folded(fx.profile));
        break;
      case OutputFormat::kSpeedscope: {
        auto doc = test::parse_json(*text);
        ASSERT_TRUE(doc.ok());
        EXPECT_EQ(doc->find("name")->string, "out.speedscope.json");
        auto stacks = test::speedscope_stacks(*doc);
        ASSERT_TRUE(stacks.ok());
        EXPECT_EQ(*stacks, test::expected_speedscope(fx.expected, test::kFixturePeriodNs));
        break;
      }
      case OutputFormat::kHtml: {
        auto data_text = test::page_data_text(*text);
        ASSERT_TRUE(data_text.ok());
        auto data = test::parse_json(*data_text);
        ASSERT_TRUE(data.ok());
        auto stacks = test::page_stacks(*data);
        ASSERT_TRUE(stacks.ok());
        EXPECT_EQ(*stacks, test::expected_page(fx.expected));
        break;
      }
    }
  }
}

}  // namespace
}  // namespace krait::exporter
