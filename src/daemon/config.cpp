#include "daemon/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <CLI/CLI.hpp>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <variant>

#include "daemon/app_name.h"
#include "daemon/cmdline_regex.h"
#include "util/files.h"

namespace krait::daemon {
namespace {

// A value as printed: what --print-config writes for one key.
using Printed = std::variant<bool, int64_t, double, std::string, std::vector<std::string>,
                             std::map<std::string, std::string>>;

enum class Kind : uint8_t { kText, kChoice, kCount, kSeconds, kToggle, kBytes, kList, kLabels };

// One configuration key and its flag. The three functions convert between
// the field in DaemonConfig and TOML / flag text; their errors say what is
// wrong with the value, the caller adds which key or flag it was.
struct Option {
  std::string key;
  std::string flag;
  std::string help;
  std::string type;  // shown in --help
  Kind kind = Kind::kText;
  bool flag_sets = true;  // kToggle: the value the flag sets
  std::function<Result<void>(DaemonConfig&, const toml::node&)> from_toml;
  std::function<Result<void>(DaemonConfig&, const std::vector<std::string>&)> from_flag;
  std::function<Printed(const DaemonConfig&)> print;
};

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

Result<std::string> toml_string(const toml::node& node) {
  if (const auto* s = node.as_string())
    return s->get();
  return make_error("expected a string, got {}", describe_type(node));
}

template <typename Field>
Option text(std::string key, std::string flag, std::string type, std::string help, Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), std::move(type), Kind::kText};
  o.from_toml = [field](DaemonConfig& c, const toml::node& node) -> Result<void> {
    auto s = toml_string(node);
    if (!s)
      return s.error();
    field(c) = *s;
    return {};
  };
  o.from_flag = [field](DaemonConfig& c, const std::vector<std::string>& v) -> Result<void> {
    field(c) = v.back();
    return {};
  };
  o.print = [field](const DaemonConfig& c) -> Printed { return field(c); };
  return o;
}

template <typename E, typename Field>
Option choice(std::string key, std::string flag, std::string help,
              std::vector<std::pair<std::string, E>> names, Field field) {
  std::string type;
  for (const auto& [name, value] : names)
    type += (type.empty() ? "" : "|") + name;
  Option o{std::move(key), std::move(flag), std::move(help), type, Kind::kChoice};
  auto set = [field, names, type](DaemonConfig& c, const std::string& s) -> Result<void> {
    for (const auto& [name, value] : names)
      if (name == s) {
        field(c) = value;
        return {};
      }
    return make_error("expected one of {}, got \"{}\"", type, s);
  };
  o.from_toml = [set](DaemonConfig& c, const toml::node& node) -> Result<void> {
    auto s = toml_string(node);
    if (!s)
      return s.error();
    return set(c, *s);
  };
  o.from_flag = [set](DaemonConfig& c, const std::vector<std::string>& v) {
    return set(c, v.back());
  };
  o.print = [field, names](const DaemonConfig& c) -> Printed {
    for (const auto& [name, value] : names)
      if (value == field(c))
        return name;
    return std::string();
  };
  return o;
}

Result<int64_t> parse_integer(std::string_view s) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size())
    return make_error("expected an integer, got \"{}\"", s);
  return v;
}

template <typename Field>
Option count(std::string key, std::string flag, std::string type, std::string help, int64_t min,
             int64_t max, Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), std::move(type), Kind::kCount};
  auto set = [field, min, max](DaemonConfig& c, int64_t v) -> Result<void> {
    if (v < min || v > max)
      return make_error("must be between {} and {}, got {}", min, max, v);
    field(c) = static_cast<std::remove_reference_t<decltype(field(c))>>(v);
    return {};
  };
  o.from_toml = [set](DaemonConfig& c, const toml::node& node) -> Result<void> {
    if (const auto* i = node.as_integer())
      return set(c, i->get());
    return make_error("expected an integer, got {}", describe_type(node));
  };
  o.from_flag = [set](DaemonConfig& c, const std::vector<std::string>& v) -> Result<void> {
    auto i = parse_integer(v.back());
    if (!i)
      return i.error();
    return set(c, *i);
  };
  o.print = [field](const DaemonConfig& c) -> Printed { return static_cast<int64_t>(field(c)); };
  return o;
}

