// `krait daemon` and what it is deployed in (daemon_harness.h: isolation and
// helpers):
// - a process in its own PID and mount namespaces and a docker-style cgroup;
// - the Debian package: contents, the unpacked binary, the unit.
//
// Oracles: the workload's truth as the host sees it, the ingest server's
// record, dpkg and systemd-analyze.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "proc/container.h"
#include "runtime/daemon_harness.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Containers.

// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
// hybrid hosts), from /proc/self/mounts.
Result<std::string> cgroup2_mount() {
  auto mounts = read_file("/proc/self/mounts");
  if (!mounts)
    return mounts.error();
  std::istringstream lines(*mounts);
  std::string device, dir, type;
  std::string rest;
  while (lines >> device >> dir >> type && std::getline(lines, rest))
    if (type == "cgroup2")
      return dir;
  return make_error("no cgroup2 file system is mounted (/proc/self/mounts)");
}

std::string random_container_id() {
  std::random_device device;
  std::string id;
  while (id.size() < 64)
    id += fmt::format("{:08x}", device());
  return id;
}

// A docker-style scope, "<cgroup2>/system.slice/docker-<id>.scope", made
// for one test: the destructor kills what is left in it and removes it (and
// system.slice, if it made that too).
class DockerScope {
 public:
  static Result<std::unique_ptr<DockerScope>> create() {
    auto root = cgroup2_mount();
    if (!root)
      return root.error();
    auto scope = std::unique_ptr<DockerScope>(new DockerScope());
    scope->id_ = random_container_id();
    scope->slice_ = *root + "/system.slice";
    std::error_code ec;
    scope->made_slice_ = fs::create_directory(scope->slice_, ec);
    if (ec)
      return make_error("mkdir {}: {}", scope->slice_, ec.message());
    scope->path_ = scope->slice_ + "/docker-" + scope->id_ + ".scope";
    if (!fs::create_directory(scope->path_, ec))
      return make_error("mkdir {}: {}", scope->path_, ec ? ec.message() : "exists");
    return scope;
  }
  ~DockerScope() {
    // The namespace's init dies with the unshare that forked it, but is
    // reaped by someone else: wait (with a limit) until the scope is empty.
    const auto deadline = SteadyClock::now() + 10s;
    while (SteadyClock::now() < deadline) {
      auto procs = read_file(path_ + "/cgroup.procs");
      if (!procs || procs->empty())
        break;
      std::istringstream pids(*procs);
      for (pid_t pid; pids >> pid;)
        ::kill(pid, SIGKILL);
      wait_for_change(path_ + "/cgroup.events", deadline);
    }
    std::error_code ec;
    fs::remove(path_, ec);
    if (made_slice_)
      fs::remove(slice_, ec);
  }
  DockerScope(const DockerScope&) = delete;
  DockerScope& operator=(const DockerScope&) = delete;

  const std::string& id() const { return id_; }
  const std::string& path() const { return path_; }
  std::string cgroup() const {  // as /proc/PID/cgroup shows it
    return "/system.slice/docker-" + id_ + ".scope";
  }

