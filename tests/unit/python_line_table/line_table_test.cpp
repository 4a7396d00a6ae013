// Line tables checked against CPython itself: fixtures written by
// generate_fixtures.py under each interpreter hold real tables and that
// interpreter's own line for every offset (PyCode_Addr2Line through ctypes,
// and dis.findlinestarts / co_lines / co_positions).
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "python/line_table.h"

namespace krait::python {
namespace {

namespace fs = std::filesystem;

struct Version {
  int major;
  int minor;
};

// Every version the profiler supports must have a fixture. 3.14 and 3.15
// come from the Debian-unstable builds listed in
// /var/cache/krait/pythons/interpreters.json (see generate_fixtures.py).
const Version kExpectedVersions[] = {{2, 7},  {3, 6},  {3, 7},  {3, 8},  {3, 9}, {3, 10},
                                     {3, 11}, {3, 12}, {3, 13}, {3, 14}, {3, 15}};

constexpr size_t kMinCodeObjectsPerFixture = 300;

std::string version_name(const Version& v) {
  return fmt::format("{}.{}", v.major, v.minor);
}

struct Oracle {
  std::string name;
  std::vector<int32_t> lines;  // at offsets 0, step, 2*step, ...
};

struct CodeRecord {
  std::string label;
  int32_t firstlineno = 0;
  uint32_t code_size = 0;
  uint32_t step = 0;
  std::vector<uint8_t> table;
  std::vector<Oracle> oracles;
};

struct Fixture {
  std::string path;
  std::string python;  // major.minor.micro
  Version version{};
  std::vector<CodeRecord> codes;
};

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using UniqueGz = std::unique_ptr<gzFile_s, GzCloser>;

Result<std::string> read_gzip(const std::string& path) {
  UniqueGz file(gzopen(path.c_str(), "rb"));
  if (!file)
    return make_error("cannot open {}", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(file.get(), buf, sizeof(buf));
    if (n < 0)
      return make_error("cannot decompress {}", path);
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(sep, start), s.size());
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

template <typename T>
Result<T> parse_int(std::string_view s) {
  T value{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size())
    return make_error("bad number '{}'", s);
  return value;
}

Result<std::vector<uint8_t>> parse_hex(const std::string& s) {
  std::vector<uint8_t> out;
  if (s == "-")
    return out;
  if (s.size() % 2 != 0)
    return make_error("odd hex length");
  for (size_t i = 0; i < s.size(); i += 2) {
    uint8_t byte = 0;
    auto [ptr, ec] = std::from_chars(s.data() + i, s.data() + i + 2, byte, 16);
    if (ec != std::errc() || ptr != s.data() + i + 2)
      return make_error("bad hex at {}", i);
    out.push_back(byte);
  }
  return out;
}

// "5 7x3 -1x2" -> 5 7 7 7 -1 -1
Result<std::vector<int32_t>> parse_rle(const std::vector<std::string>& fields) {
  std::vector<int32_t> out;
  for (size_t i = 1; i < fields.size(); ++i) {
    const std::string& token = fields[i];
    const size_t x = token.find('x');
    auto value = parse_int<int32_t>(std::string_view(token).substr(0, x));
    KRAIT_TRY(value);
    uint32_t count = 1;
    if (x != std::string::npos) {
      auto parsed = parse_int<uint32_t>(std::string_view(token).substr(x + 1));
      KRAIT_TRY(parsed);
      count = *parsed;
    }
    out.insert(out.end(), count, *value);
  }
  return out;
}

Result<Fixture> load_fixture(const fs::path& path) {
  auto text = read_gzip(path.string());
  KRAIT_TRY(text);
  Fixture fixture;
  fixture.path = path.string();
  size_t declared = SIZE_MAX;
  const auto lines = split(*text, '\n');
  for (size_t n = 0; n < lines.size(); ++n) {
    if (lines[n].empty())
      continue;
    const auto fields = split(lines[n], ' ');
    const std::string& kind = fields[0];
    auto where = [&](const Error& e) {
      return make_error("{} line {}: {}", path.string(), n + 1, e.message);
    };
    if (n == 0) {
      if (lines[n] != "krait-line-table-fixture 1")
        return make_error("{}: not a version 1 fixture", path.string());
    } else if (kind == "python" && fields.size() == 2) {
      fixture.python = fields[1];
      const auto parts = split(fields[1], '.');
      if (parts.size() != 3)
        return make_error("{}: bad python version '{}'", path.string(), fields[1]);
      auto major = parse_int<int>(parts[0]);
      auto minor = parse_int<int>(parts[1]);
      if (!major || !minor)
        return make_error("{}: bad python version '{}'", path.string(), fields[1]);
      fixture.version = {*major, *minor};
    } else if (kind == "code" && fields.size() == 6) {
      CodeRecord code;
      code.label = fields[1];
      auto first = parse_int<int32_t>(fields[2]);
      auto size = parse_int<uint32_t>(fields[3]);
      auto step = parse_int<uint32_t>(fields[4]);
      auto table = parse_hex(fields[5]);
      for (const Error* e : {first ? nullptr : &first.error(), size ? nullptr : &size.error(),
                             step ? nullptr : &step.error(), table ? nullptr : &table.error()})
        if (e != nullptr)
          return where(*e);
      if (*step == 0)
        return where(Error{"step 0"});
      code.firstlineno = *first;
      code.code_size = *size;
      code.step = *step;
      code.table = std::move(*table);
      fixture.codes.push_back(std::move(code));
    } else if (kind == "end" && fields.size() == 2) {
      auto count = parse_int<size_t>(fields[1]);
      if (!count)
        return where(count.error());
      declared = *count;
    } else if (!fixture.codes.empty() && (kind == "addr2line" || kind == "dis")) {
      CodeRecord& code = fixture.codes.back();
      Oracle oracle{kind, {}};
      if (fields.size() == 2 && fields[1] == "same") {
        if (code.oracles.empty() || code.oracles[0].name != "addr2line")
          return where(Error{"'same' without an addr2line row before it"});
        oracle.lines = code.oracles[0].lines;
      } else {
        auto rle = parse_rle(fields);
        if (!rle)
          return where(rle.error());
        oracle.lines = std::move(*rle);
      }
      const size_t expected = (code.code_size + code.step - 1) / code.step;
      if (oracle.lines.size() != expected)
        return where(make_error("{} lines for {} offsets", oracle.lines.size(), expected));
      code.oracles.push_back(std::move(oracle));
    } else {
      return where(make_error("unexpected record '{}'", kind));
    }
  }
  if (declared != fixture.codes.size())
    return make_error("{}: truncated: {} code records, end says {}", path.string(),
                      fixture.codes.size(), declared);
  for (const auto& code : fixture.codes)
    if (code.oracles.empty())
      return make_error("{}: {} has no oracle row", path.string(), code.label);
  return fixture;
}

fs::path fixture_dir() {
  return fs::path(KRAIT_LINE_TABLE_FIXTURES);
}

std::vector<fs::path> fixtures_for(const Version& version) {
  std::vector<fs::path> out;
  const std::string prefix = fmt::format("cpython-{}.{}.", version.major, version.minor);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fixture_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(".lines.gz"))
      out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class FixtureTest : public testing::TestWithParam<Version> {};

TEST_P(FixtureTest, MatchesCPythonAtEveryOffset) {
  const Version version = GetParam();
  const auto paths = fixtures_for(version);
  ASSERT_FALSE(paths.empty()) << "no fixture for CPython " << version_name(version) << " in "
                              << fixture_dir()
                              << ": run generate_fixtures.py under that interpreter (see its "
                                 "header) and commit the result";
  const auto format = line_table_format(version.major, version.minor);
  ASSERT_TRUE(format.has_value());

  for (const auto& path : paths) {
    SCOPED_TRACE(path.string());
    auto fixture = load_fixture(path);
    ASSERT_TRUE(fixture.ok()) << fixture.error().message;
    EXPECT_EQ(fixture->version.major, version.major);
    EXPECT_EQ(fixture->version.minor, version.minor);
    EXPECT_GE(fixture->codes.size(), kMinCodeObjectsPerFixture);

    size_t checked = 0;
    size_t failures = 0;
    int64_t largest_forward_jump = 0;
    int64_t largest_backward_jump = 0;
    size_t no_line_ranges = 0;
    for (const auto& code : fixture->codes) {
      auto ranges = decode_line_table(*format, code.table, code.firstlineno, code.code_size);
      ASSERT_TRUE(ranges.ok()) << code.label << ": " << ranges.error().message;
      // Without the size, 3.10+ tables still answer every offset inside the code.
      const bool self_sized =
          *format == LineTableFormat::kLinetable310 || *format == LineTableFormat::kLocations311;
      std::vector<LineRange> unsized;
      if (self_sized) {
        auto r = decode_line_table(*format, code.table, code.firstlineno, 0);
        ASSERT_TRUE(r.ok()) << code.label << ": " << r.error().message;
        unsized = std::move(*r);
      }
      for (const auto& oracle : code.oracles) {
        for (size_t i = 0; i < oracle.lines.size(); ++i) {
          const auto offset = static_cast<uint32_t>(i * code.step);
          const int32_t expected = oracle.lines[i];
          const int32_t got = line_for_offset(*ranges, offset);
          ++checked;
          if (got != expected && ++failures <= 20)
            ADD_FAILURE() << code.label << " offset " << offset << ": CPython (" << oracle.name
                          << ") says line " << expected << ", we say " << got;
          if (self_sized && line_for_offset(unsized, offset) != expected && ++failures <= 20)
            ADD_FAILURE() << code.label << " offset " << offset << " without code size: CPython ("
                          << oracle.name << ") says line " << expected << ", we say "
                          << line_for_offset(unsized, offset);
        }
      }
      int32_t previous = kNoLine;
      for (const auto& range : *ranges) {
        if (range.line == kNoLine) {
          ++no_line_ranges;
          continue;
        }
        if (previous != kNoLine) {
          largest_forward_jump = std::max<int64_t>(largest_forward_jump, range.line - previous);
          largest_backward_jump = std::max<int64_t>(largest_backward_jump, previous - range.line);
        }
        previous = range.line;
      }
    }
    EXPECT_EQ(failures, 0u) << "offsets checked: " << checked;
    // The fixture must exercise the hard cases, or agreement proves little.
    EXPECT_GT(checked, 50000u);
    EXPECT_GE(largest_forward_jump, 140000) << "fixture lacks the multi-chunk line jump";
    if (version.major == 3 && version.minor >= 8) {
      EXPECT_GT(largest_backward_jump, 255) << "fixture lacks a large negative line delta";
    }
    if (*format == LineTableFormat::kLocations311) {
      EXPECT_GT(no_line_ranges, 0u) << "fixture lacks no-location entries";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CPython, FixtureTest, testing::ValuesIn(kExpectedVersions),
                         [](const testing::TestParamInfo<Version>& info) {
                           return fmt::format("v{}_{}", info.param.major, info.param.minor);
                         });

// A fixture whose version is not in kExpectedVersions would never be checked.
TEST(Fixtures, EveryFixtureIsChecked) {
  std::error_code ec;
  size_t seen = 0;
  for (const auto& entry : fs::directory_iterator(fixture_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    ++seen;
    const bool expected = std::any_of(
        std::begin(kExpectedVersions), std::end(kExpectedVersions), [&](const Version& v) {
          return name.starts_with(fmt::format("cpython-{}.{}.", v.major, v.minor)) &&
                 name.ends_with(".lines.gz");
        });
    EXPECT_TRUE(expected) << name << " is not checked: add its version to kExpectedVersions";
  }
  EXPECT_FALSE(ec) << fixture_dir() << ": " << ec.message();
  EXPECT_GE(seen, std::size(kExpectedVersions));
}

TEST(LineTableFormat, MapsEveryCPythonVersion) {
  EXPECT_EQ(line_table_format(2, 7), LineTableFormat::kLnotabUnsigned);
  for (int minor = 0; minor <= 5; ++minor)
    EXPECT_EQ(line_table_format(3, minor), LineTableFormat::kLnotabUnsigned) << minor;
  for (int minor = 6; minor <= 9; ++minor)
    EXPECT_EQ(line_table_format(3, minor), LineTableFormat::kLnotabSigned) << minor;
  EXPECT_EQ(line_table_format(3, 10), LineTableFormat::kLinetable310);
  for (int minor = 11; minor <= 15; ++minor)
    EXPECT_EQ(line_table_format(3, minor), LineTableFormat::kLocations311) << minor;
  EXPECT_EQ(line_table_format(2, 6), std::nullopt);
  EXPECT_EQ(line_table_format(2, 8), std::nullopt);
  EXPECT_EQ(line_table_format(1, 5), std::nullopt);
  EXPECT_EQ(line_table_format(4, 0), std::nullopt);
  EXPECT_EQ(line_table_format(3, -1), std::nullopt);
}

// The worked example of Objects/lnotab_notes.txt: offsets 0, 6, 50, 350, 361
// start lines 1, 2, 7, 207, 208 (firstlineno 1), and the note spells out the
// bytes the compiler writes for it.
TEST(Lnotab, DocumentedExample) {
  const std::vector<uint8_t> table = {6, 1, 44, 5, 255, 0, 45, 127, 0, 73, 11, 1};
  for (auto format : {LineTableFormat::kLnotabUnsigned, LineTableFormat::kLnotabSigned}) {
    auto ranges = decode_line_table(format, table, 1, 400);
    ASSERT_TRUE(ranges.ok()) << ranges.error().message;
    const std::vector<LineRange> expected = {
        {0, 6, 1}, {6, 50, 2}, {50, 350, 7}, {350, 361, 207}, {361, 400, 208}};
    EXPECT_EQ(*ranges, expected) << format_name(format);
    EXPECT_EQ(line_for_offset(*ranges, 349), 7);
    EXPECT_EQ(line_for_offset(*ranges, 399), 208);
    EXPECT_EQ(line_for_offset(*ranges, 400), kNoLine);
  }
}

TEST(Lnotab, SignednessOfTheLineIncrement) {
  // 0xfe is +254 before 3.6 and -2 after.
  const std::vector<uint8_t> table = {4, 0xfe};
  auto unsigned_ranges = decode_line_table(LineTableFormat::kLnotabUnsigned, table, 10, 8);
  auto signed_ranges = decode_line_table(LineTableFormat::kLnotabSigned, table, 10, 8);
  ASSERT_TRUE(unsigned_ranges.ok() && signed_ranges.ok());
  EXPECT_EQ(line_for_offset(*unsigned_ranges, 4), 264);
  EXPECT_EQ(line_for_offset(*signed_ranges, 4), 8);
}

TEST(Lnotab, EmptyTableIsTheFirstLineEverywhere) {
  auto ranges = decode_line_table(LineTableFormat::kLnotabSigned, {}, 42, 10);
  ASSERT_TRUE(ranges.ok());
  EXPECT_EQ(*ranges, (std::vector<LineRange>{{0, 10, 42}}));
}

TEST(Linetable310, MinusOneTwentyEightIsNoLineAndKeepsTheRunningLine) {
  // +2 for 4 bytes, no line for 2 bytes, +1 for 2 bytes.
  const std::vector<uint8_t> table = {4, 2, 2, 0x80, 2, 1};
  auto ranges = decode_line_table(LineTableFormat::kLinetable310, table, 5, 8);
  ASSERT_TRUE(ranges.ok()) << ranges.error().message;
  EXPECT_EQ(*ranges, (std::vector<LineRange>{{0, 4, 7}, {4, 6, kNoLine}, {6, 8, 8}}));
}

TEST(Locations311, DocumentedVarintEncodings) {
  // locations.md: 63 is 0x3f, 200 is 0x48 0x03. A no-column entry (code 13)
  // of one code unit with svarint(+100) = 200 and then svarint(-31) = 63.
  const std::vector<uint8_t> table = {0x80 | (13 << 3), 0x48, 0x03, 0x80 | (13 << 3), 0x3f};
  auto ranges = decode_line_table(LineTableFormat::kLocations311, table, 1, 4);
  ASSERT_TRUE(ranges.ok()) << ranges.error().message;
  EXPECT_EQ(*ranges, (std::vector<LineRange>{{0, 2, 101}, {2, 4, 70}}));
}

TEST(Locations311, CodeUnitsAndPadding) {
  // Short form (code 0) of 3 units, one-line form +2 (code 12) of 8 units, no
  // location (code 15) of 1 unit; the table covers 24 bytes of a 30-byte code.
  const std::vector<uint8_t> table = {0x80 | (0 << 3) | 2, 0x12, 0x80 | (12 << 3) | 7, 4, 9,
                                      0x80 | (15 << 3) | 0};
  auto ranges = decode_line_table(LineTableFormat::kLocations311, table, 3, 30);
  ASSERT_TRUE(ranges.ok()) << ranges.error().message;
  EXPECT_EQ(*ranges, (std::vector<LineRange>{{0, 6, 3}, {6, 22, 5}, {22, 30, kNoLine}}));
  auto clipped = decode_line_table(LineTableFormat::kLocations311, table, 3, 10);
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ(*clipped, (std::vector<LineRange>{{0, 6, 3}, {6, 10, 5}}));
}

TEST(Errors, MalformedTablesAreRefused) {
  const std::vector<uint8_t> odd = {2, 1, 2};
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLnotabSigned, odd, 1, 10).ok());
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLinetable310, odd, 1, 10).ok());
  // lnotab cannot end its last range without the code size.
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLnotabUnsigned, {}, 1, 0).ok());
  const uint8_t no_start_bit[] = {0x12};
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLocations311, no_start_bit, 1, 10).ok());
  const uint8_t truncated_varint[] = {0x80 | (14 << 3), 0x41};
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLocations311, truncated_varint, 1, 10).ok());
  const uint8_t missing_varint[] = {0x80 | (13 << 3)};
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLocations311, missing_varint, 1, 10).ok());
  const uint8_t long_varint[] = {0x80 | (13 << 3), 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x01};
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLocations311, long_varint, 1, 10).ok());
  // A line beyond int32: svarint of 2^33 after a start line near the top.
  const uint8_t huge_delta[] = {0x80 | (13 << 3), 0x40, 0x40, 0x40, 0x40, 0x40, 0x08};
  auto huge = decode_line_table(LineTableFormat::kLocations311, huge_delta, 1 << 30, 10);
  EXPECT_FALSE(huge.ok());
  const std::vector<uint8_t> too_big(kMaxLineTableBytes + 2, 0);
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLnotabSigned, too_big, 1, 10).ok());
}

