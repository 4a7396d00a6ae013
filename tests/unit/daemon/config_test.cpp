// The daemon configuration: TOML, flags (which win), --print-config round
// trips, one-line errors naming the key, and secrets that never travel on
// the command line.
#include "daemon/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <set>

#include "cli/daemon_flags.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "util/files.h"

namespace krait::test {
namespace {

using daemon::DaemonConfig;
using daemon::StackMode;

// Parses `args` as the `daemon` subcommand would, then resolves.
Result<DaemonConfig> resolve(std::vector<std::string> args) {
  CLI::App app{"test"};
  cli::DaemonCommandFlags flags;
  flags.add(app);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return make_error("CLI11: {}", e.what());
  }
  return daemon::resolve_config(flags.collect());
}

DaemonConfig must(Result<DaemonConfig> config) {
  EXPECT_TRUE(config.ok()) << (config.ok() ? "" : config.error().message);
  return config.ok() ? *config : DaemonConfig{};
}

std::string error_of(Result<DaemonConfig> config) {
  EXPECT_FALSE(config.ok());
  if (config.ok())
    return "";
  EXPECT_EQ(config.error().message.find('\n'), std::string::npos) << config.error().message;
  return config.error().message;
}

// A configuration with every field away from its default.
DaemonConfig everything_set() {
  DaemonConfig c;
  c.log_level = "debug";
  c.hostname = "node-7";
  c.sampling_rate_hz = 250;
  c.stack_mode = StackMode::kPython;
  c.kernel_stacks = false;
  c.all_processes = true;  // valid only with mixed stacks: validation is tested apart
  c.processes = {{"celery"},   {"gunicorn .*"}, {"/system.slice/x.service"},
                 {"4c5e7e4a"}, {"pip"},         {"--no-profile"}};
  c.app_name_regex = R"(--app=(\S+))";
  c.app_name_template = "{app}-{env}";
  c.labels = {{"env", "prod \"eu\"\\1"}, {"team", "payments"}};
  c.upload_interval_s = 60;
  c.queue_max_bytes = 3 * 1024 * 1024 + 1;
  c.pyroscope.url = "https://profiles.example.com:4443/pyroscope";
  c.pyroscope.protocol = exporter::PyroscopeProtocol::kIngest;
  c.pyroscope.basic_auth_user.env = "PYRO_USER";
  c.pyroscope.basic_auth_password.file = "/etc/krait/password";
  c.pyroscope.tenant_id.file = "/etc/krait/tenant";
  c.pyroscope.tls_ca_file = "/etc/ssl/private-ca.pem";
  c.pyroscope.tls_insecure_skip_verify = true;
  c.pyroscope.connect_timeout_s = 2.5;
  c.pyroscope.timeout_s = 45;
  c.directory = {"/var/lib/krait/profiles", 500, 2ull << 30};
  return c;
}

TEST(DaemonConfigTest, Defaults) {
  const DaemonConfig c = must(daemon::parse_config_toml("", "empty.toml"));
  EXPECT_EQ(c, DaemonConfig{});
  EXPECT_EQ(c.sampling_rate_hz, 99u);
  EXPECT_EQ(c.upload_interval_s, 15u);
  EXPECT_EQ(c.stack_mode, StackMode::kMixed);
  EXPECT_TRUE(c.kernel_stacks);
  EXPECT_EQ(c.queue_max_bytes, 64u << 20);
  EXPECT_EQ(c.pyroscope.protocol, exporter::PyroscopeProtocol::kPush);
  EXPECT_FALSE(c.pyroscope.tls_insecure_skip_verify);
}

TEST(DaemonConfigTest, ReadsEveryKeyFromToml) {
  const std::string text = R"(
hostname = "node-7"
log_level = "debug"
[sampling]
rate_hz = 250
stack_mode = "python"
kernel = false
all_processes = true
[processes]
names = ["celery"]
cmdline_regex = ["gunicorn .*"]
cgroups = ["/system.slice/x.service"]
container_ids = ["4c5e7e4a"]
exclude_names = ["pip"]
exclude_cmdline_regex = ["--no-profile"]
[application]
name_regex = '--app=(\S+)'
name_template = "{app}-{env}"
[labels]
env = 'prod "eu"\1'
team = "payments"
[upload]
interval_s = 60
queue_max_bytes = 3145729
[pyroscope]
url = "https://profiles.example.com:4443/pyroscope"
protocol = "ingest"
basic_auth_user_env = "PYRO_USER"
basic_auth_password_file = "/etc/krait/password"
tenant_id_file = "/etc/krait/tenant"
tls_ca_file = "/etc/ssl/private-ca.pem"
tls_insecure_skip_verify = true
connect_timeout_s = 2.5
timeout_s = 45
[directory]
path = "/var/lib/krait/profiles"
max_files = 500
max_bytes = "2GiB"
)";
  EXPECT_EQ(must(daemon::parse_config_toml(text, "krait.toml")), everything_set());
}