 private:
  DockerScope() = default;
  // cgroup.events is modified when the scope becomes empty.
  static void wait_for_change(const std::string& file,
                              std::chrono::steady_clock::time_point deadline) {
    UniqueFd fd(::inotify_init1(IN_CLOEXEC));
    if (!fd.valid() || ::inotify_add_watch(fd.get(), file.c_str(), IN_MODIFY) < 0)
      return;
    auto procs = read_file(fs::path(file).parent_path().string() + "/cgroup.procs");
    if (!procs || procs->empty())
      return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    pollfd p{fd.get(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
  }
  std::string id_, slice_, path_;
  bool made_slice_ = false;
};

// The only child of `parent` (/proc/PID/task/PID/children).
Result<pid_t> only_child(pid_t parent) {
  auto text = read_file(fmt::format("/proc/{0}/task/{0}/children", parent));
  if (!text)
    return text.error();
  std::istringstream pids(*text);
  std::vector<pid_t> children{std::istream_iterator<pid_t>(pids), {}};
  if (children.size() != 1)
    return make_error("pid {} has {} children: '{}'", parent, children.size(), *text);
  return children.front();
}

// The truth as the host sees it: a process in its own PID namespace reports
// the pid and thread ids of that namespace.
Result<Truth> truth_on_host(Truth truth, pid_t host_pid) {
  std::map<int64_t, int64_t> host_tid;  // namespace tid -> host tid
  std::error_code ec;
  const std::string tasks = fmt::format("/proc/{}/task", host_pid);
  for (const auto& task : fs::directory_iterator(tasks, ec)) {
    const int tid = std::stoi(task.path().filename().string());
    auto nspid = proc::read_nspid(tid, tasks);
    if (!nspid || nspid->size() < 2)
      return make_error("{}/{}: no nested NSpid", tasks, tid);
    host_tid[nspid->back()] = nspid->front();
  }
  if (!host_tid.contains(truth.pid) || host_tid.at(truth.pid) != host_pid)
    return make_error("the truth's pid {} is not host pid {} in its namespace", truth.pid,
                      host_pid);
  truth.pid = host_pid;
  for (ThreadTruth& t : truth.threads) {
    if (!host_tid.contains(t.tid))
      return make_error("thread {} of the truth is not a thread of pid {}", t.tid, host_pid);
    t.tid = host_tid.at(t.tid);
  }
  return truth;
}

// Debian's python3.11 runs chain.py as pid 1 of a PID namespace of its own,
// from a tmpfs mounted in a mount namespace of its own (the host sees an
// empty directory there: krait can only reach the interpreter's file
// through /proc/PID/root), in a docker-style cgroup. The daemon selects it
// by its container id alone.
TEST(Daemon, ContainerProcessIsProfiledAndLabelled) {
  require_root();
  const auto interpreters = load_manifest();
  const TestInterpreters py = test_interpreters(interpreters);
  REQUIRE_INTERPRETERS(py);
  auto scope = DockerScope::create();
  ASSERT_TRUE(scope.ok()) << "a docker-style cgroup for the test: " << scope.error().message;
  auto server = IngestServer::start();
  ASSERT_TRUE(server.ok()) << server.error().message;
  TempDir dir;
  const std::string root = dir.file("container");
  fs::create_directory(root);

  SpawnOptions options = interpreter_options(*py.debian, {});
  const std::string inside = fmt::format(
      "mount -t tmpfs krait-container \"$1\" && cp \"$2\" \"$3\" \"$1/\" && "
      "echo 0 > \"$4/cgroup.procs\" && exec \"$1/{}\" \"$1/chain.py\"",
      fs::path(py.debian->executable).filename().string());
  // A namespace of its own has a /proc of its own (--mount-proc), as in a
  // container: the workload reads its threads there.
  options.argv = {"/usr/bin/unshare",
                  "--pid",
                  "--mount",
                  "--mount-proc",
                  "--fork",
                  "--kill-child",
                  "--",
                  "/bin/sh",
                  "-c",
                  inside,
                  "sh"};
  for (const std::string& arg :
       {root, py.debian->executable, workload_path("chain.py"), (*scope)->path()})
    options.argv.push_back(arg);
  auto child = ChildProcess::spawn(options);
  ASSERT_TRUE(child.ok()) << child.error().message;
  auto line = child->read_line(60s);
  ASSERT_TRUE(line.ok()) << "the container's python: " << line.error().message;
  auto ns_truth = parse_truth(*line);
  ASSERT_TRUE(ns_truth.ok()) << ns_truth.error().message << " in " << *line;
  EXPECT_EQ(ns_truth->pid, 1) << "not pid 1 of its own PID namespace";
  auto host_pid = only_child(child->pid());
  ASSERT_TRUE(host_pid.ok()) << host_pid.error().message;
  auto truth = truth_on_host(*ns_truth, *host_pid);
  ASSERT_TRUE(truth.ok()) << truth.error().message;
  auto container = proc::read_container_info(*host_pid);
  ASSERT_TRUE(container.ok()) << container.error().message;
  ASSERT_EQ(container->container_id, (*scope)->id()) << "cgroup " << container->cgroup_path;
  // The interpreter and the script exist only in the process's own mounts.
  ASSERT_FALSE(fs::exists(root + "/chain.py"));
  ASSERT_TRUE(fs::exists(fmt::format("/proc/{}/root{}/chain.py", *host_pid, root)));

  auto daemon =
      Daemon::start({"--pyroscope-url", (*server)->url(), "--upload-interval",
                     std::to_string(kInterval), "--container-id", (*scope)->id().substr(0, 12)});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      **server, [](const auto& p) { return count_application(p, "chain.py") >= 3; }, 30s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received((*server)->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const std::set<std::string> applications = applications_of(*received);
  EXPECT_EQ(applications, std::set<std::string>{"chain.py"})
      << "the container id selects one process";
  const auto profiles = of_application(*received, "chain.py");
  expect_tiling(profiles, "chain.py");
  for (const Delivered* p : profiles) {
    EXPECT_EQ(p->labels.count("container_id") ? p->labels.at("container_id") : "", (*scope)->id());
    EXPECT_EQ(p->labels.count("container_runtime") ? p->labels.at("container_runtime") : "",
              "docker");
    EXPECT_EQ(p->labels.count("systemd_unit"), 0u) << "a container is not a service";
    for (const ProfileSample& s : p->samples) {
      EXPECT_EQ(s.pid(), *host_pid) << "a sample of another process";
      EXPECT_EQ(s.labels.count("container_pid") ? s.labels.at("container_pid") : "", "1");
    }
  }
  const auto [matching, all] = truth_share(profiles, *truth);
  EXPECT_GT(all, 0) << daemon->log();
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all))
      << matching << " of " << all << " samples carry the truth";
  // Native frames of the interpreter, named from its file inside the
  // container (the mapping's path is the one the process sees).
  int64_t native_named = 0;
  for (const Delivered* p : profiles)
    for (const ProfileSample& s : p->samples)
      for (size_t i = 0; i < s.full_stack.size(); ++i)
        if (s.mappings[i].starts_with(root + "/") && s.full_stack[i].function.starts_with("Py")) {
          native_named += s.count;
          break;
        }
  EXPECT_GT(native_named, 0) << "no native frame of " << root << "/python3.11 was named";
  std::cout << fmt::format(
      "[ stats    ] container {}: host pid {}, {} of {} samples carry the truth, {} a named "
      "interpreter frame\n",
      (*scope)->id().substr(0, 12), *host_pid, matching, all, native_named);
}

// ---------------------------------------------------------------------------
// The Debian package.

TEST(Daemon, DebianPackageInstallsARunnableService) {
  require_root();
  TempDir dir;
  // CPack packages the build's install rules: the krait this test runs.
  auto cpack = run_tool({"/usr/bin/cpack", "-G", "DEB", "-B", dir.file("deb"), "--config",
                         std::string(KRAIT_BUILD_DIR) + "/CPackConfig.cmake"},
                        "cmake");
  ASSERT_RAN(cpack, "cpack -G DEB");
  std::vector<std::string> debs;
  for (const auto& entry : fs::directory_iterator(dir.file("deb")))
    if (entry.path().extension() == ".deb")
      debs.push_back(entry.path().string());
  ASSERT_EQ(debs.size(), 1u) << cpack->stdout_text;
  const std::string deb = debs.front();

  auto listing = run_tool({"/usr/bin/dpkg-deb", "--contents", deb}, "dpkg");
  ASSERT_RAN(listing, "dpkg-deb --contents");
  std::map<std::string, std::string> modes;  // path -> permissions
  {
    std::istringstream lines(listing->stdout_text);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
      if (f.size() >= 6)
        modes[f[5]] = f[0];
    }
  }
  EXPECT_EQ(modes["./usr/bin/krait"], "-rwxr-xr-x") << listing->stdout_text;
  EXPECT_EQ(modes["./usr/lib/systemd/system/krait.service"], "-rw-r--r--") << listing->stdout_text;
  EXPECT_EQ(modes["./etc/krait/krait.toml"], "-rw-r--r--") << listing->stdout_text;
  EXPECT_TRUE(modes.contains("./usr/share/doc/krait/daemon.md")) << listing->stdout_text;

