// Runtime checks of the daemon's building blocks and of the service's
// privileges (root: mounts, PID namespaces, setpriv):
// - the capabilities the shipped systemd unit grants are enough to profile
//   every kind of interpreter as an unprivileged user, and the optional ones
//   are still needed;
// - a full disk is an error for one profile, not the end of the output;
// - NSpid and container_pid of a process in its own PID namespace.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "daemon/app_name.h"
#include "daemon/config.h"
#include "export/directory_output.h"
#include "export/pprof.h"
#include "proc/container.h"
#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uid_t kServiceUid = 64000;  // any uid that owns none of the workloads

// The AmbientCapabilities= of the shipped unit, as setpriv wants them:
// "+bpf,+perfmon,...".
std::string unit_capabilities() {
  std::ifstream unit(std::string(KRAIT_SOURCE_DIR) + "/packaging/systemd/krait.service");
  std::string line;
  while (std::getline(unit, line)) {
    if (!line.starts_with("AmbientCapabilities="))
      continue;
    std::istringstream caps(line.substr(20));
    std::string cap, out;
    while (caps >> cap) {
      std::string name = cap.substr(4);  // CAP_
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      out += (out.empty() ? "+" : ",+") + name;
    }
    return out;
  }
  return "";
}

std::vector<std::string> as_service_user(const std::string& caps) {
  return {"/usr/bin/setpriv",
          "--reuid=" + std::to_string(kServiceUid),
          "--regid=" + std::to_string(kServiceUid),
          "--clear-groups",
          "--inh-caps=" + caps,
          "--ambient-caps=" + caps,
          "--no-new-privs",
          "--"};
}

// Pids with at least one sample in a pprof file.
std::set<int64_t> sampled_pids(const std::string& path) {
  std::set<int64_t> pids;
  auto profile = exporter::read_pprof_file(path);
  EXPECT_TRUE(profile.ok()) << (profile.ok() ? "" : profile.error().message);
  if (!profile.ok())
    return pids;
  for (const auto& sample : profile->sample())
    for (const auto& label : sample.label())
      if (profile->string_table(label.key()) == "pid")
        pids.insert(std::stoll(profile->string_table(label.str())));
  return pids;
}

const Interpreter* find_interpreter(const std::vector<Interpreter>& all, std::string_view origin) {
  for (const auto& interpreter : all)
    if (interpreter.origin == origin)
      return &interpreter;
  return nullptr;
}

TEST(DaemonSupport, ServiceCapabilitiesProfileEveryKindOfInterpreter) {
  require_root();
  const std::string caps = unit_capabilities();
  ASSERT_FALSE(caps.empty()) << "no AmbientCapabilities= in packaging/systemd/krait.service";
  const auto interpreters = load_manifest();
  const Interpreter* pyenv = find_interpreter(interpreters, "pyenv");
  const Interpreter* debian = find_interpreter(interpreters, "debian-bookworm");
  ASSERT_TRUE(pyenv && debian) << "the manifest needs a pyenv and a Debian bookworm interpreter "
                                  "(scripts/provision-pythons)";
  TempDir dir;
  ASSERT_EQ(::chown(dir.path().c_str(), kServiceUid, kServiceUid), 0);
  // A copy of Debian's interpreter, deleted once running, as after an
  // upgrade: only /proc/PID/map_files still reaches it.
  Interpreter deleted = *debian;
  deleted.executable = dir.file("python3-upgraded");
  fs::copy_file(debian->executable, deleted.executable);
  fs::permissions(deleted.executable, fs::perms::owner_all);

  auto in_home = start_workload(*pyenv, "chain.py", {});
  auto system = start_workload(*debian, "chain.py", {});
  auto replaced = start_workload(deleted, "chain.py", {});
  ASSERT_TRUE(in_home.ok() && system.ok() && replaced.ok()) << "cannot start the workloads";
  ASSERT_TRUE(fs::remove(deleted.executable));
  ASSERT_TRUE(pyenv->executable.starts_with("/root/")) << "expected pyenv under 0700 /root";

  auto record = [&](const std::string& granted, const std::string& name) {
    const std::string out = dir.file(name);
    auto r = run_krait({"record", "-d", "2", "-o", out}, 60s, as_service_user(granted));
    EXPECT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r.ok() && r->status.success()) << (r.ok() ? r->stderr_text : "");
    return sampled_pids(out);
  };
  const auto with_unit = record(caps, "unit.pb.gz");
  EXPECT_TRUE(with_unit.contains(in_home->truth.pid)) << "interpreter under /root not profiled";
  EXPECT_TRUE(with_unit.contains(system->truth.pid)) << "/usr/bin interpreter not profiled";
  EXPECT_TRUE(with_unit.contains(replaced->truth.pid)) << "deleted interpreter not profiled";

  // The three krait checks for are enough to run, not to see everything;
  // if this starts passing, the unit may drop CAP_DAC_READ_SEARCH and
  // CAP_CHECKPOINT_RESTORE (and docs/packaging.md should say so).
  const auto minimal = record("+bpf,+perfmon,+sys_ptrace", "minimal.pb.gz");
  EXPECT_TRUE(minimal.contains(system->truth.pid));
  EXPECT_FALSE(minimal.contains(in_home->truth.pid));
  EXPECT_FALSE(minimal.contains(replaced->truth.pid));
}

