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

}  // namespace krait::embedded
