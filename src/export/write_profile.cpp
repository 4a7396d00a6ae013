// Dispatch from an output format to its encoder; see write_profile.h.
#include "export/write_profile.h"

#include <array>

#include "export/atomic_file.h"
#include "export/flamegraph_html.h"
#include "export/folded.h"
#include "export/pprof.h"
#include "export/speedscope.h"

namespace krait::exporter {
namespace {

constexpr std::array<OutputFormatInfo, 4> kFormats = {{
    {OutputFormat::kPprof, "pprof", "pb.gz", "gzipped profile.proto (go tool pprof, Pyroscope)"},
    {OutputFormat::kFolded, "folded", "folded", "folded stacks (flamegraph.pl, inferno)"},
    {OutputFormat::kSpeedscope, "speedscope", "speedscope.json", "speedscope JSON"},
    {OutputFormat::kHtml, "html", "html", "self-contained interactive flame graph"},
}};

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i]))
      return false;
  }
  return true;
}

std::string_view base_name(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::span<const OutputFormatInfo> output_formats() {
  return kFormats;
}

const OutputFormatInfo& output_format_info(OutputFormat format) {
  for (const auto& info : kFormats) {
    if (info.format == format)
      return info;
  }
  return kFormats[0];
}

Result<OutputFormat> parse_output_format(std::string_view name) {
  std::string names;
  for (const auto& info : kFormats) {
    if (equal_ignoring_case(name, info.name))
      return info.format;
    names += names.empty() ? "" : ", ";
    names += info.name;
  }
  return make_error("unknown output format '{}'; use one of: {}", name, names);
}

Result<void> write_profile_file(const profile::Profile& profile, OutputFormat format,
                                const std::string& path) {
  switch (format) {
    case OutputFormat::kPprof:
      return write_pprof_file(profile, path);
    case OutputFormat::kFolded:
      return write_folded_file(profile, path);
    case OutputFormat::kSpeedscope:
      return write_file_atomically(path, encode_speedscope(profile, base_name(path)));
    case OutputFormat::kHtml:
      return write_file_atomically(path, encode_flamegraph_html(profile, base_name(path)));
  }
  return make_error("unknown output format {}", static_cast<int>(format));
}

}  // namespace krait::exporter
