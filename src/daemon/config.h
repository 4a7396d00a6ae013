// The configuration of `krait daemon`: a TOML file (--config FILE) merged
// with command-line flags, flags winning. Every option is both a TOML key
// and a flag, described once in daemon_options() (the sampling ones are
// shared with `krait record`: options/sampling.h); `krait daemon
// --print-config` prints the effective result as TOML that reads back to
// the same configuration.
//
// Keys, one per line: TOML key, flag, default, (notes).
//
//   log_level
//       --log-level LEVEL, "info" (trace debug info warn error off)
//   hostname
//       --hostname NAME, "" (the hostname label; empty: this host's name)
//   health_interval_s
//       --health-interval S, 60 (1..3600)
//   sampling.rate_hz
//       -r, --rate HZ, 99 (1..10000)
//   sampling.stack_mode
//       --stacks, --stack-mode MODE, "mixed" (python | mixed)
//   sampling.mode
//       --mode MODE, "cpu" (cpu | off-cpu | wall)
//   sampling.switch_every
//   sampling.switch_budget
//       --switch-every N, 1 (off-cpu and wall: one context switch in N is
//       walked, weighted by N; 1..65535)
//   sampling.kernel
//       --no-kernel, true (kernel frames in mixed stacks)
//   sampling.all_processes
//       --all-processes, false (also processes that are not Python; mixed
//       stacks only)
//   processes.names
//       --process-name NAME, [] (comm or executable base name)
//   processes.cmdline_regex
//       --cmdline-regex RE, [] (searched in the command line; RE2 syntax,
//       cmdline_regex.h)
//   processes.cgroups
//       --cgroup PATH, [] (cgroup path prefix)
//   processes.container_ids
//       --container-id ID, [] (container id prefix, >= 4 hex digits)
//   processes.exclude_names
//       --exclude-name NAME, []
//   processes.exclude_cmdline_regex
//       --exclude-cmdline-regex RE, []
//   application.name_regex
//       --app-name-regex RE, "" (app_name.h)
//   application.name_template
//       --app-name-template T, "" (app_name.h)
//   labels.<name> = "value"
//       --label NAME=VALUE, {} (static labels)
//   upload.interval_s
//       --upload-interval S, 15 (1..3600)
//   upload.queue_max_bytes
//       --queue-max-bytes N, "64MiB" (an integer, or a string with
//       KiB/MiB/GiB, K/M/G)
//   pyroscope.url
//       --pyroscope-url URL, "" (empty: no upload)
//   pyroscope.protocol
//       --pyroscope-protocol P, "push" (push | ingest)
//   pyroscope.basic_auth_user_file, pyroscope.basic_auth_user_env
//       --pyroscope-basic-auth-user-file FILE, --pyroscope-basic-auth-user-env NAME
//   pyroscope.basic_auth_password_file, pyroscope.basic_auth_password_env
//       --pyroscope-basic-auth-password-file FILE, ...-env NAME
//   pyroscope.bearer_token_file, pyroscope.bearer_token_env
//       --pyroscope-bearer-token-file FILE, ...-env NAME
//   pyroscope.tenant_id_file, pyroscope.tenant_id_env
//       --pyroscope-tenant-id-file FILE, ...-env NAME
//   pyroscope.tls_ca_file
//       --pyroscope-tls-ca-file FILE, ""
//   pyroscope.tls_insecure_skip_verify
//       --pyroscope-tls-insecure-skip-verify, false
//   pyroscope.connect_timeout_s
//       --pyroscope-connect-timeout S, 5
//   pyroscope.timeout_s
//       --pyroscope-timeout S, 30
//   directory.path
//       --output-dir DIR, "" (empty: no files)
//   directory.max_files
//       --output-max-files N, 1000 (0: no limit)
//   directory.max_bytes
//       --output-max-bytes N, "1GiB" (0: no limit)
//
// List flags replace the file's list when given; --label adds or overrides
// one label at a time. Secrets (auth, tenant) are never values in the file
// or on the command line: only the name of a file holding them, or of an
// environment variable, so they never show in `ps` or --print-config.
//
// Errors are one line naming the key or flag (and the file and line):
// unknown keys, wrong types, values out of range, regexes that do not
// compile, both a bearer token and basic auth, no output at all, ...
//
// Threading: plain data and free functions; no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bpf/sampling_options.h"
#include "export/directory_output.h"
#include "export/pyroscope.h"
#include "export/upload_queue.h"
#include "options/option.h"
#include "util/result.h"

