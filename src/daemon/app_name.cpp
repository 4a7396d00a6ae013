#include "daemon/app_name.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <optional>
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

// Application servers are named after the application they serve, so that
// a master and its workers (which run the same argv, or a title naming the
// app) share one name. Each rule below is one pass over the arguments with
// plain comparisons: argv is hostile, and already bounded by
// kCmdlineMaxBytes.

// The module of an application spec "pkg.wsgi:application" (gunicorn,
// uWSGI --module, Celery -A): the part before ':'.
std::string spec_module(std::string_view spec) {
  return std::string(spec.substr(0, spec.find(':')));
}

// The value of an option given as "--long VALUE", "--long=VALUE", "-s VALUE"
// or "-sVALUE" (`short_name` may be empty); the first one given.
std::optional<std::string_view> option_value(const std::vector<std::string_view>& args,
                                             std::string_view long_name,
                                             std::string_view short_name) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    const bool is_long = arg == long_name;
    const bool is_short = !short_name.empty() && arg == short_name;
    if (is_long || is_short) {
      if (i + 1 < args.size())
        return args[i + 1];
      return std::nullopt;
    }
    if (arg.size() > long_name.size() && arg.starts_with(long_name) && arg[long_name.size()] == '=')
      return arg.substr(long_name.size() + 1);
    if (!short_name.empty() && arg.size() > short_name.size() && arg.starts_with(short_name) &&
        !arg.starts_with("--"))
      return arg.substr(short_name.size());
  }
  return std::nullopt;
}

// gunicorn [OPTIONS] [APP_MODULE]: its -n/--name, else the module of the
// last argument that is no option nor an option's value. Options take a
// value unless they are one of gunicorn's flags or carry it ("--bind=:80",
// "-w4").
std::string gunicorn_app(const std::vector<std::string_view>& args) {
  if (auto name = option_value(args, "--name", "-n"); name && !name->empty())
    return std::string(*name);
  static constexpr std::string_view kFlags[] = {"--reload",
                                                "--spew",
                                                "--check-config",
                                                "--print-config",
                                                "--preload",
                                                "--no-sendfile",
                                                "--reuse-port",
                                                "--daemon",
                                                "-D",
                                                "--enable-stdio-inheritance",
                                                "-R",
                                                "--capture-output",
                                                "--log-syslog",
                                                "--disable-redirect-access-to-syslog",
                                                "--strip-header-spaces",
                                                "--do-handshake-on-connect",
                                                "--suppress-ragged-eofs",
                                                "--proxy-protocol",
                                                "-v",
                                                "--version",
                                                "-h",
                                                "--help"};
  std::string_view app;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg.size() < 2 || arg[0] != '-') {
      app = arg;
      continue;
    }
    if (arg == "--") {
      if (i + 1 < args.size())
        app = args.back();
      break;
    }
    const bool flag = std::find(std::begin(kFlags), std::end(kFlags), arg) != std::end(kFlags);
    const bool carries_value =
        arg.starts_with("--") ? arg.find('=') != std::string_view::npos : arg.size() > 2;
    if (!flag && !carries_value)
      ++i;  // its value
  }
  return spec_module(app);
}

// celery [-A APP] SUBCOMMAND ...: the module of APP.
std::string celery_app(const std::vector<std::string_view>& args) {
  auto app = option_value(args, "--app", "-A");
  return app ? spec_module(*app) : "";
}

// uwsgi --wsgi-file FILE (named like a script) or --module/-w MODULE.
std::string uwsgi_app(const std::vector<std::string_view>& args) {
  for (std::string_view name : {"--wsgi-file", "--file"})
    if (auto file = option_value(args, name, ""); file && !file->empty())
      return script_name(*file);
  if (auto module = option_value(args, "--module", "-w"))
    return spec_module(*module);
  if (auto module = option_value(args, "--wsgi", ""))
    return spec_module(*module);
  return "";
}

