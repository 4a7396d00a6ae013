// A representative profile for the exporter tests, described first as plain
// data (the oracle), then built into a profile::Profile from that data.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "profile/profile.h"

namespace krait::test {

// One frame as a reader should see it, with the mapping resolved to its file.
struct FrameFacts {
  profile::FrameKind kind = profile::FrameKind::kPython;
  std::string function;
  std::string system_name;
  std::string file;
  int64_t start_line = 0;
  int64_t line = 0;
  uint64_t address = 0;
  std::string mapping_file;  // "" = no mapping in the Profile
  std::string build_id;

  auto operator<=>(const FrameFacts&) const = default;
};

struct SampleFacts {
  std::vector<FrameFacts> stack;  // leaf first
  profile::Labels labels;         // sorted by key
  uint64_t count = 0;
};

inline constexpr int64_t kFixturePeriodNs = 10'101'010;
inline constexpr int64_t kFixtureStartNs = 1'700'000'000'123'456'789;
inline constexpr int64_t kFixtureDurationNs = 5'000'000'000;

// The kernel mapping's file name, as the pprof convention spells it.
inline const std::string kKernelFile = "[kernel.kallsyms]";

struct Fixture {
  profile::Profile profile;
  std::vector<SampleFacts> adds;  // what was passed to add_sample, in order
  // adds summed per (stack, labels): what every exporter must reproduce.
  std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t> expected;
};

Fixture make_fixture();

// The pprof mapping a frame's location must end up in (export/pprof.h): its
// own mapping, or the pseudo-mapping for its kind.
std::string expected_pprof_mapping(const FrameFacts& frame);

}  // namespace krait::test
