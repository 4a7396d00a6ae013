#include "daemon/app_name.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "daemon/config.h"
#include "proc/processes.h"
#include "util/files.h"

namespace krait::daemon {
namespace {

std::string base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/')
    path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string parent_base_name(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos || slash == 0)
    return "";
  return base_name(path.substr(0, slash));
}

std::string script_name(std::string_view script) {
  std::string name = base_name(script);
  // `python pkg/__main__.py` runs the package; its directory names it.
  if (name == "__main__.py" || name == "__main__.pyc") {
    std::string parent = parent_base_name(script);
    if (!parent.empty() && parent != ".")
      return parent;
  }
  return name;
}

// The name of a program that is not a Python interpreter, or that rewrote
// its argv into a title such as "gunicorn: worker [app:app]" or
// "[celeryd: celery@host:MainProcess]".
std::string program_name(const ProcessIdentity& process) {
  if (!process.argv.empty() && !process.argv[0].empty()) {
    std::string_view first = process.argv[0];
    if (process.argv.size() == 1)
      first = first.substr(0, first.find(' '));
    std::string name = base_name(first);
    name = name.substr(0, name.find(':'));
    std::erase_if(name, [](char c) { return c == '[' || c == ']'; });
    if (!name.empty())
      return name;
  }
  if (!process.exe.empty())
    return base_name(process.exe);
  return process.comm;
}

bool is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string label_value(const profile::Labels& labels, std::string_view name) {
  for (const auto& [key, value] : labels)
    if (key == name)
      return value;
  return "";
}

std::string join_cmdline(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) {
    if (!out.empty())
      out += ' ';
    out += arg;
  }
  return out;
}

}  // namespace

std::vector<std::string> parse_cmdline(std::string_view raw) {
  std::vector<std::string> argv;
  if (raw.empty())
    return argv;
  if (raw.back() == '\0')
    raw.remove_suffix(1);
  size_t start = 0;
  for (;;) {
    const size_t nul = raw.find('\0', start);
    argv.emplace_back(raw.substr(start, nul == std::string_view::npos ? nul : nul - start));
    if (nul == std::string_view::npos)
      break;
    start = nul + 1;
  }
  return argv;
}

Result<ProcessIdentity> read_process_identity(int pid, const std::string& proc_root) {
  ProcessIdentity identity;
  identity.pid = pid;
  const std::string dir = fmt::format("{}/{}", proc_root, pid);
  // A process can make its cmdline as long as it likes; naming needs only
  // the first arguments.
  auto cmdline = read_file_prefix(dir + "/cmdline", kCmdlineMaxBytes);
  if (!cmdline)
    return cmdline.error();
  identity.argv = parse_cmdline(*cmdline);
  auto comm = proc::read_comm(pid, proc_root);
  if (!comm)
    return comm.error();
  identity.comm = std::move(*comm);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink(dir + "/exe", ec);
  if (!ec) {
    identity.exe = exe.string();
    constexpr std::string_view kDeleted = " (deleted)";
    if (identity.exe.ends_with(kDeleted))
      identity.exe.resize(identity.exe.size() - kDeleted.size());
  }
  return identity;
}

bool is_python_interpreter(std::string_view name) {
  // python, python3, python3.12, python3.13t, python3.12d, python2.7-dbg,
  // pythonw, pypy, pypy3, pypy3.10: (python|pythonw|pypy), then an optional
  // version of dot-separated numbers, ABI flags [dmut]*, an optional -dbg.
  // One pass over the name, whatever its length.
  constexpr std::string_view kPrefixes[] = {"pythonw", "python", "pypy"};
  const auto* prefix = std::find_if(std::begin(kPrefixes), std::end(kPrefixes),
                                    [&](std::string_view p) { return name.starts_with(p); });
  if (prefix == std::end(kPrefixes))
    return false;
  name.remove_prefix(prefix->size());
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto skip_digits = [&] {
    while (!name.empty() && is_digit(name.front()))
      name.remove_prefix(1);
  };
  if (!name.empty() && is_digit(name.front())) {
    skip_digits();
    while (name.size() >= 2 && name[0] == '.' && is_digit(name[1])) {
      name.remove_prefix(1);
      skip_digits();
    }
  }
  while (!name.empty() && std::string_view("dmut").find(name.front()) != std::string_view::npos)
    name.remove_prefix(1);
  return name.empty() || name == "-dbg";
}

