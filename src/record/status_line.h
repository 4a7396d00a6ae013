// The one live line `krait record` keeps on a terminal while it runs:
//   krait: recording 12/30 s, 2,376 samples, 3 processes, 0 dropped
// rewritten in place every second, and erased before the summary so the
// scrollback holds only what stays true. Not a terminal (a pipe, a file, a
// service manager's journal): nothing at all, so stderr stays clean.
//
// Threading: one owner, the run loop.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace krait::record {

struct RecordStatus {
  double elapsed_s = 0;
  std::optional<double> duration_s;  // nullopt: until Ctrl-C
  uint64_t samples = 0;
  uint64_t processes = 0;
  uint64_t dropped = 0;  // ring buffer full + stack builder behind
};

// The line's text, without terminal control codes.
std::string format_status(const RecordStatus& status);

class StatusLine {
 public:
  // Live only when `stream` is a terminal.
  explicit StatusLine(std::FILE* stream);
  StatusLine(const StatusLine&) = delete;
  StatusLine& operator=(const StatusLine&) = delete;
  ~StatusLine() { clear(); }

  bool live() const { return live_; }
  void show(const RecordStatus& status);
  // Erases the line (no-op when nothing is shown).
  void clear();

 private:
  std::FILE* stream_;
  bool live_ = false;
  bool shown_ = false;
};

}  // namespace krait::record
