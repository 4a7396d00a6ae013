#include "daemon/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "daemon/app_name.h"
#include "daemon/cmdline_regex.h"
#include "options/sampling.h"
#include "options/toml.h"
#include "util/files.h"

namespace krait::daemon {
namespace {

using options::Kind;
using options::Spec;

// Field accessors are generic lambdas so one works on a const and a mutable
// DaemonConfig alike.
template <typename Access>
options::Option<DaemonConfig> bind(Spec spec, Access access) {
  return options::bind<DaemonConfig>(std::move(spec), access);
}

Spec text(std::string key, std::string flags, std::string type, std::string help) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .type = std::move(type),
          .help = std::move(help),
          .kind = Kind::kText};
}

Spec count(std::string key, std::string flags, std::string type, std::string help, int64_t min,
           int64_t max) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .type = std::move(type),
          .help = std::move(help),
          .kind = Kind::kInteger,
          .min = min,
          .max = max};
}

Spec seconds(std::string key, std::string flags, std::string help, double min, double max) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .type = "SECONDS",
          .help = std::move(help),
          .kind = Kind::kSeconds,
          .min_seconds = min,
          .max_seconds = max};
}

Spec toggle(std::string key, std::string flags, std::string help) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .help = std::move(help),
          .kind = Kind::kToggle};
}

Spec bytes(std::string key, std::string flags, std::string help) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .type = "BYTES",
          .help = std::move(help),
          .kind = Kind::kBytes};
}

Spec list(std::string key, std::string flags, std::string type, std::string help) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .type = std::move(type),
          .help = std::move(help),
          .kind = Kind::kList};
}

Spec choice(std::string key, std::string flags, std::string help,
            std::vector<options::Choice> choices) {
  return {.key = std::move(key),
          .flags = std::move(flags),
          .help = std::move(help),
          .kind = Kind::kChoice,
          .choices = std::move(choices)};
}

// Choices of a string field: the values are not used.
std::vector<options::Choice> names(std::initializer_list<const char*> list) {
  std::vector<options::Choice> out;
  for (const char* name : list)
    out.push_back({name, 0});
  return out;
}

// Four secrets, each a file or an environment variable.
void add_secrets(std::vector<options::Option<DaemonConfig>>& o) {
  struct Secret {
    const char* name;
    const char* flag;
    const char* what;
    SecretSource PyroscopeConfig::*member;
  };
  const Secret secrets[] = {
      {"basic_auth_user", "basic-auth-user", "basic auth user", &PyroscopeConfig::basic_auth_user},
      {"basic_auth_password", "basic-auth-password", "basic auth password",
       &PyroscopeConfig::basic_auth_password},
      {"bearer_token", "bearer-token", "bearer token", &PyroscopeConfig::bearer_token},
      {"tenant_id", "tenant-id", "tenant id (X-Scope-OrgID)", &PyroscopeConfig::tenant_id},
  };
  for (const Secret& s : secrets) {
    auto member = s.member;
    o.push_back(bind(
        text(fmt::format("pyroscope.{}_file", s.name), fmt::format("--pyroscope-{}-file", s.flag),
             "FILE", fmt::format("File holding the Pyroscope {}", s.what)),
        [member](auto& c) -> auto& { return (c.pyroscope.*member).file; }));
    o.push_back(bind(
        text(fmt::format("pyroscope.{}_env", s.name), fmt::format("--pyroscope-{}-env", s.flag),
             "VARIABLE", fmt::format("Environment variable holding the Pyroscope {}", s.what)),
        [member](auto& c) -> auto& { return (c.pyroscope.*member).env; }));
  }
}