// Runs `body` in a child process with its own mount namespace and returns
// what it wrote to the pipe; the child's exit code is returned in `code`.
std::string in_private_mount_namespace(const std::function<std::string()>& body, int& code) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      out = "cannot make a private mount namespace";
    else
      out = body();
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
    out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return out;
}

TEST(DaemonSupport, DirectoryOutputSurvivesAFullDisk) {
  require_root();
  TempDir dir;
  const std::string mountpoint = dir.file("tiny");
  fs::create_directory(mountpoint);
  int code = 0;
  // Lines of "key=value" from the child.
  const std::string report = in_private_mount_namespace(
      [&]() -> std::string {
        if (::mount("tmpfs", mountpoint.c_str(), "tmpfs", 0, "size=64k") != 0)
          return "error=cannot mount a tmpfs\n";
        exporter::DirectoryOutput output({.path = mountpoint + "/profiles"});
        const std::string profile(20 * 1024, 'p');
        std::string out;
        int written = 0;
        Result<std::string> last = std::string();
        for (int i = 0; i < 10 && last.ok(); ++i) {
          last = output.write("app", i * 15, i * 15 + 15, profile);
          written += last.ok() ? 1 : 0;
        }
        out += "written=" + std::to_string(written) + "\n";
        out += "error=" + (last.ok() ? std::string() : last.error().message) + "\n";
        out += "failed=" + std::to_string(output.stats().failed) + "\n";
        size_t leftovers = 0;
        for (const auto& entry : fs::directory_iterator(mountpoint + "/profiles"))
          leftovers +=
              exporter::DirectoryOutput::parse_file_name(entry.path().filename().string()) ? 0 : 1;
        out += "leftovers=" + std::to_string(leftovers) + "\n";
        // Room again (an operator cleaned up): the next profile is written.
        fs::remove(mountpoint + "/profiles/" + exporter::DirectoryOutput::file_name("app", 0, 15));
        auto again = output.write("app", 1000, 1015, std::string(1024, 'q'));
        out += "again=" + std::string(again.ok() ? "ok" : again.error().message) + "\n";
        return out;
      },
      code);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(report.find("error=cannot"), std::string::npos) << report;
  // tmpfs counts whole pages: three 20 KiB files (5 pages each) fit in 64 KiB.
  EXPECT_NE(report.find("written=3\n"), std::string::npos) << report;
  EXPECT_NE(report.find("No space left on device"), std::string::npos) << report;
  EXPECT_NE(report.find("error=writing a profile into " + mountpoint + "/profiles"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("failed=1\n"), std::string::npos) << report;
  EXPECT_NE(report.find("leftovers=0\n"), std::string::npos)
      << "a temporary file was left: " << report;
  EXPECT_NE(report.find("again=ok\n"), std::string::npos) << report;
}

TEST(DaemonSupport, ContainerPidOfAProcessInItsOwnPidNamespace) {
  require_root();
  SpawnOptions options;
  // The process says it is ready itself, so nothing races an exec.
  options.argv = {"/usr/bin/unshare",
                  "--pid",
                  "--fork",
                  "--",
                  "/usr/bin/python3",
                  "-c",
                  "import time; print('ready', flush=True); time.sleep(60)"};
  auto outer = ChildProcess::spawn(options);
  ASSERT_TRUE(outer.ok()) << outer.error().message;
  auto ready = outer->read_line(10s);
  ASSERT_TRUE(ready.ok() && *ready == "ready") << (ready.ok() ? *ready : ready.error().message);
  auto children = read_file(fmt::format("/proc/{}/task/{}/children", outer->pid(), outer->pid()));
  ASSERT_TRUE(children.ok()) << children.error().message;
  const int inner = std::stoi(*children);

  auto nspids = proc::read_nspid(inner);
  ASSERT_TRUE(nspids.ok()) << nspids.error().message;
  EXPECT_EQ(*nspids, (std::vector<int>{inner, 1}));

  daemon::DaemonConfig config;
  auto describer = daemon::ProcessDescriber::create(config, "host-a");
  ASSERT_TRUE(describer.ok()) << describer.error().message;
  auto description = describer->describe(inner, "");
  ASSERT_TRUE(description.ok()) << description.error().message;
  const profile::Labels& labels = description->labels;
  EXPECT_NE(std::find(labels.begin(), labels.end(),
                      std::pair<std::string, std::string>{"container_pid", "1"}),
            labels.end());
  EXPECT_NE(std::find(labels.begin(), labels.end(),
                      std::pair<std::string, std::string>{"pid", std::to_string(inner)}),
            labels.end());
  EXPECT_EQ(description->application, "python3");  // `python3 -c ...` names the interpreter
}

}  // namespace
}  // namespace krait::test
