// The hostile zoo (issue 8): krait runs as root beside processes that any
// user can start, and must survive all of them at once without losing the
// one normal process it is there for.
//
// Every process of the zoo runs as nobody (uid/gid 65534), each burning CPU
// so that it is sampled:
//   version-name  an executable `python3.99999999999` exporting _PyRuntime
//                 and PyCode_Type
//   odd-versions  `python3.12` whose .rodata holds odd version strings (and a
//                 1 MiB one without a NUL) and whose _PyRuntime is garbage
//   cycles        a fake CPython 3.12.1 whose thread list and frame chains
//                 are cycles
//   flood         a well-formed fake CPython 3.12.1 running 10,000 code
//                 objects with 4,096-character astral names that share one
//                 64 MiB line table
//   argv          pyenv 3.12.1 with argv[0] "python" + 50,000 digits and
//                 128 KiB arguments
//   maps          a Python process with 60,000 mappings of its executable,
//                 every other one executable
//   sparse        a process mapping a sparse 64 GiB `libpython3.12.so.1.0`
//                 whose ELF sections claim enormous sizes
//   fifo          a Python process calling into copies of a library whose
//                 paths became FIFOs after they were mapped: one unlinked and
//                 replaced, the others swapped with FIFOs without end
//   buildid       a Python process with an LD_PRELOADed library that claims
//                 libc's build-id, started before the normal process
//   codegen       a Python process creating code objects without end
//   pid-reuse     a Python process that exits while krait runs, and a new one
//                 given the same pid (/proc/sys/kernel/ns_last_pid)
// beside the normal process: tests/workloads/chain.py under pyenv 3.12.1.
//
// Oracles: the truth lines the Python workloads print about their own stacks
// (chain.py, also run inside the hostile Python processes), the kernel's
// accounting of their CPU time (/proc/PID/stat) for how many samples they
// must get, krait's own /proc/PID/status and stat (peak RSS, CPU time),
// `go tool pprof -raw` for the profile, and, for the process claiming libc's
// build-id, the names of functions that never run.
//
// A run that goes wrong must fail, never hang or take the host down: the
// test kills krait past kRssKillMiB of RSS and when it does not start or stop
// within a generous deadline, and says which of krait's threads were stuck
// where.
//
// KRAIT_ZOO_ONLY=cycles,flood (names as above, comma separated) starts only
// those hostile processes: for checking one fix at a time. Unset (as in CI),
// the whole zoo runs.
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
#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Caps and bars. The caps on krait are proposals, to be tuned against the
// limits docs/security.md documents.

constexpr int64_t kMaxRssMiB = 300;    // krait's peak RSS (VmHWM) over a run
constexpr double kMaxCpuShare = 0.25;  // krait's CPU time / its run's wall time
// The normal process: samples with exactly its truth's Python stack, and its
// samples of those its CPU time predicts at kRateHz.
constexpr double kExactFraction = 0.95;
constexpr double kSampleFraction = 0.90;
// The process that reuses a pid starts in the middle of the run; its samples
// of those its CPU time predicts from its truth line on.
constexpr double kReusedSampleFraction = 0.80;
// The thread that calls the library claiming libc's build-id: samples whose
// leaf is that library's own function.
constexpr double kImpostorLeafFraction = 0.90;

constexpr int kRateHz = 99;
constexpr auto kWindow = 20s;       // how long krait samples the zoo
constexpr int kUploadInterval = 5;  // daemon: seconds per profile
constexpr int kManyMaps = 60000;
// Copies of the library the FIFO scenario loads: the first one's path is
// unlinked and becomes a FIFO; the others' paths swap with FIFOs without end,
// so that a second open by path finds a FIFO about every other time.
constexpr int kFifoLibraries = 9;

// Protection of the host and of CI, not part of what is judged: past this
// RSS the test kills krait (the run fails), and a krait that does not get
// ready or stop in time is hung.
constexpr int64_t kRssKillMiB = 2048;
constexpr auto kReadyDeadline = 60s;
constexpr auto kStopDeadline = 45s;
constexpr auto kWatchPeriod = 100ms;
constexpr int kPidAttempts = 50;

constexpr Credentials kNobody{65534, 65534};

const std::string kKernelMapping = "[kernel.kallsyms]";

// ---------------------------------------------------------------------------
// /proc

std::optional<int64_t> parse_int(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
    text.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data())
    return std::nullopt;
  return value;
}

double cpu_or(pid_t pid, double fallback) {
  auto cpu = cpu_seconds(pid);
  return cpu ? *cpu : fallback;
}

// A "Key:   123 kB" line of /proc/PID/status, in KiB.
std::optional<int64_t> status_kib(pid_t pid, std::string_view key) {
  auto text = read_file(fmt::format("/proc/{}/status", pid));
  if (!text)
    return std::nullopt;
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line))
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':')
      return parse_int(std::string_view(line).substr(key.size() + 1));
  return std::nullopt;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