template <typename Field>
Option seconds(std::string key, std::string flag, std::string help, double min, double max,
               Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), "SECONDS", Kind::kSeconds};
  auto set = [field, min, max](DaemonConfig& c, double v) -> Result<void> {
    if (!std::isfinite(v) || v < min || v > max)
      return make_error("must be between {} and {} seconds, got {}", min, max, v);
    field(c) = v;
    return {};
  };
  o.from_toml = [set](DaemonConfig& c, const toml::node& node) -> Result<void> {
    if (const auto* f = node.as_floating_point())
      return set(c, f->get());
    if (const auto* i = node.as_integer())
      return set(c, static_cast<double>(i->get()));
    return make_error("expected a number of seconds, got {}", describe_type(node));
  };
  o.from_flag = [set](DaemonConfig& c, const std::vector<std::string>& v) -> Result<void> {
    const std::string& s = v.back();
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size())
      return make_error("expected a number of seconds, got \"{}\"", s);
    return set(c, d);
  };
  o.print = [field](const DaemonConfig& c) -> Printed { return field(c); };
  return o;
}

template <typename Field>
Option toggle(std::string key, std::string flag, bool flag_sets, std::string help, Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), "", Kind::kToggle, flag_sets};
  o.from_toml = [field](DaemonConfig& c, const toml::node& node) -> Result<void> {
    if (const auto* b = node.as_boolean()) {
      field(c) = b->get();
      return {};
    }
    return make_error("expected true or false, got {}", describe_type(node));
  };
  o.from_flag = [field, flag_sets](DaemonConfig& c, const std::vector<std::string>&) {
    field(c) = flag_sets;
    return Result<void>();
  };
  o.print = [field](const DaemonConfig& c) -> Printed { return static_cast<bool>(field(c)); };
  return o;
}

std::string format_byte_size(uint64_t bytes) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const auto& [size, unit] : kUnits)
    if (bytes != 0 && bytes % size == 0)
      return fmt::format("{}{}", bytes / size, unit);
  return std::to_string(bytes);
}

template <typename Field>
Option bytes(std::string key, std::string flag, std::string help, Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), "BYTES", Kind::kBytes};
  o.from_toml = [field](DaemonConfig& c, const toml::node& node) -> Result<void> {
    if (const auto* i = node.as_integer()) {
      if (i->get() < 0)
        return make_error("must not be negative, got {}", i->get());
      field(c) = static_cast<uint64_t>(i->get());
      return {};
    }
    if (const auto* s = node.as_string()) {
      auto v = parse_byte_size(s->get());
      if (!v)
        return v.error();
      field(c) = *v;
      return {};
    }
    return make_error("expected a size such as \"64MiB\" or a number of bytes, got {}",
                      describe_type(node));
  };
  o.from_flag = [field](DaemonConfig& c, const std::vector<std::string>& v) -> Result<void> {
    auto size = parse_byte_size(v.back());
    if (!size)
      return size.error();
    field(c) = *size;
    return {};
  };
  o.print = [field](const DaemonConfig& c) -> Printed {
    const uint64_t b = field(c);
    const std::string text = format_byte_size(b);
    // A TOML integer is signed: a count above INT64_MAX prints as a
    // string, which reads back as the same size.
    if (text == std::to_string(b) && b <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(b);
    return text;
  };
  return o;
}

template <typename Field>
Option list(std::string key, std::string flag, std::string type, std::string help, Field field) {
  Option o{std::move(key), std::move(flag), std::move(help), std::move(type), Kind::kList};
  o.from_toml = [field](DaemonConfig& c, const toml::node& node) -> Result<void> {
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
    field(c) = std::move(values);
    return {};
  };
  o.from_flag = [field](DaemonConfig& c, const std::vector<std::string>& v) {
    field(c) = v;
    return Result<void>();
  };
  o.print = [field](const DaemonConfig& c) -> Printed { return field(c); };
  return o;
}

