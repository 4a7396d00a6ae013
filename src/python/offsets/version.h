// PyVersion: a CPython release number (major.minor.micro), as used to pick
// offset tables and _Py_DebugOffsets layouts.
//
// Value type, no resources, safe to use from any thread. The release level
// (alpha, beta, rc) is not represented: parse() accepts and drops it, and
// hex() always encodes a final release.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace krait::python {

struct PyVersion {
  int major = 0;
  int minor = 0;
  int micro = 0;

  auto operator<=>(const PyVersion&) const = default;

  // "3.11.7".
  std::string str() const;

  // Accepts "M.N.P" with an optional release suffix ("3.13.0rc1", "3.9.18+"),
  // which is dropped. Anything else (including "3.11") is nullopt.
  static std::optional<PyVersion> parse(std::string_view text);

  // PY_VERSION_HEX of the final release of this version: 0xMMNNPPf0.
  uint32_t hex() const;

  // Decodes a PY_VERSION_HEX value (release level and serial are ignored).
  static PyVersion from_hex(uint64_t hex);

  bool same_minor(const PyVersion& other) const {
    return major == other.major && minor == other.minor;
  }
};

}  // namespace krait::python
