// Starting the zoo: its files, readable by nobody, and its processes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "export/pprof.h"
#include "runtime/zoo_harness.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test::zoo {

namespace fs = std::filesystem;

namespace {

// KRAIT_ZOO_ONLY, or every hostile kind.
std::set<std::string> selected_names() {
  std::set<std::string> names;
  const char* only = std::getenv("KRAIT_ZOO_ONLY");
  if (only == nullptr || *only == '\0') {
    for (const auto& k : kKinds)
      names.insert(k.name);
    return names;
  }
  std::string_view rest = only;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    names.insert(std::string(rest.substr(0, comma)));
    rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
  }
  names.insert("normal");
  return names;
}

// The path of the libc this process maps (the one every Python here loads).
Result<std::string> libc_path() {
  auto maps = read_file("/proc/self/maps");
  if (!maps)
    return maps.error();
  std::istringstream lines(*maps);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos)
      continue;
    const std::string path = line.substr(slash);
    const std::string base = fs::path(path).filename().string();
    if (base.starts_with("libc.so") || base.starts_with("libc-"))
      return path;
  }
  return make_error("no libc in /proc/self/maps");
}

// The NT_GNU_BUILD_ID of an ELF file, in hex, as readelf reports it.
Result<std::string> build_id_of(const std::string& path) {
  auto readelf = tool("readelf", "binutils");
  if (!readelf)
    return readelf.error();
  auto notes = capture({*readelf, "-n", path});
  if (!notes)
    return notes.error();
  const std::string key = "Build ID: ";
  const size_t at = notes->find(key);
  if (at == std::string::npos)
    return make_error("{} has no build-id note", path);
  std::string id = notes->substr(at + key.size());
  id = id.substr(0, id.find('\n'));
  if (id.empty() || id.size() % 2 != 0 ||
      id.find_first_not_of("0123456789abcdef") != std::string::npos)
    return make_error("{}: unexpected build-id '{}'", path, id);
  return id;
}

// Copies `from` to `to` with `mode`.
Result<void> install(const std::string& from, const std::string& to, fs::perms mode) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec)
    return make_error("copying {} to {}: {}", from, to, ec.message());
  fs::permissions(to, mode, ec);
  if (ec)
    return make_error("chmod {}: {}", to, ec.message());
  return {};
}

constexpr fs::perms kReadable = fs::perms::owner_all | fs::perms::group_read |
                                fs::perms::group_exec | fs::perms::others_read |
                                fs::perms::others_exec;

}  // namespace

Result<std::string> tool(const std::string& name, const std::string& package) {
  for (const char* dir : {"/usr/bin/", "/bin/", "/usr/local/bin/"}) {
    const std::string path = dir + name;
    if (::access(path.c_str(), X_OK) == 0)
      return path;
  }
  return make_error("{} is missing: install the Debian package '{}' (scripts/setup --tests)", name,
                    package);
}

// Runs argv (as root) to its end; its stdout, or an error with its stderr.
Result<std::string> capture(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.argv = argv;
  auto child = ChildProcess::spawn(options);
  if (!child)
    return child.error();
  std::string out;
  for (;;) {
    auto line = child->read_line(60s);
    if (!line)
      break;
    out += *line + "\n";
  }
  auto status = child->wait(60s);
  if (!status)
    return status.error();
  if (!status->success())
    return make_error("{} failed ({}): {}", argv.at(0), status->describe(), child->stderr_text());
  return out;
}

