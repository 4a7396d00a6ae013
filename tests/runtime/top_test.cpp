// `krait top` against chain.py, whose hot loop is its only leaf: the plain
// snapshot (--once, with -p and system-wide) and the full screen in a real
// terminal (tmux, 80x24) put the truth's leaf function on the first row
// with the share of one CPU the process really used over the same window
// (/proc), and the screen's keys sort, regroup and filter the rows. In
// --mode wall, wall.py's phase lines get the shares of its thread's time the
// workload measured.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/krait_harness.h"
#include "support/child_process.h"
#include "support/json.h"
#include "support/workloads.h"
#include "util/clock.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

// Points of one CPU the hot function's own share may differ from the CPU
// the process used.
constexpr double kTolerancePoints = 5.0;
// Enough samples that counting noise stays well inside the tolerance on a
// busy two-CPU host (~600 per interval at full speed).
constexpr const char* kRate = "299";

struct CpuClock {
  double cpu_s = 0;
  uint64_t wall_ns = 0;
};

CpuClock now_for(pid_t pid) {
  auto cpu = cpu_seconds(pid);
  return {cpu ? *cpu : -1.0, monotonic_ns()};
}

// Percent of one CPU `pid` used between two readings.
double share(const CpuClock& a, const CpuClock& b) {
  return 100.0 * (b.cpu_s - a.cpu_s) / (static_cast<double>(b.wall_ns - a.wall_ns) / 1e9);
}

std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;)
    words.push_back(w);
  return words;
}

// A table row as printed: "OWN% TOTAL% NAME LOCATION PROCESS (PID)".
struct ShownRow {
  double own = 0;
  std::string name;
  std::string line;
};

// The rows under the column header (which starts with "OWN%"), up to the
// first line that is not a row.
std::vector<ShownRow> rows_of(const std::string& text) {
  std::vector<ShownRow> rows;
  std::istringstream in(text);
  bool in_table = false;
  for (std::string line; std::getline(in, line);) {
    const auto words = split_words(line);
    if (!in_table) {
      in_table = !words.empty() && words[0] == "OWN%";
      continue;
    }
    if (words.size() < 3)
      break;
    char* end = nullptr;
    const double own = std::strtod(words[0].c_str(), &end);
    if (end == words[0].c_str())
      break;
    rows.push_back({own, words[2], line});
  }
  return rows;
}

std::string first_line(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

std::string artifacts_dir() {
  const char* dir = std::getenv("KRAIT_TEST_ARTIFACTS");
  std::string path = dir && *dir ? dir : std::string(KRAIT_BUILD_DIR) + "/test-artifacts";
  std::filesystem::create_directories(path);
  return path;
}

void save_artifact(const std::string& name, const std::string& text) {
  std::ofstream(artifacts_dir() + "/" + name) << text;
}

// `krait top --once ... --ready-fd 1`: the process's CPU share from
// "ready" to the snapshot's table, and the snapshot.
struct Snapshot {
  std::string text;
  double measured_pct = 0;
  uint64_t start_ns = 0;  // CLOCK_MONOTONIC at "ready" and at the table
  uint64_t end_ns = 0;
};

Result<Snapshot> once(const std::vector<std::string>& args, pid_t workload) {
  std::vector<std::string> argv{KRAIT_BINARY, "top", "--once", "--ready-fd", "1"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto child = ChildProcess::spawn({.argv = argv});
  if (!child)
    return child.error();
  auto ready = child->read_line(60s);
  if (!ready)
    return ready.error();
  if (*ready != "ready")
    return make_error("expected ready, got {}", *ready);
  const CpuClock start = now_for(workload);
  Snapshot s;
  std::optional<CpuClock> end;
  for (;;) {
    auto line = child->read_line(60s);
    if (!line)
      break;
    // The table is printed the moment the interval is taken.
    if (!end && line->find("OWN%") != std::string::npos)
      end = now_for(workload);
    s.text += *line + "\n";
  }
  auto status = child->wait(30s);
  if (!status)
    return status.error();
  if (!status->success())
    return make_error("krait top {}: {}", status->describe(), child->stderr_text());
  if (!end)
    return make_error("no table in:\n{}{}", s.text, child->stderr_text());
  s.measured_pct = share(start, *end);
  s.start_ns = start.wall_ns;
  s.end_ns = end->wall_ns;
  return s;
}

TEST(Top, OncePutsTheHotFunctionFirstWithItsCpuShare) {
  require_root();
  auto w = start_workload(interpreter_named("pyenv-3.12.1"), "chain.py", {"--depth", "5"});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const pid_t pid = static_cast<pid_t>(w->truth.pid);
  const std::string hot = w->truth.threads.at(0).stack.back().function;
  const std::string pid_text = std::to_string(pid);
  // With -p, then system-wide with the view filtered to the workload.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-p", pid_text, "--interval", "2", "-r", kRate},
           {"--filter", pid_text, "--interval", "2", "-r", kRate}}) {
    SCOPED_TRACE(args[0]);
    auto s = once(args, pid);
    ASSERT_TRUE(s.ok()) << s.error().message;
    save_artifact(args[0] == "-p" ? "top_once_pid.txt" : "top_once_system.txt", s->text);
    const auto rows = rows_of(s->text);
    ASSERT_FALSE(rows.empty()) << s->text;
    EXPECT_EQ(rows[0].name, hot) << s->text;
    EXPECT_NE(rows[0].line.find("(" + pid_text + ")"), std::string::npos) << s->text;
    EXPECT_NEAR(rows[0].own, s->measured_pct, kTolerancePoints) << s->text;
    std::cout << fmt::format("[ stats    ] top --once {}: {} own {:.1f}%, measured {:.1f}%\n",
                             args[0], hot, rows[0].own, s->measured_pct);
  }
}