// Where each thread of a process is: for the message about a hung krait.
std::string describe_threads(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    const std::string dir = task.path().string();
    auto comm = read_file(dir + "/comm");
    auto wchan = read_file(dir + "/wchan");
    auto syscall_text = read_file(dir + "/syscall");
    auto stack = read_file(dir + "/stack");
    std::string kernel_stack;
    if (stack) {
      std::istringstream lines(*stack);
      std::string line;
      for (int i = 0; i < 4 && std::getline(lines, line); ++i)
        kernel_stack += (i ? " < " : "") + line.substr(line.find(' ') + 1);
    }
    out += fmt::format(
        "\n  tid {} ({}): wchan {}, syscall {}, kernel stack {}", task.path().filename().string(),
        comm ? trimmed(*comm) : "?", wchan ? *wchan : "?",
        syscall_text ? trimmed(syscall_text->substr(0, syscall_text->find(' '))) : "?",
        kernel_stack.empty() ? "?" : kernel_stack);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Watching krait from outside while it runs.

// Polls krait's /proc files every kWatchPeriod: peak RSS (VmHWM), CPU time.
// Past kRssKillMiB it kills krait (through a pidfd: never another process
// that got the pid) and remembers why.
class Watch {
 public:
  explicit Watch(pid_t pid) : pid_(pid), started_(Clock::now()) {
    pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }
  ~Watch() { stop(); }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  void stop() {
    if (thread_.joinable()) {
      thread_.request_stop();
      wake_.notify_all();
      thread_.join();
    }
  }
  int64_t peak_rss_kib() const {
    std::lock_guard lock(mutex_);
    return peak_rss_kib_;
  }
  double cpu_seconds() const {
    std::lock_guard lock(mutex_);
    return cpu_s_;
  }
  std::optional<int64_t> killed_at_kib() const {
    std::lock_guard lock(mutex_);
    return killed_at_kib_;
  }
  double seconds_since_start() const {
    return std::chrono::duration<double>(Clock::now() - started_).count();
  }

 private:
  bool alive() const {
    pollfd fd{pidfd_.get(), POLLIN, 0};
    return pidfd_.valid() && ::poll(&fd, 1, 0) == 0;
  }

  void sample() {
    auto hwm = status_kib(pid_, "VmHWM");
    auto rss = status_kib(pid_, "VmRSS");
    auto cpu = krait::test::cpu_seconds(pid_);
    // Read first, then check: a reading of a pid that has exited (and may
    // belong to another process by now) is dropped.
    if (!alive())
      return;
    std::lock_guard lock(mutex_);
    if (hwm)
      peak_rss_kib_ = std::max(peak_rss_kib_, *hwm);
    if (rss)
      peak_rss_kib_ = std::max(peak_rss_kib_, *rss);
    if (cpu)
      cpu_s_ = *cpu;
    if (rss && *rss > kRssKillMiB * 1024 && !killed_at_kib_) {
      killed_at_kib_ = *rss;
      ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    }
  }

  void run(std::stop_token stop) {
    std::mutex m;
    std::unique_lock lock(m);
    while (!stop.stop_requested()) {
      sample();
      wake_.wait_for(lock, stop, kWatchPeriod, [] { return false; });
    }
  }

  pid_t pid_;
  Clock::time_point started_;
  UniqueFd pidfd_;
  mutable std::mutex mutex_;
  int64_t peak_rss_kib_ = 0;
  double cpu_s_ = 0;
  std::optional<int64_t> killed_at_kib_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

// ---------------------------------------------------------------------------
// The zoo.

enum class Kind {
  kNormal,
  kVersionName,
  kOddVersions,
  kCycles,
  kFlood,
  kHugeCommandLine,
  kManyMaps,
  kSparseLibpython,
  kFifoLibrary,
  kClaimedBuildId,
  kCodeChurn,
  kPidReuseOld,
  kPidReuseNew,
};

struct KindInfo {
  Kind kind;
  const char* name;  // for KRAIT_ZOO_ONLY and the table
  const char* what;
  // Recognisable as Python by what it maps: it must be in the summary,
  // profiled or refused with a reason.
  bool python_like;
};

constexpr KindInfo kKinds[] = {
    {Kind::kNormal, "normal", "chain.py under pyenv 3.12.1", true},
    {Kind::kVersionName, "version-name", "python3.99999999999 exporting _PyRuntime", true},
    {Kind::kOddVersions, "odd-versions", "python3.12: odd .rodata versions, garbage runtime", true},
    {Kind::kCycles, "cycles", "fake 3.12.1: cyclic thread list and frame chains", true},
    {Kind::kFlood, "flood", "fake 3.12.1: 10,000 codes, astral names, 64 MiB table", true},
    {Kind::kHugeCommandLine, "argv", "argv[0] python+50,000 digits, 128 KiB arguments", true},
    {Kind::kManyMaps, "maps", "60,000 mappings of its executable", true},
    {Kind::kSparseLibpython, "sparse", "maps a sparse 64 GiB libpython3.12.so.1.0", false},
    {Kind::kFifoLibrary, "fifo", "calls libraries whose paths became FIFOs", true},
    {Kind::kClaimedBuildId, "buildid", "LD_PRELOAD of a library claiming libc's build-id", true},
    {Kind::kCodeChurn, "codegen", "creates code objects without end", true},
    {Kind::kPidReuseOld, "pid-reuse", "chain.py that exits mid-run", true},
    {Kind::kPidReuseNew, "pid-reuse", "chain.py given the exited one's pid", true},
};

const KindInfo& info(Kind kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind)
      return k;
  return kKinds[0];
}

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

// What a process of the zoo prints once it is in its steady state.
enum class FirstLine { kNone, kReady, kTruth };

struct Member {
  Kind kind;
  std::optional<ChildProcess> child;
  pid_t pid = 0;
  FirstLine awaiting = FirstLine::kNone;  // not read yet
  Clock::time_point spawned = Clock::now();
  double seconds_to_steady = 0;
  std::optional<Truth> truth;
  double cpu_start = 0;  // normal, pid-reuse: from the run's start or the truth
  double cpu_end = 0;
};

// A path of the host's tools, or an error naming the Debian package.
Result<std::string> tool(const std::string& name, const std::string& package) {
  for (const char* dir : {"/usr/bin/", "/bin/", "/usr/local/bin/"}) {
    const std::string path = dir + name;
    if (::access(path.c_str(), X_OK) == 0)
      return path;
  }
  return make_error("{} is missing: install the Debian package '{}' (scripts/setup)", name,
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

// Where a hung krait's threads are: the kernel's view, and the user-space
// stacks when elfutils' eu-stack is there to read them.
std::string describe_hung(pid_t pid) {
  std::string out = describe_threads(pid);
  if (auto eu_stack = tool("eu-stack", "elfutils")) {
    auto stacks = capture({*eu_stack, "-p", std::to_string(pid), "-n", "0"});
    if (!stacks)
      return out + "\neu-stack: " + stacks.error().message;
    // The innermost frames of each thread ("TID n:" heads its block).
    std::istringstream lines(*stacks);
    std::string line;
    int frames = 0;
    while (std::getline(lines, line)) {
      frames = line.starts_with("TID ") ? 0 : frames + 1;
      if (frames <= 12)
        out += "\n  " + line;
    }
  }
  return out;
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

class ZooProcesses {
 public:
  // Everything the zoo needs on disk, readable by nobody: a copy of pyenv's
  // 3.12.1 tree (hard links when it can: /root is not open to nobody), the
  // workloads, the fakes, a directory nobody may write, the impostor.
  Result<void> prepare(const Interpreter& pyenv) {
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
    KRAIT_TRY(install(std::string(KRAIT_ZOO_FIXTURES) + "/hostile.py", dir_.file("hostile.py"),
                      kReadable));
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

  bool selected(Kind kind) const { return selected_.contains(info(kind).name); }

  // Starts the hostile processes and then the normal one, all at once (they
  // get ready in parallel), and waits for each to be in its steady state.
  // The process with the impostor library comes first: it must be mapped
  // before the normal process's libc is.
  Result<void> start() {
    if (selected(Kind::kClaimedBuildId))
      KRAIT_TRY(spawn_hostile_python(Kind::kClaimedBuildId, {"impostor", impostor_},
                                     {"--depth", "2"}, {{"LD_PRELOAD", impostor_}}));
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
      KRAIT_TRY(spawn_hostile_python(Kind::kFifoLibrary,
                                     {"fifo", fifo_dir_, std::to_string(kFifoLibraries)},
                                     {"--depth", "5"}));
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

  // The first process of the pid-reuse pair: it exits by itself mid-run.
  Result<void> start_reuse_old() {
    KRAIT_TRY(spawn_python(Kind::kPidReuseOld,
                           {dir_.file("chain.py"), "--depth", "7", "--seconds", "5"}));
    return settle(members_.back());
  }

  // The second: a new process given the first one's pid, which must have
  // exited and been reaped. Another fork on the host can take the pid
  // between the write to ns_last_pid and ours: then again.
  Result<void> start_reuse_new(pid_t pid) {
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

  std::deque<Member>& members() { return members_; }

  // Ends the pid-reuse pair of a run, so that the next run has its own.
  void forget_pid_reuse() {
    std::erase_if(members_, [](const Member& m) {
      return m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew;
    });
  }
  Member* find(Kind kind) {
    for (auto& m : members_)
      if (m.kind == kind)
        return &m;
    return nullptr;
  }

 private:
  SpawnOptions python_options(const std::vector<std::string>& args,
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

  void adopt(Kind kind, ChildProcess child, FirstLine first) {
    Member m{kind};
    m.pid = child.pid();
    m.child.emplace(std::move(child));
    m.awaiting = first;
    members_.push_back(std::move(m));
  }

  // Reads the member's first line: "ready", or its truth.
  Result<void> settle(Member& m) {
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

  Result<void> spawn_python(Kind kind, const std::vector<std::string>& args,
                            const std::map<std::string, std::string>& extra_env = {}) {
    auto child = ChildProcess::spawn(python_options(args, extra_env));
    if (!child)
      return make_error("{}: {}", info(kind).name, child.error().message);
    adopt(kind, std::move(*child), FirstLine::kTruth);
    return {};
  }

  Result<void> spawn_hostile_python(Kind kind, const std::vector<std::string>& mode,
                                    const std::vector<std::string>& chain_args,
                                    const std::map<std::string, std::string>& extra_env = {}) {
    std::vector<std::string> args = {dir_.file("hostile.py")};
    args.insert(args.end(), mode.begin(), mode.end());
    args.push_back("--");
    args.push_back(dir_.file("chain.py"));
    args.insert(args.end(), chain_args.begin(), chain_args.end());
    return spawn_python(kind, args, extra_env);
  }

  Result<void> spawn_ready(Kind kind, const std::vector<std::string>& argv) {
    SpawnOptions o;
    o.argv = argv;
    o.run_as = kNobody;
    auto child = ChildProcess::spawn(o);
    if (!child)
      return make_error("{}: {}", info(kind).name, child.error().message);
    adopt(kind, std::move(*child), FirstLine::kReady);
    return {};
  }

  // argv[0] "python" + 50,000 digits (no slash: Python cannot find itself
  // from it, so PYTHONHOME says where it lives and PATH is unset); the
  // program comes with -c, padded with a comment to 128 KiB, followed by
  // another 128 KiB argument. It runs chain.py as __main__.
  Result<void> spawn_huge_command_line() {
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

  TempDir dir_;
  std::set<std::string> selected_;
  std::string scratch_;
  std::string python_home_;
  std::string python_;
  std::string fifo_dir_;
  std::string impostor_;
  std::deque<Member> members_;  // stable addresses: Member* stay valid
};

// ---------------------------------------------------------------------------
// One run of krait over the zoo.

enum class Mode { kRecord, kDaemon };

struct KraitRun {
  Mode mode;
  std::string command;           // "krait record", "krait daemon"
  bool sampled = false;          // krait got ready and the window began
  bool survived_window = false;  // ... and krait was still running at its end
  // How krait ended: nullopt when the test had to kill it.
  std::optional<ExitStatus> status;
  std::vector<std::string> abnormal;  // what went wrong with krait itself
  std::string log;                    // its stderr
  std::vector<ProfileSample> samples;
  std::optional<JsonValue> stats;  // record: --stats-json
  std::string go_raw_error;        // record: `go tool pprof -raw` rejected the profile
  int64_t peak_rss_kib = 0;
  double cpu_s = 0;
  double wall_s = 0;
};

// Samples krait for kWindow while the pid-reuse pair does its part, then
// records the CPU times the expected sample counts come from. Keeps reading
// krait's stderr so that a chatty krait never blocks on a full pipe. Ends
// early if krait does.
void run_window(ZooProcesses& zoo, ChildProcess& krait) {
  const auto end = Clock::now() + kWindow;
  Member* normal = zoo.find(Kind::kNormal);
  normal->cpu_start = cpu_or(normal->pid, 0);
  Member* old = nullptr;
  if (zoo.selected(Kind::kPidReuseOld)) {
    if (auto started = zoo.start_reuse_old(); started)
      old = zoo.find(Kind::kPidReuseOld);
    else
      ADD_FAILURE() << "pid-reuse: " << started.error().message;
  }
  while (Clock::now() < end && !krait.wait(0ms).ok()) {
    krait.stderr_text();
    if (old && old->child->wait(0ms).ok()) {
      auto fresh = zoo.start_reuse_new(old->pid);
      old = nullptr;
      if (fresh) {
        Member* m = zoo.find(Kind::kPidReuseNew);
        m->cpu_start = cpu_or(m->pid, 0);
      } else {
        ADD_FAILURE() << "pid-reuse: " << fresh.error().message;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    // The window's length is the input here; this only paces the loop.
    std::this_thread::sleep_for(std::clamp(left, 0ms, 250ms));
  }
  if (old && !krait.reaped())
    ADD_FAILURE() << "pid-reuse: the first process did not exit within the run";
  for (Kind k : {Kind::kNormal, Kind::kPidReuseNew})
    if (Member* m = zoo.find(k))
      m->cpu_end = cpu_or(m->pid, m->cpu_start);
}

// Runs krait over the zoo: starts it, samples for the window, stops it with
// `stop_signal` and says what went wrong with krait itself.
bool run_krait(ZooProcesses& zoo, KraitRun& run, const SpawnOptions& options, int stop_signal) {
  auto krait = ChildProcess::spawn(options);
  if (!krait) {
    run.abnormal.push_back("cannot start krait: " + krait.error().message);
    return false;
  }
  Watch watch(krait->pid());
  auto ready = krait->read_line(kReadyDeadline);
  if (ready && *ready == "ready") {
    run.sampled = true;
    run_window(zoo, *krait);
    run.survived_window = !krait->reaped();
  } else if (!krait->wait(1s).ok()) {
    run.abnormal.push_back(fmt::format(
        "{} did not start sampling within {} s (hung): {}{}", run.command, kReadyDeadline.count(),
        ready ? *ready : ready.error().message, describe_hung(krait->pid())));
  }
  if (krait->reaped()) {
    run.status = krait->wait(0ms).value();
    if (!run.status->success() || !run.sampled)
      run.abnormal.push_back(fmt::format(
          "{} ended by itself with {} {}", run.command, run.status->describe(),
          run.sampled ? "during the run, before it was stopped" : "before it started sampling"));
  } else {
    // A krait that died just now is a zombie: the signal is a no-op and the
    // wait reports how it ended.
    (void)krait->signal(stop_signal);
    auto status = krait->wait(kStopDeadline);
    if (status) {
      run.status = *status;
      if (!status->success())
        run.abnormal.push_back(fmt::format("{} ended with {} after signal {}", run.command,
                                           status->describe(), stop_signal));
    } else {
      run.abnormal.push_back(fmt::format("{} did not exit within {} s of signal {} (hung); {}",
                                         run.command, kStopDeadline.count(), stop_signal,
                                         describe_hung(krait->pid())));
      krait->kill();
    }
  }
  watch.stop();
  if (auto killed = watch.killed_at_kib())
    run.abnormal.push_back(fmt::format("the test killed krait at {} MiB of RSS (limit {} MiB)",
                                       *killed / 1024, kRssKillMiB));
  run.wall_s = watch.seconds_since_start();
  run.log = krait->stderr_text();
  run.peak_rss_kib = watch.peak_rss_kib();
  run.cpu_s = watch.cpu_seconds();
  return true;
}

KraitRun run_record(ZooProcesses& zoo) {
  KraitRun run{Mode::kRecord, "krait record"};
  TempDir out;
  const std::string profile = out.file("profile.pb.gz");
  const std::string stats = out.file("stats.json");
  SpawnOptions o;
  o.argv = {KRAIT_BINARY,   "record", "-o", profile,
            "--stats-json", stats,    "-r", std::to_string(kRateHz),
            "--ready-fd",   "1"};
  if (!run_krait(zoo, run, o, SIGINT))
    return run;
  if (auto text = read_file(stats)) {
    if (auto json = parse_json(*text)) {
      run.stats = std::move(*json);
      if (const JsonValue* rss = run.stats->find("krait_max_rss_kb"); rss && rss->is_int())
        run.peak_rss_kib = std::max(run.peak_rss_kib, rss->integer);
      if (const JsonValue* cpu = run.stats->find("krait_cpu_seconds"); cpu && cpu->is_number())
        run.cpu_s = std::max(run.cpu_s, cpu->number);
    } else {
      run.abnormal.push_back("--stats-json does not parse: " + json.error().message);
    }
  } else if (run.status && run.status->success()) {
    run.abnormal.push_back("no --stats-json: " + text.error().message);
  }
  if (::access(profile.c_str(), R_OK) == 0) {
    TempDir go_dir;
    auto raw = go_pprof_raw(profile, go_dir);
    if (!raw)
      run.go_raw_error = raw.error().message;
    auto pprof = exporter::read_pprof_file(profile);
    if (pprof)
      run.samples = decode_samples(*pprof);
    else
      run.abnormal.push_back("the profile does not decode: " + pprof.error().message);
  } else if (run.status && run.status->success()) {
    run.abnormal.push_back("krait record wrote no profile");
  }
  return run;
}

KraitRun run_daemon(ZooProcesses& zoo) {
  KraitRun run{Mode::kDaemon, "krait daemon"};
  TempDir out;
  const std::string profiles = out.file("profiles");
  fs::create_directory(profiles);
  SpawnOptions o;
  o.argv = {KRAIT_BINARY,
            "daemon",
            "--ready-fd",
            "1",
            "--output-dir",
            profiles,
            "--upload-interval",
            std::to_string(kUploadInterval),
            "--rate",
            std::to_string(kRateHz)};
  if (!run_krait(zoo, run, o, SIGTERM))
    return run;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(profiles, ec)) {
    const std::string path = entry.path().string();
    if (!path.ends_with(".pb.gz"))
      continue;
    auto pprof = exporter::read_pprof_file(path);
    if (!pprof) {
      run.abnormal.push_back(fmt::format("{} does not decode: {}", path, pprof.error().message));
      continue;
    }
    auto samples = decode_samples(*pprof);
    run.samples.insert(run.samples.end(), std::make_move_iterator(samples.begin()),
                       std::make_move_iterator(samples.end()));
  }
  return run;
}

// ---------------------------------------------------------------------------
// What krait did with each process.

std::vector<const JsonValue*> stats_entries(const JsonValue& stats, int64_t pid) {
  std::vector<const JsonValue*> out;
  const JsonValue* procs = stats.find("processes");
  if (!procs || !procs->is_array())
    return out;
  for (const auto& p : procs->items)
    if (const JsonValue* id = p.find("pid"); id && id->is_int() && id->integer == pid)
      out.push_back(&p);
  return out;
}

std::string json_text(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_string() ? m->string : "";
}
int64_t json_number(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_int() ? m->integer : 0;
}
bool json_flag(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_bool() && m->boolean;
}

// The daemon's log lines about `pid` being left out ("pid 12 (x) is not
// profiled: why"; throttling, once it exists, counts too).
std::vector<std::string> refusals_in_log(const std::string& log, pid_t pid) {
  std::vector<std::string> out;
  std::istringstream lines(log);
  std::string line;
  const std::string a = fmt::format("pid {} ", pid), b = fmt::format("pid {}:", pid);
  while (std::getline(lines, line)) {
    if (line.find(a) == std::string::npos && line.find(b) == std::string::npos)
      continue;
    for (const char* word : {"not profiled", "refused", "throttled"}) {
      const size_t at = line.find(word);
      if (at != std::string::npos) {
        std::string reason = line.substr(at + std::strlen(word));
        while (!reason.empty() && (reason.front() == ':' || reason.front() == ' '))
          reason.erase(0, 1);
        out.push_back(reason);
        break;
      }
    }
  }
  return out;
}

std::string shorten(std::string text, size_t n) {
  for (char& c : text)
    if (c == '\n')
      c = ' ';
  if (text.size() > n)
    text = text.substr(0, n - 3) + "...";
  return text;
}

struct Verdict {
  std::string did;      // for the table
  bool listed = false;  // in the summary (record) / profiled or refused in the log (daemon)
  bool refused_without_reason = false;
};

Verdict what_krait_did(const KraitRun& run, const Member& m, int64_t samples) {
  Verdict v;
  if (run.mode == Mode::kRecord) {
    if (!run.stats)
      return {"(no summary)", false, false};
    std::vector<std::string> parts;
    auto entries = stats_entries(*run.stats, m.pid);
    // The pid-reuse pair shares a pid; the summary lists processes in the
    // order it first saw them.
    if (m.kind == Kind::kPidReuseOld)
      entries.resize(std::min<size_t>(entries.size(), 1));
    if (m.kind == Kind::kPidReuseNew)
      entries.erase(entries.begin(), entries.begin() + std::min<size_t>(entries.size(), 1));
    for (const JsonValue* e : entries) {
      v.listed = true;
      std::string reading;
      if (const JsonValue* in = e->find("inspection"); in && in->is_object())
        reading =
            fmt::format(" [read in {} tasks, {:.0f} ms CPU, {:.0f} ms]", json_number(*in, "tasks"),
                        json_number(*in, "cpu_ns") / 1e6, json_number(*in, "wall_ns") / 1e6);
      if (json_flag(*e, "profiled")) {
        parts.push_back(fmt::format("profiled ({}, {}), {} samples, {} truncated{}{}",
                                    json_text(*e, "python_version"), json_text(*e, "offsets"),
                                    json_number(*e, "samples"), json_number(*e, "truncated"),
                                    json_flag(*e, "exited") ? ", exited" : "", reading));
      } else {
        const std::string reason = json_text(*e, "reason");
        v.refused_without_reason |= reason.empty();
        parts.push_back("refused: " + (reason.empty() ? "(no reason)" : reason) + reading);
      }
    }
    if (parts.empty())
      parts.push_back("not in the summary");
    for (size_t i = 0; i < parts.size(); ++i)
      v.did += (i ? "; " : "") + parts[i];
    return v;
  }
  const auto refusals = refusals_in_log(run.log, m.pid);
  for (const auto& r : refusals) {
    v.listed = true;
    v.refused_without_reason |= r.empty();
    v.did += (v.did.empty() ? "" : "; ") + ("refused: " + (r.empty() ? "(no reason)" : r));
  }
  if (samples > 0) {
    v.listed = true;
    v.did =
        fmt::format("profiled, {} samples delivered{}", samples, v.did.empty() ? "" : "; " + v.did);
  }
  if (v.did.empty())
    v.did = "no samples delivered, no refusal logged";
  return v;
}

// The leaf-most frame that is not the kernel's.
const Frame* user_leaf(const ProfileSample& s) {
  for (size_t i = s.full_stack.size(); i-- > 0;)
    if (s.mappings[i] != kKernelMapping)
      return &s.full_stack[i];
  return nullptr;
}

int64_t frames_named(const std::vector<ProfileSample>& samples, std::string_view prefix) {
  int64_t n = 0;
  for (const auto& s : samples)
    for (const auto& f : s.full_stack)
      if (f.function.starts_with(prefix)) {
        n += s.count;
        break;
      }
  return n;
}

double percent(double part, double whole) {
  return whole > 0 ? 100.0 * part / whole : 0.0;
}

// Prints the table and checks everything that must hold, whatever the zoo
// did to krait.
void judge(ZooProcesses& zoo, const KraitRun& run) {
  const Member& normal = *zoo.find(Kind::kNormal);
  const auto mine = samples_of_pid(run.samples, normal.pid);
  const auto& truth = normal.truth->threads.at(0).stack;
  const int64_t normal_total = total(mine);
  const int64_t normal_exact = count_exact(mine, truth);
  const double normal_cpu = normal.cpu_end - normal.cpu_start;
  const double expected = normal_cpu * kRateHz;
  const double cpu_share = run.wall_s > 0 ? run.cpu_s / run.wall_s : 0;

  const char* only = std::getenv("KRAIT_ZOO_ONLY");
  std::cout << fmt::format(
      "[ zoo      ] {} over the zoo ({}): {}\n", run.command,
      only && *only ? fmt::format("KRAIT_ZOO_ONLY={}", only) : std::string("every hostile process"),
      run.abnormal.empty() ? "ended cleanly" : "ABNORMAL");
  for (const auto& a : run.abnormal)
    std::cout << "[ zoo      ]   krait: " << shorten(a, 2000) << "\n";
  std::cout << fmt::format("[ zoo      ]   {:<13} {:>8} {:>8} {:>7}  {}\n", "process", "pid",
                           "samples", "exact", "what krait did");
  std::vector<std::string> unlisted, reasonless;
  for (const Member& m : zoo.members()) {
    const auto own = samples_of_pid(run.samples, m.pid);
    int64_t n = total(own);
    std::string exact = "-";
    if (m.truth) {
      const auto& t = m.truth->threads.at(0);
      int64_t e = count_exact(own, t.stack);
      // The pid-reuse pair shares a pid: each is judged on its own truth.
      if (m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew) {
        n = e;
      } else {
        int64_t on_thread = 0;
        for (const auto& s : own)
          if (s.tid() == t.tid)
            on_thread += s.count;
        exact = fmt::format("{:.1f}%", percent(static_cast<double>(e), on_thread));
      }
      if (m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew)
        exact = fmt::format("{} own", e);
    }
    const Verdict v = what_krait_did(run, m, n);
    std::string notes;
    if (m.kind == Kind::kClaimedBuildId || m.kind == Kind::kFifoLibrary) {
      const std::string thread = m.kind == Kind::kClaimedBuildId ? "impostor-spin" : "fifo-spin";
      const std::string leaf = m.kind == Kind::kClaimedBuildId ? "zoo_impostor_spin" : "zoo_spin";
      int64_t spin = 0, named = 0;
      for (const auto& s : own) {
        auto it = s.labels.find("thread_name");
        if (it == s.labels.end() || it->second != thread)
          continue;
        spin += s.count;
        if (const Frame* f = user_leaf(s); f && f->function == leaf)
          named += s.count;
      }
      notes = fmt::format(" [{}: {} of {} samples end in {}]", thread, named, spin, leaf);
    }
    std::cout << fmt::format("[ zoo      ]   {:<13} {:>8} {:>8} {:>7}  {}{}\n", info(m.kind).name,
                             m.pid, n, exact, shorten(v.did, 150), notes);
    if (m.kind == Kind::kNormal || m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew)
      continue;
    if (info(m.kind).python_like && !v.listed)
      unlisted.push_back(info(m.kind).name);
    if (v.refused_without_reason)
      reasonless.push_back(info(m.kind).name);
  }
  std::cout << fmt::format(
      "[ zoo      ]   normal process: {} of {} samples exact ({:.1f}%), {} samples for {:.2f} s "
      "of CPU = {:.1f}% of the {:.0f} predicted\n",
      normal_exact, normal_total, percent(normal_exact, normal_total), normal_total, normal_cpu,
      percent(normal_total, expected), expected);
  std::cout << fmt::format(
      "[ zoo      ]   krait: peak RSS {} MiB (cap {}), CPU {:.2f} s over {:.1f} s = {:.1f}% of "
      "a core (cap {:.0f}%)\n",
      run.peak_rss_kib / 1024, kMaxRssMiB, run.cpu_s, run.wall_s, 100 * cpu_share,
      100 * kMaxCpuShare);
  if (run.stats)
    if (const JsonValue* losses = run.stats->find("losses"); losses && losses->is_object())
      for (size_t i = 0; i < losses->keys.size(); ++i)
        std::cout << fmt::format("[ zoo      ]   loss: {:>8}  {}\n", losses->items[i].integer,
                                 losses->keys[i]);

  SCOPED_TRACE(run.command);
  // krait itself.
  EXPECT_TRUE(run.abnormal.empty())
      << run.command << " did not run cleanly:\n"
      <<
      [&] {
        std::string all;
        for (const auto& a : run.abnormal)
          all += "  " + a + "\n";
        return all;
      }()
      << "its log ends with:\n"
      << run.log.substr(run.log.size() > 4000 ? run.log.size() - 4000 : 0);
  EXPECT_LE(run.peak_rss_kib, kMaxRssMiB * 1024)
      << "krait's peak RSS " << run.peak_rss_kib / 1024 << " MiB exceeds " << kMaxRssMiB << " MiB";
  EXPECT_LE(cpu_share, kMaxCpuShare)
      << "krait used " << run.cpu_s << " s of CPU in " << run.wall_s << " s";
  if (run.mode == Mode::kRecord) {
    EXPECT_EQ(run.go_raw_error, "") << "the profile is not valid pprof for go tool pprof";
  }

  // The normal process.
  EXPECT_GE(normal_exact, kExactFraction * static_cast<double>(normal_total))
      << describe_mismatches(mine, truth);
  EXPECT_GE(static_cast<double>(normal_total), kSampleFraction * expected)
      << "the normal process got " << normal_total << " samples for " << normal_cpu
      << " s of CPU at " << kRateHz << " Hz";
  EXPECT_GT(normal_total, 0) << "the normal process was not profiled at all";

  // The process that reused a pid has its own samples with its own stack.
  if (const Member* fresh = zoo.find(Kind::kPidReuseNew)) {
    const Member* old = zoo.find(Kind::kPidReuseOld);
    const auto both = samples_of_pid(run.samples, fresh->pid);
    const auto& new_truth = fresh->truth->threads.at(0).stack;
    const auto& old_truth = old->truth->threads.at(0).stack;
    const int64_t own = count_exact(both, new_truth);
    const double fresh_expected = (fresh->cpu_end - fresh->cpu_start) * kRateHz;
    EXPECT_GE(static_cast<double>(own), kReusedSampleFraction * fresh_expected)
        << "the process that reused pid " << fresh->pid << " got " << own
        << " samples with its own stack for " << fresh->cpu_end - fresh->cpu_start << " s of CPU\n"
        << describe_mismatches(both, new_truth);
    // In their steady state (the hot loop at the leaf, where the truths
    // apply), every sample of the pid is one of the two processes', each
    // at its own depth: none is named with the other's state. Samples at
    // start-up (imports) and exit are true stacks the truths do not cover.
    std::vector<ProfileSample> steady;
    for (const auto& s : both)
      if (!s.stack.empty() && s.stack.back().function == new_truth.back().function)
        steady.push_back(s);
    EXPECT_GE(static_cast<double>(count_exact(steady, new_truth) + count_exact(steady, old_truth)),
              kExactFraction * static_cast<double>(total(steady)))
        << "samples of pid " << fresh->pid << " with neither process's stack\n"
        << describe_mismatches(steady, new_truth);
  } else if (zoo.selected(Kind::kPidReuseNew) && run.survived_window) {
    ADD_FAILURE() << "the pid-reuse process never started";
  }

  // The library claiming libc's build-id: its filler never runs, so a frame
  // named after it is another file's frame named from the impostor; and its
  // own function must keep its name.
  if (const Member* m = zoo.find(Kind::kClaimedBuildId)) {
    EXPECT_EQ(frames_named(run.samples, "zoo_impostor_text"), 0)
        << "frames of other files named from the library claiming libc's build-id";
    EXPECT_EQ(frames_named(mine, "zoo_impostor"), 0)
        << "the normal process never maps the impostor";
    int64_t spin = 0, named = 0;
    std::map<std::string, int64_t> leaves;
    for (const auto& s : samples_of_pid(run.samples, m->pid)) {
      auto it = s.labels.find("thread_name");
      if (it == s.labels.end() || it->second != "impostor-spin")
        continue;
      spin += s.count;
      const Frame* f = user_leaf(s);
      if (f && f->function == "zoo_impostor_spin")
        named += s.count;
      leaves[f ? f->function : "(no frame)"] += s.count;
    }
    if (spin > 0) {
      EXPECT_GE(named, kImpostorLeafFraction * static_cast<double>(spin))
          << "the impostor's own function lost its name: " << named << " of " << spin
          << " samples of its thread end in zoo_impostor_spin; their leaves: "
          << fmt::format("{}", fmt::join(leaves, ", "));
    }
  }

  // Every hostile process krait can take for Python is accounted for (when
  // krait lived to say so: otherwise the failure above is the news).
  if (!run.survived_window || !run.status || (run.mode == Mode::kRecord && !run.stats))
    return;
  EXPECT_TRUE(unlisted.empty()) << fmt::format(
      "neither profiled nor refused with a reason ({}): {}",
      run.mode == Mode::kRecord ? "--stats-json" : "delivered samples / daemon log",
      fmt::join(unlisted, ", "));
  EXPECT_TRUE(reasonless.empty()) << fmt::format("refused without a reason: {}",
                                                 fmt::join(reasonless, ", "));
}

// One zoo for both runs: it takes a while to start on a busy host (the
// flood's 330 MiB of names, 60,000 mmap calls), and nothing in it depends on
// which krait looked at it before. Each run gets its own pid-reuse pair.
class Zoo : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { zoo_.reset(); }

  void run_mode(Mode mode) {
    ASSERT_NO_FATAL_FAILURE(require_root());
    if (!zoo_ && setup_error_.empty())
      setup_error_ = start_zoo();
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    zoo_->forget_pid_reuse();
    const KraitRun result = mode == Mode::kRecord ? run_record(*zoo_) : run_daemon(*zoo_);
    judge(*zoo_, result);
  }

 private:
  static std::string start_zoo() {
    const Interpreter* pyenv = nullptr;
    const auto interpreters = load_manifest();
    for (const auto& i : interpreters)
      if (i.origin == "pyenv" && i.version == "3.12.1")
        pyenv = &i;
    if (pyenv == nullptr)
      return fmt::format("the zoo needs pyenv's 3.12.1 in {} (scripts/provision-pythons)",
                         manifest_path());
    auto zoo = std::make_unique<ZooProcesses>();
    if (auto prepared = zoo->prepare(*pyenv); !prepared)
      return prepared.error().message;
    const auto starting = Clock::now();
    if (auto started = zoo->start(); !started)
      return started.error().message;
    const Member* slowest = nullptr;
    for (const Member& m : zoo->members())
      if (!slowest || m.seconds_to_steady > slowest->seconds_to_steady)
        slowest = &m;
    std::cout << fmt::format(
        "[ zoo      ] {} processes in their steady state after {:.1f} s (the slowest: {}, {:.1f} "
        "s)\n",
        zoo->members().size(), std::chrono::duration<double>(Clock::now() - starting).count(),
        info(slowest->kind).name, slowest->seconds_to_steady);
    zoo_ = std::move(zoo);
    return "";
  }

  static inline std::unique_ptr<ZooProcesses> zoo_;
  static inline std::string setup_error_;
};

TEST_F(Zoo, RecordSurvivesTheZooAndKeepsTheNormalProcess) {
  run_mode(Mode::kRecord);
}

TEST_F(Zoo, DaemonSurvivesTheZooAndKeepsTheNormalProcess) {
  run_mode(Mode::kDaemon);
}

}  // namespace
}  // namespace krait::test
