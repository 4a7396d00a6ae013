// Profile: interning, sample aggregation, merge() and clear(). The oracle is
// a plain map from resolved (frames, labels) to counts built by the test from
// its own input.
#include "profile/profile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <vector>

namespace krait::profile {
namespace {

Frame python_frame(std::string function, std::string file, int64_t line) {
  Frame f;
  f.kind = FrameKind::kPython;
  f.function = std::move(function);
  f.file = std::move(file);
  f.start_line = 1;
  f.line = line;
  return f;
}

Frame native_frame(std::string function, uint64_t address, uint32_t mapping) {
  Frame f;
  f.kind = FrameKind::kNative;
  f.function = std::move(function);
  f.address = address;
  f.mapping = mapping;
  return f;
}

// What a sample means, independent of any ids: its frames (leaf first, with
// the mapping resolved to its contents) and its label set.
struct Resolved {
  std::vector<std::tuple<FrameKind, std::string, std::string, int64_t, uint64_t, std::string>>
      frames;
  Labels labels;
  auto operator<=>(const Resolved&) const = default;
};

std::map<Resolved, uint64_t> resolve(const Profile& p) {
  std::map<Resolved, uint64_t> out;
  for (const auto& s : p.samples()) {
    Resolved r;
    for (FrameId id : s.stack) {
      const Frame& f = p.frames().at(id);
      const std::string mapping = f.mapping == 0 ? "" : p.mappings().at(f.mapping - 1).file;
      r.frames.emplace_back(f.kind, f.function, f.file, f.line, f.address, mapping);
    }
    r.labels = p.label_sets().at(s.labels);
    out[r] += s.count;
  }
  return out;
}

TEST(ProfileTest, MappingsAreInternedWithOneBasedIds) {
  Profile p;
  const Mapping libc{"/usr/lib/libc.so.6", "aa11", 0x1000, 0x2000, 0};
  const Mapping libpy{"/usr/lib/libpython3.12.so", "bb22", 0x5000, 0x9000, 0x1000};
  EXPECT_EQ(p.intern_mapping(libc), 1u);
  EXPECT_EQ(p.intern_mapping(libpy), 2u);
  EXPECT_EQ(p.intern_mapping(libc), 1u);
  Mapping moved = libc;
  moved.start = 0x3000;
  EXPECT_EQ(p.intern_mapping(moved), 3u);
  ASSERT_EQ(p.mappings().size(), 3u);
  EXPECT_EQ(p.mappings()[0], libc);
  EXPECT_EQ(p.mappings()[1], libpy);
  EXPECT_EQ(p.mappings()[2].start, 0x3000u);
}

TEST(ProfileTest, FramesDifferingInAnyFieldAreDistinct) {
  Profile p;
  const uint32_t m = p.intern_mapping({"/bin/python3", "", 0, 0x1000, 0});
  Frame base = python_frame("Worker.run", "/app/w.py", 12);
  base.system_name = "run";
  base.start_line = 10;
  const FrameId base_id = p.intern_frame(base);
  EXPECT_EQ(p.intern_frame(base), base_id);

  std::vector<std::function<void(Frame&)>> mutations = {
      [](Frame& f) { f.kind = FrameKind::kNative; },
      [](Frame& f) { f.function = "Worker.stop"; },
      [](Frame& f) { f.system_name = "stop"; },
      [](Frame& f) { f.file = "/app/x.py"; },
      [](Frame& f) { f.start_line = 11; },
      [](Frame& f) { f.line = 13; },
      [](Frame& f) { f.address = 0x10; },
      [m](Frame& f) { f.mapping = m; },
  };
  std::vector<FrameId> ids = {base_id};
  for (const auto& mutate : mutations) {
    Frame f = base;
    mutate(f);
    const FrameId id = p.intern_frame(f);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), id), 0) << "a one-field change reused an id";
    ids.push_back(id);
    EXPECT_EQ(p.intern_frame(f), id);
    EXPECT_EQ(p.frames().at(id), f);
  }
  EXPECT_EQ(p.frames().size(), mutations.size() + 1);
}

