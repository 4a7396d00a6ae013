// The model of `krait top`: from one interval's profile and the view
// settings, the rows the screen (or the plain snapshot) shows, and the text
// of every line. Pure functions of their inputs, no terminal and no engine,
// so the terminal UI and the plain snapshot show the same numbers and unit
// tests need neither.
//
// Shares are percent of one CPU over the interval (samples x period /
// interval x 100): a process spinning on one core reads ~100%, as in top's
// %CPU. "Own" counts a row's samples at the leaf (the first frame the view
// keeps); "total" counts each sample once for every row anywhere on its
// stack, however often a recursive function appears in it.
//
// Everything shown comes from profiled processes (names, files, thread
// names) and is hostile: every cell is made printable (control and bidi
// characters replaced, UTF-8 repaired) and cut to its column's width.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "profile/profile.h"

namespace krait::top {

enum class Grouping : uint8_t { kFunctions, kLines, kProcesses, kThreads };
enum class SortKey : uint8_t { kOwn, kTotal, kName };

struct ViewSettings {
  Grouping grouping = Grouping::kFunctions;
  SortKey sort = SortKey::kOwn;
  // Native and kernel frames (and the pipeline's placeholders) as rows;
  // false: Python frames only, the leaf being the innermost Python frame
  // (as py-spy top shows them).
  bool native_frames = false;
  // A pid (all digits: that process) or a piece of the process name (any
  // case); empty: every process.
  std::string filter;
};

struct Row {
  std::string name;      // function; process or thread name
  std::string location;  // file:line; thread count or tid
  std::string process;   // process name, without the pid
  int64_t pid = 0;
  uint64_t own = 0;  // samples
  uint64_t total = 0;
  double own_pct = 0;  // percent of one CPU over the interval
  double total_pct = 0;
};

struct Table {
  std::vector<Row> rows;  // sorted by the view's key
  uint64_t samples = 0;   // in the filter
  uint64_t all_samples = 0;
  uint64_t on_cpu_samples = 0;  // every on-CPU sample (all_samples is time off CPU)
  size_t processes = 0;         // distinct pids in the profile
};

// The rows of `profile` (one interval of `interval_ns`, each sample
// standing for `period_ns` of CPU) as `view` shows them.
Table build_table(const profile::Profile& profile, const ViewSettings& view, int64_t period_ns,
                  int64_t interval_ns);

// Whether a process passes `filter` (see ViewSettings::filter).
bool filter_matches(std::string_view filter, int64_t pid, std::string_view process_name);

// The figures of the header, gathered by the run loop.
struct HeaderFacts {
  int64_t unix_time_ns = 0;  // when the interval ended
  double interval_s = 0;     // what the rows cover
  uint32_t rate_hz = 0;
  double samples_per_s = 0;     // every sample of the interval
  size_t python_processes = 0;  // sampled in the interval
  double krait_cpu_pct = 0;     // krait's own CPU, percent of one CPU
  uint64_t drops = 0;           // since the start: ring full + builder behind
  bool cumulative = false;      // rows since the start, not the last interval
  bool paused = false;
  std::string notice;  // the latest warning of krait's own, or empty
};

// The header lines (each at most `width` columns).
std::vector<std::string> header_lines(const HeaderFacts& facts, const ViewSettings& view,
                                      size_t width);

// Column layout and the text of the column header and of one row, at
// `width` columns (32 at least; a narrower screen cuts whole lines). A row's cells are sanitized
// and cut to their columns; a process keeps its "(pid)" when its name is cut.
struct Columns {
  size_t name = 0;
  size_t location = 0;
  size_t process = 0;
};
Columns columns_for_width(size_t width);
// Columns wide enough for every row (each capped), for the plain snapshot.
Columns columns_for_rows(const std::vector<Row>& rows, Grouping grouping);
std::string column_header(const Columns& columns, Grouping grouping);
std::string row_line(const Row& row, const Columns& columns);

// The whole plain-text snapshot: header, column header, rows (at most
// `max_rows`; 0 for all).
std::string plain_snapshot(const HeaderFacts& facts, const ViewSettings& view, const Table& table,
                           size_t max_rows);

// Names of the settings, for headers and the footer.
const char* grouping_name(Grouping grouping);
const char* sort_name(SortKey sort);

// Display helpers (exposed for tests). printable() replaces control, C1 and
// bidi-override characters and invalid UTF-8 with '?'. display_width()
// counts terminal columns (wide East Asian characters as two).
// fit_left() keeps the start of `text` and marks a cut with "..";
// fit_right() keeps the end (file paths). Both return at most `width`
// columns of printable text, padded with spaces to exactly `width` when
// `pad`.
std::string printable(std::string_view text);
size_t display_width(std::string_view text);
std::string fit_left(std::string_view text, size_t width, bool pad = true);
std::string fit_right(std::string_view text, size_t width, bool pad = true);

}  // namespace krait::top