// The table of every key: a data table, one entry per option.
std::vector<options::Option<DaemonConfig>> make_options() {
  using exporter::PyroscopeProtocol;
  namespace sampling = options::sampling;
  std::vector<options::Option<DaemonConfig>> o;
  o.push_back(bind(
      text("hostname", "--hostname", "NAME",
           "Value of the hostname label (default: this host's name; in a Kubernetes "
           "pod, pass the node's)"),
      [](auto& c) -> auto& { return c.hostname; }));
  o.push_back(bind(
      choice("log_level", "--log-level", "Log level",
             names({"trace", "debug", "info", "warn", "error", "off"})),
      [](auto& c) -> auto& { return c.log_level; }));
  o.push_back(bind(
      count("health_interval_s", "--health-interval", "SECONDS",
            "Seconds between health lines in the log (processes, samples, losses, "
            "uploads)",
            1, 3600),
      [](auto& c) -> auto& { return c.health_interval_s; }));
  o.push_back(bind(
      sampling::rate_hz(), [](auto& c) -> auto& { return c.sampling_rate_hz; }));
  o.push_back(bind(
      sampling::stack_mode(), [](auto& c) -> auto& { return c.stack_mode; }));
  o.push_back(bind(
      sampling::time_mode(), [](auto& c) -> auto& { return c.time_mode; }));
  o.push_back(bind(
      sampling::switch_every(), [](auto& c) -> auto& { return c.switch_every; }));
  o.push_back(bind(
      sampling::switch_budget(), [](auto& c) -> auto& { return c.switch_budget; }));
  o.push_back(bind(
      sampling::kernel_frames(), [](auto& c) -> auto& { return c.kernel_stacks; }));
  o.push_back(bind(
      sampling::all_processes(), [](auto& c) -> auto& { return c.all_processes; }));
  o.push_back(bind(
      list("processes.names", "--process-name", "NAME",
           "Profile processes with this name (comm or executable; repeatable)"),
      [](auto& c) -> auto& { return c.processes.names; }));
  o.push_back(bind(
      list("processes.cmdline_regex", "--cmdline-regex", "REGEX",
           "Profile processes whose command line matches this regex (RE2 syntax; "
           "repeatable)"),
      [](auto& c) -> auto& { return c.processes.cmdline_regex; }));
  o.push_back(bind(
      list("processes.cgroups", "--cgroup", "PATH",
           "Profile processes in this cgroup or below it (repeatable)"),
      [](auto& c) -> auto& { return c.processes.cgroups; }));
  o.push_back(bind(
      list("processes.container_ids", "--container-id", "ID",
           "Profile processes in this container (id prefix; repeatable)"),
      [](auto& c) -> auto& { return c.processes.container_ids; }));
  o.push_back(bind(
      list("processes.exclude_names", "--exclude-name", "NAME",
           "Never profile processes with this name (repeatable)"),
      [](auto& c) -> auto& { return c.processes.exclude_names; }));
  o.push_back(bind(
      list("processes.exclude_cmdline_regex", "--exclude-cmdline-regex", "REGEX",
           "Never profile processes whose command line matches this regex (RE2 "
           "syntax; repeatable)"),
      [](auto& c) -> auto& { return c.processes.exclude_cmdline_regex; }));
  o.push_back(bind(
      text("application.name_regex", "--app-name-regex", "REGEX",
           "Application name: first capture group of this regex (RE2 syntax) over "
           "the command line"),
      [](auto& c) -> auto& { return c.app_name_regex; }));
  o.push_back(bind(
      text("application.name_template", "--app-name-template", "TEMPLATE",
           "Application name template: {app} and {label} placeholders"),
      [](auto& c) -> auto& { return c.app_name_template; }));
  o.push_back(bind(
      {.key = "labels",
       .flags = "--label",
       .type = "NAME=VALUE",
       .help = "Static label added to every profile (repeatable)",
       .kind = Kind::kLabels},
      [](auto& c) -> auto& { return c.labels; }));
  o.push_back(bind(
      count("upload.interval_s", "--upload-interval", "SECONDS", "Seconds covered by each profile",
            1, 3600),
      [](auto& c) -> auto& { return c.upload_interval_s; }));
  o.push_back(bind(
      bytes("upload.queue_max_bytes", "--queue-max-bytes",
            "Memory for profiles waiting to be uploaded; the oldest go first"),
      [](auto& c) -> auto& { return c.queue_max_bytes; }));
  o.push_back(bind(
      text("pyroscope.url", "--pyroscope-url", "URL",
           "Pyroscope (or Grafana Alloy) base URL; empty: no upload"),
      [](auto& c) -> auto& { return c.pyroscope.url; }));
  o.push_back(bind(
      choice("pyroscope.protocol", "--pyroscope-protocol",
             "push: push.v1 Connect API (Pyroscope 1.x, Alloy); ingest: the "
             "original /ingest API",
             {{"push", static_cast<int>(PyroscopeProtocol::kPush)},
              {"ingest", static_cast<int>(PyroscopeProtocol::kIngest)}}),
      [](auto& c) -> auto& { return c.pyroscope.protocol; }));
  add_secrets(o);
  o.push_back(bind(
      text("pyroscope.tls_ca_file", "--pyroscope-tls-ca-file", "FILE",
           "PEM CA bundle to verify the server with (default: the system's)"),
      [](auto& c) -> auto& { return c.pyroscope.tls_ca_file; }));
  o.push_back(bind(
      toggle("pyroscope.tls_insecure_skip_verify", "--pyroscope-tls-insecure-skip-verify",
             "Do not verify the server's TLS certificate (tests only)"),
      [](auto& c) -> auto& { return c.pyroscope.tls_insecure_skip_verify; }));
  o.push_back(bind(
      seconds("pyroscope.connect_timeout_s", "--pyroscope-connect-timeout",
              "Seconds to establish a connection", 0.001, 600),
      [](auto& c) -> auto& { return c.pyroscope.connect_timeout_s; }));
  o.push_back(bind(
      seconds("pyroscope.timeout_s", "--pyroscope-timeout", "Seconds for a whole upload request",
              0.001, 3600),
      [](auto& c) -> auto& { return c.pyroscope.timeout_s; }));
  o.push_back(bind(
      text("directory.path", "--output-dir", "DIR",
           "Also write each profile into this directory; empty: no files"),
      [](auto& c) -> auto& { return c.directory.path; }));
  o.push_back(bind(
      count("directory.max_files", "--output-max-files", "N",
            "Keep at most this many profile files (0: no limit)", 0, INT64_MAX),
      [](auto& c) -> auto& { return c.directory.max_files; }));
  o.push_back(bind(
      bytes("directory.max_bytes", "--output-max-bytes",
            "Keep at most this many bytes of profile files (0: no limit)"),
      [](auto& c) -> auto& { return c.directory.max_bytes; }));
  return o;
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

}  // namespace

const std::vector<options::Option<DaemonConfig>>& daemon_options() {
  static const std::vector<options::Option<DaemonConfig>> kOptions = make_options();
  return kOptions;
}

Result<DaemonConfig> parse_config_toml(std::string_view text, std::string_view source) {
  DaemonConfig config;
  KRAIT_TRY(options::read_toml(text, source, daemon_options(), config));
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
    KRAIT_TRY(options::read_toml(*text, flags.config_file, daemon_options(), config));
  }
  KRAIT_TRY(options::apply_flags(daemon_options(), flags.given, config));
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
  return options::format_toml("krait daemon configuration (krait daemon --print-config)",
                              daemon_options(), config);
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
