// speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json),
// which `npx speedscope FILE` and https://www.speedscope.app open.
//
// What encode_speedscope() writes for a profile::Profile:
// - "$schema", "name" (the caller's title), "exporter": "krait",
//   "activeProfileIndex": 0, and shared.frames: one {name, file, line} per
//   distinct frame as shown (export/frame_names.h); "file" is left out when
//   unknown, "line" when 0. Kinds stay apart by name: a kernel frame's name
//   ends in "_[k]" (as in the folded text), a Python frame has its source
//   file and line, a native frame its source file or else its library,
//   a synthetic frame ("[truncated]") neither.
// - One "sampled" profile per thread, named
//   "<process_name> (<pid>) / <thread_name> (<tid>)" from the sample labels
//   (a missing part is left out; "[unlabelled]" when all are). Other labels
//   do not split a thread. The busiest thread comes first (it is the one
//   speedscope opens), ties by name.
// - samples: frame indexes root first, one entry per distinct stack of the
//   thread (in the order of the stacks' indexes), weights: count * period
//   with unit "nanoseconds", or the count with unit "none" when the period
//   is 0. Weights saturate at INT64_MAX. startValue 0, endValue the sum.
// The output is valid UTF-8 JSON whatever bytes the names hold (bad bytes
// become '?') and a pure function of the Profile and the title.
//
// Threading: reentrant; the Profile must not change while it is encoded.
#pragma once

#include <string>
#include <string_view>

#include "profile/profile.h"

namespace krait::exporter {

std::string encode_speedscope(const profile::Profile& profile, std::string_view title);

}  // namespace krait::exporter
