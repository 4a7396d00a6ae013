// Writing profiles into a local directory, one file per application per
// interval, with retention: `krait daemon --output-dir DIR`.
//
// File names: `<app>-<from>-<until>.pb.gz` (gzipped pprof; from/until in
// unix seconds). <app> keeps [A-Za-z0-9._-] of the application name, other
// characters become '_', a leading '.' becomes '_', and it is cut at 100
// bytes; an empty name is "unknown". Should that name exist already (two
// applications that sanitize alike), `.1`, `.2`, ... goes before `.pb.gz`.
// Each file is written atomically (write_file_atomically): readers never
// see a partial profile.
//
// Retention, after every successful write: while the directory holds more
// than max_files of OUR files, or more than max_bytes in them, the oldest is
// deleted (oldest by <until>, then <from>, then name). Our files are regular
// files whose whole name has the form above; nothing else in the directory
// is touched, nor counted. The file just written is never deleted, even when
// it alone exceeds max_bytes. 0 means no limit.
//
// Failure: write() returns an error (unwritable or missing directory that
// cannot be created, full disk, ...) and changes nothing else; the next
// write() tries again (and creates the directory if it is missing by then).
// The caller logs and keeps sampling. Deletion failures are counted and
// reported in stats(), never returned from write() once the profile is safe.
//
// Threading: all members are thread-safe (one internal mutex).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace krait::exporter {

struct DirectoryOutputOptions {
  std::string path;
  uint64_t max_files = 0;  // 0: unlimited
  uint64_t max_bytes = 0;  // 0: unlimited
};

struct DirectoryOutputStats {
  uint64_t written = 0;          // files written
  uint64_t failed = 0;           // write() calls that returned an error
  uint64_t deleted = 0;          // files removed by retention
  uint64_t delete_failures = 0;  // files retention could not remove
  std::string last_error;        // of the last failure (write or delete)
};

// A file name of ours, split into its parts.
struct OutputFileName {
  std::string application;  // as sanitized in the name
  int64_t from = 0;
  int64_t until = 0;
  uint32_t duplicate = 0;  // the .N suffix; 0 when absent
};

class DirectoryOutput {
 public:
  explicit DirectoryOutput(DirectoryOutputOptions options);

  // Writes `pprof_gz` as the profile of `application` over [from, until]
  // (unix seconds), then applies retention. Returns the path written.
  Result<std::string> write(std::string_view application, int64_t from_unix_s, int64_t until_unix_s,
                            std::string_view pprof_gz);

  DirectoryOutputStats stats() const;
  const DirectoryOutputOptions& options() const { return options_; }

  // The file name (no directory) for a profile; duplicate 0 = no suffix.
  static std::string file_name(std::string_view application, int64_t from_unix_s,
                               int64_t until_unix_s, uint32_t duplicate = 0);
  // Parses a name file_name() produces; nullopt for anything else.
  static std::optional<OutputFileName> parse_file_name(std::string_view name);

 private:
  void apply_retention(const std::string& keep);  // mutex held

  const DirectoryOutputOptions options_;
  mutable std::mutex mutex_;
  DirectoryOutputStats stats_;
};

}  // namespace krait::exporter
