// Folded text: exact expected lines written by hand from the format in
// export/folded.h, plus a parse of every line the way flame-graph tools do
// (split on the last space, then on ';').
#include "export/folded.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "fixture_profile.h"
#include "test_support.h"

namespace krait::exporter {
namespace {

using profile::Frame;
using profile::FrameId;
using profile::FrameKind;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

struct ParsedLine {
  std::vector<std::string> frames;
  uint64_t count = 0;
};

// How flamegraph.pl and inferno read a line.
ParsedLine parse(const std::string& line) {
  ParsedLine out;
  const size_t space = line.rfind(' ');
  EXPECT_NE(space, std::string::npos) << line;
  if (space == std::string::npos)
    return out;
  const std::string count = line.substr(space + 1);
  EXPECT_FALSE(count.empty());
  EXPECT_EQ(count.find_first_not_of("0123456789"), std::string::npos) << line;
  out.count = std::stoull(count);
  std::string stack = line.substr(0, space);
  size_t start = 0;
  while (true) {
    const size_t semi = stack.find(';', start);
    out.frames.push_back(stack.substr(start, semi - start));
    if (semi == std::string::npos)
      break;
    start = semi + 1;
  }
  return out;
}

Frame python(std::string function, std::string file, int64_t line) {
  Frame f;
  f.kind = FrameKind::kPython;
  f.function = std::move(function);
  f.file = std::move(file);
  f.line = line;
  return f;
}

Frame native(FrameKind kind, std::string function, uint64_t address, uint32_t mapping) {
  Frame f;
  f.kind = kind;
  f.function = std::move(function);
  f.address = address;
  f.mapping = mapping;
  return f;
}

TEST(FoldedTest, FixtureRendersEveryFrameKind) {
  const test::Fixture fx = test::make_fixture();
  const std::string text = encode_folded(fx.profile);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  // Sorted bytewise, one line per distinct rendered stack.
  const std::vector<std::string> expected = {
      "(200);[truncated];Worker.run (/app/work.py:17);[libc.so.6+0x23222] 1",
      "python3 (100);MainThread (100);<module> (/app/main.py:3);<lambda> (/app/main.py:21);"
      "std::vector<int>::push_back(int const&) 3",
      "python3 (100);MainThread (100);<module> (/app/main.py:3);Worker.run (/app/work.py:17);"
      "__libc_read;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k] 7",
      "python3 (100);worker-1 (102);<module> (/app/main.py:3);Worker.run (/app/work.py:19) 6",
      "python3 (100);worker-1 (102);<module> (/app/main.py:3);Worker.run (/app/work.py:19);"
      "jit_stub;irq_exit_rcu_[k] 1",
  };
  EXPECT_EQ(lines_of(text), expected);
  uint64_t total = 0;
  for (const auto& line : lines_of(text))
    total += parse(line).count;
  EXPECT_EQ(total, fx.profile.total_count());
}

TEST(FoldedTest, TrickyNamesStayOnOneParseableLine) {
  profile::Profile p;
  const uint32_t lib = p.intern_mapping({"/opt/a dir/lib;x.so", "", 0x1000, 0x9000, 0x2000});
  std::vector<FrameId> stack = {
      p.intern_frame(native(FrameKind::kKernel, "", 0xffffffff81000010, 0)),
      p.intern_frame(native(FrameKind::kNative, "", 0x1010, lib)),
      p.intern_frame(native(FrameKind::kNative, "", 0x77, 0)),
      p.intern_frame(native(FrameKind::kNative, "ns::f<a;b>()", 0x1100, lib)),
      p.intern_frame(python("tab\there", "", 0)),
      p.intern_frame(python("multi\nline", "", 9)),
      p.intern_frame(python("semi;colon", "/src/a;b\r\nc.py", 12)),
      p.intern_frame(python("", "/src/nameless.py", 0)),
  };
  const auto labels = p.intern_labels(
      {{"process_name", "my;proc\n"}, {"pid", "7"}, {"thread_name", "t 1"}, {"tid", "8"}});
  p.add_sample(stack, labels, 42);

  const auto lines = lines_of(encode_folded(p));
  ASSERT_EQ(lines.size(), 1u) << "a newline escaped into the output";
  EXPECT_EQ(lines[0],
            "my:proc  (7);t 1 (8);[unknown] (/src/nameless.py);semi:colon (/src/a:b  c.py:12);"
            "multi line (?:9);tab here;ns::f<a:b>();[0x77];[lib:x.so+0x2010];"
            "[0xffffffff81000010]_[k] 42");
  const ParsedLine parsed = parse(lines[0]);
  EXPECT_EQ(parsed.count, 42u);
  EXPECT_EQ(parsed.frames.size(), stack.size() + 2);
}

TEST(FoldedTest, MissingLabelsAreLeftOut) {
  profile::Profile p;
  const std::vector<FrameId> stack = {p.intern_frame(python("f", "/f.py", 1))};
  p.add_sample(stack, p.intern_labels({}), 1);
  p.add_sample(stack, p.intern_labels({{"tid", "5"}}), 2);
  p.add_sample(stack, p.intern_labels({{"process_name", "py"}, {"thread_name", "w"}}), 3);
  p.add_sample({}, p.intern_labels({}), 4);
  p.add_sample({}, p.intern_labels({{"pid", "9"}}), 5);
  EXPECT_EQ(lines_of(encode_folded(p)), (std::vector<std::string>{
                                            "(5);f (/f.py:1) 2",
                                            "(9) 5",
                                            "[empty stack] 4",
                                            "f (/f.py:1) 1",
                                            "py;w;f (/f.py:1) 3",
                                        }));
}

TEST(FoldedTest, StacksThatRenderAlikeAreMerged) {
  // Two addresses in one native function are different frames but the same
  // text; they must come out as one line with the counts added.
  profile::Profile p;
  const uint32_t lib = p.intern_mapping({"/lib/libc.so.6", "", 0x1000, 0x9000, 0});
  const FrameId a = p.intern_frame(native(FrameKind::kNative, "memcpy", 0x1100, lib));
  const FrameId b = p.intern_frame(native(FrameKind::kNative, "memcpy", 0x1180, lib));
  const FrameId root = p.intern_frame(python("main", "/m.py", 2));
  const auto labels = p.intern_labels({});
  const std::vector<FrameId> sa = {a, root};
  const std::vector<FrameId> sb = {b, root};
  p.add_sample(sa, labels, 2);
  p.add_sample(sb, labels, 5);
  EXPECT_EQ(encode_folded(p), "main (/m.py:2);memcpy 7\n");
}

TEST(FoldedTest, EmptyProfileIsEmptyText) {
  profile::Profile p;
  EXPECT_EQ(encode_folded(p), "");
}

TEST(FoldedTest, WriteFileWritesTheText) {
  test::TempDir dir;
  ASSERT_TRUE(dir.ok()) << "cannot create a temporary directory";
  const test::Fixture fx = test::make_fixture();
  const std::string path = dir.path() + "/cpu.folded";
  auto written = write_folded_file(fx.profile, path);
  ASSERT_TRUE(written.ok()) << written.error().message;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), encode_folded(fx.profile));
  EXPECT_EQ(dir.list(), std::vector<std::string>{"cpu.folded"});
}

}  // namespace
}  // namespace krait::exporter
