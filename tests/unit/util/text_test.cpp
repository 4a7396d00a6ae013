// parse_unsigned over well-formed, out-of-range and garbage text: every
// answer is a value or nullopt, never an exception.
#include "util/text.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace krait {
namespace {

TEST(ParseUnsignedTest, ParsesDecimalDigits) {
  EXPECT_EQ(parse_unsigned("0"), 0u);
  EXPECT_EQ(parse_unsigned("42"), 42u);
  EXPECT_EQ(parse_unsigned("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parse_unsigned<uint32_t>("4294967295"), UINT32_MAX);
  EXPECT_EQ(parse_unsigned<uint8_t>("255"), 255u);
  // Leading zeros do not count against the range, however many.
  EXPECT_EQ(parse_unsigned(std::string(50'000, '0') + "7"), 7u);
}

TEST(ParseUnsignedTest, ParsesHexDigitsOfEitherCase) {
  EXPECT_EQ(parse_unsigned("ff", 16), 255u);
  EXPECT_EQ(parse_unsigned("DeadBeef", 16), 0xdeadbeefu);
  EXPECT_EQ(parse_unsigned("ffffffffffffffff", 16), UINT64_MAX);
  EXPECT_FALSE(parse_unsigned("0x10", 16));  // no prefix
  EXPECT_FALSE(parse_unsigned("g", 16));
  EXPECT_FALSE(parse_unsigned("ff", 10));
}

TEST(ParseUnsignedTest, RefusesValuesOutOfRange) {
  EXPECT_FALSE(parse_unsigned("18446744073709551616"));
  EXPECT_FALSE(parse_unsigned("99999999999999999999999999999"));
  EXPECT_FALSE(parse_unsigned<uint32_t>("4294967296"));
  EXPECT_FALSE(parse_unsigned<uint32_t>("99999999999"));
  EXPECT_FALSE(parse_unsigned<uint8_t>("256"));
  EXPECT_FALSE(parse_unsigned("1" + std::string(50'000, '9')));
  EXPECT_FALSE(parse_unsigned("10000000000000000", 16));
}

TEST(ParseUnsignedTest, RefusesAnythingButDigits) {
  for (const char* bad :
       {"", " ", "-1", "+1", " 1", "1 ", "1\n", "1.5", "1e3", "12abc", "abc", "0x1", "1-3", "\xff"})
    EXPECT_FALSE(parse_unsigned(bad)) << '"' << bad << '"';
  EXPECT_FALSE(
      parse_unsigned(std::string_view("1\0"
                                      "2",
                                      3)));
}

}  // namespace
}  // namespace krait