Option label_table() {
  Option o{"labels", "--label", "Static label added to every profile (repeatable)", "NAME=VALUE",
           Kind::kLabels};
  o.from_toml = [](DaemonConfig& c, const toml::node& node) -> Result<void> {
    const auto* table = node.as_table();
    if (table == nullptr)
      return make_error("expected a table of name = \"value\", got {}", describe_type(node));
    for (auto&& [name, value] : *table) {
      const auto* s = value.as_string();
      if (s == nullptr)
        return make_error("label {} must be a string, got {}", name.str(), describe_type(value));
      c.labels[std::string(name.str())] = s->get();
    }
    return {};
  };
  o.from_flag = [](DaemonConfig& c, const std::vector<std::string>& values) -> Result<void> {
    for (const auto& v : values) {
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0)
        return make_error("expected NAME=VALUE, got \"{}\"", v);
      c.labels[v.substr(0, eq)] = v.substr(eq + 1);
    }
    return {};
  };
  o.print = [](const DaemonConfig& c) -> Printed { return c.labels; };
  return o;
}

// Field accessors are generic lambdas so one works on a const and a mutable
// DaemonConfig alike.
const std::vector<Option>& options() {
  using exporter::PyroscopeProtocol;
  static const std::vector<Option> kOptions = [] {
    std::vector<Option> o;
    o.push_back(text(
        "hostname", "--hostname", "NAME",
        "Value of the hostname label (default: this host's name; in a Kubernetes pod, "
        "pass the node's)",
        [](auto& c) -> auto& { return c.hostname; }));
    o.push_back(choice<std::string>(
        "log_level", "--log-level", "Log level",
        {{"trace", "trace"},
         {"debug", "debug"},
         {"info", "info"},
         {"warn", "warn"},
         {"error", "error"},
         {"off", "off"}},
        [](auto& c) -> auto& { return c.log_level; }));
    o.push_back(count(
        "health_interval_s", "--health-interval", "SECONDS",
        "Seconds between health lines in the log (processes, samples, losses, uploads)", 1, 3600,
        [](auto& c) -> auto& { return c.health_interval_s; }));
    o.push_back(count(
        "sampling.rate_hz", "--rate", "HZ", "Samples per second per CPU", bpf::kMinFrequencyHz,
        bpf::kMaxFrequencyHz, [](auto& c) -> auto& { return c.sampling_rate_hz; }));
    o.push_back(choice<StackMode>(
        "sampling.stack_mode", "--stacks,--stack-mode",
        "python: Python frames only; mixed: Python, native and kernel frames",
        {{"python", StackMode::kPython}, {"mixed", StackMode::kMixed}},
        [](auto& c) -> auto& { return c.stack_mode; }));
    o.push_back(toggle(
        "sampling.kernel", "--no-kernel", false, "Leave kernel frames out of mixed stacks",
        [](auto& c) -> auto& { return c.kernel_stacks; }));
    o.push_back(toggle(
        "sampling.all_processes", "--all-processes", true,
        "Also profile processes that are not Python, with native and kernel stacks (the process "
        "selection applies to them too)",
        [](auto& c) -> auto& { return c.all_processes; }));
    o.push_back(list(
        "processes.names", "--process-name", "NAME",
        "Profile processes with this name (comm or executable; repeatable)",
        [](auto& c) -> auto& { return c.processes.names; }));
    o.push_back(list(
        "processes.cmdline_regex", "--cmdline-regex", "REGEX",
        "Profile processes whose command line matches this regex (RE2 syntax; repeatable)",
        [](auto& c) -> auto& { return c.processes.cmdline_regex; }));
    o.push_back(list(
        "processes.cgroups", "--cgroup", "PATH",
        "Profile processes in this cgroup or below it (repeatable)",
        [](auto& c) -> auto& { return c.processes.cgroups; }));
    o.push_back(list(
        "processes.container_ids", "--container-id", "ID",
        "Profile processes in this container (id prefix; repeatable)",
        [](auto& c) -> auto& { return c.processes.container_ids; }));
    o.push_back(list(
        "processes.exclude_names", "--exclude-name", "NAME",
        "Never profile processes with this name (repeatable)",
        [](auto& c) -> auto& { return c.processes.exclude_names; }));
    o.push_back(list(
        "processes.exclude_cmdline_regex", "--exclude-cmdline-regex", "REGEX",
        "Never profile processes whose command line matches this regex (RE2 syntax; repeatable)",
        [](auto& c) -> auto& { return c.processes.exclude_cmdline_regex; }));
    o.push_back(text(
        "application.name_regex", "--app-name-regex", "REGEX",
        "Application name: first capture group of this regex (RE2 syntax) over the command line",
        [](auto& c) -> auto& { return c.app_name_regex; }));
    o.push_back(text(
        "application.name_template", "--app-name-template", "TEMPLATE",
        "Application name template: {app} and {label} placeholders",
        [](auto& c) -> auto& { return c.app_name_template; }));
    o.push_back(label_table());
    o.push_back(count(
        "upload.interval_s", "--upload-interval", "SECONDS", "Seconds covered by each profile", 1,
        3600, [](auto& c) -> auto& { return c.upload_interval_s; }));
    o.push_back(bytes(
        "upload.queue_max_bytes", "--queue-max-bytes",
        "Memory for profiles waiting to be uploaded; the oldest go first",
        [](auto& c) -> auto& { return c.queue_max_bytes; }));
    o.push_back(text(
        "pyroscope.url", "--pyroscope-url", "URL",
        "Pyroscope (or Grafana Alloy) base URL; empty: no upload",
        [](auto& c) -> auto& { return c.pyroscope.url; }));
    o.push_back(choice<PyroscopeProtocol>(
        "pyroscope.protocol", "--pyroscope-protocol",
        "push: push.v1 Connect API (Pyroscope 1.x, Alloy); ingest: the original /ingest API",
        {{"push", PyroscopeProtocol::kPush}, {"ingest", PyroscopeProtocol::kIngest}},
        [](auto& c) -> auto& { return c.pyroscope.protocol; }));
    struct Secret {
      const char* name;
      const char* flag;
      const char* what;
      SecretSource PyroscopeConfig::*member;
    };
    const Secret secrets[] = {
        {"basic_auth_user", "basic-auth-user", "basic auth user",
         &PyroscopeConfig::basic_auth_user},
        {"basic_auth_password", "basic-auth-password", "basic auth password",
         &PyroscopeConfig::basic_auth_password},
        {"bearer_token", "bearer-token", "bearer token", &PyroscopeConfig::bearer_token},
        {"tenant_id", "tenant-id", "tenant id (X-Scope-OrgID)", &PyroscopeConfig::tenant_id},
    };
    for (const Secret& s : secrets) {
      auto member = s.member;
      o.push_back(text(
          fmt::format("pyroscope.{}_file", s.name), fmt::format("--pyroscope-{}-file", s.flag),
          "FILE", fmt::format("File holding the Pyroscope {}", s.what), [member](auto& c) -> auto& {
            return (c.pyroscope.*member).file;
          }));
      o.push_back(text(
          fmt::format("pyroscope.{}_env", s.name), fmt::format("--pyroscope-{}-env", s.flag),
          "VARIABLE", fmt::format("Environment variable holding the Pyroscope {}", s.what),
          [member](auto& c) -> auto& { return (c.pyroscope.*member).env; }));
    }
    o.push_back(text(
        "pyroscope.tls_ca_file", "--pyroscope-tls-ca-file", "FILE",
        "PEM CA bundle to verify the server with (default: the system's)",
        [](auto& c) -> auto& { return c.pyroscope.tls_ca_file; }));
    o.push_back(toggle(
        "pyroscope.tls_insecure_skip_verify", "--pyroscope-tls-insecure-skip-verify", true,
        "Do not verify the server's TLS certificate (tests only)",
        [](auto& c) -> auto& { return c.pyroscope.tls_insecure_skip_verify; }));
    o.push_back(seconds(
        "pyroscope.connect_timeout_s", "--pyroscope-connect-timeout",
        "Seconds to establish a connection", 0.001, 600,
        [](auto& c) -> auto& { return c.pyroscope.connect_timeout_s; }));
    o.push_back(seconds(
        "pyroscope.timeout_s", "--pyroscope-timeout", "Seconds for a whole upload request", 0.001,
        3600, [](auto& c) -> auto& { return c.pyroscope.timeout_s; }));
    o.push_back(text(
        "directory.path", "--output-dir", "DIR",
        "Also write each profile into this directory; empty: no files",
        [](auto& c) -> auto& { return c.directory.path; }));
    o.push_back(count(
        "directory.max_files", "--output-max-files", "N",
        "Keep at most this many profile files (0: no limit)", 0, INT64_MAX,
        [](auto& c) -> auto& { return c.directory.max_files; }));
    o.push_back(bytes(
        "directory.max_bytes", "--output-max-bytes",
        "Keep at most this many bytes of profile files (0: no limit)",
        [](auto& c) -> auto& { return c.directory.max_bytes; }));
    return o;
  }();
  return kOptions;
}

