// The hostile zoo's harness (zoo_test.cpp says what the zoo is and what is
// judged): its processes, one run of krait over them, and the verdict.
//
// zoo_processes.cpp starts the zoo, zoo_runs.cpp runs and watches krait,
// zoo_judge.cpp checks what krait did with each process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/krait_harness.h"
#include "support/child_process.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/temp_dir.h"
#include "support/truth.h"

namespace krait::test::zoo {

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

inline const std::string kKernelMapping = "[kernel.kallsyms]";

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

inline constexpr KindInfo kKinds[] = {
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

inline const KindInfo& info(Kind kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind)
      return k;
  return kKinds[0];
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
Result<std::string> tool(const std::string& name, const std::string& package);

// Runs argv (as root) to its end; its stdout, or an error with its stderr.
Result<std::string> capture(const std::vector<std::string>& argv);

class ZooProcesses {
 public:
  // Everything the zoo needs on disk, readable by nobody: a copy of pyenv's
  // 3.12.1 tree (hard links when it can: /root is not open to nobody), the
  // workloads, the fakes, a directory nobody may write, the impostor.
  Result<void> prepare(const Interpreter& pyenv);

  bool selected(Kind kind) const { return selected_.contains(info(kind).name); }

  // Starts the hostile processes and then the normal one, all at once (they
  // get ready in parallel), and waits for each to be in its steady state.
  // The process with the impostor library comes first: it must be mapped
  // before the normal process's libc is.
  Result<void> start();

  // The first process of the pid-reuse pair: it exits by itself mid-run.
  Result<void> start_reuse_old();

  // The second: a new process given the first one's pid, which must have
  // exited and been reaped. Another fork on the host can take the pid
  // between the write to ns_last_pid and ours: then again.
  Result<void> start_reuse_new(pid_t pid);

  std::deque<Member>& members() { return members_; }

  // Ends the pid-reuse pair of a run, so that the next run has its own.
  void forget_pid_reuse();
  Member* find(Kind kind);

 private:
  SpawnOptions python_options(const std::vector<std::string>& args,
                              const std::map<std::string, std::string>& extra_env) const;

  void adopt(Kind kind, ChildProcess child, FirstLine first);

  // Reads the member's first line: "ready", or its truth.
  Result<void> settle(Member& m);

  Result<void> spawn_python(Kind kind, const std::vector<std::string>& args,
                            const std::map<std::string, std::string>& extra_env = {});

  Result<void> spawn_hostile_python(Kind kind, const std::vector<std::string>& mode,
                                    const std::vector<std::string>& chain_args,
                                    const std::map<std::string, std::string>& extra_env = {});

  Result<void> spawn_ready(Kind kind, const std::vector<std::string>& argv);

  // argv[0] "python" + 50,000 digits (no slash: Python cannot find itself
  // from it, so PYTHONHOME says where it lives and PATH is unset); the
  // program comes with -c, padded with a comment to 128 KiB, followed by
  // another 128 KiB argument. It runs chain.py as __main__.
  Result<void> spawn_huge_command_line();

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

// One run of `krait record` over the zoo, and one of `krait daemon`.
KraitRun run_record(ZooProcesses& zoo);
KraitRun run_daemon(ZooProcesses& zoo);

// Prints the table and checks everything that must hold, whatever the zoo
// did to krait.
void judge(ZooProcesses& zoo, const KraitRun& run);

}  // namespace krait::test::zoo
