#include "python/offsets/version.h"

#include <fmt/format.h>

#include <charconv>

namespace krait::python {
namespace {

// Reads one decimal component at the front of `text` and consumes it.
std::optional<int> take_number(std::string_view& text) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data() || value < 0 || value > 255)
    return std::nullopt;
  text.remove_prefix(static_cast<size_t>(end - text.data()));
  return value;
}

bool take_char(std::string_view& text, char c) {
  if (text.empty() || text.front() != c)
    return false;
  text.remove_prefix(1);
  return true;
}

// The release suffixes CPython uses in PY_VERSION: a1, b2, rc1, and a trailing
// '+' on builds from a branch.
bool is_release_suffix(std::string_view text) {
  if (text.empty() || text == "+")
    return true;
  if (text.back() == '+')
    text.remove_suffix(1);
  if (text.starts_with("rc"))
    text.remove_prefix(2);
  else if (text.starts_with("a") || text.starts_with("b"))
    text.remove_prefix(1);
  else
    return false;
  if (text.empty())
    return false;
  for (char c : text) {
    if (c < '0' || c > '9')
      return false;
  }
  return true;
}

}  // namespace

std::string PyVersion::str() const {
  return fmt::format("{}.{}.{}", major, minor, micro);
}

std::optional<PyVersion> PyVersion::parse(std::string_view text) {
  PyVersion v;
  auto major = take_number(text);
  if (!major || !take_char(text, '.'))
    return std::nullopt;
  auto minor = take_number(text);
  if (!minor || !take_char(text, '.'))
    return std::nullopt;
  auto micro = take_number(text);
  if (!micro || !is_release_suffix(text))
    return std::nullopt;
  v.major = *major;
  v.minor = *minor;
  v.micro = *micro;
  return v;
}

uint32_t PyVersion::hex() const {
  return (static_cast<uint32_t>(major & 0xff) << 24) | (static_cast<uint32_t>(minor & 0xff) << 16) |
         (static_cast<uint32_t>(micro & 0xff) << 8) | 0xf0u;
}

PyVersion PyVersion::from_hex(uint64_t hex) {
  PyVersion v;
  v.major = static_cast<int>((hex >> 24) & 0xff);
  v.minor = static_cast<int>((hex >> 16) & 0xff);
  v.micro = static_cast<int>((hex >> 8) & 0xff);
  return v;
}

}  // namespace krait::python
