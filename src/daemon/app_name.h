// What `krait daemon` calls a profiled process (its application name, the
// Pyroscope service_name) and which labels its profiles carry.
//
// Default application name, from the command line, the way a person would
// name the program:
// - an interpreter (python, python3, python3.12, python3.12d, pythonw,
//   python2.7-dbg, pypy3, ...) running a script: the script's file name,
//   `python app.py` -> "app.py", `/usr/bin/python3 /usr/local/bin/gunicorn
//   app:app` -> "gunicorn" (a console script), `python pkg/__main__.py` ->
//   "pkg"; interpreter options before it are skipped (-u, -OO, -X dev,
//   -W ignore, -Wd, --check-hash-based-pycs never, ...);
// - `python -m celery worker` -> "celery" (the module, dotted names kept:
//   `-m http.server` -> "http.server"; `-mcelery` too);
// - `python -c ...`, `python -` or no script (a REPL): the interpreter's own
//   name ("python3.12");
// - an application server, named after the application it serves, so that
//   its master and workers (same argv, or a title naming the app) share the
//   name: gunicorn (a console script or -m) -> its -n/--name, else the
//   module of its APP_MODULE (`gunicorn -w 2 pkg.wsgi:app` -> "pkg.wsgi");
//   Celery -> the module of -A/--app (`-m celery -A proj worker` -> "proj");
//   uwsgi* -> the file of --wsgi-file/--file (as a script: "wsgi.py"), else
//   the module of --module/-w/--wsgi; titles set by setproctitle:
//   "gunicorn: worker [pkg.wsgi:app]" -> "pkg.wsgi",
//   "[celeryd: celery@host:MainProcess] -active- (-A proj worker)" -> "proj".
//   Without such an argument (a config file, `uwsgi --ini`, Celery's pool
//   children's titles "[celeryd: celery@host:ForkPoolWorker-1]") the rules
//   below and above name it ("gunicorn", "celery", "uwsgi", "celeryd");
// - anything else (a program embedding Python, a process that rewrote its
//   argv like "uWSGI worker 1"): the executable's name, argv[0]'s base name
//   up to the first space or ':' ("uWSGI"); when argv is empty (a zombie),
//   the kernel's comm.
//
// A user rule overrides the default:
// - a regex (RE2 syntax, cmdline_regex.h) searched in the command line
//   (arguments joined by single spaces): when it matches, the first capture
//   group (the whole match if it has none) is the name; otherwise the
//   default stands;
// - then a template, if set: "{app}" is the name so far, "{label}" any label
//   of the process (see process_labels()): "{app}-{container_id}". A label the
//   process does not have expands to "".
// An empty result falls back to the default, then to "unknown".
//
// Labels of a process (process_labels): pid, process_name (comm), hostname,
// python_version (when known), container_id, container_runtime, pod_uid,
// systemd_unit, container_pid (the pid inside the process's own PID
// namespace, when that differs) and container_owner_uid (a container found
// in a user's delegated cgroup tree, see proc/container.h) when they apply. Static labels from the
// configuration come after; they may not reuse these names (config.h checks).
//
// Threading: everything here is const after construction; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/cmdline_regex.h"
#include "proc/container.h"
#include "profile/profile.h"
#include "util/result.h"

namespace krait::daemon {

struct DaemonConfig;

// What the naming rules and the process filter look at.
struct ProcessIdentity {
  int pid = 0;
  std::vector<std::string> argv;  // /proc/PID/cmdline, split at NULs
  std::string comm;               // /proc/PID/comm, without the newline
  std::string exe;                // /proc/PID/exe target; "" when unreadable
};

// Splits a /proc/PID/cmdline text at NULs (a trailing NUL ends the last
// argument; a process that rewrote its argv into one string keeps it whole).
std::vector<std::string> parse_cmdline(std::string_view raw);

// How much of /proc/PID/cmdline read_process_identity() reads: the rest of a
// longer command line is dropped (the last argument kept may be cut short).
inline constexpr size_t kCmdlineMaxBytes = size_t{256} << 10;  // 256 KiB

// Reads cmdline (its first kCmdlineMaxBytes), comm and exe of
// <proc_root>/PID. The exe link needs ptrace-read access to the process;
// without it exe stays "" (not an error).
Result<ProcessIdentity> read_process_identity(int pid, const std::string& proc_root = "/proc");

// True for the base name of a Python interpreter executable (see above).
bool is_python_interpreter(std::string_view base_name);

std::string default_application_name(const ProcessIdentity& process);

// The default name without the application servers' rule: "gunicorn",
// "celery", "uwsgi" for them (process filters match either name).
std::string default_program_name(const ProcessIdentity& process);

// The label names process_labels() may set; static labels must avoid them.
const std::vector<std::string>& builtin_label_names();

profile::Labels process_labels(const ProcessIdentity& process, std::string_view python_version,
                               const proc::ContainerInfo& container, const std::vector<int>& nspids,
                               std::string_view hostname);

// The placeholder names of a name template, in order ("app" included).
// Error for an unbalanced brace or an empty or non-label "{...}".
Result<std::vector<std::string>> template_placeholders(std::string_view name_template);

class ApplicationNamer {
 public:
  // Both may be empty. Errors name the problem: a regex that does not
  // compile (named as application.name_regex), a template with an
  // unbalanced brace or an empty "{}".
  static Result<ApplicationNamer> create(std::string_view cmdline_regex,
                                         std::string_view name_template);

  std::string name(const ProcessIdentity& process, const profile::Labels& labels) const;

 private:
  ApplicationNamer() = default;
  std::optional<CmdlineRegex> regex_;
  std::string template_;
};

// Everything the daemon attaches to a process's profiles.
struct ProcessDescription {
  std::string application;
  profile::Labels labels;  // process_labels() then the static labels, sorted by name
};

// Reads /proc once per call (identity, cgroup, NSpid) and applies the
// configuration's naming rule and static labels.
class ProcessDescriber {
 public:
  static Result<ProcessDescriber> create(const DaemonConfig& config, std::string hostname,
                                         std::string proc_root = "/proc");
  Result<ProcessDescription> describe(int pid, std::string_view python_version) const;

 private:
  ProcessDescriber(ApplicationNamer namer, profile::Labels static_labels, std::string hostname,
                   std::string proc_root);
  ApplicationNamer namer_;
  profile::Labels static_labels_;
  std::string hostname_;
  std::string proc_root_;
};

// The host's name (uname nodename), "unknown" if unavailable.
std::string host_name();

}  // namespace krait::daemon
