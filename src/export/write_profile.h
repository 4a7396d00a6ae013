// One place that knows every file format a profile::Profile can be written
// in: the format names the command line accepts, the file name extension
// each gets by default, and writing a profile in a format to a path.
// `krait record -f` and `krait convert -f` both go through here.
//
// Threading: reentrant; the Profile must not change while it is written.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "profile/profile.h"
#include "util/result.h"

namespace krait::exporter {

enum class OutputFormat : uint8_t { kPprof, kFolded, kSpeedscope, kHtml };

struct OutputFormatInfo {
  OutputFormat format;
  std::string_view name;       // as typed after -f
  std::string_view extension;  // of default file names, without the dot
  std::string_view summary;    // for help texts
};

// Every format, in the order help texts list them.
std::span<const OutputFormatInfo> output_formats();
const OutputFormatInfo& output_format_info(OutputFormat format);

// The format named `name` (ASCII case ignored); the error lists the names.
Result<OutputFormat> parse_output_format(std::string_view name);

// Encodes `profile` in `format` and replaces `path` atomically: `path` is
// either a complete file afterwards or left as it was. The file's base name
// becomes the document title where a format has one (speedscope, html).
Result<void> write_profile_file(const profile::Profile& profile, OutputFormat format,
                                const std::string& path);

}  // namespace krait::exporter
