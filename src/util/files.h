// Small helpers for reading whole files (mostly under /proc).
//
// Every read is bounded: a /proc file of another process (its cmdline, for
// one) can be made as large as its owner likes, so nothing here reads or
// allocates more than the caller's cap (plus one read buffer).
#pragma once

#include <cstddef>
#include <string>

#include "util/result.h"

namespace krait {

// read_file()'s cap unless the caller names one: far above any /proc or /sys
// file krait reads whole (status, cgroup, comm, maps of one process are
// read elsewhere), and small enough that a hostile file costs little.
inline constexpr size_t kReadFileDefaultMaxBytes = size_t{4} << 20;  // 4 MiB

// Reads a whole file; works for /proc files whose size stat() reports as 0.
// A file longer than `max_bytes` is an Error naming the file and the cap
// (only max_bytes + 1 bytes of it are read). Files an operator chooses
// (configuration, offset tables, profiles) and large kernel files
// (/proc/kallsyms) pass a larger cap of their own.
Result<std::string> read_file(const std::string& path, size_t max_bytes = kReadFileDefaultMaxBytes);

// The first `max_bytes` bytes of a file, or all of it when it is shorter:
// for callers that need only its start (a process's first arguments).
Result<std::string> read_file_prefix(const std::string& path, size_t max_bytes);

}  // namespace krait
