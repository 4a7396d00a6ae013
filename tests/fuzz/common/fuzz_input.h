// Helpers shared by the libFuzzer harnesses (tests/fuzz/*/fuzz.cpp).
//
// FuzzInput cuts an input into the fields a harness needs, front to back:
// fixed-size values read as little-endian bytes (zero once the input runs
// out), length-prefixed and trailing byte strings. Seeds are written by
// tests/fuzz/make_seeds.py in the same layouts, so each harness's header
// comment is the contract of its input format.
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace krait::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : rest_(data, size) {}

  template <typename T>
  T take() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value{};
    const size_t n = std::min(sizeof value, rest_.size());
    std::memcpy(&value, rest_.data(), n);
    rest_ = rest_.subspan(n);
    return value;
  }
  std::span<const uint8_t> take_bytes(size_t n) {
    n = std::min(n, rest_.size());
    auto out = rest_.first(n);
    rest_ = rest_.subspan(n);
    return out;
  }
  // A string of u8 length, then the bytes.
  std::string take_string8() { return as_string(take_bytes(take<uint8_t>())); }
  // A string of u16 length, then the bytes.
  std::string take_string16() { return as_string(take_bytes(take<uint16_t>())); }
  std::span<const uint8_t> rest() {
    auto out = rest_;
    rest_ = {};
    return out;
  }
  std::string_view rest_text() {
    auto r = rest();
    return {reinterpret_cast<const char*>(r.data()), r.size()};
  }
  bool empty() const { return rest_.empty(); }

  static std::string as_string(std::span<const uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }

 private:
  std::span<const uint8_t> rest_;
};

// Harness-level oracle: a broken promise of the code under test (a header
// contract) crashes like a memory error, with the reason on stderr.
[[noreturn]] inline void broken_contract(const char* what) {
  std::fputs("fuzz: contract broken: ", stderr);
  std::fputs(what, stderr);
  std::fputc('\n', stderr);
  __builtin_trap();
}
#define KRAIT_FUZZ_CHECK(cond)                                                            \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::krait::fuzz::broken_contract(#cond " at " __FILE__ ":" KRAIT_FUZZ_STR(__LINE__)); \
  } while (0)
#define KRAIT_FUZZ_STR(x) KRAIT_FUZZ_STR2(x)
#define KRAIT_FUZZ_STR2(x) #x

// Logging would dominate the run time and the output; errors are values.
inline void quiet_logging() {
  spdlog::set_level(spdlog::level::off);
}

}  // namespace krait::fuzz
