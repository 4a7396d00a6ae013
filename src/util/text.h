// Small helpers for the line-based text krait reads (offset tables,
// _Py_DebugOffsets descriptions, /proc files). None of them throws or
// allocates; all are linear in their input.
#pragma once

#include <algorithm>
#include <charconv>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>

namespace krait {

// `s` without leading and trailing spaces, tabs and carriage returns.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// The first line of `text` (without its '\n'), removed from `text`.
inline std::string_view take_line(std::string_view& text) {
  const size_t newline = text.find('\n');
  std::string_view line = text.substr(0, newline);
  text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
  return line;
}

// A field name of those formats: letters, digits, '_', '.', '(' and ')'.
// Restricted so that a line needs no quoting.
inline bool is_field_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '(' || c == ')';
  });
}

// All of `text` as an unsigned number in `base` (10 or 16): digits only, no
// sign, "0x" prefix or spaces. nullopt when `text` is empty, holds any other
// character, or its value does not fit T; safe on untrusted text of any
// length (leading zeros included).
template <std::unsigned_integral T = uint64_t>
std::optional<T> parse_unsigned(std::string_view text, int base = 10) {
  if (text.empty())
    return std::nullopt;
  T value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, base);
  if (ec != std::errc() || ptr != end)
    return std::nullopt;
  return value;
}

}  // namespace krait
