#include "options/option.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace krait::options {
namespace {

std::vector<std::string> split_flags(std::string_view flags) {
  std::vector<std::string> out;
  while (!flags.empty()) {
    const size_t comma = flags.find(',');
    out.emplace_back(flags.substr(0, comma));
    flags = comma == std::string_view::npos ? std::string_view() : flags.substr(comma + 1);
  }
  return out;
}

bool same_name(std::string_view a, std::string_view b, bool ignore_case) {
  if (!ignore_case)
    return a == b;
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

Result<Value> choice_from(const Spec& spec, const std::string& text) {
  for (const Choice& c : spec.choices)
    if (same_name(c.name, text, spec.ignore_case))
      return Value(c.name);
  return make_error("expected one of {}, got \"{}\"", spec.type_name(), text);
}

Result<int64_t> integer_from(const Spec& spec, const std::string& text) {
  auto v = parse_integer(text);
  if (!v)
    return v.error();
  if (*v < spec.min || *v > spec.max)
    return make_error("must be between {} and {}, got {}", spec.min, spec.max, *v);
  return *v;
}

Result<Value> seconds_from(const Spec& spec, const std::string& text) {
  char* end = nullptr;
  const double d = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size())
    return make_error("expected a number of seconds, got \"{}\"", text);
  return check_seconds(spec, d);
}

Result<Value> file_from(const Spec& spec, const std::string& text) {
  struct stat st;
  if (spec.existing_file && ::stat(text.c_str(), &st) != 0)
    return make_error("file does not exist: {}", text);
  return Value(text);
}

Result<Value> labels_from(const std::vector<std::string>& texts) {
  // Built in place: GCC 12 warns (wrongly) of a moved-in map being uninitialized.
  Result<Value> out = Value(std::map<std::string, std::string>());
  auto& labels = std::get<std::map<std::string, std::string>>(*out);
  for (const auto& v : texts) {
    const size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error("expected NAME=VALUE, got \"{}\"", v);
    labels[v.substr(0, eq)] = v.substr(eq + 1);
  }
  return out;
}

}  // namespace

std::string Spec::long_flags() const {
  std::string out;
  for (const auto& flag : split_flags(flags))
    if (flag.starts_with("--") || flag.starts_with("!--"))
      out += (out.empty() ? "" : ",") + flag.substr(flag.find('-'));
  return out;
}

std::string Spec::name() const {
  const std::string all = long_flags();
  return all.substr(0, all.find(','));
}

std::string Spec::type_name() const {
  if (kind != Kind::kChoice || !type.empty())
    return type;
  std::string out;
  for (const Choice& c : choices)
    out += (out.empty() ? "" : "|") + c.name;
  return out;
}

Result<Value> check_seconds(const Spec& spec, double v) {
  const bool below = spec.min_exclusive ? !(v > spec.min_seconds) : !(v >= spec.min_seconds);
  if (!std::isfinite(v) || below || v > spec.max_seconds) {
    if (spec.max_seconds == std::numeric_limits<double>::max())
      return make_error("must be more than {} seconds, got {}", spec.min_seconds, v);
    return make_error("must be between {} and {} seconds, got {}", spec.min_seconds,
                      spec.max_seconds, v);
  }
  return Value(v);
}

Result<Value> value_from_flag(const Spec& spec, const std::vector<std::string>& texts) {
  if (spec.kind == Kind::kToggle)
    return Value(spec.flag_sets);
  // Lists may be empty (a file's `names = []`); a single value may not.
  const bool list =
      spec.kind == Kind::kList || spec.kind == Kind::kIntegers || spec.kind == Kind::kLabels;
  if (texts.empty() && !list)
    return make_error("expected a value");
  const std::string last = texts.empty() ? std::string() : texts.back();
  switch (spec.kind) {
    case Kind::kText:
      return file_from(spec, last);
    case Kind::kChoice:
      return choice_from(spec, last);
    case Kind::kInteger: {
      auto v = integer_from(spec, last);
      if (!v)
        return v.error();
      return Value(*v);
    }
    case Kind::kIntegers: {
      std::vector<int64_t> values;
      for (const auto& text : texts) {
        auto v = integer_from(spec, text);
        if (!v)
          return v.error();
        values.push_back(*v);
      }
      return Value(std::move(values));
    }
    case Kind::kSeconds:
      return seconds_from(spec, last);
    case Kind::kBytes: {
      auto size = parse_byte_size(last);
      if (!size)
        return size.error();
      return Value(*size);
    }
    case Kind::kList:
      for (const auto& text : texts)
        KRAIT_TRY(file_from(spec, text));
      return Value(texts);
    case Kind::kLabels:
      return labels_from(texts);
    case Kind::kToggle:
      break;
  }
  return make_error("unknown option kind");
}

std::string value_text(const Spec& spec, const Value& value) {
  return std::visit(
      [&spec](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>)
          return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, uint64_t>)
          return spec.kind == Kind::kBytes ? format_byte_size(v) : std::to_string(v);
        else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>)
          return fmt::format("{}", v);
        else if constexpr (std::is_same_v<T, std::string>)
          return v;
        else if constexpr (std::is_same_v<T, std::map<std::string, std::string>>)
          return fmt::format("{}", fmt::join(v, ","));
        else
          return fmt::format("{}", fmt::join(v, ","));
      },
      value);
}

Result<int64_t> parse_integer(std::string_view s) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size())
    return make_error("expected an integer, got \"{}\"", s);
  return v;
}

Result<uint64_t> parse_byte_size(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && s.back() == ' ')
    s.remove_suffix(1);
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9')
    ++digits;
  if (digits == 0)
    return make_error("expected a size such as \"64MiB\" or a number of bytes, got \"{}\"", text);
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + digits, value);
  if (ec != std::errc())
    return make_error("size \"{}\" is too large", text);
  std::string unit(s.substr(digits));
  while (!unit.empty() && unit.front() == ' ')
    unit.erase(0, 1);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::pair<const char*, int> kUnits[] = {
      {"", 0},     {"b", 0},  {"k", 10},  {"kb", 10},  {"kib", 10}, {"m", 20},  {"mb", 20},
      {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},   {"tb", 40}, {"tib", 40}};
  for (const auto& [name, shift] : kUnits)
    if (unit == name) {
      if (shift > 0 && value > (UINT64_MAX >> shift))
        return make_error("size \"{}\" is too large", text);
      return value << shift;
    }
  return make_error("unknown size unit in \"{}\": use KiB, MiB, GiB or TiB", text);
}

std::string format_byte_size(uint64_t bytes) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const auto& [size, unit] : kUnits)
    if (bytes != 0 && bytes % size == 0)
      return fmt::format("{}{}", bytes / size, unit);
  return std::to_string(bytes);
}

}  // namespace krait::options
