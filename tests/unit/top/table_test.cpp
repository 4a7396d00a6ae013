// build_table() and the lines it prints: own and total shares, grouping,
// frame kinds, the filter, sorting, and hostile names made safe.
#include "top/table.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace krait::top {
namespace {

using profile::Frame;
using profile::FrameKind;
using profile::Profile;

constexpr int64_t kPeriod = 10'000'000;     // 100 Hz
constexpr int64_t kSecond = 1'000'000'000;  // a one-second interval

Frame py(const std::string& function, int64_t line, int64_t start_line = 1,
         const std::string& file = "app.py") {
  Frame f;
  f.kind = FrameKind::kPython;
  f.function = function;
  f.file = file;
  f.line = line;
  f.start_line = start_line;
  return f;
}

Frame native(const std::string& function, uint64_t address) {
  Frame f;
  f.kind = FrameKind::kNative;
  f.function = function;
  f.address = address;
  return f;
}

Frame kernel(const std::string& function) {
  Frame f;
  f.kind = FrameKind::kKernel;
  f.function = function;
  return f;
}

profile::LabelSetId thread(Profile& p, int pid, int tid, const std::string& process = "python3",
                           const std::string& thread_name = "MainThread") {
  return p.intern_labels({{"pid", std::to_string(pid)},
                          {"tid", std::to_string(tid)},
                          {"process_name", process},
                          {"thread_name", thread_name}});
}

void add(Profile& p, profile::LabelSetId labels, const std::vector<Frame>& leaf_first,
         uint64_t count) {
  std::vector<profile::FrameId> ids;
  for (const Frame& f : leaf_first)
    ids.push_back(p.intern_frame(f));
  p.add_sample(ids, labels, count);
}

const Row* find(const Table& t, const std::string& name, int64_t pid = 0) {
  for (const Row& r : t.rows)
    if (r.name == name && (pid == 0 || r.pid == pid))
      return &r;
  return nullptr;
}

TEST(TopTable, OwnIsTheLeafAndTotalCountsARecursiveFunctionOncePerStack) {
  Profile p;
  auto l = thread(p, 100, 100);
  // main -> fib -> fib -> fib (leaf), 30 samples; main -> fib -> helper, 10.
  add(p, l, {py("fib", 3), py("fib", 4), py("fib", 4), py("main", 9)}, 30);
  add(p, l, {py("helper", 12), py("fib", 5), py("main", 9)}, 10);
  const Table t = build_table(p, {}, kPeriod, kSecond);
  const Row* fib = find(t, "fib");
  const Row* helper = find(t, "helper");
  const Row* main = find(t, "main");
  ASSERT_TRUE(fib && helper && main);
  EXPECT_EQ(fib->own, 30u);
  EXPECT_EQ(fib->total, 40u) << "three fib frames in one stack are one sample of fib";
  EXPECT_EQ(helper->own, 10u);
  EXPECT_EQ(helper->total, 10u);
  EXPECT_EQ(main->own, 0u);
  EXPECT_EQ(main->total, 40u);
  EXPECT_EQ(t.samples, 40u);
  EXPECT_EQ(t.rows.front().name, "fib");
}

TEST(TopTable, SharesArePercentOfOneCpuOverTheInterval) {
  Profile p;
  auto l = thread(p, 100, 100);
  add(p, l, {py("spin", 2)}, 100);  // 100 samples of 10 ms in 1 s: one core
  Table t = build_table(p, {}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_DOUBLE_EQ(t.rows[0].own_pct, 100.0);
  EXPECT_DOUBLE_EQ(t.rows[0].total_pct, 100.0);
  t = build_table(p, {}, kPeriod, 2 * kSecond);
  EXPECT_DOUBLE_EQ(t.rows[0].own_pct, 50.0);
  t = build_table(p, {}, kPeriod, 0);
  EXPECT_DOUBLE_EQ(t.rows[0].own_pct, 0.0) << "an empty interval divides by nothing";
}

TEST(TopTable, FunctionsMergeLinesAndLinesSplitThem) {
  Profile p;
  auto l = thread(p, 100, 100);
  add(p, l, {py("work", 10, 8), py("main", 20, 19)}, 6);
  add(p, l, {py("work", 11, 8), py("main", 20, 19)}, 4);
  Table t = build_table(p, {}, kPeriod, kSecond);
  const Row* work = find(t, "work");
  ASSERT_TRUE(work);
  EXPECT_EQ(work->own, 10u);
  EXPECT_EQ(work->location, "app.py:8") << "a function row names its first line";
  t = build_table(p, {.grouping = Grouping::kLines}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0].location, "app.py:10");
  EXPECT_EQ(t.rows[0].own, 6u);
  EXPECT_EQ(t.rows[1].location, "app.py:11");
  EXPECT_EQ(t.rows[1].own, 4u);
}

TEST(TopTable, TheSameFunctionInTwoProcessesIsTwoRows) {
  Profile p;
  add(p, thread(p, 100, 100), {py("work", 10)}, 5);
  add(p, thread(p, 200, 200), {py("work", 10)}, 7);
  const Table t = build_table(p, {}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0].pid, 200);
  EXPECT_EQ(t.rows[1].pid, 100);
  EXPECT_EQ(t.processes, 2u);
}