const Option* find_option(std::string_view key) {
  for (const Option& o : options())
    if (o.key == key)
      return &o;
  return nullptr;
}

bool is_section(std::string_view key) {
  for (const Option& o : options())
    if (o.key.size() > key.size() && o.key.starts_with(key) && o.key[key.size()] == '.')
      return true;
  return false;
}

Result<void> apply_table(DaemonConfig& config, const toml::table& table, const std::string& prefix,
                         std::string_view source) {
  for (auto&& [name, node] : table) {
    const std::string key =
        prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
    const auto line = name.source().begin.line;
    if (const Option* option = find_option(key)) {
      if (auto applied = option->from_toml(config, node); !applied)
        return make_error("{}:{}: {}: {}", source, line, key, applied.error().message);
      continue;
    }
    if (const auto* section = node.as_table(); section != nullptr && is_section(key)) {
      KRAIT_TRY(apply_table(config, *section, key, source));
      continue;
    }
    return make_error("{}:{}: unknown key '{}' (`krait daemon --print-config` lists every key)",
                      source, line, key);
  }
  return {};
}

Result<void> apply_toml(DaemonConfig& config, std::string_view text, std::string_view source) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return make_error("{}:{}:{}: {}", source, e.source().begin.line, e.source().begin.column,
                      e.description());
  }
  return apply_table(config, table, "", source);
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9'))
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