TEST(DaemonConfigTest, PrintedConfigReadsBackEqual) {
  // A byte count above INT64_MAX (found by the config_toml harness: it was
  // printed as a negative TOML integer, which does not read back).
  DaemonConfig huge;
  huge.directory.max_bytes = 14008080046744070370u;
  for (const DaemonConfig& config : {DaemonConfig{}, everything_set(), huge}) {
    const std::string printed = daemon::format_config_toml(config);
    // toml++ reads it (an independent parser of the syntax) ...
    EXPECT_NO_THROW((void)toml::parse(printed)) << printed;
    // ... and it means the same configuration.
    EXPECT_EQ(must(daemon::parse_config_toml(printed, "printed")), config) << printed;
  }
}

TEST(DaemonConfigTest, EveryKeyIsAlsoAFlag) {
  CLI::App app{"test"};
  cli::DaemonCommandFlags flags;
  flags.add(app);
  std::map<std::string, const CLI::Option*> by_key;
  for (const auto& option : daemon::daemon_options())
    by_key[option.spec.key] = app.get_option_no_throw(option.spec.name());
  // Keys as the printed TOML has them.
  const toml::table printed = toml::parse(daemon::format_config_toml(everything_set()));
  std::set<std::string> keys;
  for (auto&& [name, node] : printed) {
    if (const auto* section = node.as_table(); section && name.str() != "labels") {
      for (auto&& [key, value] : *section)
        keys.insert(std::string(name.str()) + "." + std::string(key.str()));
    } else {
      keys.insert(std::string(name.str()));
    }
  }
  EXPECT_EQ(keys.size(), by_key.size());
  for (const auto& key : keys) {
    auto it = by_key.find(key);
    ASSERT_NE(it, by_key.end()) << key << " has no flag";
    ASSERT_NE(it->second, nullptr) << key;
    EXPECT_NE(it->second->get_description().find("(" + key + ")"), std::string::npos);
  }
}

TEST(DaemonConfigTest, FlagsWinOverTheFile) {
  TempDir dir;
  const std::string file = dir.file("krait.toml");
  write_text_file(file, R"(
[sampling]
rate_hz = 50
[processes]
names = ["a", "b"]
[labels]
env = "staging"
region = "eu"
[pyroscope]
url = "http://pyroscope:4040"
)");
  const DaemonConfig c =
      must(resolve({"--config", file, "--rate", "200", "--process-name", "c", "--label", "env=prod",
                    "--label", "rack=r1=x", "--no-kernel", "--upload-interval", "30",
                    "--output-dir", "/tmp/p", "--queue-max-bytes", "16MiB"}));
  EXPECT_EQ(c.sampling_rate_hz, 200u);
  EXPECT_EQ(c.processes.names, std::vector<std::string>{"c"});  // replaced, not appended
  EXPECT_EQ(c.labels, (std::map<std::string, std::string>{
                          {"env", "prod"}, {"region", "eu"}, {"rack", "r1=x"}}));
  EXPECT_FALSE(c.kernel_stacks);
  EXPECT_EQ(c.upload_interval_s, 30u);
  EXPECT_EQ(c.directory.path, "/tmp/p");
  EXPECT_EQ(c.pyroscope.url, "http://pyroscope:4040");  // from the file
  EXPECT_EQ(c.queue_max_bytes, 16u << 20);
}

// The stack options are spelled as `krait record` spells them.
TEST(DaemonConfigTest, StackFlagsAreTheRecordCommands) {
  EXPECT_EQ(must(resolve({"--output-dir", "/x", "--stacks", "python"})).stack_mode,
            StackMode::kPython);
  EXPECT_EQ(must(resolve({"--output-dir", "/x", "--stack-mode", "python"})).stack_mode,
            StackMode::kPython);
  const DaemonConfig all = must(resolve({"--output-dir", "/x", "--all-processes", "--no-kernel"}));
  EXPECT_TRUE(all.all_processes);
  EXPECT_EQ(all.stack_mode, StackMode::kMixed);
  EXPECT_FALSE(all.kernel_stacks);
  EXPECT_NE(error_of(resolve({"--output-dir", "/x", "--all-processes", "--stacks", "python"}))
                .find("sampling.all_processes"),
            std::string::npos);
}