std::string default_application_name(const ProcessIdentity& process) {
  if (process.argv.empty())
    return process.comm.empty() ? "unknown" : process.comm;
  const std::string interpreter = base_name(process.argv[0]);
  if (!is_python_interpreter(interpreter) || process.argv.size() == 1) {
    if (is_python_interpreter(interpreter))
      return interpreter;  // a REPL
    std::string name = program_name(process);
    return name.empty() ? "unknown" : name;
  }
  // CPython's own option syntax: short options may be combined ("-uOO"),
  // -c/-m end the options and take the rest of the token or the next
  // argument, -W/-X take an argument the same way.
  static constexpr std::string_view kFlags = "bBdEhiIOPqsSuvVx?";
  for (size_t i = 1; i < process.argv.size(); ++i) {
    const std::string& arg = process.argv[i];
    if (arg == "-")
      return interpreter;  // script from stdin
    if (arg == "--") {
      if (i + 1 < process.argv.size())
        return script_name(process.argv[i + 1]);
      return interpreter;
    }
    if (arg == "--check-hash-based-pycs") {
      ++i;
      continue;
    }
    if (arg.starts_with("--"))
      continue;  // --help, --version, ...
    if (arg.size() < 2 || arg[0] != '-')
      return script_name(arg);
    for (size_t k = 1; k < arg.size(); ++k) {
      const char option = arg[k];
      if (kFlags.find(option) != std::string_view::npos)
        continue;
      const std::string attached = arg.substr(k + 1);
      const bool has_next = i + 1 < process.argv.size();
      if (option == 'm') {
        const std::string module =
            !attached.empty() ? attached : (has_next ? process.argv[i + 1] : "");
        return module.empty() ? interpreter : module;
      }
      if (option == 'c')
        return interpreter;
      if ((option == 'W' || option == 'X') && attached.empty())
        ++i;  // the argument is the next token
      break;  // -W/-X consume the rest of this token; unknown options too
    }
  }
  return interpreter;
}

const std::vector<std::string>& builtin_label_names() {
  static const std::vector<std::string> kNames = {
      "service_name", "pid",           "process_name",       "python_version",
      "hostname",     "container_id",  "container_runtime",  "pod_uid",
      "systemd_unit", "container_pid", "container_owner_uid"};
  return kNames;
}

profile::Labels process_labels(const ProcessIdentity& process, std::string_view python_version,
                               const proc::ContainerInfo& container, const std::vector<int>& nspids,
                               std::string_view hostname) {
  profile::Labels labels;
  labels.emplace_back("pid", std::to_string(process.pid));
  if (!process.comm.empty())
    labels.emplace_back("process_name", process.comm);
  if (!hostname.empty())
    labels.emplace_back("hostname", std::string(hostname));
  if (!python_version.empty())
    labels.emplace_back("python_version", std::string(python_version));
  if (!container.container_id.empty())
    labels.emplace_back("container_id", container.container_id);
  if (!container.runtime.empty())
    labels.emplace_back("container_runtime", container.runtime);
  if (!container.pod_uid.empty())
    labels.emplace_back("pod_uid", container.pod_uid);
  // An id found in a user's delegated cgroup tree is that user's claim: it
  // names a series of its own, never the container of that id elsewhere.
  if (!container.delegated_to.empty())
    labels.emplace_back("container_owner_uid", container.delegated_to);
  if (!container.systemd_unit.empty())
    labels.emplace_back("systemd_unit", container.systemd_unit);
  if (nspids.size() > 1)
    labels.emplace_back("container_pid", std::to_string(nspids.back()));
  return labels;
}

