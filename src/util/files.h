// Small helpers for reading whole files (mostly under /proc).
#pragma once

#include <string>

#include "util/result.h"

namespace krait {

// Reads a whole file; works for /proc files whose size stat() reports as 0.
Result<std::string> read_file(const std::string& path);

}  // namespace krait
