#include "python/offsets/version.h"

#include <gtest/gtest.h>

namespace krait::python {
namespace {

TEST(PyVersion, ParsesReleaseNumbersAndDropsReleaseLevel) {
  EXPECT_EQ(PyVersion::parse("3.11.7"), (PyVersion{3, 11, 7}));
  EXPECT_EQ(PyVersion::parse("2.7.18"), (PyVersion{2, 7, 18}));
  EXPECT_EQ(PyVersion::parse("3.13.0rc1"), (PyVersion{3, 13, 0}));
  EXPECT_EQ(PyVersion::parse("3.14.0a3"), (PyVersion{3, 14, 0}));
  EXPECT_EQ(PyVersion::parse("3.9.18+"), (PyVersion{3, 9, 18}));
}

TEST(PyVersion, RejectsWhatIsNotAVersion) {
  for (const char* bad : {"", "3", "3.11", "3.11.", "x.1.2", "3.11.7 ", "3.11.7x", "3.11.7rc",
                          "3..7", "-3.1.1", "3.1.1.1", "3.999.1"})
    EXPECT_FALSE(PyVersion::parse(bad)) << bad;
}

TEST(PyVersion, StrAndOrder) {
  EXPECT_EQ((PyVersion{3, 10, 13}).str(), "3.10.13");
  EXPECT_LT((PyVersion{3, 9, 18}), (PyVersion{3, 10, 0}));
  EXPECT_LT((PyVersion{3, 10, 2}), (PyVersion{3, 10, 13}));
}

TEST(PyVersion, HexMatchesPyVersionHexOfFinalReleases) {
  // PY_VERSION_HEX values as defined in CPython's patchlevel.h.
  EXPECT_EQ((PyVersion{3, 13, 0}).hex(), 0x030d00f0u);
  EXPECT_EQ((PyVersion{3, 11, 7}).hex(), 0x030b07f0u);
  EXPECT_EQ((PyVersion{2, 7, 18}).hex(), 0x020712f0u);
  EXPECT_EQ(PyVersion::from_hex(0x030d00f0), (PyVersion{3, 13, 0}));
  // 3.14.0b2: release level and serial do not take part.
  EXPECT_EQ(PyVersion::from_hex(0x030e00b2), (PyVersion{3, 14, 0}));
}

}  // namespace
}  // namespace krait::python