std::vector<std::string_view> views(const std::vector<std::string>& argv, size_t from) {
  std::vector<std::string_view> out;
  if (from < argv.size())
    out.assign(argv.begin() + static_cast<std::ptrdiff_t>(from), argv.end());
  return out;
}

// The application of a server run as `server` with arguments `args`; ""
// when none is named or `server` is no server known here.
std::string served_application(std::string_view server, const std::vector<std::string_view>& args) {
  if (server == "gunicorn")
    return gunicorn_app(args);
  if (server == "celery")
    return celery_app(args);
  return "";
}

// A title a server gave itself in place of its argv (setproctitle):
// "gunicorn: worker [wsgi_app:application]" (the bracket holds gunicorn's
// proc_name: its -n, else the app spec) and "[celeryd: celery@host:
// MainProcess] -active- (-A proj worker)" (a Celery worker's argv in
// parentheses; its pool children's titles carry none). "" for anything else.
std::string title_application(std::string_view title) {
  constexpr std::string_view kGunicorn = "gunicorn: ";
  if (title.starts_with(kGunicorn)) {
    const size_t open = title.find('[');
    const size_t close = title.rfind(']');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open)
      return "";
    return spec_module(title.substr(open + 1, close - open - 1));
  }
  if (title.starts_with("[celeryd: ")) {
    const size_t open = title.find('(');
    if (open == std::string_view::npos)
      return "";
    std::string_view rest = title.substr(open + 1);
    if (const size_t close = rest.rfind(')'); close != std::string_view::npos)
      rest = rest.substr(0, close);
    std::vector<std::string_view> args;
    while (!rest.empty()) {
      const size_t space = rest.find(' ');
      const std::string_view token = rest.substr(0, space);
      if (!token.empty())
        args.push_back(token);
      rest.remove_prefix(space == std::string_view::npos ? rest.size() : space + 1);
    }
    return celery_app(args);
  }
  return "";
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

namespace {

// The default name; `served` applies the application servers' rules.
std::string default_name(const ProcessIdentity& process, bool served) {
  if (process.argv.empty())
    return process.comm.empty() ? "unknown" : process.comm;
  const std::string interpreter = base_name(process.argv[0]);
  if (!is_python_interpreter(interpreter) || process.argv.size() == 1) {
    if (is_python_interpreter(interpreter))
      return interpreter;  // a REPL
    if (std::string app = served ? title_application(process.argv[0]) : ""; !app.empty())
      return app;
    if (served && interpreter.starts_with("uwsgi"))  // uwsgi, uwsgi-core, uwsgi_python311
      if (std::string app = uwsgi_app(views(process.argv, 1)); !app.empty())
        return app;
    std::string name = program_name(process);
    return name.empty() ? "unknown" : name;
  }
  // A server run by the interpreter (a console script or -m) is named
  // after its application, when its arguments name one.
  const auto server_or = [&](std::string name, size_t args_from) {
    if (!served)
      return name;
    std::string app = served_application(name, views(process.argv, args_from));
    return app.empty() ? name : app;
  };
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
        return server_or(script_name(process.argv[i + 1]), i + 2);
      return interpreter;
    }
    if (arg == "--check-hash-based-pycs") {
      ++i;
      continue;
    }
    if (arg.starts_with("--"))
      continue;  // --help, --version, ...
    if (arg.size() < 2 || arg[0] != '-')
      return server_or(script_name(arg), i + 1);
    for (size_t k = 1; k < arg.size(); ++k) {
      const char option = arg[k];
      if (kFlags.find(option) != std::string_view::npos)
        continue;
      const std::string attached = arg.substr(k + 1);
      const bool has_next = i + 1 < process.argv.size();
      if (option == 'm') {
        const std::string module =
            !attached.empty() ? attached : (has_next ? process.argv[i + 1] : "");
        if (module.empty())
          return interpreter;
        return server_or(module, attached.empty() ? i + 2 : i + 1);
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

}  // namespace

std::string default_application_name(const ProcessIdentity& process) {
  return default_name(process, true);
}

std::string default_program_name(const ProcessIdentity& process) {
  return default_name(process, false);
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
