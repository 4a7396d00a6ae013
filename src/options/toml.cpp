#include "options/toml.h"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>

namespace krait::options {
namespace {

std::string describe_type(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date or time";
  }
}

Result<Value> string_from(const Spec& spec, const toml::node& node) {
  const auto* s = node.as_string();
  if (s == nullptr)
    return make_error("expected a string, got {}", describe_type(node));
  // The same checks as on the command line (choices, existing files).
  return value_from_flag(spec, {s->get()});
}

Result<Value> integer_from(const Spec& spec, const toml::node& node) {
  const auto* i = node.as_integer();
  if (i == nullptr)
    return make_error("expected an integer, got {}", describe_type(node));
  if (i->get() < spec.min || i->get() > spec.max)
    return make_error("must be between {} and {}, got {}", spec.min, spec.max, i->get());
  return Value(i->get());
}

Result<Value> seconds_from(const Spec& spec, const toml::node& node) {
  if (const auto* f = node.as_floating_point())
    return check_seconds(spec, f->get());
  if (const auto* i = node.as_integer())
    return check_seconds(spec, static_cast<double>(i->get()));
  return make_error("expected a number of seconds, got {}", describe_type(node));
}

Result<Value> bytes_from(const toml::node& node) {
  if (const auto* i = node.as_integer()) {
    if (i->get() < 0)
      return make_error("must not be negative, got {}", i->get());
    return Value(static_cast<uint64_t>(i->get()));
  }
  if (const auto* s = node.as_string()) {
    auto v = parse_byte_size(s->get());
    if (!v)
      return v.error();
    return Value(*v);
  }
  return make_error("expected a size such as \"64MiB\" or a number of bytes, got {}",
                    describe_type(node));
}

Result<Value> list_from(const Spec& spec, const toml::node& node) {
  const auto* array = node.as_array();
  if (array == nullptr)
    return make_error("expected an array of strings, got {}", describe_type(node));
  std::vector<std::string> values;
  for (const auto& element : *array) {
    const auto* s = element.as_string();
    if (s == nullptr)
      return make_error("expected an array of strings, got {} in it", describe_type(element));
    values.push_back(s->get());
  }
  return value_from_flag(spec, values);
}

Result<Value> labels_from(const toml::node& node) {
  const auto* table = node.as_table();
  if (table == nullptr)
    return make_error("expected a table of name = \"value\", got {}", describe_type(node));
  // Built in place: GCC 12 warns (wrongly) of a moved-in map being uninitialized.
  Result<Value> out = Value(std::map<std::string, std::string>());
  auto& labels = std::get<std::map<std::string, std::string>>(*out);
  for (auto&& [name, value] : *table) {
    const auto* s = value.as_string();
    if (s == nullptr)
      return make_error("label {} must be a string, got {}", name.str(), describe_type(value));
    labels[std::string(name.str())] = s->get();
  }
  return out;
}

Result<Value> value_from_toml(const Spec& spec, const toml::node& node) {
  switch (spec.kind) {
    case Kind::kText:
    case Kind::kChoice:
      return string_from(spec, node);
    case Kind::kInteger:
      return integer_from(spec, node);
    case Kind::kSeconds:
      return seconds_from(spec, node);
    case Kind::kToggle:
      if (const auto* b = node.as_boolean())
        return Value(b->get());
      return make_error("expected true or false, got {}", describe_type(node));
    case Kind::kBytes:
      return bytes_from(node);
    case Kind::kList:
      return list_from(spec, node);
    case Kind::kLabels:
      return labels_from(node);
    case Kind::kIntegers:
      break;
  }
  return make_error("cannot be set in a file");
}

struct Reader {
  const std::vector<const Spec*>& specs;
  const std::function<void(size_t, const Value&)>& set;
  std::string_view source;

  const Spec* find(std::string_view key, size_t& index) const {
    for (index = 0; index < specs.size(); ++index)
      if (!specs[index]->key.empty() && specs[index]->key == key)
        return specs[index];
    return nullptr;
  }

  bool is_section(std::string_view key) const {
    return std::any_of(specs.begin(), specs.end(), [key](const Spec* s) {
      return s->key.size() > key.size() && s->key.starts_with(key) && s->key[key.size()] == '.';
    });
  }

  Result<void> table(const toml::table& table, const std::string& prefix) const {
    for (auto&& [name, node] : table) {
      const std::string key =
          prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
      const auto line = name.source().begin.line;
      size_t index = 0;
      if (const Spec* spec = find(key, index)) {
        auto value = value_from_toml(*spec, node);
        if (!value)
          return make_error("{}:{}: {}: {}", source, line, key, value.error().message);
        set(index, *value);
        continue;
      }
      if (const auto* section = node.as_table(); section != nullptr && is_section(key)) {
        KRAIT_TRY(this->table(*section, key));
        continue;
      }
      return make_error("{}:{}: unknown key '{}' (`krait daemon --print-config` lists every key)",
                        source, line, key);
    }
    return {};
  }
};

std::string toml_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (u < 0x20 || u == 0x7f)
          out += fmt::format("\\u{:04X}", u);
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string toml_key(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  return bare ? std::string(key) : toml_quote(key);
}

std::string toml_value(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          // A TOML integer is signed: a size above INT64_MAX, or one a
          // unit says better, prints as a string that reads back the same.
          const std::string text = format_byte_size(v);
          if (text == std::to_string(v) && v <= static_cast<uint64_t>(INT64_MAX))
            return text;
          return toml_quote(text);
        } else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", v);
          if (s.find_first_of(".eE") == std::string::npos)
            s += ".0";
          return s;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return toml_quote(v);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string out = "[";
          for (size_t i = 0; i < v.size(); ++i)
            out += (i ? ", " : "") + toml_quote(v[i]);
          return out + "]";
        } else {
          return "";  // tables are written as sections; integer lists have no key
        }
      },
      value);
}

}  // namespace

Result<void> read_toml(std::string_view text, std::string_view source,
                       const std::vector<const Spec*>& specs,
                       const std::function<void(size_t, const Value&)>& set) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return make_error("{}:{}:{}: {}", source, e.source().begin.line, e.source().begin.column,
                      e.description());
  }
  return Reader{specs, set, source}.table(table, "");
}

std::string format_toml(std::string_view header, const std::vector<const Spec*>& specs,
                        const std::vector<Value>& values) {
  std::string out = fmt::format("# {}\n", header);
  std::string section;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& spec = *specs[i];
    if (spec.key.empty())
      continue;
    const size_t dot = spec.key.find('.');
    const std::string this_section = dot == std::string::npos
                                         ? (spec.kind == Kind::kLabels ? spec.key : "")
                                         : spec.key.substr(0, dot);
    if (this_section != section) {
      section = this_section;
      out += fmt::format("\n[{}]\n", section);
    }
    if (spec.kind == Kind::kLabels) {
      out += fmt::format("# {} ({})\n", spec.help, spec.long_flags());
      for (const auto& [name, text] : std::get<std::map<std::string, std::string>>(values[i]))
        out += fmt::format("{} = {}\n", toml_key(name), toml_quote(text));
      continue;
    }
    const std::string name = dot == std::string::npos ? spec.key : spec.key.substr(dot + 1);
    out += fmt::format("# {} ({})\n{} = {}\n", spec.help, spec.long_flags(), name,
                       toml_value(values[i]));
  }
  return out;
}

}  // namespace krait::options