Result<void> check_regexes(const std::vector<std::string>& regexes, std::string_view key) {
  for (const auto& r : regexes)
    KRAIT_TRY(CmdlineRegex::compile(r, key));
  return {};
}

Result<void> check_secret(const SecretSource& source, std::string_view name) {
  if (!source.file.empty() && !source.env.empty())
    return make_error("pyroscope.{0}: set {0}_file or {0}_env, not both", name);
  return {};
}

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

std::string toml_value(const Printed& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(v);
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
          return "";  // tables are written as sections
        }
      },
      value);
}

}  // namespace

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

void add_daemon_options(CLI::App& command, DaemonFlags& flags) {
  command.add_option("-c,--config", flags.config_file, "TOML configuration file")
      ->type_name("FILE");
  command.add_flag("--print-config", flags.print_config,
                   "Print the effective configuration as TOML and exit");
  for (const Option& option : options()) {
    DaemonFlags::Entry& entry = flags.by_key[option.key];
    const std::string help = fmt::format("{} ({})", option.help, option.key);
    if (option.kind == Kind::kToggle) {
      entry.option = command.add_flag(option.flag, help);
    } else {
      entry.option = command.add_option(option.flag, entry.values, help)->type_name(option.type);
      entry.option->allow_extra_args(false);
    }
    entry.option->group("Daemon options");
  }
}

Result<DaemonConfig> parse_config_toml(std::string_view text, std::string_view source) {
  DaemonConfig config;
  KRAIT_TRY(apply_toml(config, text, source));
  return config;
}

