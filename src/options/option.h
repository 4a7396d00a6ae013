// The option model every command shares: an option is described once (its
// TOML key where it has one, its flags, help, kind, range or choices) as a
// Spec, and bound to a field of the struct a command's run function takes
// (record::RecordOptions, daemon::DaemonConfig) as an Option<Target>.
// Commands list the Options they use; src/cli turns such a list into CLI11
// options, options/toml.h reads and prints it as TOML.
//
// Values are checked here, so an error is the same one line whichever way
// the value came in; the caller names the flag or key.
//
// Threading: plain data and free functions; no shared state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "util/result.h"

namespace krait::options {

enum class Kind : uint8_t {
  kText,      // a string
  kChoice,    // one of Spec::choices
  kInteger,   // Spec::min..max
  kIntegers,  // a list of integers in Spec::min..max (repeatable flag)
  kSeconds,   // a real number of seconds in Spec::min_seconds..max_seconds
  kToggle,    // a flag without a value; a boolean in TOML
  kBytes,     // a size: 1048576, "64MiB", "1G"
  kList,      // a list of strings (repeatable flag)
  kLabels,    // a table of name = "value" (--label NAME=VALUE, repeatable)
};

struct Choice {
  std::string name;
  int value = 0;  // the enumerator, for enum fields
};

struct Spec {
  std::string key;    // TOML key ("sampling.rate_hz"); empty: a flag only
  std::string flags;  // CLI11 spelling: "-r,--rate", "--stacks,--stack-mode"
  std::string type;   // value placeholder in --help; choices: their names
  std::string help;
  Kind kind = Kind::kText;
  bool flag_sets = true;  // kToggle: the value the flag sets
  int64_t min = 0;        // kInteger, kIntegers
  int64_t max = 0;
  double min_seconds = 0;  // kSeconds
  double max_seconds = 0;
  bool min_exclusive = false;  // kSeconds: more than min_seconds
  std::vector<Choice> choices;
  bool ignore_case = false;    // kChoice
  bool existing_file = false;  // kText, kList: must name an existing file
  bool hidden = false;         // left out of --help (test switches)

  // The flags without the short ones ("--rate"): how errors and the
  // printed configuration name the option.
  std::string long_flags() const;
  // The first long flag ("--stacks"): the option's name on the command line.
  std::string name() const;
  // The placeholder --help shows: `type`, or the choices joined by '|'.
  std::string type_name() const;
};

// A checked value; which alternative follows from the Spec's kind.
using Value = std::variant<bool, int64_t, uint64_t, double, std::string, std::vector<std::string>,
                           std::vector<int64_t>, std::map<std::string, std::string>>;

// The text of one option as given on the command line: one string per
// occurrence (none for a toggle). The result is checked against the Spec;
// errors say what is wrong, not which flag (the caller adds that).
Result<Value> value_from_flag(const Spec& spec, const std::vector<std::string>& texts);

// A number of seconds checked against the Spec's range (flags and TOML).
Result<Value> check_seconds(const Spec& spec, double seconds);

// A value as --help shows a default ("99", "mixed", "64MiB").
std::string value_text(const Spec& spec, const Value& value);

Result<int64_t> parse_integer(std::string_view text);
// Parses "64MiB", "1G", "512k", "1048576" (binary units; B optional).
Result<uint64_t> parse_byte_size(std::string_view text);
// The largest binary unit that divides the size exactly ("64MiB").
std::string format_byte_size(uint64_t bytes);

// What the flags of one command's invocation gave: Spec::name() -> texts.
// Options not given are absent.
using GivenFlags = std::map<std::string, std::vector<std::string>>;

// One Spec bound to a field of Target. `set` receives a value checked
// against the Spec; `get` reads the field back for printing.
template <typename Target>
struct Option {
  Spec spec;
  std::function<void(Target&, const Value&)> set;
  std::function<Value(const Target&)> get;
  bool show_default = false;  // --help shows the default

  Option& with_default_shown() {
    show_default = true;
    return *this;
  }
};

namespace detail {

template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};

template <typename Field>
void assign(const Spec& spec, Field& field, const Value& value) {
  if constexpr (IsOptional<Field>::value) {
    typename Field::value_type inner{};
    assign(spec, inner, value);
    field = inner;
  } else if constexpr (std::is_same_v<Field, bool>) {
    field = std::get<bool>(value);
  } else if constexpr (std::is_enum_v<Field>) {
    for (const Choice& c : spec.choices)
      if (c.name == std::get<std::string>(value))
        field = static_cast<Field>(c.value);
  } else if constexpr (std::is_integral_v<Field>) {
    if (const auto* u = std::get_if<uint64_t>(&value))
      field = static_cast<Field>(*u);
    else
      field = static_cast<Field>(std::get<int64_t>(value));
  } else if constexpr (std::is_same_v<Field, double>) {
    field = std::get<double>(value);
  } else if constexpr (std::is_same_v<Field, std::string> ||
                       std::is_same_v<Field, std::vector<std::string>>) {
    field = std::get<Field>(value);
  } else if constexpr (std::is_same_v<Field, std::map<std::string, std::string>>) {
    // Labels accumulate: the file's, then the flags' (which win).
    for (const auto& [name, text] : std::get<Field>(value))
      field[name] = text;
  } else {  // a vector of integers
    field.clear();
    for (int64_t v : std::get<std::vector<int64_t>>(value))
      field.push_back(static_cast<typename Field::value_type>(v));
  }
}

template <typename Field>
Value read(const Spec& spec, const Field& field) {
  if constexpr (IsOptional<Field>::value) {
    return read(spec, field.value_or(typename Field::value_type{}));
  } else if constexpr (std::is_same_v<Field, bool>) {
    return field;
  } else if constexpr (std::is_enum_v<Field>) {
    for (const Choice& c : spec.choices)
      if (c.value == static_cast<int>(field))
        return c.name;
    return std::string();
  } else if constexpr (std::is_integral_v<Field>) {
    if (spec.kind == Kind::kBytes)
      return static_cast<uint64_t>(field);
    return static_cast<int64_t>(field);
  } else if constexpr (std::is_same_v<Field, double> || std::is_same_v<Field, std::string> ||
                       std::is_same_v<Field, std::vector<std::string>> ||
                       std::is_same_v<Field, std::map<std::string, std::string>>) {
    return field;
  } else {
    return std::vector<int64_t>(field.begin(), field.end());
  }
}

}  // namespace detail

// Binds `spec` to the field `access` reaches: a member pointer, or a
// generic lambda `[](auto& t) -> auto& { return t.a.b; }` (called on a
// const and a mutable Target alike).
template <typename Target, typename Access>
Option<Target> bind(Spec spec, Access access) {
  Option<Target> o{spec, {}, {}};
  o.set = [access, spec](Target& t, const Value& v) {
    detail::assign(spec, std::invoke(access, t), v);
  };
  o.get = [access, spec](const Target& t) { return detail::read(spec, std::invoke(access, t)); };
  return o;
}

// Applies the given flags to `target`, in the table's order. An error
// names the flag: "--rate: must be between 1 and 10000, got 0".
template <typename Target>
Result<void> apply_flags(const std::vector<Option<Target>>& table, const GivenFlags& given,
                         Target& target) {
  for (const Option<Target>& option : table) {
    auto it = given.find(option.spec.name());
    if (it == given.end())
      continue;
    auto value = value_from_flag(option.spec, it->second);
    if (!value)
      return make_error("{}: {}", option.spec.long_flags(), value.error().message);
    option.set(target, *value);
  }
  return {};
}

}  // namespace krait::options