TEST(DaemonConfigTest, RepeatedListFlagsCollectEveryValue) {
  const DaemonConfig c = must(resolve({"--output-dir", "/tmp/x", "--process-name", "a",
                                       "--process-name", "b", "--cmdline-regex", "x y"}));
  EXPECT_EQ(c.processes.names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.processes.cmdline_regex, std::vector<std::string>{"x y"});
}

TEST(DaemonConfigTest, ErrorsNameTheKeyAndLine) {
  struct Case {
    std::string toml;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {"[pyroscope]\nurll = 'x'\n", {"krait.toml:2:", "unknown key 'pyroscope.urll'"}},
      {"[pyroscop]\nurl = 'x'\n", {"unknown key 'pyroscop'"}},
      {"rate_hz = 3\n", {"unknown key 'rate_hz'"}},
      {"[sampling]\nrate_hz = \"fast\"\n",
       {"sampling.rate_hz", "expected an integer, got a string"}},
      {"[sampling]\nrate_hz = 0\n", {"sampling.rate_hz", "between 1 and 10000"}},
      {"[sampling]\nstack_mode = \"native\"\n", {"sampling.stack_mode", "python|mixed"}},
      {"[pyroscope]\nprotocol = \"grpc\"\n", {"pyroscope.protocol", "push|ingest", "grpc"}},
      {"[upload]\nqueue_max_bytes = \"12 parsecs\"\n", {"upload.queue_max_bytes", "unit"}},
      {"[processes]\nnames = \"x\"\n", {"processes.names", "array of strings"}},
      {"[labels]\nenv = 3\n", {"labels", "env", "string"}},
      {"[pyroscope]\ntimeout_s = -1\n", {"pyroscope.timeout_s", "seconds"}},
      {"[sampling]\nkernel = \"yes\"\n", {"sampling.kernel", "true or false"}},
      {"a = [1,\n", {"krait.toml:"}},
  };
  for (const Case& c : cases) {
    auto config = daemon::parse_config_toml(c.toml, "krait.toml");
    ASSERT_FALSE(config.ok()) << c.toml;
    EXPECT_EQ(config.error().message.find('\n'), std::string::npos) << config.error().message;
    for (const auto& part : c.expected)
      EXPECT_NE(config.error().message.find(part), std::string::npos)
          << c.toml << " -> " << config.error().message;
  }
}