Result<DaemonConfig> resolve_config(const DaemonFlags& flags) {
  DaemonConfig config;
  if (!flags.config_file.empty()) {
    // The operator's file: a cap far above any real configuration.
    constexpr size_t kConfigFileMaxBytes = size_t{16} << 20;
    auto text = read_file(flags.config_file, kConfigFileMaxBytes);
    if (!text)
      return text.error().context("reading the configuration");
    KRAIT_TRY(apply_toml(config, *text, flags.config_file));
  }
  for (const Option& option : options()) {
    auto it = flags.by_key.find(option.key);
    if (it == flags.by_key.end() || it->second.option == nullptr || it->second.option->count() == 0)
      continue;
    if (option.kind != Kind::kToggle && it->second.values.empty())
      continue;
    if (auto applied = option.from_flag(config, it->second.values); !applied)
      return make_error("{}: {}", option.flag, applied.error().message);
  }
  if (!flags.print_config)
    KRAIT_TRY(validate(config));
  return config;
}

Result<void> validate(const DaemonConfig& config) {
  if (config.all_processes && config.stack_mode != StackMode::kMixed)
    return make_error(
        "sampling.all_processes needs sampling.stack_mode = \"mixed\": a process that is not "
        "Python has only native and kernel frames");
  KRAIT_TRY(check_regexes(config.processes.cmdline_regex, "processes.cmdline_regex"));
  KRAIT_TRY(
      check_regexes(config.processes.exclude_cmdline_regex, "processes.exclude_cmdline_regex"));
  for (const auto& id : config.processes.container_ids)
    if (id.size() < 4 || !std::all_of(id.begin(), id.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c));
        }))
      return make_error(
          "processes.container_ids: \"{}\" is not a container id (at least 4 hex digits)", id);
  for (const auto& cgroup : config.processes.cgroups)
    if (cgroup.empty() || cgroup[0] != '/')
      return make_error("processes.cgroups: \"{}\" must be a cgroup path starting with '/'",
                        cgroup);
  for (const auto& [name, value] : config.labels) {
    if (!valid_label_name(name) || name.starts_with("__"))
      return make_error(
          "labels.{}: a label name is letters, digits and '_', not starting with a "
          "digit or \"__\"",
          name);
    const auto& builtin = builtin_label_names();
    if (std::find(builtin.begin(), builtin.end(), name) != builtin.end())
      return make_error("labels.{}: krait sets this label itself; choose another name", name);
  }
  if (auto namer = ApplicationNamer::create(config.app_name_regex, ""); !namer)
    return namer.error();  // names application.name_regex
  auto placeholders = template_placeholders(config.app_name_template);
  if (!placeholders)
    return make_error("application.name_template: {}", placeholders.error().message);
  for (const auto& name : *placeholders) {
    const auto& builtin = builtin_label_names();
    if (name != "app" && std::find(builtin.begin(), builtin.end(), name) == builtin.end() &&
        !config.labels.contains(name))
      return make_error(
          "application.name_template: unknown placeholder {{{}}}; use {{app}}, a static label, "
          "or one of {}",
          name, fmt::join(builtin, ", "));
  }
  const PyroscopeConfig& p = config.pyroscope;
  KRAIT_TRY(check_secret(p.basic_auth_user, "basic_auth_user"));
  KRAIT_TRY(check_secret(p.basic_auth_password, "basic_auth_password"));
  KRAIT_TRY(check_secret(p.bearer_token, "bearer_token"));
  KRAIT_TRY(check_secret(p.tenant_id, "tenant_id"));
  if (!p.bearer_token.empty() && (!p.basic_auth_user.empty() || !p.basic_auth_password.empty()))
    return make_error("pyroscope: both a bearer token and basic auth are configured; choose one");
  if (p.basic_auth_user.empty() != p.basic_auth_password.empty())
    return make_error(
        "pyroscope: basic auth needs both basic_auth_user_* and basic_auth_password_*");
  if (!p.url.empty() && !p.url.starts_with("http://") && !p.url.starts_with("https://"))
    return make_error("pyroscope.url: \"{}\" must start with http:// or https://", p.url);
  if (p.url.empty() && config.directory.path.empty())
    return make_error(
        "no output: set pyroscope.url (--pyroscope-url) or directory.path (--output-dir)");
  return {};
}