TEST(Errors, LnotabLineOverflowIsRefused) {
  // 2^23 + 2^16 pairs of +255 lines exceed int32 (CPython's line is a C int).
  std::vector<uint8_t> table;
  for (int i = 0; i < (1 << 23) + (1 << 16); ++i) {
    table.push_back(0);
    table.push_back(255);
  }
  table.push_back(2);
  table.push_back(0);
  EXPECT_FALSE(decode_line_table(LineTableFormat::kLnotabUnsigned, table, 1, 10).ok());
}

// Invariants any successful decode must keep, whatever the input.
void expect_well_formed(const std::vector<LineRange>& ranges, size_t table_size,
                        uint32_t code_size) {
  ASSERT_LE(ranges.size(), table_size + 1);
  uint32_t expected_start = 0;
  for (const auto& r : ranges) {
    ASSERT_EQ(r.start, expected_start);
    ASSERT_LT(r.start, r.end);
    if (code_size != 0) {
      ASSERT_LE(r.end, code_size);
    }
    expected_start = r.end;
  }
}

TEST(Fuzz, RandomBytesStayBounded) {
  std::mt19937 rng(20240611);
  const LineTableFormat formats[] = {LineTableFormat::kLnotabUnsigned,
                                     LineTableFormat::kLnotabSigned, LineTableFormat::kLinetable310,
                                     LineTableFormat::kLocations311};
  std::map<LineTableFormat, int> successes;
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::vector<uint8_t> table(rng() % 300);
    for (auto& b : table)
      b = static_cast<uint8_t>(rng());
    // Bias toward start bytes half the time so the 3.11 decoder gets far.
    if (iteration % 2 == 0)
      for (size_t i = 0; i < table.size(); i += 1 + rng() % 4)
        table[i] |= 0x80;
    const uint32_t code_size = iteration % 3 == 0 ? 0 : rng() % 5000;
    const auto firstlineno = static_cast<int32_t>(rng());
    for (auto format : formats) {
      auto ranges = decode_line_table(format, table, firstlineno, code_size);
      if (!ranges.ok())
        continue;
      ++successes[format];
      expect_well_formed(*ranges, table.size(), code_size);
      for (int probe = 0; probe < 8; ++probe)
        (void)line_for_offset(*ranges, static_cast<uint32_t>(rng()) % (code_size + 100));
    }
  }
  // Not every input may fail: the decoders must accept plenty of random tables.
  for (auto format : formats)
    EXPECT_GT(successes[format], 500) << format_name(format);
}

