// The independent reader's view of a profile: `go tool pprof -raw` prints
// every sample (values, location ids, labels) and every location (address,
// mapping, function, file, line). same_samples_as_go() checks that it read
// the very samples krait's own decoder reads, stack by stack, not only that
// it accepted the file.
#pragma once

#include <string>

#include "export/profile.pb.h"
#include "util/result.h"

namespace krait::test {

// An error names the first sample (values, labels and stack as go printed
// them) that one side has and the other has not, or has with other values.
Result<void> same_samples_as_go(const std::string& go_raw, const perftools::profiles::Profile& p);

}  // namespace krait::test
