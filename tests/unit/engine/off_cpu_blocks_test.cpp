// The stack builder's pairing of off-CPU samples with the end of their
// block: the time between the two lands on the sample's stack, whichever of
// them reaches the builder first; a block still open at an interval's end
// is charged up to it and goes on in the next interval; a block whose end
// was lost is counted, not charged; and weighted (sampled) switches count
// `weight` times.
#include <gtest/gtest.h>

#include <memory>

#include "engine/stack_builder.h"

namespace krait::engine {
namespace {

FrameRef python_frame(const std::string& name, int64_t line) {
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kPython;
  f->function = name;
  f->file = "/w.py";
  f->line = line;
  return f;
}

class OffCpuBlocks : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = StackBuilder::create({});
    ASSERT_TRUE(b.ok()) << b.error().message;
    builder_ = std::move(*b);
  }

  SampleJob off_cpu(uint32_t tid, uint64_t start, const FrameRef& leaf, uint16_t weight = 1) {
    SampleJob j;
    j.labels = labels_;
    j.python = {{leaf, true}};
    j.python_process = true;
    j.off_cpu = true;
    j.tid = tid;
    j.ktime_ns = start;
    j.block_start_ns = start;
    j.weight = weight;
    return j;
  }
  SampleJob end(uint32_t tid, uint64_t start, uint64_t at, uint16_t weight = 1) {
    SampleJob j;
    j.block_end = true;
    j.tid = tid;
    j.block_start_ns = start;
    j.ktime_ns = at;
    j.weight = weight;
    return j;
  }
  SampleJob on_cpu(const FrameRef& leaf) {
    SampleJob j;
    j.labels = labels_;
    j.python = {{leaf, true}};
    j.python_process = true;
    return j;
  }

  // Off-CPU time per leaf function in `p`.
  static std::map<std::string, uint64_t> off_by_leaf(const profile::Profile& p) {
    std::map<std::string, uint64_t> out;
    for (const auto& s : p.samples())
      out[p.frames()[s.stack.front()].function] += s.off_cpu_ns;
    return out;
  }

  std::unique_ptr<StackBuilder> builder_;
  LabelsRef labels_ = std::make_shared<profile::Labels>(profile::Labels{{"tid", "7"}});
  FrameRef sleep_ = python_frame("nap", 10);
  FrameRef read_ = python_frame("wait_pipe", 20);
  FrameRef burn_ = python_frame("burn", 30);
};

TEST_F(OffCpuBlocks, TimeLandsOnTheStackWhereTheThreadBlocked) {
  builder_->add(off_cpu(7, 1'000, sleep_));
  builder_->add(on_cpu(burn_));  // another thread's sample meanwhile
  builder_->add(end(7, 1'000, 51'000));
  builder_->add(off_cpu(7, 60'000, read_));
  builder_->add(end(7, 60'000, 90'000));
  auto profiles = builder_->take_profiles(100'000);
  ASSERT_EQ(profiles.size(), 1u);
  const profile::Profile& p = profiles[0].profile;
  EXPECT_EQ(p.total_count(), 1u);
  EXPECT_EQ(p.total_off_cpu_ns(), 80'000u);
  auto off = off_by_leaf(p);
  EXPECT_EQ(off["nap"], 50'000u);
  EXPECT_EQ(off["wait_pipe"], 30'000u);
  EXPECT_EQ(builder_->stats().off_cpu_samples, 2u);
}

TEST_F(OffCpuBlocks, AnEndThatComesFirstWaitsForItsSample) {
  // The sample was held for its names while its thread ran again.
  builder_->add(end(7, 1'000, 41'000));
  builder_->add(off_cpu(7, 1'000, sleep_));
  auto profiles = builder_->take_profiles(100'000);
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(off_by_leaf(profiles[0].profile)["nap"], 40'000u);
}

TEST_F(OffCpuBlocks, AnOpenBlockIsChargedPerIntervalAndGoesOn) {
  builder_->add(off_cpu(7, 1'000, sleep_));
  auto first = builder_->take_profiles(11'000);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(off_by_leaf(first[0].profile)["nap"], 10'000u);
  auto second = builder_->take_profiles(31'000);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(off_by_leaf(second[0].profile)["nap"], 20'000u);
  // Its stack was carried into the new profile's ids.
  builder_->add(end(7, 1'000, 36'000));
  auto third = builder_->take_profiles(40'000);
  ASSERT_EQ(third.size(), 1u);
  const profile::Profile& p = third[0].profile;
  EXPECT_EQ(off_by_leaf(p)["nap"], 5'000u);
  ASSERT_EQ(p.samples().size(), 1u);
  EXPECT_EQ(p.frames()[p.samples()[0].stack.front()].line, 10);
  EXPECT_EQ(p.label_sets()[p.samples()[0].labels], *labels_);
}

TEST_F(OffCpuBlocks, ABlockWhoseEndWasLostIsCountedNotCharged) {
  builder_->add(off_cpu(7, 1'000, sleep_));
  // The thread blocked again: the end of the first block never came.
  builder_->add(off_cpu(7, 50'000, read_));
  builder_->add(end(7, 50'000, 70'000));
  auto profiles = builder_->take_profiles(100'000);
  ASSERT_EQ(profiles.size(), 1u);
  auto off = off_by_leaf(profiles[0].profile);
  EXPECT_EQ(off["nap"], 0u);
  EXPECT_EQ(off["wait_pipe"], 20'000u);
  EXPECT_EQ(builder_->stats().blocks_without_end, 1u);
}

TEST_F(OffCpuBlocks, ASampledSwitchCountsForItsWeight) {
  builder_->add(off_cpu(7, 1'000, sleep_, 4));
  builder_->add(end(7, 1'000, 2'000, 4));
  auto profiles = builder_->take_profiles(100'000);
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(off_by_leaf(profiles[0].profile)["nap"], 4'000u);
}

TEST(ProfileWeight, OnCpuSamplesStandForAPeriodOffCpuForTheirTime) {
  profile::Profile p;
  p.meta().period_ns = 10'000'000;
  profile::Frame f;
  f.function = "f";
  const profile::FrameId id = p.intern_frame(f);
  const std::vector<profile::FrameId> stack = {id};
  p.add_sample(stack, p.intern_labels({}), 3, 0);
  p.add_sample(stack, p.intern_labels({{"state", "off-cpu"}}), 0, 7'000);
  auto samples = p.samples();
  ASSERT_EQ(samples.size(), 2u);
  // Counts without off-CPU time.
  EXPECT_EQ(p.weight(samples[0]), 3u);
  EXPECT_EQ(p.weight(samples[1]), 0u);
  p.meta().off_cpu = true;
  EXPECT_EQ(p.weight(samples[0]), 30'000'000u);
  EXPECT_EQ(p.weight(samples[1]), 7'000u);
  EXPECT_STREQ(p.weight_unit(), "nanoseconds");
  // merge keeps both values.
  profile::Profile q;
  q.merge(p);
  EXPECT_EQ(q.total_count(), 3u);
  EXPECT_EQ(q.total_off_cpu_ns(), 7'000u);
}

}  // namespace
}  // namespace krait::engine
