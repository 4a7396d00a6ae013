// What a user sees when something is wrong, and `krait info`.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <sstream>
#include <string>
#include <vector>

#include "export/pprof.h"
#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

size_t lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(Cli, MissingPidIsAOneLineErrorAndAFailure) {
  require_root();
  auto r = run_krait({"record", "-p", "999999", "-d", "1"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("no process with pid 999999"), std::string::npos) << r->stderr_text;
}

TEST(Cli, NonPythonPidIsRefusedByName) {
  require_root();
  SpawnOptions sleeper;
  sleeper.argv = {"/bin/sleep", "60"};
  auto child = ChildProcess::spawn(sleeper);
  ASSERT_TRUE(child.ok()) << child.error().message;
  auto r = run_krait({"record", "-p", std::to_string(child->pid()), "-d", "1"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("is not a Python process"), std::string::npos) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("sleep"), std::string::npos) << r->stderr_text;
}

TEST(Cli, WithoutCapabilitiesTheErrorNamesThem) {
  require_root();
  // Root without any capability, as in a locked-down container.
  auto r = run_krait(
      {"record", "-d", "1"}, 60s,
      {"/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  for (const char* cap : {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"})
    EXPECT_NE(r->stderr_text.find(cap), std::string::npos) << r->stderr_text;
}

// The names listed under "Subcommands:" in a help text.
std::vector<std::string> subcommands_in(const std::string& help) {
  std::vector<std::string> names;
  const size_t start = help.find("\nSubcommands:\n");
  if (start == std::string::npos)
    return names;
  std::istringstream in(help.substr(start + 14));
  std::string line;
  while (std::getline(in, line) && line.starts_with("  ")) {
    std::istringstream words(line);
    std::string name;
    words >> name;
    names.push_back(name);
  }
  return names;
}

// Every command's --help, found by following "Subcommands:" from the top,
// so a new command is checked without being listed here.
TEST(Cli, EveryHelpReadsWithoutParserJargon) {
  std::vector<std::vector<std::string>> pending = {{}};
  size_t seen = 0;
  while (!pending.empty()) {
    std::vector<std::string> command = pending.back();
    pending.pop_back();
    std::vector<std::string> args = command;
    args.push_back("--help");
    auto r = run_krait(args);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(r->status.success()) << r->stderr_text;
    const std::string& help = r->stdout_text;
    ++seen;
    // CLI11's own renderings of an enum, a default and a bare type: what
    // a user should never have to decode.
    for (const char* jargon :
         {"ENUM", "{false}", "{true}", "} OR {", "->", "TEXT", " INT", "UINT", "FLOAT", "BOOLEAN"})
      EXPECT_EQ(help.find(jargon), std::string::npos)
          << "krait " << fmt::format("{}", fmt::join(command, " ")) << " --help shows \"" << jargon
          << "\":\n"
          << help;
    for (const std::string& sub : subcommands_in(help)) {
      std::vector<std::string> next = command;
      next.push_back(sub);
      pending.push_back(std::move(next));
    }
  }
  EXPECT_GE(seen, 6u) << "record, info, offsets, offsets generate and daemon at least";
}

// The sample counts of the live status lines ("krait: recording 1/3 s, 88
// samples, ...") in what a terminal received.
std::vector<int64_t> status_sample_counts(const std::string& screen) {
  std::vector<int64_t> counts;
  const std::string mark = "krait: recording ";
  for (size_t at = screen.find(mark); at != std::string::npos; at = screen.find(mark, at + 1)) {
    const size_t comma = screen.find(", ", at);
    if (comma == std::string::npos)
      break;
    std::string digits;
    for (size_t i = comma + 2; i < screen.size() && (std::isdigit(screen[i]) || screen[i] == ',');
         ++i)
      if (screen[i] != ',')
        digits += screen[i];
    if (!digits.empty())
      counts.push_back(std::stoll(digits));
  }
  return counts;
}

// On a terminal, record keeps one live line whose counts grow and never
// pass what it finally writes; into a pipe, it writes no such line.
TEST(Cli, RecordShowsALiveStatusOnlyOnATerminal) {
  require_root();
  auto interps = load_manifest();
  ASSERT_FALSE(interps.empty());
  auto w = start_workload(interps.front(), "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  const std::string out = dir.path() + "/p.pb.gz";
  const std::vector<std::string> args = {"record", "-d", "3", "-p", std::to_string(w->truth.pid),
                                         "-o",     out};
  // Python's pty.spawn gives krait a terminal and copies the screen to stdout.
  auto tty = run_krait(args, 60s,
                       {"/usr/bin/python3", "-c",
                        "import os, pty, sys; "
                        "sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))"});
  ASSERT_TRUE(tty.ok()) << tty.error().message;
  ASSERT_TRUE(tty->status.success()) << tty->stdout_text << tty->stderr_text;
  const std::vector<int64_t> counts = status_sample_counts(tty->stdout_text);
  ASSERT_GE(counts.size(), 2u) << tty->stdout_text;
  EXPECT_TRUE(std::is_sorted(counts.begin(), counts.end())) << tty->stdout_text;
  EXPECT_GT(counts.back(), 0) << tty->stdout_text;
  auto pprof = exporter::read_pprof_file(out);
  ASSERT_TRUE(pprof.ok()) << pprof.error().message;
  EXPECT_LE(counts.back(), total(decode_samples(*pprof))) << tty->stdout_text;

  auto piped = run_krait(args);
  ASSERT_TRUE(piped.ok()) << piped.error().message;
  ASSERT_TRUE(piped->status.success()) << piped->stderr_text;
  EXPECT_TRUE(status_sample_counts(piped->stderr_text).empty()) << piped->stderr_text;
  EXPECT_EQ(piped->stderr_text.find('\r'), std::string::npos) << piped->stderr_text;
}

TEST(Cli, InfoJsonListsARunningInterpreter) {
  require_root();
  auto interps = load_manifest();
  ASSERT_FALSE(interps.empty());
  auto w = start_workload(interps.front(), "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto r = run_krait({"info", "--json", "-p", std::to_string(w->truth.pid)});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->status.success()) << r->stderr_text;
  auto json = parse_json(r->stdout_text);
  ASSERT_TRUE(json.ok()) << json.error().message << "\n" << r->stdout_text;
  const JsonValue* procs = json->find("processes");
  ASSERT_TRUE(procs && procs->is_array());
  ASSERT_EQ(procs->items.size(), 1u);
  const JsonValue& p = procs->items[0];
  EXPECT_EQ(p.find("pid")->integer, w->truth.pid);
  EXPECT_EQ(p.find("status")->string, "profilable") << p.find("reason")->string;
  EXPECT_EQ(p.find("python_version")->string, w->truth.python);
  EXPECT_TRUE(json->find("capabilities")->find("can_record")->boolean);
}

}  // namespace
}  // namespace krait::test