Result<void> ZooProcesses::prepare(const Interpreter& pyenv) {
  selected_ = selected_names();
  for (const std::string& name : selected_)
    if (std::none_of(std::begin(kKinds), std::end(kKinds),
                     [&](const KindInfo& k) { return name == k.name; }))
      return make_error("KRAIT_ZOO_ONLY names '{}', which is not a process of the zoo", name);
  std::error_code ec;
  fs::permissions(dir_.path(), kReadable, ec);
  if (ec)
    return make_error("chmod {}: {}", dir_.path(), ec.message());
  // The zoo's scratch space, owned by nobody: TMPDIR of its processes, the
  // sparse file, the library that becomes a FIFO.
  scratch_ = dir_.file("nobody");
  fs::create_directory(scratch_, ec);
  if (ec || ::chown(scratch_.c_str(), kNobody.uid, kNobody.gid) != 0)
    return make_error("making {} for uid {}: {}", scratch_, kNobody.uid,
                      ec ? ec.message() : strerror(errno));

  const fs::path pyenv_root = fs::path(pyenv.executable).parent_path().parent_path();
  python_home_ = dir_.file("python");
  fs::copy(pyenv_root, python_home_,
           fs::copy_options::recursive | fs::copy_options::create_hard_links, ec);
  if (ec) {
    // Another file system than pyenv's: a real copy.
    fs::remove_all(python_home_);
    ec.clear();
    fs::copy(pyenv_root, python_home_, fs::copy_options::recursive, ec);
    if (ec)
      return make_error("copying {} to {}: {}", pyenv_root.string(), python_home_, ec.message());
  }
  python_ = python_home_ + "/bin/" + fs::path(pyenv.executable).filename().string();
  if (::access(python_.c_str(), X_OK) != 0)
    return make_error("{} is not in the copy of {}", python_, pyenv_root.string());

  KRAIT_TRY(install(workload_path("chain.py"), dir_.file("chain.py"), kReadable));
  KRAIT_TRY(
      install(std::string(KRAIT_ZOO_FIXTURES) + "/hostile.py", dir_.file("hostile.py"), kReadable));
  fs::create_directory(dir_.file("fakes"), ec);
  fs::permissions(dir_.file("fakes"), kReadable, ec);
  KRAIT_TRY(
      install(KRAIT_ZOO_FAKE_VERSION_NAME, dir_.file("fakes/python3.99999999999"), kReadable));
  KRAIT_TRY(install(KRAIT_ZOO_FAKE_ODD_VERSIONS, dir_.file("fakes/python3.12"), kReadable));
  KRAIT_TRY(install(KRAIT_ZOO_FAKE_CPYTHON, dir_.file("fakes/zoo-fake-cpython"), kReadable));
  KRAIT_TRY(install(KRAIT_ZOO_SPARSE_LIBPYTHON, dir_.file("fakes/zoo-sparse-mapper"), kReadable));
  fifo_dir_ = scratch_ + "/fifo";
  fs::create_directory(fifo_dir_, ec);
  if (ec || ::chown(fifo_dir_.c_str(), kNobody.uid, kNobody.gid) != 0)
    return make_error("making {} for uid {}: {}", fifo_dir_, kNobody.uid,
                      ec ? ec.message() : strerror(errno));
  for (int i = 0; i < kFifoLibraries; ++i) {
    const std::string copy = fmt::format("{}/libzoo_spin_{}.so", fifo_dir_, i);
    KRAIT_TRY(install(KRAIT_ZOO_SPIN_LIBRARY, copy, kReadable));
    // The process swaps the copies' names: it must own them.
    if (::chown(copy.c_str(), kNobody.uid, kNobody.gid) != 0)
      return make_error("chown {}: {}", copy, strerror(errno));
  }

  if (selected(Kind::kClaimedBuildId)) {
    auto libc = libc_path();
    if (!libc)
      return libc.error();
    auto id = build_id_of(*libc);
    if (!id)
      return id.error();
    auto cc = tool("cc", "build-essential");
    if (!cc)
      return cc.error();
    impostor_ = dir_.file("libzoo_impostor.so");
    auto built = capture({*cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                          "-Wl,--build-id=0x" + *id, "-o", impostor_,
                          std::string(KRAIT_ZOO_FIXTURES) + "/impostor.c"});
    if (!built)
      return built.error().context("compiling the library that claims libc's build-id");
    auto claimed = build_id_of(impostor_);
    if (!claimed)
      return claimed.error();
    if (*claimed != *id)
      return make_error("{} claims build-id {}, not libc's {}", impostor_, *claimed, *id);
    fs::permissions(impostor_, kReadable, ec);
  }
  return {};
}

