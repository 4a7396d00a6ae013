// `krait top`'s options: the sampling options every command shares
// (options/sampling.h) and top's own, bound to TopOptions.
#pragma once

#include <vector>

#include "options/option.h"
#include "top/top.h"
#include "util/result.h"

namespace krait::top {

// In --help order.
const std::vector<options::Option<TopOptions>>& top_options();

// Defaults, then the given flags; an error is one line naming the flag.
Result<TopOptions> parse_top_options(const options::GivenFlags& given);

}  // namespace krait::top
