// An independent reader: `go tool pprof -raw` (Debian golang-go) must accept
// the file we write and report the functions, lines, mappings, labels and
// counts the fixture put in. Nothing here uses our decoder.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>

#include "export/pprof.h"
#include "fixture_profile.h"
#include "test_support.h"

namespace krait::exporter {
namespace {

using profile::FrameKind;
using test::FrameFacts;

// A location as `-raw` prints it: "<id>: 0x<addr> M=<mapping> <name> <file>:<line> s=<start>".
struct RawFrame {
  uint64_t address = 0;
  std::string mapping_file;
  std::string function, file;
  int64_t line = 0, start_line = 0;
  auto operator<=>(const RawFrame&) const = default;
};

RawFrame expected_raw_frame(const FrameFacts& f) {
  RawFrame r;
  const bool symbol = f.kind == FrameKind::kNative || f.kind == FrameKind::kKernel;
  r.address = symbol ? f.address : 0;
  r.mapping_file = test::expected_pprof_mapping(f);
  if (!symbol || !f.function.empty()) {
    r.function = f.function;
    r.file = f.file;
    r.line = f.line;
    r.start_line = f.start_line;
  }
  return r;
}

struct RawProfile {
  std::vector<std::string> header;  // lines before "Samples:"
  std::string sample_types;
  struct Sample {
    uint64_t count = 0;
    uint64_t cpu = 0;
    std::vector<uint64_t> locations;
    profile::Labels labels;
  };
  std::vector<Sample> samples;
  std::map<uint64_t, RawFrame> locations;
  std::map<uint64_t, uint64_t> location_mapping;
  struct Mapping {
    std::string file, build_id, flags;
  };
  std::map<uint64_t, Mapping> mappings;
};

RawProfile parse_raw(const std::string& text) {
  static const std::regex sample_re(R"(^\s+(\d+)\s+(\d+):((?: \d+)*) ?$)");
  static const std::regex label_re(R"(([^\s:]+):\[([^\]]*)\])");
  static const std::regex location_re(R"(^\s*(\d+): 0x([0-9a-f]+) M=(\d+) ?(.*)$)");
  static const std::regex line_re(R"(^(.*) (\S*):(-?\d+) s=(-?\d+)(?:\((.*)\))?$)");
  static const std::regex mapping_re(
      R"(^\s*(\d+): 0x[0-9a-f]+/0x[0-9a-f]+/0x[0-9a-f]+ (\S+) (\S*)\s*(.*)$)");
  RawProfile out;
  enum class Section { kHeader, kSamples, kLocations, kMappings } section = Section::kHeader;
  std::istringstream in(text);
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (line == "Samples:") {
      section = Section::kSamples;
      std::getline(in, out.sample_types);
      continue;
    }
    if (line == "Locations") {
      section = Section::kLocations;
      continue;
    }
    if (line == "Mappings") {
      section = Section::kMappings;
      continue;
    }
    switch (section) {
      case Section::kHeader:
        out.header.push_back(line);
        break;
      case Section::kSamples:
        if (std::regex_match(line, m, sample_re)) {
          RawProfile::Sample s;
          s.count = std::stoull(m[1]);
          s.cpu = std::stoull(m[2]);
          std::istringstream ids(m[3]);
          for (uint64_t id; ids >> id;)
            s.locations.push_back(id);
          out.samples.push_back(s);
        } else if (!out.samples.empty() && line.find(":[") != std::string::npos) {
          for (auto it = std::sregex_iterator(line.begin(), line.end(), label_re);
               it != std::sregex_iterator(); ++it)
            out.samples.back().labels.emplace_back((*it)[1], (*it)[2]);
          std::sort(out.samples.back().labels.begin(), out.samples.back().labels.end());
        } else {
          ADD_FAILURE() << "unexpected line in Samples: " << line;
        }
        break;
      case Section::kLocations: {
        if (!std::regex_match(line, m, location_re)) {
          ADD_FAILURE() << "unexpected line in Locations: " << line;
          break;
        }
        const uint64_t id = std::stoull(m[1]);
        RawFrame f;
        f.address = std::stoull(m[2], nullptr, 16);
        out.location_mapping[id] = std::stoull(m[3]);
        const std::string rest = m[4];
        std::smatch lm;
        if (!rest.empty()) {
          if (std::regex_match(rest, lm, line_re)) {
            f.function = lm[1];
            f.file = lm[2];
            f.line = std::stoll(lm[3]);
            f.start_line = std::stoll(lm[4]);
          } else {
            ADD_FAILURE() << "unparsed location line: " << line;
          }
        }
        out.locations[id] = f;
        break;
      }
      case Section::kMappings:
        if (line.empty())
          break;
        if (std::regex_match(line, m, mapping_re))
          out.mappings[std::stoull(m[1])] = {m[2], m[3], m[4]};
        else
          ADD_FAILURE() << "unexpected line in Mappings: " << line;
        break;
    }
  }
  for (auto& [id, frame] : out.locations) {
    auto it = out.mappings.find(out.location_mapping[id]);
    if (it != out.mappings.end())
      frame.mapping_file = it->second.file;
  }
  return out;
}

bool contains(const std::vector<std::string>& lines, const std::string& want) {
  return std::find(lines.begin(), lines.end(), want) != lines.end();
}

TEST(PprofGoTest, GoToolPprofReadsOurFile) {
  const auto go = test::find_executable("go", {"/usr/bin", "/usr/lib/go/bin"});
  ASSERT_TRUE(go.has_value())
      << "`go` is missing: install the Debian package golang-go (this test runs `go tool pprof`)";
  test::TempDir dir;
  ASSERT_TRUE(dir.ok()) << "cannot create a temporary directory";

  const test::Fixture fx = test::make_fixture();
  const std::string file = dir.path() + "/cpu.pb.gz";
  auto written = write_pprof_file(fx.profile, file);
  ASSERT_TRUE(written.ok()) << written.error().message;

  // A private, empty Go environment: works as root in CI, with no cache and
  // no network.
  const char* path_env = std::getenv("PATH");
  const std::vector<std::string> env = {
      "HOME=" + dir.path(),
      "GOCACHE=" + dir.path() + "/gocache",
      "GOPATH=" + dir.path() + "/gopath",
      "GOFLAGS=",
      "GOENV=off",
      "GOPROXY=off",
      "GOTOOLCHAIN=local",
      "GOTELEMETRY=off",
      "PPROF_TMPDIR=" + dir.path(),
      "TMPDIR=" + dir.path(),
      std::string("PATH=") + (path_env ? path_env : "/usr/bin:/bin"),
  };
  auto child = test::run_child({*go, "tool", "pprof", "-raw", file}, env);
  ASSERT_TRUE(child.ok()) << child.error().message;
  ASSERT_EQ(child->exit_code, 0) << "go tool pprof failed (signal " << child->signal << "):\n"
                                 << child->err << child->out;

  const RawProfile raw = parse_raw(child->out);
  EXPECT_TRUE(contains(raw.header, "PeriodType: cpu nanoseconds")) << child->out;
  EXPECT_TRUE(contains(raw.header, "Period: 10101010")) << child->out;
  EXPECT_TRUE(contains(raw.header, "Duration: 5s")) << child->out;
  for (const auto& comment : fx.profile.meta().comments)
    EXPECT_TRUE(contains(raw.header, "Comment: " + comment)) << child->out;
  EXPECT_EQ(raw.sample_types, "samples/count cpu/nanoseconds");

  // Stacks, counts and labels, as go reads them, against the fixture.
  std::map<std::pair<std::vector<RawFrame>, profile::Labels>, uint64_t> got, expected;
  for (const auto& s : raw.samples) {
    EXPECT_EQ(s.cpu, s.count * static_cast<uint64_t>(test::kFixturePeriodNs));
    std::vector<RawFrame> stack;
    for (uint64_t id : s.locations) {
      auto it = raw.locations.find(id);
      ASSERT_NE(it, raw.locations.end()) << "go printed no location " << id;
      stack.push_back(it->second);
    }
    got[{stack, s.labels}] += s.count;
  }
  for (const auto& [key, count] : fx.expected) {
    std::vector<RawFrame> stack;
    for (const auto& f : key.first)
      stack.push_back(expected_raw_frame(f));
    expected[{stack, key.second}] += count;
  }
  EXPECT_EQ(got, expected) << child->out;
  ASSERT_FALSE(got.empty());

  // Mappings: names, build ids, and "has functions" so go does not try to
  // symbolize our addresses again.
  std::map<std::string, RawProfile::Mapping> by_file;
  for (const auto& [id, m] : raw.mappings)
    by_file[m.file] = m;
  for (const char* name :
       {"/usr/lib/x86_64-linux-gnu/libc.so.6", "/opt/app/_native.cpython-312-x86_64-linux-gnu.so",
        "[kernel.kallsyms]", "[python]", "[unknown]", "[synthetic]"}) {
    auto it = by_file.find(name);
    ASSERT_NE(it, by_file.end()) << "no mapping " << name << " in:\n" << child->out;
    EXPECT_NE(it->second.flags.find("[FN]"), std::string::npos) << name;
  }
  EXPECT_EQ(by_file["/usr/lib/x86_64-linux-gnu/libc.so.6"].build_id, "0123abcd");
  EXPECT_EQ(by_file["/opt/app/_native.cpython-312-x86_64-linux-gnu.so"].build_id, "ffee00");
}

}  // namespace
}  // namespace krait::exporter