TEST(TopTable, ProcessesAndThreads) {
  Profile p;
  add(p, thread(p, 100, 100, "web", "MainThread"), {py("a", 1)}, 5);
  add(p, thread(p, 100, 101, "web", "worker-1"), {py("b", 1)}, 3);
  add(p, thread(p, 200, 200, "batch", "MainThread"), {py("c", 1)}, 20);
  Table t = build_table(p, {.grouping = Grouping::kProcesses}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0].name, "batch");
  EXPECT_EQ(t.rows[0].own, 20u);
  EXPECT_EQ(t.rows[1].name, "web");
  EXPECT_EQ(t.rows[1].own, 8u);
  EXPECT_EQ(t.rows[1].total, 8u);
  EXPECT_EQ(t.rows[1].location, "2 threads");
  t = build_table(p, {.grouping = Grouping::kThreads}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 3u);
  const Row* worker = find(t, "worker-1");
  ASSERT_TRUE(worker);
  EXPECT_EQ(worker->own, 3u);
  EXPECT_EQ(worker->location, "tid 101");
  EXPECT_EQ(worker->process, "web");
}

TEST(TopTable, NativeAndKernelFramesAreRowsOnlyWhenAsked) {
  Profile p;
  auto l = thread(p, 100, 100);
  // kernel <- libc <- python hot <- main: the leaf is the kernel frame.
  add(p, l, {kernel("do_syscall_64"), native("read", 0x1000), py("hot", 3), py("main", 9)}, 8);
  add(p, l, {py("hot", 3), py("main", 9)}, 2);
  add(p, l, {native("_start", 0x2000)}, 1);  // no Python frame at all
  Table t = build_table(p, {.native_frames = true}, kPeriod, kSecond);
  ASSERT_TRUE(find(t, "do_syscall_64"));
  EXPECT_EQ(find(t, "do_syscall_64")->own, 8u);
  EXPECT_EQ(find(t, "do_syscall_64")->location, "[kernel]");
  EXPECT_EQ(find(t, "read")->total, 8u);
  EXPECT_EQ(find(t, "hot")->own, 2u);
  EXPECT_EQ(find(t, "hot")->total, 10u);
  t = build_table(p, {.native_frames = false}, kPeriod, kSecond);
  EXPECT_FALSE(find(t, "do_syscall_64"));
  EXPECT_FALSE(find(t, "read"));
  ASSERT_TRUE(find(t, "hot"));
  EXPECT_EQ(find(t, "hot")->own, 10u) << "the innermost Python frame is the leaf";
  ASSERT_TRUE(find(t, "[no Python frames]"));
  EXPECT_EQ(find(t, "[no Python frames]")->own, 1u) << "every sample is in some row";
  uint64_t own = 0;
  for (const Row& r : t.rows)
    own += r.own;
  EXPECT_EQ(own, t.samples);
}

TEST(TopTable, FilterByPidOrNamePiece) {
  Profile p;
  add(p, thread(p, 100, 100, "gunicorn"), {py("serve", 1)}, 5);
  add(p, thread(p, 200, 200, "celery"), {py("task", 1)}, 7);
  Table t = build_table(p, {.filter = "200"}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0].name, "task");
  EXPECT_EQ(t.samples, 7u);
  EXPECT_EQ(t.all_samples, 12u);
  t = build_table(p, {.filter = "GUNI"}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0].name, "serve");
  t = build_table(p, {.filter = "99999"}, kPeriod, kSecond);
  EXPECT_TRUE(t.rows.empty());
  EXPECT_TRUE(filter_matches("", 1, "x"));
  EXPECT_FALSE(filter_matches("10", 100, "python10")) << "digits are a pid, never a name piece";
}

TEST(TopTable, SortsByOwnTotalOrNameWithStableTies) {
  Profile p;
  auto l = thread(p, 100, 100);
  add(p, l, {py("b", 1), py("z", 1)}, 5);
  add(p, l, {py("a", 1), py("z", 1)}, 5);
  add(p, l, {py("c", 1)}, 2);
  auto names = [](const Table& t) {
    std::vector<std::string> out;
    for (const Row& r : t.rows)
      out.push_back(r.name);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names(build_table(p, {.sort = SortKey::kOwn}, kPeriod, kSecond)),
            (V{"a", "b", "c", "z"}))
      << "equal shares in name order";
  EXPECT_EQ(names(build_table(p, {.sort = SortKey::kTotal}, kPeriod, kSecond)),
            (V{"z", "a", "b", "c"}));
  EXPECT_EQ(names(build_table(p, {.sort = SortKey::kName}, kPeriod, kSecond)),
            (V{"a", "b", "c", "z"}));
  // The same input gives the same order every time.
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(names(build_table(p, {}, kPeriod, kSecond)), (V{"a", "b", "c", "z"}));
}

