// `krait record`'s options: the sampling options every command shares
// (options/sampling.h) and record's own, bound to RecordOptions. src/cli
// puts them on the command line; parse_record_options() checks what was
// given.
#pragma once

#include <vector>

#include "options/option.h"
#include "record/record.h"
#include "util/result.h"

namespace krait::record {

// In --help order.
const std::vector<options::Option<RecordOptions>>& record_options();

// Defaults, then the given flags. An error is one line naming the flag:
// "--rate: must be between 1 and 10000, got 0".
Result<RecordOptions> parse_record_options(const options::GivenFlags& given);

}  // namespace krait::record
