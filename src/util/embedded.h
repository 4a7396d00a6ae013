// Data files compiled into the executable (see cmake/Embed.cmake).
#pragma once

#include <span>
#include <string_view>

namespace krait::embedded {

struct EmbeddedFile {
  std::string_view name;  // file name without directory
  std::string_view text;
};

// The offset tables under offsets/ (one file per interpreter build).
std::span<const EmbeddedFile> offset_tables();

// The _Py_DebugOffsets layouts under offsets/debug_offsets/ (one file per
// CPython minor version, named <major>.<minor>.txt).
std::span<const EmbeddedFile> debug_offset_layouts();

// The HTML flame graph's page under src/export/flamegraph/: template.html,
// flamegraph.js, flamegraph.css.
std::span<const EmbeddedFile> flamegraph_files();

}  // namespace krait::embedded
