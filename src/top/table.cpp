// The rows of `krait top` from a profile, and the text of every line the
// screen and the plain snapshot print.
#include "top/table.h"

#include <fmt/format.h>
#include <time.h>

#include <ctime>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "util/text.h"
#include "util/utf8.h"

namespace krait::top {
namespace {

using profile::Frame;
using profile::FrameKind;

// Plain snapshot caps: a longer cell is cut, so one hostile name cannot
// widen every line of the table.
constexpr size_t kPlainNameMax = 60;
constexpr size_t kPlainLocationMax = 80;
constexpr size_t kPlainProcessMax = 40;
// OWN% and TOTAL% columns and the gaps between columns.
constexpr size_t kOwnWidth = 6;
constexpr size_t kTotalWidth = 7;
constexpr size_t kGap = 2;
constexpr size_t kFixedWidth = kOwnWidth + 1 + kTotalWidth + 3 * kGap;

struct LabelInfo {
  int64_t pid = 0;
  int64_t tid = 0;
  std::string process;
  std::string thread;
  bool passes = true;
};

std::string_view label(const profile::Labels& labels, std::string_view key) {
  for (const auto& [k, v] : labels)
    if (k == key)
      return v;
  return {};
}

int64_t label_number(const profile::Labels& labels, std::string_view key) {
  auto n = parse_unsigned<uint32_t>(label(labels, key));
  return n ? static_cast<int64_t>(*n) : 0;
}

char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool contains_ignoring_case(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size())
    return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && ascii_lower(haystack[i + k]) == ascii_lower(needle[k]))
      ++k;
    if (k == needle.size())
      return true;
  }
  return false;
}

std::string base_name(std::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

bool kept(const Frame& frame, const ViewSettings& view) {
  return view.native_frames || frame.kind == FrameKind::kPython;
}

std::string frame_name(const Frame& frame) {
  if (!frame.function.empty())
    return frame.function;
  return frame.kind == FrameKind::kPython ? "[unknown]" : fmt::format("0x{:x}", frame.address);
}

std::string frame_location(const profile::Profile& profile, const Frame& frame, bool lines) {
  switch (frame.kind) {
    case FrameKind::kKernel:
      return "[kernel]";
    case FrameKind::kSynthetic:
      return "";
    case FrameKind::kPython:
    case FrameKind::kNative:
      break;
  }
  if (frame.file.empty()) {
    if (frame.mapping > 0 && frame.mapping <= profile.mappings().size())
      return base_name(profile.mappings()[frame.mapping - 1].file);
    return "";
  }
  const int64_t line = lines ? frame.line : frame.start_line;
  return line > 0 ? fmt::format("{}:{}", frame.file, line) : frame.file;
}

// The identity of a function or line row: the process and every field that
// tells two functions apart, separated by a byte no name decodes to.
std::string frame_key(const profile::Profile& profile, const Frame& frame, int64_t pid,
                      bool lines) {
  std::string key = fmt::format("{}\x1f{}\x1f", pid, static_cast<int>(frame.kind));
  key += frame.function;
  key += '\x1f';
  key += frame.file;
  if (frame.kind == FrameKind::kNative && frame.mapping > 0 &&
      frame.mapping <= profile.mappings().size()) {
    key += '\x1f';
    key += profile.mappings()[frame.mapping - 1].file;
  }
  if (frame.function.empty())
    key += fmt::format("\x1f{:x}", frame.address);
  if (lines)
    key += fmt::format("\x1f{}", frame.line);
  return key;
}

class RowSet {
 public:
  size_t find_or_add(std::string key, Row row) {
    auto [it, added] = index_.try_emplace(std::move(key), rows_.size());
    if (added)
      rows_.push_back(std::move(row));
    return it->second;
  }
  Row& operator[](size_t i) { return rows_[i]; }
  std::vector<Row> take() { return std::move(rows_); }

 private:
  std::unordered_map<std::string, size_t> index_;
  std::vector<Row> rows_;
};

bool by_name(const Row& a, const Row& b) {
  if (a.name != b.name)
    return a.name < b.name;
  if (a.location != b.location)
    return a.location < b.location;
  if (a.pid != b.pid)
    return a.pid < b.pid;
  return a.process < b.process;
}

void sort_rows(std::vector<Row>& rows, SortKey key) {
  // Ties fall back to the name, so equal shares keep one order from one
  // refresh to the next instead of flickering.
  std::sort(rows.begin(), rows.end(), [key](const Row& a, const Row& b) {
    switch (key) {
      case SortKey::kOwn:
        if (a.own != b.own)
          return a.own > b.own;
        if (a.total != b.total)
          return a.total > b.total;
        break;
      case SortKey::kTotal:
        if (a.total != b.total)
          return a.total > b.total;
        if (a.own != b.own)
          return a.own > b.own;
        break;
      case SortKey::kName:
        break;
    }
    return by_name(a, b);
  });
}

// The code point at text[i] of valid UTF-8, and its length.
std::pair<uint32_t, size_t> decode(std::string_view text, size_t i) {
  const auto b0 = static_cast<uint8_t>(text[i]);
  size_t len = b0 < 0x80 ? 1 : (b0 & 0xe0) == 0xc0 ? 2 : (b0 & 0xf0) == 0xe0 ? 3 : 4;
  len = std::min(len, text.size() - i);
  uint32_t cp = len == 1 ? b0 : static_cast<uint32_t>(b0 & (0x7f >> len));
  for (size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<uint8_t>(text[i + k]) & 0x3f);
  return {cp, len};
}

// Characters a terminal would act on rather than show: C0 and C1 controls,
// DEL, and the invisible format characters that reorder or hide text.
bool unsafe(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0x200b && cp <= 0x200f) ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff;
}

