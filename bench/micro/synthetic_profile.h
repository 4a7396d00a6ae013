// A deterministic, realistic-looking Profile for the profile and pprof
// benchmarks: mixed stacks (kernel, native, Python frames) of the shapes the
// pipeline produces, with thread label sets, built from a fixed seed so every
// run measures the same data.
#pragma once

#include <cstddef>
#include <vector>

#include "profile/profile.h"
#include "util/result.h"

namespace krait::bench {

struct SyntheticStack {
  std::vector<profile::Frame> frames;  // leaf first
  profile::Labels labels;
};

// `count` distinct stacks, 20 to 60 frames each, over a pool of a few
// hundred Python functions in 40 files, libpython and libc frames, and a
// few kernel frames; 8 threads of 2 processes as labels.
std::vector<SyntheticStack> make_stacks(size_t count);

// Interns the mappings, frames and label sets of `stacks` into `profile`,
// which must be empty: the frames carry the mapping ids an empty profile
// hands out. Returns per stack its frame ids (leaf first) and label set id.
struct InternedStacks {
  std::vector<std::vector<profile::FrameId>> frame_ids;
  std::vector<profile::LabelSetId> labels;
};
Result<InternedStacks> intern_stacks(profile::Profile& profile,
                                     const std::vector<SyntheticStack>& stacks);

}  // namespace krait::bench