Result<std::vector<std::string>> template_placeholders(std::string_view name_template) {
  std::vector<std::string> names;
  size_t i = 0;
  while (i < name_template.size()) {
    const char c = name_template[i];
    if (c == '}')
      return make_error("'}}' without a '{{' at offset {} of '{}'", i, name_template);
    if (c != '{') {
      ++i;
      continue;
    }
    const size_t close = name_template.find('}', i);
    if (close == std::string_view::npos)
      return make_error("'{{' without a '}}' at offset {} of '{}'", i, name_template);
    const std::string_view name = name_template.substr(i + 1, close - i - 1);
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_label_char))
      return make_error("'{{{}}}' in '{}' is not a placeholder: write {{app}} or {{label_name}}",
                        name, name_template);
    names.emplace_back(name);
    i = close + 1;
  }
  return names;
}

Result<ApplicationNamer> ApplicationNamer::create(std::string_view cmdline_regex,
                                                  std::string_view name_template) {
  ApplicationNamer namer;
  if (!cmdline_regex.empty()) {
    auto regex = CmdlineRegex::compile(cmdline_regex, "application.name_regex");
    if (!regex)
      return regex.error();
    namer.regex_ = std::move(*regex);
  }
  KRAIT_TRY(template_placeholders(name_template));
  namer.template_ = std::string(name_template);
  return namer;
}

std::string ApplicationNamer::name(const ProcessIdentity& process,
                                   const profile::Labels& labels) const {
  const std::string fallback = default_application_name(process);
  std::string name = fallback;
  if (regex_) {
    const std::string cmdline = join_cmdline(process.argv);
    if (auto picked = regex_->search_first_group(cmdline); picked && !picked->empty())
      name = std::string(*picked);
  }
  if (!template_.empty()) {
    std::string out;
    size_t i = 0;
    while (i < template_.size()) {
      if (template_[i] != '{') {
        out += template_[i++];
        continue;
      }
      const size_t close = template_.find('}', i);
      const std::string key = template_.substr(i + 1, close - i - 1);
      out += key == "app" ? name : label_value(labels, key);
      i = close + 1;
    }
    name = out;
  }
  if (name.empty())
    name = fallback;
  return name.empty() ? "unknown" : name;
}

ProcessDescriber::ProcessDescriber(ApplicationNamer namer, profile::Labels static_labels,
                                   std::string hostname, std::string proc_root)
    : namer_(std::move(namer)),
      static_labels_(std::move(static_labels)),
      hostname_(std::move(hostname)),
      proc_root_(std::move(proc_root)) {}

Result<ProcessDescriber> ProcessDescriber::create(const DaemonConfig& config, std::string hostname,
                                                  std::string proc_root) {
  auto namer = ApplicationNamer::create(config.app_name_regex, config.app_name_template);
  if (!namer)
    return namer.error().context("application name rule");
  profile::Labels static_labels(config.labels.begin(), config.labels.end());
  return ProcessDescriber(std::move(*namer), std::move(static_labels), std::move(hostname),
                          std::move(proc_root));
}

Result<ProcessDescription> ProcessDescriber::describe(int pid,
                                                      std::string_view python_version) const {
  auto identity = read_process_identity(pid, proc_root_);
  if (!identity)
    return identity.error();
  // A process whose cgroup or status cannot be read still gets profiled,
  // just without the container labels.
  proc::ContainerInfo container;
  if (auto info = proc::read_container_info(pid, proc_root_))
    container = std::move(*info);
  else
    spdlog::debug("no container labels for pid {}: {}", pid, info.error().message);
  std::vector<int> nspids;
  if (auto ids = proc::read_nspid(pid, proc_root_))
    nspids = std::move(*ids);
  ProcessDescription description;
  description.labels = process_labels(*identity, python_version, container, nspids, hostname_);
  description.labels.insert(description.labels.end(), static_labels_.begin(), static_labels_.end());
  description.application = namer_.name(*identity, description.labels);
  std::stable_sort(description.labels.begin(), description.labels.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  return description;
}

std::string host_name() {
  utsname u{};
  if (::uname(&u) != 0 || u.nodename[0] == '\0')
    return "unknown";
  return u.nodename;
}

}  // namespace krait::daemon