size_t columns_of(uint32_t cp) {
  const bool wide = (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) ||
                    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
                    (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
                    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
                    (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd);
  return wide ? 2 : 1;
}

// Code points of printable text with their byte offsets and widths.
struct Glyph {
  size_t offset;
  size_t bytes;
  size_t width;
};
std::vector<Glyph> glyphs(std::string_view clean) {
  std::vector<Glyph> out;
  for (size_t i = 0; i < clean.size();) {
    auto [cp, len] = decode(clean, i);
    out.push_back({i, len, columns_of(cp)});
    i += len;
  }
  return out;
}

std::string padded(std::string text, size_t used, size_t width, bool pad) {
  if (pad && used < width)
    text.append(width - used, ' ');
  return text;
}

std::string fit_process(const Row& row, size_t width) {
  const std::string pid = fmt::format(" ({})", row.pid);
  if (width < pid.size() + 3)
    return fit_left(printable(row.process) + pid, width);
  const std::string name = fit_left(row.process, width - pid.size(), /*pad=*/false);
  return padded(name + pid, display_width(name) + pid.size(), width, true);
}

std::string percent(double value, size_t width) {
  return fmt::format("{:>{}.1f}", value, width);
}

struct ColumnTitles {
  const char* name;
  const char* location;
};

ColumnTitles titles(Grouping grouping) {
  switch (grouping) {
    case Grouping::kFunctions:
      return {"FUNCTION", "FILE:FIRST LINE"};
    case Grouping::kLines:
      return {"FUNCTION", "FILE:LINE"};
    case Grouping::kProcesses:
      return {"PROCESS", "THREADS"};
    case Grouping::kThreads:
      return {"THREAD", "TID"};
  }
  return {"", ""};
}

std::string clock_text(int64_t unix_ns) {
  const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm local{};
  localtime_r(&t, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

}  // namespace

bool filter_matches(std::string_view filter, int64_t pid, std::string_view process_name) {
  if (filter.empty())
    return true;
  if (auto wanted = parse_unsigned<uint32_t>(filter))
    return static_cast<int64_t>(*wanted) == pid;
  return contains_ignoring_case(process_name, filter);
}

Table build_table(const profile::Profile& profile, const ViewSettings& view, int64_t period_ns,
                  int64_t interval_ns) {
  Table table;
  std::vector<LabelInfo> infos;
  infos.reserve(profile.label_sets().size());
  for (const auto& labels : profile.label_sets()) {
    LabelInfo info;
    info.pid = label_number(labels, "pid");
    info.tid = label_number(labels, "tid");
    info.process = std::string(label(labels, "process_name"));
    info.thread = std::string(label(labels, "thread_name"));
    info.passes = filter_matches(view.filter, info.pid, info.process);
    infos.push_back(std::move(info));
  }

  RowSet rows;
  const bool lines = view.grouping == Grouping::kLines;
  // (label set, frame) -> row: a stack's frames are keyed once per
  // interval, not once per sample.
  std::unordered_map<uint64_t, size_t> frame_rows;
  std::unordered_map<int64_t, std::unordered_set<int64_t>> threads_of;
  std::unordered_set<int64_t> pids;
  std::vector<size_t> on_stack;
  for (const auto& sample : profile.samples()) {
    if (sample.labels >= infos.size())
      continue;
    const LabelInfo& info = infos[sample.labels];
    // Off-CPU and wall: nanoseconds, not counts (see Profile::weight).
    const uint64_t weight = profile.weight(sample);
    table.all_samples += weight;
    table.on_cpu_samples += sample.count;
    pids.insert(info.pid);
    if (!info.passes)
      continue;
    table.samples += weight;
    Row base{.process = info.process, .pid = info.pid};
    if (view.grouping == Grouping::kProcesses || view.grouping == Grouping::kThreads) {
      const bool processes = view.grouping == Grouping::kProcesses;
      Row row = base;
      row.name = processes ? info.process : info.thread;
      if (!processes)
        row.location = fmt::format("tid {}", info.tid);
      Row& r = rows[rows.find_or_add(
          processes ? fmt::format("{}", info.pid) : fmt::format("{}/{}", info.pid, info.tid),
          std::move(row))];
      r.own += weight;
      r.total += weight;
      threads_of[info.pid].insert(info.tid);
      continue;
    }
    on_stack.clear();
    for (profile::FrameId id : sample.stack) {
      if (id >= profile.frames().size())
        continue;
      const Frame& frame = profile.frames()[id];
      if (!kept(frame, view))
        continue;
      const uint64_t cache_key = (uint64_t{sample.labels} << 32) | id;
      auto cached = frame_rows.find(cache_key);
      if (cached == frame_rows.end()) {
        Row row = base;
        row.name = frame_name(frame);
        row.location = frame_location(profile, frame, lines);
        cached = frame_rows
                     .emplace(cache_key,
                              rows.find_or_add(frame_key(profile, frame, info.pid, lines), row))
                     .first;
      }
      on_stack.push_back(cached->second);
    }
    if (on_stack.empty()) {
      Row row = base;
      row.name = view.native_frames ? "[no frames]" : "[no Python frames]";
      on_stack.push_back(rows.find_or_add(fmt::format("{}\x1f[none]", info.pid), std::move(row)));
    }
    rows[on_stack.front()].own += weight;
    // Each row once per stack: recursion does not count a function twice.
    std::sort(on_stack.begin(), on_stack.end());
    on_stack.erase(std::unique(on_stack.begin(), on_stack.end()), on_stack.end());
    for (size_t row : on_stack)
      rows[row].total += weight;
  }
  table.processes = pids.size();
  table.rows = rows.take();
  const double unit = profile.meta().off_cpu ? 1.0 : static_cast<double>(period_ns);
  const double scale = interval_ns > 0 ? 100.0 * unit / static_cast<double>(interval_ns) : 0.0;
  for (Row& row : table.rows) {
    row.own_pct = static_cast<double>(row.own) * scale;
    row.total_pct = static_cast<double>(row.total) * scale;
    if (view.grouping == Grouping::kProcesses) {
      const size_t n = threads_of[row.pid].size();
      row.location = fmt::format("{} thread{}", n, n == 1 ? "" : "s");
    }
  }
  sort_rows(table.rows, view.sort);
  return table;
}

const char* grouping_name(Grouping grouping) {
  switch (grouping) {
    case Grouping::kFunctions:
      return "functions";
    case Grouping::kLines:
      return "lines";
    case Grouping::kProcesses:
      return "processes";
    case Grouping::kThreads:
      return "threads";
  }
  return "";
}

const char* sort_name(SortKey sort) {
  switch (sort) {
    case SortKey::kOwn:
      return "own";
    case SortKey::kTotal:
      return "total";
    case SortKey::kName:
      return "name";
  }
  return "";
}

std::vector<std::string> header_lines(const HeaderFacts& f, const ViewSettings& view,
                                      size_t width) {
  std::vector<std::string> lines;
  lines.push_back(fmt::format(
      "krait top  {}  {} {:.1f} s  {} Hz  {:.0f} samples/s  {} Python process{}",
      clock_text(f.unix_time_ns), f.cumulative ? "since start" : "last", f.interval_s, f.rate_hz,
      f.samples_per_s, f.python_processes, f.python_processes == 1 ? "" : "es"));
  lines.push_back(fmt::format(
      "krait CPU {:.1f}%  drops {}  {} by {}, {} frames  filter: {}{}", f.krait_cpu_pct, f.drops,
      grouping_name(view.grouping), sort_name(view.sort), view.native_frames ? "all" : "Python",
      view.filter.empty() ? "-" : printable(view.filter), f.paused ? "  PAUSED" : ""));
  if (!f.notice.empty())
    lines.push_back(printable(f.notice));
  for (auto& line : lines)
    line = fit_left(line, width, /*pad=*/false);
  return lines;
}

Columns columns_for_width(size_t width) {
  const size_t rest = width > kFixedWidth + 12 ? width - kFixedWidth : 12;
  Columns c;
  // A process column that holds "python3.12 (1234567)", then the rest
  // shared by function names and file paths.
  c.process = std::clamp<size_t>(rest / 4, std::min<size_t>(18, rest / 3), 28);
  c.name = (rest - c.process) / 2;
  c.location = rest - c.process - c.name;
  return c;
}

Columns columns_for_rows(const std::vector<Row>& rows, Grouping grouping) {
  const ColumnTitles t = titles(grouping);
  Columns c{std::string_view(t.name).size(), std::string_view(t.location).size(),
            std::string_view("PROCESS").size()};
  for (const Row& row : rows) {
    c.name = std::max(c.name, std::min(kPlainNameMax, display_width(printable(row.name))));
    c.location =
        std::max(c.location, std::min(kPlainLocationMax, display_width(printable(row.location))));
    c.process =
        std::max(c.process, std::min(kPlainProcessMax, display_width(printable(row.process)) +
                                                           fmt::formatted_size(" ({})", row.pid)));
  }
  return c;
}

std::string column_header(const Columns& c, Grouping grouping) {
  const ColumnTitles t = titles(grouping);
  const std::string gap(kGap, ' ');
  return fmt::format("{:>{}} {:>{}}", "OWN%", kOwnWidth, "TOTAL%", kTotalWidth) + gap +
         fit_left(t.name, c.name) + gap + fit_left(t.location, c.location) + gap +
         fit_left("PROCESS", c.process, /*pad=*/false);
}

std::string row_line(const Row& row, const Columns& c) {
  const std::string gap(kGap, ' ');
  std::string line = percent(row.own_pct, kOwnWidth) + " " + percent(row.total_pct, kTotalWidth) +
                     gap + fit_left(row.name, c.name) + gap + fit_right(row.location, c.location) +
                     gap + fit_process(row, c.process);
  while (!line.empty() && line.back() == ' ')
    line.pop_back();
  return line;
}

std::string plain_snapshot(const HeaderFacts& facts, const ViewSettings& view, const Table& table,
                           size_t max_rows) {
  const size_t shown = max_rows == 0 ? table.rows.size() : std::min(max_rows, table.rows.size());
  const std::vector<Row> rows(table.rows.begin(),
                              table.rows.begin() + static_cast<std::ptrdiff_t>(shown));
  const Columns c = columns_for_rows(rows, view.grouping);
  std::string out;
  for (const auto& line : header_lines(facts, view, 1000))
    out += line + "\n";
  out += "\n" + column_header(c, view.grouping) + "\n";
  for (const Row& row : rows)
    out += row_line(row, c) + "\n";
  if (rows.empty())
    out += view.filter.empty() ? "(no samples)\n" : "(no samples in the filter)\n";
  return out;
}

std::string printable(std::string_view text) {
  const std::string valid = valid_utf8(text);
  std::string out;
  out.reserve(valid.size());
  for (size_t i = 0; i < valid.size();) {
    auto [cp, len] = decode(valid, i);
    if (unsafe(cp))
      out += '?';
    else
      out.append(valid, i, len);
    i += len;
  }
  return out;
}

size_t display_width(std::string_view text) {
  size_t width = 0;
  for (const Glyph& g : glyphs(text))
    width += g.width;
  return width;
}

std::string fit_left(std::string_view text, size_t width, bool pad) {
  const std::string clean = printable(text);
  const std::vector<Glyph> gs = glyphs(clean);
  size_t total = 0;
  for (const Glyph& g : gs)
    total += g.width;
  if (total <= width)
    return padded(clean, total, width, pad);
  if (width < 2)
    return std::string(width, '.');
  // Room for ".." at the end.
  size_t used = 0, bytes = 0;
  for (const Glyph& g : gs) {
    if (used + g.width > width - 2)
      break;
    used += g.width;
    bytes = g.offset + g.bytes;
  }
  return padded(clean.substr(0, bytes) + "..", used + 2, width, pad);
}

std::string fit_right(std::string_view text, size_t width, bool pad) {
  const std::string clean = printable(text);
  const std::vector<Glyph> gs = glyphs(clean);
  size_t total = 0;
  for (const Glyph& g : gs)
    total += g.width;
  if (total <= width)
    return padded(clean, total, width, pad);
  if (width < 2)
    return std::string(width, '.');
  size_t used = 0, from = clean.size();
  for (auto it = gs.rbegin(); it != gs.rend(); ++it) {
    if (used + it->width > width - 2)
      break;
    used += it->width;
    from = it->offset;
  }
  return padded(".." + clean.substr(from), used + 2, width, pad);
}

}  // namespace krait::top
