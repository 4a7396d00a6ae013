// Small helpers for the line-based text formats krait reads (offset tables,
// _Py_DebugOffsets descriptions).
#pragma once

#include <algorithm>
#include <string_view>

namespace krait {

// `s` without leading and trailing spaces, tabs and carriage returns.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A field name of those formats: letters, digits, '_', '.', '(' and ')'.
// Restricted so that a line needs no quoting.
inline bool is_field_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '(' || c == ')';
  });
}

}  // namespace krait