// --mode wall: wall.py's worker splits its time between burning CPU,
// sleeping and reading a pipe, each at a line of its own and timed by the
// workload itself. Over the snapshot's window each line's row must show the
// share of the thread's wall time the workload measured for that phase.
TEST(Top, WallModeShowsEachPhaseLineWithItsShareOfTheThreadsTime) {
  require_root();
  auto w = start_workload(interpreter_named("pyenv-3.12.1"), "wall.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  std::vector<JsonValue> totals;
  ASSERT_TRUE(read_lines_until(w->child, 0, totals).ok());  // one whole cycle first
  const pid_t pid = static_cast<pid_t>(w->truth.pid);
  auto s = once({"-p", std::to_string(pid), "--mode", "wall", "--stacks", "python", "--group",
                 "lines", "--rows", "0", "--interval", "4", "-r", kRate},
                pid);
  ASSERT_TRUE(s.ok()) << s.error().message;
  save_artifact("top_once_wall.txt", s->text);
  const double start = static_cast<double>(s->start_ns) / 1e9;
  const double end = static_cast<double>(s->end_ns) / 1e9;
  auto more = read_lines_until(w->child, end, totals);
  ASSERT_TRUE(more.ok()) << more.error().message;

  // The workload's cumulative totals just outside the window.
  const JsonValue& before = line_before(totals, start);
  const JsonValue& after = line_after(totals, end);
  const double span = after.find("t")->number - before.find("t")->number;
  ASSERT_GT(span, 3.0);
  auto phases = json_object(w->truth.json, "phases");
  ASSERT_TRUE(phases.ok()) << phases.error().message;
  const auto rows = rows_of(s->text);
  std::string report;
  for (const char* phase : {"burn", "sleep", "pipe"}) {
    auto stack = parse_stack(*(*phases)->find(phase));
    ASSERT_TRUE(stack.ok() && !stack->empty()) << phase;
    const Frame& leaf = stack->back();
    const double expected = 100.0 * (after.find(phase)->number - before.find(phase)->number) / span;
    const std::string at = fmt::format("{}:{}", leaf.file, leaf.line);
    auto row = std::find_if(rows.begin(), rows.end(), [&](const ShownRow& r) {
      return r.name == leaf.function && r.line.find(at) != std::string::npos;
    });
    ASSERT_NE(row, rows.end()) << phase << ": no row for " << leaf.function << " at " << at << "\n"
                               << s->text;
    EXPECT_NEAR(row->own, expected, kTolerancePoints) << phase << "\n" << s->text;
    report += fmt::format(" {} {:.1f}% (workload {:.1f}%)", phase, row->own, expected);
  }
  std::cout << fmt::format("[ stats    ] top --once --mode wall:{}\n", report);
}

// A tmux server of this test's own (its own socket), killed at the end.
class Tmux {
 public:
  Tmux() : socket_(fmt::format("krait-top-test-{}", ::getpid())) {}
  ~Tmux() { (void)run({"kill-server"}); }

  Result<std::string> run(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"/usr/bin/tmux", "-L", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    auto child = ChildProcess::spawn({.argv = argv});
    if (!child)
      return child.error();
    std::string out;
    for (auto line = child->read_line(10s); line; line = child->read_line(10s))
      out += *line + "\n";
    auto status = child->wait(10s);
    if (!status)
      return status.error();
    if (!status->success())
      return make_error("tmux {}: {} {}", args.at(0), status->describe(), child->stderr_text());
    return out;
  }

  Result<std::string> capture() { return run({"capture-pane", "-p", "-t", "top"}); }

  // Polls the pane until `done` holds for it (the last capture either way).
  std::string wait_for(const std::function<bool(const std::string&)>& done,
                       std::chrono::seconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string text;
    while (std::chrono::steady_clock::now() < deadline) {
      auto pane = capture();
      if (pane) {
        text = *pane;
        if (done(text))
          return text;
      }
      std::this_thread::sleep_for(20ms);  // a polling period, not a wait for an event
    }
    return text;
  }

 private:
  std::string socket_;
};

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST(Top, ScreenInA80x24TerminalShowsSortsGroupsAndFilters) {
  require_root();
  auto w = start_workload(interpreter_named("pyenv-3.12.1"), "chain.py", {"--depth", "5"});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const pid_t pid = static_cast<pid_t>(w->truth.pid);
  const std::string hot = w->truth.threads.at(0).stack.back().function;
  TempDir dir;
  const std::string exit_file = dir.path() + "/exit";
  Tmux tmux;
  const std::string command =
      fmt::format("{} top -p {} --interval 2 -r {} 2>{}/stderr; echo $? > {}", KRAIT_BINARY, pid,
                  kRate, dir.path(), exit_file);
  ASSERT_TRUE(tmux.run({"new-session", "-d", "-s", "top", "-x", "80", "-y", "24", command}).ok());

  // The hot function on top. The share is checked over one whole interval:
  // the CPU the process used between two refreshes of the header's clock
  // is what the second refresh shows.
  std::string pane = tmux.wait_for([&](const std::string& text) {
    auto rows = rows_of(text);
    return !rows.empty() && rows[0].name == hot;
  });
  save_artifact("top_screen_first.txt", pane);
  ASSERT_FALSE(rows_of(pane).empty()) << pane;
  ASSERT_EQ(rows_of(pane)[0].name, hot) << pane;
  std::string header = first_line(pane);
  pane = tmux.wait_for([&](const std::string& text) { return first_line(text) != header; });
  const CpuClock start = now_for(pid);
  header = first_line(pane);
  pane = tmux.wait_for([&](const std::string& text) { return first_line(text) != header; });
  const CpuClock end = now_for(pid);
  save_artifact("top_screen.txt", pane);
  auto rows = rows_of(pane);
  ASSERT_FALSE(rows.empty()) << pane;
  EXPECT_EQ(rows[0].name, hot) << pane;
  EXPECT_NE(rows[0].line.find(fmt::format("({})", pid)), std::string::npos) << pane;
  EXPECT_NEAR(rows[0].own, share(start, end), kTolerancePoints) << pane;
  std::cout << fmt::format("[ stats    ] top screen: {} own {:.1f}%, measured {:.1f}%\n", hot,
                           rows[0].own, share(start, end));
  std::istringstream lines(pane);
  size_t widest = 0;
  for (std::string line; std::getline(lines, line);)
    widest = std::max(widest, line.size());
  EXPECT_LE(widest, 80u) << pane;

  // n: rows by name; the hot function is no longer first ('<module>' sorts
  // before it).
  ASSERT_TRUE(tmux.run({"send-keys", "-t", "top", "n"}).ok());
  pane = tmux.wait_for([](const std::string& text) { return contains(text, "by name"); });
  save_artifact("top_screen_by_name.txt", pane);
  rows = rows_of(pane);
  ASSERT_GE(rows.size(), 2u) << pane;
  EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end(), [](const ShownRow& a, const ShownRow& b) {
    return a.name < b.name;
  })) << pane;
  EXPECT_NE(rows[0].name, hot) << pane;

  // g twice: functions -> lines -> processes; the one process row names the pid.
  ASSERT_TRUE(tmux.run({"send-keys", "-t", "top", "g", "g"}).ok());
  pane = tmux.wait_for([](const std::string& text) { return contains(text, "processes by"); });
  save_artifact("top_screen_processes.txt", pane);
  rows = rows_of(pane);
  ASSERT_EQ(rows.size(), 1u) << pane;
  EXPECT_NE(rows[0].line.find(fmt::format("({})", pid)), std::string::npos) << pane;

  // f with a pid no process can have: no rows.
  ASSERT_TRUE(tmux.run({"send-keys", "-t", "top", "f", "4194305", "Enter"}).ok());
  pane = tmux.wait_for([](const std::string& text) { return contains(text, "filter: 4194305"); });
  save_artifact("top_screen_filtered.txt", pane);
  EXPECT_TRUE(contains(pane, "filter: 4194305")) << pane;
  EXPECT_TRUE(rows_of(pane).empty()) << pane;
  EXPECT_TRUE(contains(pane, "(no samples in the filter)")) << pane;

  // q: krait exits 0 and its window closes with it.
  ASSERT_TRUE(tmux.run({"send-keys", "-t", "top", "q"}).ok());
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  std::string status;
  while (status.empty() && std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(exit_file);
    std::getline(in, status);
    if (status.empty())
      std::this_thread::sleep_for(20ms);  // polling period
  }
  std::ifstream err(dir.path() + "/stderr");
  std::stringstream err_text;
  err_text << err.rdbuf();
  EXPECT_EQ(status, "0") << err_text.str();
  EXPECT_FALSE(contains(err_text.str(), "error")) << err_text.str();
  // The session ends with its command: nothing of krait's is left on the
  // terminal.
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    gone = !tmux.run({"has-session", "-t", "top"}).ok();
    if (!gone)
      std::this_thread::sleep_for(20ms);  // polling period
  }
  EXPECT_TRUE(gone);
}

}  // namespace
}  // namespace krait::test