TEST(Fuzz, MutatedRealTablesStayBounded) {
  std::mt19937 rng(7);
  size_t mutated = 0;
  for (const auto& version : kExpectedVersions) {
    const auto paths = fixtures_for(version);
    ASSERT_FALSE(paths.empty()) << "no fixture for " << version_name(version);
    auto fixture = load_fixture(paths.front());
    ASSERT_TRUE(fixture.ok()) << fixture.error().message;
    const auto format = *line_table_format(version.major, version.minor);
    for (size_t i = 0; i < fixture->codes.size(); i += 7) {
      const auto& code = fixture->codes[i];
      for (int round = 0; round < 4; ++round) {
        std::vector<uint8_t> table = code.table;
        if (!table.empty()) {
          for (int flips = 0; flips < 3; ++flips)
            table[rng() % table.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
          table.resize(rng() % (table.size() + 1));
        }
        auto ranges = decode_line_table(format, table, code.firstlineno, code.code_size);
        ++mutated;
        if (ranges.ok())
          expect_well_formed(*ranges, table.size(), code.code_size);
      }
    }
  }
  EXPECT_GT(mutated, 1000u);
}

TEST(LineForOffset, OutsideEveryRangeIsNoLine) {
  const std::vector<LineRange> ranges = {{0, 4, 1}, {4, 8, 2}};
  EXPECT_EQ(line_for_offset(ranges, 0), 1);
  EXPECT_EQ(line_for_offset(ranges, 3), 1);
  EXPECT_EQ(line_for_offset(ranges, 4), 2);
  EXPECT_EQ(line_for_offset(ranges, 8), kNoLine);
  EXPECT_EQ(line_for_offset({}, 0), kNoLine);
}

}  // namespace
}  // namespace krait::python