TEST(ProfileTest, LabelSetsAreOrderInsensitiveAndStoredSorted) {
  Profile p;
  const LabelSetId a = p.intern_labels({{"tid", "7"}, {"pid", "5"}, {"process_name", "py"}});
  const LabelSetId b = p.intern_labels({{"pid", "5"}, {"process_name", "py"}, {"tid", "7"}});
  const LabelSetId c = p.intern_labels({{"pid", "5"}, {"tid", "8"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const Labels expected = {{"pid", "5"}, {"process_name", "py"}, {"tid", "7"}};
  EXPECT_EQ(p.label_sets().at(a), expected);
  EXPECT_EQ(p.intern_labels({}), p.intern_labels({}));
}

TEST(ProfileTest, IdenticalStacksAndLabelsShareOneCount) {
  Profile p;
  const FrameId f = p.intern_frame(python_frame("f", "/a.py", 3));
  const FrameId g = p.intern_frame(python_frame("g", "/a.py", 9));
  const LabelSetId l1 = p.intern_labels({{"tid", "1"}});
  const LabelSetId l2 = p.intern_labels({{"tid", "2"}});
  const std::vector<FrameId> fg = {f, g};
  const std::vector<FrameId> gf = {g, f};
  for (int i = 0; i < 100000; ++i)
    p.add_sample(fg, l1);
  p.add_sample(fg, l1, 5);
  p.add_sample(fg, l2, 2);
  p.add_sample(gf, l1, 3);
  p.add_sample(fg, l1, 0);  // no-op
  p.add_sample({}, l1, 4);  // an empty stack is a stack too

  const auto samples = p.samples();
  ASSERT_EQ(samples.size(), 4u);
  EXPECT_EQ(p.distinct_samples(), 4u);
  // First-added order.
  EXPECT_EQ(samples[0].stack, fg);
  EXPECT_EQ(samples[0].labels, l1);
  EXPECT_EQ(samples[0].count, 100005u);
  EXPECT_EQ(samples[1].stack, fg);
  EXPECT_EQ(samples[1].labels, l2);
  EXPECT_EQ(samples[1].count, 2u);
  EXPECT_EQ(samples[2].stack, gf);
  EXPECT_EQ(samples[2].count, 3u);
  EXPECT_TRUE(samples[3].stack.empty());
  EXPECT_EQ(samples[3].count, 4u);
  EXPECT_EQ(p.total_count(), 100005u + 2 + 3 + 4);
}

TEST(ProfileTest, CountsSaturateInsteadOfWrapping) {
  Profile p;
  const FrameId f = p.intern_frame(python_frame("f", "/a.py", 3));
  const LabelSetId l = p.intern_labels({});
  const std::vector<FrameId> stack = {f};
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  p.add_sample(stack, l, max - 1);
  p.add_sample(stack, l, 5);
  EXPECT_EQ(p.samples().at(0).count, max);
  EXPECT_EQ(p.total_count(), max);
}

TEST(ProfileTest, SampleOrderIsTheSameForTheSameInput) {
  auto build = [] {
    Profile p;
    const LabelSetId l = p.intern_labels({{"pid", "1"}});
    for (int i = 0; i < 200; ++i) {
      const FrameId f = p.intern_frame(python_frame("f" + std::to_string(i % 37), "/a.py", i % 5));
      const FrameId g = p.intern_frame(python_frame("g", "/b.py", i % 3));
      const std::vector<FrameId> stack = {f, g};
      p.add_sample(stack, l, static_cast<uint64_t>(i % 4) + 1);
    }
    return p;
  };
  const Profile a = build();
  const Profile b = build();
  const auto sa = a.samples();
  const auto sb = b.samples();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].stack, sb[i].stack);
    EXPECT_EQ(sa[i].labels, sb[i].labels);
    EXPECT_EQ(sa[i].count, sb[i].count);
  }
}

