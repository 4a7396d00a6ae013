// The stack builder's cache of named native frames holds its bound
// (BuilderOptions::max_native_entries) whatever number of addresses the
// samples bring, and its counters show the evictions; the profile keeps
// every sample and its frames.
#include <gtest/gtest.h>

#include <memory>

#include "engine/stack_builder.h"
#include "unwind/process_modules.h"

namespace krait::engine {
namespace {

// A mixed sample whose only native frame is `ip`, in no module: the
// unwinder stops there and the builder names it "[unknown ...]".
SampleJob native_job(uint64_t ip, const std::shared_ptr<ModulesSlot>& modules) {
  SampleJob j;
  j.process_key = 1;
  j.labels = std::make_shared<profile::Labels>();
  j.native = true;
  j.native_flags = KRAIT_NATIVE_CAPTURED;
  j.regs.ip = ip;
  j.regs.sp = 0x7ff0'0000'0000;
  j.user_stack.assign(64, 0);
  j.modules = modules;
  return j;
}

TEST(StackBuilderCacheTest, NativeFrameCacheHoldsItsBound) {
  constexpr size_t kBound = 8;
  constexpr uint64_t kAddresses = 5 * kBound;
  auto builder =
      StackBuilder::create({.native = true, .kernel = false, .max_native_entries = kBound});
  ASSERT_TRUE(builder.ok()) << builder.error().message;
  auto modules = std::make_shared<ModulesSlot>();
  modules->set(std::make_shared<const unwind::ProcessModules>());

  for (uint64_t i = 0; i < kAddresses; ++i) {
    (*builder)->add(native_job(0x1000 + 16 * i, modules));
    ASSERT_LE((*builder)->stats().native_frames.entries, kBound) << i;
  }
  CacheStats s = (*builder)->stats().native_frames;
  EXPECT_EQ(s.misses, kAddresses);
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.entries, kBound);
  EXPECT_EQ(s.evictions, kAddresses - kBound);

  // The newest address is cached, the first one was evicted.
  (*builder)->add(native_job(0x1000 + 16 * (kAddresses - 1), modules));
  EXPECT_EQ((*builder)->stats().native_frames.hits, 1u);
  (*builder)->add(native_job(0x1000, modules));
  EXPECT_EQ((*builder)->stats().native_frames.misses, kAddresses + 1);

  // An interval's end drops the series' cache; its counts stay.
  auto profiles = (*builder)->take_profiles(1);
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(profiles[0].profile.total_count(), kAddresses + 2);
  s = (*builder)->stats().native_frames;
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.misses, kAddresses + 1);
  EXPECT_EQ(s.evictions, kAddresses + 1 - kBound);
}

}  // namespace
}  // namespace krait::engine