  auto control = run_tool({"/usr/bin/dpkg-deb", "--control", deb, dir.file("control")}, "dpkg");
  ASSERT_RAN(control, "dpkg-deb --control");
  EXPECT_EQ(text_of(dir.file("control/conffiles")), "/etc/krait/krait.toml\n");
  auto fields = run_tool({"/usr/bin/dpkg-deb", "--field", deb, "Version", "Depends"}, "dpkg");
  ASSERT_RAN(fields, "dpkg-deb --field");
  EXPECT_NE(fields->stdout_text.find("adduser"), std::string::npos) << fields->stdout_text;
  EXPECT_NE(fields->stdout_text.find("libc6"), std::string::npos) << fields->stdout_text;
  std::smatch version;
  const std::string field_text = fields->stdout_text;
  ASSERT_TRUE(std::regex_search(field_text, version, std::regex("Version: (\\S+)"))) << field_text;

  const std::string root = dir.file("root");
  auto unpacked = run_tool({"/usr/bin/dpkg", "-x", deb, root}, "dpkg");
  ASSERT_RAN(unpacked, "dpkg -x");
  const std::string krait = root + "/usr/bin/krait";
  EXPECT_EQ(text_of(krait), text_of(KRAIT_BINARY)) << "the packaged binary is not the one built";
  EXPECT_EQ(text_of(root + "/etc/krait/krait.toml"),
            text_of(std::string(KRAIT_SOURCE_DIR) + "/packaging/krait.toml"));

