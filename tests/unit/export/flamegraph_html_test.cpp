// The HTML flame graph (export/flamegraph_html.h): the embedded data holds
// the fixture's samples per process, thread and stack; trimming keeps the
// largest nodes and says so; names from profiled processes cannot end the
// data's script element or become markup, checked on the text and on the
// DOM headless chromium builds from it.
#include "export/flamegraph_html.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fixture_profile.h"
#include "formats_support.h"
#include "support/json.h"
#include "test_support.h"

namespace krait::exporter {
namespace {

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

Result<test::JsonValue> page_data(const std::string& html) {
  auto text = test::page_data_text(html);
  if (!text)
    return text.error();
  return test::parse_json(*text);
}

TEST(FlamegraphHtml, EmbeddedTreeHoldsTheFixturesSamples) {
  auto fx = test::make_fixture();
  const std::string html = encode_flamegraph_html(fx.profile, "fixture");
  auto data = page_data(html);
  ASSERT_TRUE(data.ok()) << data.error().message;
  auto stacks = test::page_stacks(*data);
  ASSERT_TRUE(stacks.ok()) << stacks.error().message;
  EXPECT_EQ(*stacks, test::expected_page(fx.expected));
  EXPECT_FALSE(data->find("trimmed")->boolean);
  EXPECT_EQ(data->find("period_ns")->integer, test::kFixturePeriodNs);
  EXPECT_EQ(data->find("nodes")->items.at(2).integer,
            static_cast<int64_t>(fx.profile.total_count()));
}

TEST(FlamegraphHtml, PageIsSelfContained) {
  const std::string html = encode_flamegraph_html(test::make_fixture().profile, "fixture");
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("{{KRAIT_"), std::string::npos) << "a template marker was left";
  EXPECT_NE(html.find("function render()"), std::string::npos) << "the script is embedded";
  EXPECT_NE(html.find(".kind-python"), std::string::npos) << "the style is embedded";
}

TEST(FlamegraphHtml, TrimmingKeepsTheLargestNodesAndTheirAncestors) {
  profile::Profile p({0, 0, 1, {}});
  const auto labels = p.intern_labels({{"pid", "1"}, {"tid", "1"}});
  const auto root = p.intern_frame({profile::FrameKind::kPython, "root", "", "r.py", 1, 1, 0, 0});
  const auto big = p.intern_frame({profile::FrameKind::kPython, "big", "", "r.py", 1, 2, 0, 0});
  p.add_sample(std::vector<profile::FrameId>{big, root}, labels, 1000);
  for (int i = 0; i < 500; ++i) {
    const auto leaf = p.intern_frame(
        {profile::FrameKind::kPython, fmt::format("small{}", i), "", "r.py", 1, 3, 0, 0});
    p.add_sample(std::vector<profile::FrameId>{leaf, root}, labels, 1);
  }
  const std::string html = encode_flamegraph_html(p, "trim", 100);
  auto data = page_data(html);
  ASSERT_TRUE(data.ok());
  EXPECT_TRUE(data->find("trimmed")->boolean);
  EXPECT_EQ(data->find("total_nodes")->integer, 1 + 1 + 1 + 1 + 1 + 500);
  const auto& nodes = data->find("nodes")->items;
  ASSERT_EQ(nodes.size(), 300u);
  EXPECT_EQ(nodes[2].integer, 1500) << "the root still counts every sample";
  auto stacks = test::page_stacks(*data);
  ASSERT_TRUE(stacks.ok()) << stacks.error().message;
  int64_t total = 0;
  bool big_kept = false;
  for (const auto& [key, count] : *stacks) {
    total += count;
    const auto& path = std::get<2>(key);
    big_kept = big_kept || (path.size() == 2 && std::get<0>(path[1]) == "big" && count == 1000);
  }
  EXPECT_EQ(total, 1500) << "left-out nodes' samples stay with their parent";
  EXPECT_TRUE(big_kept);
}

// Names a hostile process could give itself, threads and files included.
profile::Profile hostile_profile() {
  profile::Profile p({0, 0, 1000, {"comment </script><img src=x onerror=alert(1)>"}});
  const std::string names[] = {"</script><img src=x onerror=\"document.title='pwned'\">",
                               "<!--",
                               "a&amp;b",
                               "quote\"'",
                               "new\nline",
                               "bad \xff\xfe utf8",
                               "sep\xe2\x80\xa8"
                               "ar\xe2\x80\xa9",
                               "</SCRIPT >"};
  std::vector<profile::FrameId> stack;
  for (const auto& name : names)
    stack.push_back(p.intern_frame({profile::FrameKind::kPython, name, "", name, 1, 2, 0, 0}));
  p.add_sample(stack,
               p.intern_labels({{"pid", "1"},
                                {"process_name", "<b>proc</b>"},
                                {"thread_name", "</script>"},
                                {"tid", "2"}}),
               3);
  return p;
}

TEST(FlamegraphHtml, HostileNamesCannotLeaveTheDataElement) {
  const std::string html = encode_flamegraph_html(hostile_profile(), "<title>&\"");
  // Two script elements (data, code), each closed once: nothing in the data
  // closes one early, in any letter case.
  std::string lower = html;
  for (char& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(occurrences(lower, "</script"), 2u);
  EXPECT_EQ(occurrences(html, "<!--"), 1u) << "only the template's own comment";
  EXPECT_EQ(html.find("\xe2\x80\xa8"), std::string::npos);
  EXPECT_EQ(html.find("\xe2\x80\xa9"), std::string::npos);
  EXPECT_EQ(html.find("<title>&\""), std::string::npos);
  EXPECT_NE(html.find("&lt;title&gt;&amp;&quot;"), std::string::npos);
  auto data = page_data(html);
  ASSERT_TRUE(data.ok()) << data.error().message;
  std::vector<std::string> names;
  for (const auto& f : data->find("frames")->items)
    names.push_back(f.items.at(0).string);
  EXPECT_NE(std::find(names.begin(), names.end(),
                      "</script><img src=x onerror=\"document.title='pwned'\">"),
            names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "bad ?? utf8"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(),
                      "sep\xe2\x80\xa8"
                      "ar\xe2\x80\xa9"),
            names.end());
}

TEST(FlamegraphHtml, ChromiumRendersHostileNamesAsText) {
  const auto chromium = test::find_executable("chromium", {"/usr/bin"});
  ASSERT_TRUE(chromium) << "chromium is missing: run scripts/setup";
  test::TempDir dir;
  const std::string page = dir.path() + "/hostile.html";
  std::ofstream(page) << encode_flamegraph_html(hostile_profile(), "hostile");
  auto child = test::run_child(
      {*chromium, "--headless", "--no-sandbox", "--disable-gpu",
       "--user-data-dir=" + dir.path() + "/profile", "--dump-dom", "file://" + page},
      {"HOME=" + dir.path(), "PATH=/usr/bin:/bin"});
  ASSERT_TRUE(child.ok()) << child.error().message;
  ASSERT_EQ(child->exit_code, 0) << child->err;
  const std::string& dom = child->out;
  // The script ran (cells exist) and built them from text: no element came
  // from a name, and the title was not changed by one.
  EXPECT_NE(dom.find("data-rendered-cells="), std::string::npos) << dom.substr(0, 2000);
  EXPECT_NE(dom.find("data-name=\"&lt;/script&gt;&lt;img src=x"), std::string::npos)
      << "the hostile name is an attribute value of its cell";
  EXPECT_EQ(dom.find("<img"), std::string::npos);
  EXPECT_EQ(dom.find("<b>proc</b>"), std::string::npos);
  EXPECT_NE(dom.find("<title>hostile - krait flame graph</title>"), std::string::npos);
}

}  // namespace
}  // namespace krait::exporter