TEST(ProfileTest, MergeReinternsAndAddsCounts) {
  // Two profiles that intern the same things in a different order, so their
  // ids disagree and merge() must translate them.
  Profile a;
  const uint32_t a_libc = a.intern_mapping({"/lib/libc.so.6", "c0", 0x1000, 0x9000, 0});
  const FrameId a_read = a.intern_frame(native_frame("read", 0x1234, a_libc));
  const FrameId a_main = a.intern_frame(python_frame("main", "/m.py", 4));
  const LabelSetId a_l = a.intern_labels({{"pid", "1"}, {"tid", "1"}});
  const std::vector<FrameId> a_stack = {a_read, a_main};
  a.add_sample(a_stack, a_l, 10);

  Profile b;
  const uint32_t b_py = b.intern_mapping({"/bin/python3", "p0", 0x400000, 0x800000, 0});
  const uint32_t b_libc = b.intern_mapping({"/lib/libc.so.6", "c0", 0x1000, 0x9000, 0});
  const FrameId b_eval = b.intern_frame(native_frame("_PyEval_EvalFrameDefault", 0x400100, b_py));
  const FrameId b_main = b.intern_frame(python_frame("main", "/m.py", 4));
  const FrameId b_read = b.intern_frame(native_frame("read", 0x1234, b_libc));
  const LabelSetId b_l2 = b.intern_labels({{"tid", "2"}, {"pid", "1"}});
  const LabelSetId b_l1 = b.intern_labels({{"tid", "1"}, {"pid", "1"}});
  const std::vector<FrameId> b_same = {b_read, b_main};
  const std::vector<FrameId> b_other = {b_eval, b_main};
  b.add_sample(b_same, b_l1, 7);
  b.add_sample(b_same, b_l2, 1);
  b.add_sample(b_other, b_l1, 2);

  // Oracle: resolved contents of both inputs, summed.
  std::map<Resolved, uint64_t> expected = resolve(a);
  for (const auto& [key, count] : resolve(b))
    expected[key] += count;

  const ProfileMeta meta_before = a.meta();
  a.merge(b);
  EXPECT_EQ(resolve(a), expected);
  EXPECT_EQ(a.total_count(), 20u);
  EXPECT_EQ(a.mappings().size(), 2u);  // libc shared, python added
  EXPECT_EQ(a.frames().size(), 3u);
  EXPECT_EQ(a.label_sets().size(), 2u);
  EXPECT_EQ(a.distinct_samples(), 3u);
  EXPECT_EQ(a.meta().period_ns, meta_before.period_ns);
  // Every frame's mapping id points at the right file after translation.
  for (const auto& f : a.frames()) {
    if (f.function == "_PyEval_EvalFrameDefault") {
      EXPECT_EQ(a.mappings().at(f.mapping - 1).file, "/bin/python3");
    }
    if (f.function == "read") {
      EXPECT_EQ(a.mappings().at(f.mapping - 1).file, "/lib/libc.so.6");
    }
  }
}

TEST(ProfileTest, MergeIntoEmptyCopiesAndSelfMergeDoubles) {
  Profile src;
  const FrameId f = src.intern_frame(python_frame("f", "/a.py", 1));
  const LabelSetId l = src.intern_labels({{"pid", "9"}});
  const std::vector<FrameId> stack = {f};
  src.add_sample(stack, l, 3);

  Profile copy;
  copy.merge(src);
  EXPECT_EQ(resolve(copy), resolve(src));

  std::map<Resolved, uint64_t> doubled = resolve(src);
  for (auto& [key, count] : doubled)
    count *= 2;
  src.merge(src);
  EXPECT_EQ(resolve(src), doubled);
  EXPECT_EQ(src.total_count(), 6u);
}

TEST(ProfileTest, ClearDropsDataButKeepsMeta) {
  ProfileMeta meta;
  meta.period_ns = 1000;
  meta.comments = {"hello"};
  Profile p(meta);
  const uint32_t m = p.intern_mapping({"/x", "", 0, 1, 0});
  const FrameId f = p.intern_frame(native_frame("x", 0, m));
  const std::vector<FrameId> stack = {f};
  p.add_sample(stack, p.intern_labels({}), 2);
  p.clear();
  EXPECT_TRUE(p.mappings().empty());
  EXPECT_TRUE(p.frames().empty());
  EXPECT_TRUE(p.label_sets().empty());
  EXPECT_TRUE(p.samples().empty());
  EXPECT_EQ(p.total_count(), 0u);
  EXPECT_EQ(p.meta().period_ns, 1000);
  EXPECT_EQ(p.meta().comments, std::vector<std::string>{"hello"});
  // Ids start over after clear().
  EXPECT_EQ(p.intern_mapping({"/y", "", 0, 1, 0}), 1u);
  EXPECT_EQ(p.intern_frame(python_frame("g", "/g.py", 1)), 0u);
}

TEST(ProfileTest, MovedProfileKeepsWorking) {
  Profile a;
  const FrameId f = a.intern_frame(python_frame("f", "/a.py", 1));
  const LabelSetId l = a.intern_labels({});
  const std::vector<FrameId> stack = {f};
  a.add_sample(stack, l, 1);
  Profile b = std::move(a);
  b.add_sample(stack, l, 1);  // must find the entry added before the move
  ASSERT_EQ(b.samples().size(), 1u);
  EXPECT_EQ(b.samples()[0].count, 2u);
}

}  // namespace
}  // namespace krait::profile