std::string format_config_toml(const DaemonConfig& config) {
  std::string out = "# krait daemon configuration (krait daemon --print-config)\n";
  std::string section;
  for (const Option& option : options()) {
    const size_t dot = option.key.find('.');
    const std::string this_section = dot == std::string::npos
                                         ? (option.kind == Kind::kLabels ? option.key : "")
                                         : option.key.substr(0, dot);
    if (this_section != section) {
      section = this_section;
      out += fmt::format("\n[{}]\n", section);
    }
    const Printed value = option.print(config);
    if (option.kind == Kind::kLabels) {
      out += fmt::format("# {} ({})\n", option.help, option.flag);
      for (const auto& [name, text] : std::get<std::map<std::string, std::string>>(value))
        out += fmt::format("{} = {}\n", toml_key(name), toml_quote(text));
      continue;
    }
    const std::string name = dot == std::string::npos ? option.key : option.key.substr(dot + 1);
    out += fmt::format("# {} ({})\n{} = {}\n", option.help, option.flag, name, toml_value(value));
  }
  return out;
}

Result<std::string> read_secret(const SecretSource& source, std::string_view what) {
  if (!source.file.empty()) {
    auto text = read_file(source.file);
    if (!text)
      return text.error().context(fmt::format("reading the {}", what));
    std::string value = std::move(*text);
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r'))
      value.pop_back();
    if (value.empty())
      return make_error("the {} file {} is empty", what, source.file);
    struct stat st;
    if (::stat(source.file.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
      spdlog::warn("the {} file {} is readable by other users: chmod 600 it", what, source.file);
    return value;
  }
  if (!source.env.empty()) {
    const char* value = std::getenv(source.env.c_str());
    if (value == nullptr || *value == '\0')
      return make_error("environment variable {} (the {}) is not set or empty", source.env, what);
    return std::string(value);
  }
  return std::string();
}

Result<exporter::PyroscopeOptions> pyroscope_options(const DaemonConfig& config) {
  const PyroscopeConfig& p = config.pyroscope;
  exporter::PyroscopeOptions options;
  options.url = p.url;
  options.protocol = p.protocol;
  auto read = [](const SecretSource& source, std::string_view what, std::string& out) {
    auto value = read_secret(source, what);
    if (!value)
      return Result<void>(value.error());
    out = std::move(*value);
    return Result<void>();
  };
  KRAIT_TRY(read(p.basic_auth_user, "Pyroscope basic auth user", options.auth.basic_user));
  KRAIT_TRY(
      read(p.basic_auth_password, "Pyroscope basic auth password", options.auth.basic_password));
  KRAIT_TRY(read(p.bearer_token, "Pyroscope bearer token", options.auth.bearer_token));
  KRAIT_TRY(read(p.tenant_id, "Pyroscope tenant id", options.auth.tenant_id));
  options.ca_file = p.tls_ca_file;
  options.insecure_skip_verify = p.tls_insecure_skip_verify;
  options.connect_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(std::ceil(p.connect_timeout_s * 1000)));
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(p.timeout_s * 1000)));
  return options;
}

exporter::UploadQueueOptions upload_queue_options(const DaemonConfig& config) {
  exporter::UploadQueueOptions options;
  options.max_bytes = config.queue_max_bytes;
  options.send_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(std::ceil(config.pyroscope.timeout_s * 1000)));
  return options;
}

std::string effective_hostname(const DaemonConfig& config) {
  return config.hostname.empty() ? host_name() : config.hostname;
}

exporter::DirectoryOutputOptions directory_output_options(const DaemonConfig& config) {
  return {config.directory.path, config.directory.max_files, config.directory.max_bytes};
}

}  // namespace krait::daemon