namespace krait::daemon {

using bpf::StackMode;

// Where a secret comes from: a file (its content, trailing newlines
// trimmed) or an environment variable. At most one is set.
struct SecretSource {
  std::string file;
  std::string env;
  bool empty() const { return file.empty() && env.empty(); }
  bool operator==(const SecretSource&) const = default;
};

struct ProcessSelection {
  std::vector<std::string> names;
  std::vector<std::string> cmdline_regex;
  std::vector<std::string> cgroups;
  std::vector<std::string> container_ids;
  std::vector<std::string> exclude_names;
  std::vector<std::string> exclude_cmdline_regex;
  bool operator==(const ProcessSelection&) const = default;
};

struct PyroscopeConfig {
  std::string url;
  exporter::PyroscopeProtocol protocol = exporter::PyroscopeProtocol::kPush;
  SecretSource basic_auth_user;
  SecretSource basic_auth_password;
  SecretSource bearer_token;
  SecretSource tenant_id;
  std::string tls_ca_file;
  bool tls_insecure_skip_verify = false;
  double connect_timeout_s = 5;
  double timeout_s = 30;
  bool operator==(const PyroscopeConfig&) const = default;
};

struct DirectoryConfig {
  std::string path;
  uint64_t max_files = 1000;
  uint64_t max_bytes = 1ull << 30;
  bool operator==(const DirectoryConfig&) const = default;
};

struct DaemonConfig {
  std::string log_level = "info";
  uint32_t health_interval_s = 60;
  uint32_t sampling_rate_hz = 99;
  StackMode stack_mode = StackMode::kMixed;
  bpf::TimeMode time_mode = bpf::TimeMode::kCpu;
  uint32_t switch_every = 1;
  uint32_t switch_budget = bpf::kDefaultSwitchBudget;
  bool kernel_stacks = true;
  bool all_processes = false;
  ProcessSelection processes;
  std::string app_name_regex;
  std::string app_name_template;
  std::map<std::string, std::string> labels;
  std::string hostname;  // empty: host_name()
  uint32_t upload_interval_s = 15;
  uint64_t queue_max_bytes = 64ull << 20;
  PyroscopeConfig pyroscope;
  DirectoryConfig directory;
  bool operator==(const DaemonConfig&) const = default;
};

// Every configuration key and its flag, in --print-config order.
const std::vector<options::Option<DaemonConfig>>& daemon_options();

// What the command line gave (src/cli fills it); kept for the life of the
// daemon, which resolves it again on SIGHUP.
struct DaemonFlags {
  std::string config_file;  // --config
  bool print_config = false;
  options::GivenFlags given;  // daemon_options() flags given
};

// Defaults, then the TOML file (when --config was given), then the flags
// given on the command line; then validate(), unless --print-config was
// asked for (a partial configuration can still be printed).
Result<DaemonConfig> resolve_config(const DaemonFlags& flags);

// The same from a TOML text alone (defaults + text). `source` names the
// text in errors ("/etc/krait/krait.toml").
Result<DaemonConfig> parse_config_toml(std::string_view text, std::string_view source);

// Checks what no single key can: regexes compile, label names are valid
// and not krait's own, the application template's placeholders exist, auth
// is one of basic or bearer and complete, the URL is http(s), at least one
// output is configured.
Result<void> validate(const DaemonConfig& config);

// The effective configuration as TOML, every key present (reads back equal).
std::string format_config_toml(const DaemonConfig& config);

// Reads a secret: the file's content with trailing newlines trimmed, or the
// environment variable's value; "" when the source is empty. Errors name
// the file or variable (never the value).
Result<std::string> read_secret(const SecretSource& source, std::string_view what);

// Builders for the pieces the daemon runs. pyroscope_options() reads the
// secrets, so call it once at startup.
Result<exporter::PyroscopeOptions> pyroscope_options(const DaemonConfig& config);
exporter::UploadQueueOptions upload_queue_options(const DaemonConfig& config);
exporter::DirectoryOutputOptions directory_output_options(const DaemonConfig& config);
// config.hostname, or this host's name (uname) when it is empty.
std::string effective_hostname(const DaemonConfig& config);

// Parses "64MiB", "1G", "512k", "1048576" (binary units; B optional).
using options::parse_byte_size;

}  // namespace krait::daemon