  auto version_out = run_tool({krait, "--version"}, "krait");
  ASSERT_RAN(version_out, "krait --version");
  EXPECT_EQ(version_out->stdout_text, "krait " + version[1].str() + "\n");
  auto info = run_tool({krait, "info", "--json"}, "krait");
  ASSERT_RAN(info, "krait info --json");
  auto info_json = parse_json(info->stdout_text);
  ASSERT_TRUE(info_json.ok()) << info_json.error().message << "\n" << info->stdout_text;
  const JsonValue* caps = info_json->find("capabilities");
  const JsonValue* can_record = caps ? caps->find("can_record") : nullptr;
  ASSERT_TRUE(can_record && can_record->is_bool()) << info->stdout_text;
  EXPECT_TRUE(can_record->boolean) << "as root the packaged krait can record";
  // The default configuration reads back as the service will read it.
  auto config = run_tool(
      {krait, "daemon", "--config", root + "/etc/krait/krait.toml", "--print-config"}, "krait");
  ASSERT_RAN(config, "krait daemon --print-config of the packaged configuration");
  EXPECT_NE(config->stdout_text.find("/var/lib/krait"), std::string::npos) << config->stdout_text;

  // The unit as installed, pointed at the unpacked binary (verify wants
  // ExecStart's program to exist).
  auto unit = read_file(root + "/usr/lib/systemd/system/krait.service");
  ASSERT_TRUE(unit.ok()) << unit.error().message;
  EXPECT_NE(unit->find("ExecStart=/usr/bin/krait daemon --config /etc/krait/krait.toml"),
            std::string::npos)
      << *unit;
  const std::string verify_dir = dir.file("unit");
  fs::create_directory(verify_dir);
  std::ofstream(verify_dir + "/krait.service")
      << std::regex_replace(*unit, std::regex("/usr/bin/krait"), krait);
  auto verify = run_tool(
      {"/usr/bin/systemd-analyze", "verify", "--man=no", verify_dir + "/krait.service"}, "systemd");
  ASSERT_RAN(verify, "systemd-analyze verify");
  EXPECT_EQ(verify->stdout_text + verify->stderr_text, "") << "systemd-analyze has remarks";
}

}  // namespace
}  // namespace krait::test
