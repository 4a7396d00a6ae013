// The record of which file filled libunwind's cache at each address: it
// holds at most its bound, and whatever it forgets comes with a flush.
#include "unwind/cache_owners.h"

#include <gtest/gtest.h>

namespace krait::unwind {
namespace {

TEST(CacheOwnersTest, HoldsItsBoundAndFlushesWhenFull) {
  constexpr size_t kBound = 8;
  CacheOwners owners(kBound);
  const CacheOwner a{.serial = 1, .bias = 0};
  for (uint64_t ip = 0; ip < kBound; ++ip)
    EXPECT_FALSE(owners.claim(0x1000 + ip, a)) << ip;
  EXPECT_EQ(owners.size(), kBound);
  EXPECT_EQ(owners.stats().evictions, 0u);

  // One address past the bound: libunwind's cache must go, and with it
  // every address the record held.
  EXPECT_TRUE(owners.claim(0x2000, a));
  EXPECT_EQ(owners.size(), 1u);
  EXPECT_EQ(owners.stats().evictions, kBound);

  for (uint64_t ip = 0; ip < 10 * kBound; ++ip) {
    owners.claim(0x3000 + ip, a);
    ASSERT_LE(owners.size(), kBound) << ip;
  }
  const CacheStats s = owners.stats();
  EXPECT_EQ(s.entries, owners.size());
  EXPECT_EQ(s.misses, 1 + kBound + 10 * kBound);
  EXPECT_EQ(s.evictions + s.entries, 1 + kBound + 10 * kBound);
}

TEST(CacheOwnersTest, AnotherOwnerAtAnAddressFlushes) {
  CacheOwners owners(16);
  const CacheOwner a{.serial = 1, .bias = 0};
  const CacheOwner b{.serial = 2, .bias = 0};
  const CacheOwner a_moved{.serial = 1, .bias = 0x1000};
  EXPECT_FALSE(owners.claim(0x1000, a));
  EXPECT_FALSE(owners.claim(0x1008, a));
  EXPECT_FALSE(owners.claim(0x1000, a));
  EXPECT_EQ(owners.stats().hits, 1u);
  EXPECT_TRUE(owners.claim(0x1000, b));
  EXPECT_EQ(owners.size(), 1u);
  EXPECT_TRUE(owners.claim(0x1000, a_moved));
  EXPECT_FALSE(owners.claim(0x1000, a_moved));
}

}  // namespace
}  // namespace krait::unwind