Result<void> ZooProcesses::start() {
  if (selected(Kind::kClaimedBuildId))
    KRAIT_TRY(spawn_hostile_python(Kind::kClaimedBuildId, {"impostor", impostor_}, {"--depth", "2"},
                                   {{"LD_PRELOAD", impostor_}}));
  if (selected(Kind::kVersionName))
    KRAIT_TRY(spawn_ready(Kind::kVersionName, {dir_.file("fakes/python3.99999999999")}));
  if (selected(Kind::kOddVersions))
    KRAIT_TRY(spawn_ready(Kind::kOddVersions, {dir_.file("fakes/python3.12")}));
  if (selected(Kind::kCycles))
    KRAIT_TRY(spawn_ready(Kind::kCycles, {dir_.file("fakes/zoo-fake-cpython"), "cycle"}));
  if (selected(Kind::kFlood))
    KRAIT_TRY(spawn_ready(Kind::kFlood, {dir_.file("fakes/zoo-fake-cpython"), "flood"}));
  if (selected(Kind::kHugeCommandLine))
    KRAIT_TRY(spawn_huge_command_line());
  if (selected(Kind::kManyMaps))
    KRAIT_TRY(spawn_hostile_python(Kind::kManyMaps, {"maps", std::to_string(kManyMaps)},
                                   {"--depth", "4"}));
  if (selected(Kind::kSparseLibpython))
    KRAIT_TRY(spawn_ready(Kind::kSparseLibpython, {dir_.file("fakes/zoo-sparse-mapper"),
                                                   scratch_ + "/libpython3.12.so.1.0"}));
  if (selected(Kind::kFifoLibrary))
    KRAIT_TRY(spawn_hostile_python(
        Kind::kFifoLibrary, {"fifo", fifo_dir_, std::to_string(kFifoLibraries)}, {"--depth", "5"}));
  if (selected(Kind::kCodeChurn))
    KRAIT_TRY(spawn_hostile_python(Kind::kCodeChurn, {"codegen"}, {"--depth", "6"}));
  KRAIT_TRY(spawn_python(Kind::kNormal, {dir_.file("chain.py")}));
  for (Member& m : members_)
    KRAIT_TRY(settle(m));
  if (selected(Kind::kFifoLibrary)) {
    // The libraries are loaded (its process printed its truth after): the
    // first one's path becomes a FIFO before krait ever looks at it.
    const std::string first = fifo_dir_ + "/libzoo_spin_0.so";
    std::error_code ec;
    fs::remove(first, ec);
    if (ec || ::mkfifo(first.c_str(), 0644) != 0)
      return make_error("replacing {} by a FIFO: {}", first, ec ? ec.message() : strerror(errno));
  }
  return {};
}

Result<void> ZooProcesses::start_reuse_old() {
  KRAIT_TRY(
      spawn_python(Kind::kPidReuseOld, {dir_.file("chain.py"), "--depth", "7", "--seconds", "5"}));
  return settle(members_.back());
}

Result<void> ZooProcesses::start_reuse_new(pid_t pid) {
  const SpawnOptions options = python_options({dir_.file("chain.py"), "--depth", "9"}, {});
  for (int attempt = 1; attempt <= kPidAttempts; ++attempt) {
    {
      std::ofstream last("/proc/sys/kernel/ns_last_pid");
      last << pid - 1;
      last.close();
      if (!last)
        return make_error("cannot write /proc/sys/kernel/ns_last_pid (needs root)");
    }
    auto child = ChildProcess::spawn(options);
    if (!child)
      return child.error();
    if (child->pid() != pid)
      continue;  // not the pid: killed as `child` goes
    adopt(Kind::kPidReuseNew, std::move(*child), FirstLine::kTruth);
    return settle(members_.back());
  }
  return make_error("other processes took pid {} in each of {} attempts", pid, kPidAttempts);
}

void ZooProcesses::forget_pid_reuse() {
  std::erase_if(members_, [](const Member& m) {
    return m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew;
  });
}

Member* ZooProcesses::find(Kind kind) {
  for (auto& m : members_)
    if (m.kind == kind)
      return &m;
  return nullptr;
}