TEST(TopTable, MalformedLabelsAndFramesDoNotBreakTheTable) {
  Profile p;
  auto bad = p.intern_labels({{"pid", "12x"}, {"process_name", "odd"}});
  add(p, bad, {py("f", 1)}, 3);
  const Table t = build_table(p, {}, kPeriod, kSecond);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0].pid, 0);
  EXPECT_EQ(t.rows[0].own, 3u);
}

TEST(TopText, HostileNamesArePrintableAndCutToTheirColumns) {
  EXPECT_EQ(printable("a\x1b[2Jb"), "a?[2Jb");
  EXPECT_EQ(printable("tab\there\nnl"), "tab?here?nl");
  EXPECT_EQ(printable("\xc2\x9b"
                      "31m"),
            "?31m")
      << "C1 CSI";
  EXPECT_EQ(printable("\xe2\x80\xae"
                      "evil"),
            "?evil")
      << "right-to-left override";
  EXPECT_EQ(printable("\xff\xfe ok"), "?? ok");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");

  Row row;
  row.name = std::string(5000, 'n') + "\x07";
  row.location = "/very/long/" + std::string(300, 'd') + "/file.py:42";
  row.process = "proc\x1b]0;title\x07" + std::string(100, 'p');
  row.pid = 4242;
  row.own_pct = 99.5;
  row.total_pct = 100;
  const Columns c = columns_for_width(80);
  const std::string line = row_line(row, c);
  EXPECT_LE(display_width(line), 80u);
  EXPECT_EQ(line.find('\x1b'), std::string::npos);
  EXPECT_EQ(line.find('\x07'), std::string::npos);
  EXPECT_NE(line.find("(4242)"), std::string::npos) << "a cut process name keeps its pid";
  EXPECT_NE(line.find("file.py:42"), std::string::npos) << "a cut path keeps its end";
  EXPECT_NE(line.find("nn.."), std::string::npos) << "a cut name says so";
  EXPECT_EQ(line.substr(0, 14), "  99.5   100.0");
}

TEST(TopText, WideCharactersCountTwoColumns) {
  const std::string kanji = "\xe6\xbc\xa2\xe5\xad\x97";  // two wide characters
  EXPECT_EQ(display_width(kanji), 4u);
  EXPECT_EQ(display_width(fit_left(kanji + kanji, 5)), 5u);
  EXPECT_EQ(fit_left(kanji + kanji, 5, false), "\xe6\xbc\xa2..") << "never half a character";
  EXPECT_EQ(fit_right("abcdef", 4), "..ef");
  EXPECT_EQ(fit_left("abc", 6), "abc   ");
  EXPECT_EQ(fit_left("abc", 6, false), "abc");
  EXPECT_EQ(fit_left("abcdef", 1), ".");
}

TEST(TopText, EveryScreenLineFitsItsWidth) {
  Profile p;
  add(p, thread(p, 123456, 123456, std::string(200, 'x')), {py(std::string(300, 'f'), 1)}, 3);
  // Narrower than 32 columns the screen cuts whole lines instead.
  for (size_t width : {32u, 40u, 80u, 200u}) {
    const Columns c = columns_for_width(width);
    const Table t = build_table(p, {}, kPeriod, kSecond);
    EXPECT_LE(display_width(column_header(c, Grouping::kFunctions)), width);
    for (const Row& r : t.rows)
      EXPECT_LE(display_width(row_line(r, c)), width) << width;
    HeaderFacts f;
    f.notice = std::string(500, 'w');
    for (const auto& line : header_lines(f, {.filter = std::string(300, 'q')}, width))
      EXPECT_LE(display_width(line), width);
  }
}

TEST(TopText, PlainSnapshotIsOneAlignedTable) {
  Profile p;
  auto l = thread(p, 100, 100, "python3");
  add(p, l, {py("hot", 5, 4, "/srv/chain.py"), py("main", 9, 8, "/srv/chain.py")}, 90);
  HeaderFacts f;
  f.interval_s = 1;
  f.rate_hz = 100;
  const Table t = build_table(p, {}, kPeriod, kSecond);
  const std::string text = plain_snapshot(f, {}, t, 0);
  EXPECT_NE(text.find("\n  OWN%  TOTAL%  FUNCTION"), std::string::npos) << text;
  EXPECT_NE(text.find("\n  90.0    90.0  hot       /srv/chain.py:4  python3 (100)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      plain_snapshot(f, {.filter = "nope"}, build_table(p, {.filter = "nope"}, kPeriod, kSecond), 0)
          .find("(no samples in the filter)"),
      std::string::npos);
}

}  // namespace
}  // namespace krait::top
