// Errors as values: every library function that can fail returns Result<T>.
// Only the command layer (src/cli) turns an Error into a message and an exit
// status. An Error's message is one line that names the problem and, where
// there is one, what to do about it.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace krait {

struct Error {
  std::string message;

  // The same error with context in front: "reading /proc/1/maps: ...".
  Error context(std::string_view what) const { return Error{fmt::format("{}: {}", what, message)}; }
};

template <typename... Args>
Error make_error(fmt::format_string<Args...> format, Args&&... args) {
  return Error{fmt::format(format, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<Error>(v_);
  }
  // Prefixes the error message with context ("reading /proc/1/maps: ...").
  Result&& context(std::string_view what) && {
    if (!ok())
      std::get<Error>(v_).message = fmt::format("{}: {}", what, error().message);
    return std::move(*this);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT: implicit by design

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(failed_);
    return error_;
  }
  Result&& context(std::string_view what) && {
    if (failed_)
      error_.message = fmt::format("{}: {}", what, error_.message);
    return std::move(*this);
  }

 private:
  Error error_;
  bool failed_ = false;
};

// Returns the error of `expr` from the enclosing function when it failed.
#define KRAIT_TRY(expr)                 \
  do {                                  \
    auto&& krait_try_result_ = (expr);  \
    if (!krait_try_result_.ok())        \
      return krait_try_result_.error(); \
  } while (0)

}  // namespace krait