SpawnOptions ZooProcesses::python_options(
    const std::vector<std::string>& args,
    const std::map<std::string, std::string>& extra_env) const {
  SpawnOptions o;
  o.argv = {python_};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  // pyenv's RUNPATH is under /root, closed to nobody.
  o.env["LD_LIBRARY_PATH"] = python_home_ + "/lib";
  o.env["PYTHONHOME"] = std::nullopt;
  o.env["PYTHONPATH"] = std::nullopt;
  o.env["PYTHONDONTWRITEBYTECODE"] = "1";
  o.env["TMPDIR"] = scratch_;
  for (const auto& [k, v] : extra_env)
    o.env[k] = v;
  o.run_as = kNobody;
  return o;
}

void ZooProcesses::adopt(Kind kind, ChildProcess child, FirstLine first) {
  Member m{kind};
  m.pid = child.pid();
  m.child.emplace(std::move(child));
  m.awaiting = first;
  members_.push_back(std::move(m));
}

Result<void> ZooProcesses::settle(Member& m) {
  const FirstLine first = std::exchange(m.awaiting, FirstLine::kNone);
  if (first == FirstLine::kNone)
    return {};
  const char* name = info(m.kind).name;
  auto line = m.child->read_line(90s);
  m.seconds_to_steady = std::chrono::duration<double>(Clock::now() - m.spawned).count();
  if (!line)
    return make_error("{}: no first line: {}", name, line.error().message);
  if (first == FirstLine::kReady) {
    if (*line != "ready")
      return make_error("{} did not say ready: {} {}", name, *line, m.child->stderr_text());
    return {};
  }
  auto truth = parse_truth(*line);
  if (!truth)
    return make_error("{}: {} in {}", name, truth.error().message, *line);
  if (truth->pid != m.pid)
    return make_error("{}: truth of pid {}, the child is {}", name, truth->pid, m.pid);
  m.truth = std::move(*truth);
  return {};
}

Result<void> ZooProcesses::spawn_python(Kind kind, const std::vector<std::string>& args,
                                        const std::map<std::string, std::string>& extra_env) {
  auto child = ChildProcess::spawn(python_options(args, extra_env));
  if (!child)
    return make_error("{}: {}", info(kind).name, child.error().message);
  adopt(kind, std::move(*child), FirstLine::kTruth);
  return {};
}

Result<void> ZooProcesses::spawn_hostile_python(
    Kind kind, const std::vector<std::string>& mode, const std::vector<std::string>& chain_args,
    const std::map<std::string, std::string>& extra_env) {
  std::vector<std::string> args = {dir_.file("hostile.py")};
  args.insert(args.end(), mode.begin(), mode.end());
  args.push_back("--");
  args.push_back(dir_.file("chain.py"));
  args.insert(args.end(), chain_args.begin(), chain_args.end());
  return spawn_python(kind, args, extra_env);
}

Result<void> ZooProcesses::spawn_ready(Kind kind, const std::vector<std::string>& argv) {
  SpawnOptions o;
  o.argv = argv;
  o.run_as = kNobody;
  auto child = ChildProcess::spawn(o);
  if (!child)
    return make_error("{}: {}", info(kind).name, child.error().message);
  adopt(kind, std::move(*child), FirstLine::kReady);
  return {};
}

Result<void> ZooProcesses::spawn_huge_command_line() {
  std::string argv0 = "python";
  for (int i = 0; i < 50000; ++i)
    argv0 += static_cast<char>('0' + i % 10);
  constexpr size_t kArgBytes = 128 * 1024 - 1;  // with its NUL: the kernel's limit
  std::string program = fmt::format(
      "import runpy, sys\n"
      "sys.argv = ['{0}', '--depth', '8']\n"
      "runpy.run_path('{0}', run_name='__main__')\n"
      "#",
      dir_.file("chain.py"));
  program.resize(kArgBytes, 'x');
  std::string second = "python3.";
  second.resize(kArgBytes, '9');
  SpawnOptions o = python_options({}, {{"PYTHONHOME", python_home_}});
  o.program = python_;
  o.argv = {argv0, "-c", program, second};
  o.env["PATH"] = std::nullopt;
  auto child = ChildProcess::spawn(o);
  if (!child)
    return make_error("{}: {}", info(Kind::kHugeCommandLine).name, child.error().message);
  adopt(Kind::kHugeCommandLine, std::move(*child), FirstLine::kTruth);
  return {};
}

}  // namespace krait::test::zoo
