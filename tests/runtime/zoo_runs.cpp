// One run of krait over the zoo, watched from outside.
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

}  // namespace

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

}  // namespace krait::test::zoo