TEST(DaemonConfigTest, FlagErrorsNameTheFlag) {
  EXPECT_NE(error_of(resolve({"--output-dir", "/x", "--rate", "abc"}))
                .find("--rate: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(resolve({"--output-dir", "/x", "--pyroscope-protocol", "grpc"}))
                .find("--pyroscope-protocol: expected one of push|ingest"),
            std::string::npos);
  EXPECT_NE(error_of(resolve({"--output-dir", "/x", "--label", "novalue"})).find("--label"),
            std::string::npos);
  EXPECT_NE(
      error_of(resolve({"--config", "/nonexistent/krait.toml"})).find("/nonexistent/krait.toml"),
      std::string::npos);
}

TEST(DaemonConfigTest, ValidationCatchesWhatNoSingleKeyCan) {
  struct Case {
    std::function<void(DaemonConfig&)> change;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](DaemonConfig& c) { c.directory.path.clear(); }, "no output"},
      {[](DaemonConfig& c) { c.pyroscope.url = "pyroscope:4040"; }, "pyroscope.url"},
      {[](DaemonConfig& c) {
         c.pyroscope.bearer_token.env = "T";
         c.pyroscope.basic_auth_user.env = "U";
         c.pyroscope.basic_auth_password.env = "P";
       },
       "choose one"},
      {[](DaemonConfig& c) { c.pyroscope.basic_auth_user.env = "U"; }, "basic_auth_password"},
      {[](DaemonConfig& c) {
         c.pyroscope.tenant_id.env = "T";
         c.pyroscope.tenant_id.file = "/t";
       },
       "pyroscope.tenant_id: set tenant_id_file or tenant_id_env, not both"},
      {[](DaemonConfig& c) { c.labels["pid"] = "1"; }, "labels.pid: krait sets this label itself"},
      {[](DaemonConfig& c) { c.labels["my-label"] = "1"; }, "labels.my-label"},
      {[](DaemonConfig& c) { c.labels["__name__"] = "x"; }, "labels.__name__"},
      {[](DaemonConfig& c) { c.processes.cmdline_regex = {"(oops"}; }, "processes.cmdline_regex"},
      {[](DaemonConfig& c) { c.processes.container_ids = {"xyz!"}; }, "processes.container_ids"},
      {[](DaemonConfig& c) { c.processes.cgroups = {"system.slice"}; }, "processes.cgroups"},
      {[](DaemonConfig& c) { c.app_name_regex = "[a-"; }, "application.name_regex"},
      // RE2 syntax: no backreferences, no lookaround.
      {[](DaemonConfig& c) { c.processes.exclude_cmdline_regex = {R"((a)\1)"}; },
       R"(processes.exclude_cmdline_regex: regex '(a)\1' does not compile)"},
      {[](DaemonConfig& c) { c.app_name_regex = "(?<=-)x"; },
       "application.name_regex: regex '(?<=-)x' does not compile"},
      {[](DaemonConfig& c) { c.app_name_template = "{app}-{nope}"; }, "unknown placeholder {nope}"},
      {[](DaemonConfig& c) { c.app_name_template = "{app"; }, "application.name_template"},
      {[](DaemonConfig& c) {
         c.all_processes = true;
         c.stack_mode = StackMode::kPython;
       },
       "sampling.all_processes needs sampling.stack_mode = \"mixed\""},
  };
  for (const Case& c : cases) {
    DaemonConfig config;
    config.directory.path = "/var/lib/krait";
    ASSERT_TRUE(daemon::validate(config).ok());
    c.change(config);
    auto valid = daemon::validate(config);
    ASSERT_FALSE(valid.ok()) << c.expected;
    EXPECT_NE(valid.error().message.find(c.expected), std::string::npos) << valid.error().message;
    EXPECT_EQ(valid.error().message.find('\n'), std::string::npos);
  }
  DaemonConfig templated;
  templated.directory.path = "/x";
  templated.labels["env"] = "prod";
  templated.app_name_template = "{app}-{env}-{container_id}";
  EXPECT_TRUE(daemon::validate(templated).ok());
}

TEST(DaemonConfigTest, PrintConfigSkipsValidation) {
  // Nothing configured is invalid, but can still be printed to start from.
  EXPECT_NE(error_of(resolve({})).find("no output"), std::string::npos);
  EXPECT_TRUE(resolve({"--print-config"}).ok());
}

