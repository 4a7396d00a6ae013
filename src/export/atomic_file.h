// Replacing a file so readers see either the old contents or the new, never a
// half-written file, even if krait crashes or the machine loses power midway.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace krait::exporter {

// Writes `data` to a new file in the directory of `path`, flushes it to disk
// and renames it over `path`. The new file gets the mode a plain open(2) with
// 0666 would give (umask applies). On failure nothing is left behind and
// `path` is untouched. Thread-safe for distinct paths; two writers racing on
// one path leave one of the two complete files.
Result<void> write_file_atomically(const std::string& path, std::string_view data);

}  // namespace krait::exporter
