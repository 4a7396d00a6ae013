#include "record/status_line.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace krait::record {
namespace {

// 1234567 -> "1,234,567": counts a person reads at a glance.
std::string grouped(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

const char* plural(uint64_t n, const char* one, const char* many) {
  return n == 1 ? one : many;
}

}  // namespace

std::string format_status(const RecordStatus& s) {
  const auto elapsed = static_cast<uint64_t>(std::floor(std::max(0.0, s.elapsed_s)));
  std::string time = s.duration_s ? fmt::format("{}/{} s", elapsed, std::ceil(*s.duration_s))
                                  : fmt::format("{} s (Ctrl-C stops)", elapsed);
  return fmt::format("krait: recording {}, {} {}, {} {}, {} dropped", time, grouped(s.samples),
                     plural(s.samples, "sample", "samples"), grouped(s.processes),
                     plural(s.processes, "process", "processes"), grouped(s.dropped));
}

StatusLine::StatusLine(std::FILE* stream)
    : stream_(stream), live_(::isatty(::fileno(stream)) == 1) {}

void StatusLine::show(const RecordStatus& status) {
  if (!live_)
    return;
  // Carriage return, the line, erase to its end: one line, rewritten.
  fmt::print(stream_, "\r{}\x1b[K", format_status(status));
  std::fflush(stream_);
  shown_ = true;
}

void StatusLine::clear() {
  if (!shown_)
    return;
  fmt::print(stream_, "\r\x1b[K");
  std::fflush(stream_);
  shown_ = false;
}

}  // namespace krait::record