TEST(DaemonConfigTest, SecretsAreReadFromFilesAndTheEnvironmentOnly) {
  CLI::App app{"test"};
  cli::DaemonCommandFlags flags;
  flags.add(app);
  for (const CLI::Option* option : app.get_options()) {
    const std::string name = option->get_name();
    for (const char* secret : {"user", "password", "token", "tenant"})
      if (name.find(secret) != std::string::npos) {
        EXPECT_TRUE(name.ends_with("-file") || name.ends_with("-env"))
            << name << " would put a secret on the command line";
      }
  }

  TempDir dir;
  const std::string token_file = dir.file("token");
  write_text_file(token_file, "glc_s3cr3t-token\n");
  ::chmod(token_file.c_str(), 0600);
  ::setenv("KRAIT_TEST_TENANT", "tenant-42", 1);
  const DaemonConfig config =
      must(resolve({"--pyroscope-url", "https://p.example", "--pyroscope-bearer-token-file",
                    token_file, "--pyroscope-tenant-id-env", "KRAIT_TEST_TENANT",
                    "--pyroscope-timeout", "12.5", "--pyroscope-connect-timeout", "2"}));
  auto options = daemon::pyroscope_options(config);
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->auth.bearer_token, "glc_s3cr3t-token");
  EXPECT_EQ(options->auth.tenant_id, "tenant-42");
  EXPECT_EQ(options->timeout, std::chrono::milliseconds(12'500));
  EXPECT_EQ(options->connect_timeout, std::chrono::milliseconds(2'000));
  EXPECT_EQ(daemon::upload_queue_options(config).send_timeout, std::chrono::milliseconds(12'500));
  // Neither the printed configuration nor this process's argv holds them.
  const std::string printed = daemon::format_config_toml(config);
  EXPECT_EQ(printed.find("glc_s3cr3t-token"), std::string::npos);
  EXPECT_EQ(printed.find("tenant-42"), std::string::npos);
  EXPECT_NE(printed.find(token_file), std::string::npos);
  auto cmdline = read_file("/proc/self/cmdline");
  ASSERT_TRUE(cmdline.ok());
  EXPECT_EQ(cmdline->find("glc_s3cr3t"), std::string::npos);
  ::unsetenv("KRAIT_TEST_TENANT");

  auto unset = daemon::read_secret({.env = "KRAIT_TEST_SURELY_UNSET"}, "bearer token");
  ASSERT_FALSE(unset.ok());
  EXPECT_NE(unset.error().message.find("KRAIT_TEST_SURELY_UNSET"), std::string::npos);
  write_text_file(dir.file("empty"), "\n");
  auto empty = daemon::read_secret({.file = dir.file("empty")}, "bearer token");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find("is empty"), std::string::npos);
  EXPECT_EQ(*daemon::read_secret({}, "nothing"), "");
}

TEST(DaemonConfigTest, ParsesByteSizes) {
  EXPECT_EQ(*daemon::parse_byte_size("1048576"), 1048576u);
  EXPECT_EQ(*daemon::parse_byte_size("64MiB"), 64u << 20);
  EXPECT_EQ(*daemon::parse_byte_size("64 MB"), 64u << 20);
  EXPECT_EQ(*daemon::parse_byte_size("512k"), 512u << 10);
  EXPECT_EQ(*daemon::parse_byte_size("1G"), 1u << 30);
  EXPECT_EQ(*daemon::parse_byte_size("2TiB"), 2ull << 40);
  EXPECT_EQ(*daemon::parse_byte_size("0"), 0u);
  for (const char* bad :
       {"", "MiB", "-1", "1.5GiB", "3 parsecs", "99999999999999999999", "99999999999TiB"})
    EXPECT_FALSE(daemon::parse_byte_size(bad).ok()) << bad;
}

// The configurations the packages ship must be accepted as they are.
TEST(DaemonConfigTest, ShippedConfigurationsAreValid) {
  const std::string packaging = std::string(KRAIT_SOURCE_DIR) + "/packaging";
  auto debian = read_file(packaging + "/krait.toml");
  ASSERT_TRUE(debian.ok()) << debian.error().message;
  const DaemonConfig config = must(daemon::parse_config_toml(*debian, "packaging/krait.toml"));
  EXPECT_TRUE(daemon::validate(config).ok());
  EXPECT_EQ(config.directory.path, "/var/lib/krait/profiles");

  // The ConfigMap's krait.toml: the block under "krait.toml: |", indented.
  auto manifest = read_file(packaging + "/kubernetes/krait-daemonset.yaml");
  ASSERT_TRUE(manifest.ok()) << manifest.error().message;
  const size_t start = manifest->find("  krait.toml: |\n");
  ASSERT_NE(start, std::string::npos) << "no krait.toml in the ConfigMap";
  std::string toml;
  size_t at = manifest->find('\n', start) + 1;
  while (at < manifest->size()) {
    const size_t end = manifest->find('\n', at);
    const std::string line = manifest->substr(at, end - at);
    if (!line.empty() && !line.starts_with("    "))
      break;
    toml += (line.empty() ? "" : line.substr(4)) + "\n";
    at = end == std::string::npos ? manifest->size() : end + 1;
  }
  const DaemonConfig k8s = must(daemon::parse_config_toml(toml, "ConfigMap krait.toml"));
  EXPECT_TRUE(daemon::validate(k8s).ok());
  EXPECT_FALSE(k8s.pyroscope.url.empty());
}

TEST(DaemonConfigTest, BuildsTheOutputOptions) {
  DaemonConfig c = everything_set();
  EXPECT_EQ(daemon::effective_hostname(c), "node-7");
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(daemon::effective_hostname(DaemonConfig{}), host);
  const auto dir = daemon::directory_output_options(c);
  EXPECT_EQ(dir.path, "/var/lib/krait/profiles");
  EXPECT_EQ(dir.max_files, 500u);
  EXPECT_EQ(dir.max_bytes, 2ull << 30);
  EXPECT_EQ(daemon::upload_queue_options(c).max_bytes, 3u * 1024 * 1024 + 1);
}

}  // namespace
}  // namespace krait::test
