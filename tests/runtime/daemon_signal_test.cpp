// `krait daemon` and its signals (daemon_harness.h: isolation and helpers):
// SIGTERM with the server up and down, the health line, SIGHUP with a new
// configuration.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "export/pprof.h"
#include "runtime/daemon_harness.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// Flags for a daemon with one long interval: SIGTERM comes in its middle.
std::vector<std::string> long_interval_args(const IngestServer& server,
                                            const std::string& selector) {
  return {"--pyroscope-url", server.url(), "--upload-interval", "60", "--cmdline-regex", selector};
}

TEST(Daemon, SigtermDeliversThePartialIntervalAndExitsZero) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  auto daemon = Daemon::start(long_interval_args(*r.server, r.staged.selector()));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const double cpu_at_start = cpu_seconds(r.chain->truth.pid).value();
  let_time_pass(3s);
  const double cpu_used = cpu_seconds(r.chain->truth.pid).value() - cpu_at_start;
  const int64_t signalled_ns = unix_now_ns();
  double exit_seconds = 0;
  auto status = daemon->stop(SIGTERM, &exit_seconds);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();
  EXPECT_LT(exit_seconds, 3.0) << "SIGTERM to exit, with the server up";

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto profiles = of_application(*received, "chain.py");
  ASSERT_FALSE(profiles.empty()) << "the interval SIGTERM ended was not delivered\n"
                                 << daemon->log();
  expect_tiling(profiles, "chain.py", 60 * kNs);
  // The last profile ends when the signal came: not before it, and not
  // after the server (on this host's clock) received the profile.
  EXPECT_GE(profiles.back()->until_ns, signalled_ns - 100'000'000);
  EXPECT_LE(profiles.back()->until_ns, profiles.back()->arrived_unix_ns);
  const int64_t samples = samples_of(profiles, r.chain->truth.pid);
  EXPECT_GE(static_cast<double>(samples), 0.8 * cpu_used * kRateHz)
      << samples << " samples for " << cpu_used << " s of CPU";
  const auto [matching, all] = truth_share(profiles, r.chain->truth);
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all));
  std::cout << fmt::format(
      "[ stats    ] SIGTERM to exit {:.2f} s; {} samples for {:.2f} s of CPU\n", exit_seconds,
      samples, cpu_used);
}

// The health line operators read: every --health-interval, the samples
// so far (growing while a process burns CPU), and how often frames were
// named from the cache.
TEST(Daemon, HealthLineReportsSamplesAndTheFrameCache) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  auto args = long_interval_args(*r.server, r.staged.selector());
  args.insert(args.end(), {"--health-interval", "1"});
  auto daemon = Daemon::start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  let_time_pass(4s);
  auto status = daemon->stop(SIGTERM, nullptr);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();

  std::vector<std::pair<int64_t, double>> lines;  // samples, cached %
  std::istringstream log(daemon->log());
  for (std::string line; std::getline(log, line);) {
    const size_t at = line.find("health: ");
    if (at == std::string::npos)
      continue;
    int64_t processes = 0, samples = 0;
    double cached = -1;
    const std::string text = line.substr(at);
    ASSERT_EQ(std::sscanf(text.c_str(), "health: %" SCNd64 " Python processes profiled, %" SCNd64,
                          &processes, &samples),
              2)
        << line;
    const size_t names = text.find("frame names ");
    ASSERT_NE(names, std::string::npos) << line;
    ASSERT_EQ(std::sscanf(text.c_str() + names, "frame names %lf%%", &cached), 1) << line;
    EXPECT_GE(processes, 1) << line;
    lines.emplace_back(samples, cached);
  }
  ASSERT_GE(lines.size(), 2u) << daemon->log();
  EXPECT_GT(lines.back().first, lines.front().first) << "samples grow while chain.py runs";
  // chain.py spins in one stack: after the first samples every frame is
  // named from the cache.
  EXPECT_GT(lines.back().second, 50.0) << daemon->log();
  EXPECT_LE(lines.back().second, 100.0);
}

TEST(Daemon, SigtermWithTheServerDownExitsZeroAfterTheFlushDeadline) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  auto daemon = Daemon::start(long_interval_args(*r.server, r.staged.selector()));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  let_time_pass(2s);
  double exit_seconds = 0;
  auto status = daemon->stop(SIGTERM, &exit_seconds);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << daemon->log();
  // The flush gives the upload 5 s (docs/daemon.md), then the daemon goes.
  EXPECT_LT(exit_seconds, 7.0);
  EXPECT_NE(daemon->log().find("could not be uploaded before exiting"), std::string::npos)
      << daemon->log();
  std::cout << fmt::format("[ stats    ] SIGTERM to exit {:.2f} s with the server down\n",
                           exit_seconds);
}

// A configuration file for the SIGHUP tests; TOML literal strings need no
// escaping of the regex or the paths.
std::string config_text(const IngestServer& server, const std::string& selector,
                        const std::string& team, const std::string& directory) {
  std::string text = fmt::format(
      "[upload]\ninterval_s = {}\n\n[processes]\ncmdline_regex = ['{}']\n\n"
      "[pyroscope]\nurl = '{}'\n\n[labels]\nteam = '{}'\n",
      kInterval, selector, server.url(), team);
  if (!directory.empty())
    text += fmt::format("\n[directory]\npath = '{}'\n", directory);
  return text;
}

void replace_file(const std::string& path, const std::string& text) {
  std::ofstream(path + ".new") << text;
  fs::rename(path + ".new", path);
}

std::string label_of(const ReceivedProfile& p, const std::string& name) {
  auto it = p.labels.find(name);
  return it == p.labels.end() ? "" : it->second;
}

TEST(Daemon, SighupAddsAnOutputAndLabelsNewProcesses) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  const std::string config = r.out.file("krait.toml");
  replace_file(config, config_text(*r.server, r.staged.selector(), "before", ""));
  auto daemon = Daemon::start({"--config", config});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *r.server,
      [](const auto& p) {
        return std::any_of(p.begin(), p.end(),
                           [](const auto& x) { return label_of(x, "team") == "before"; });
      },
      20s))
      << daemon->log();

  replace_file(config, config_text(*r.server, r.staged.selector(), "after", r.dir));
  ASSERT_TRUE(daemon->signal(SIGHUP).ok());
  // The directory output appears...
  ASSERT_TRUE(wait_for_files(
      r.dir, [](const auto& cut) { return !cut.empty(); }, 20s))
      << daemon->log();
  // ... and a process started now carries the new label.
  const auto interpreters = load_manifest();
  const TestInterpreters py = test_interpreters(interpreters);
  REQUIRE_INTERPRETERS(py);
  auto newcomer = r.staged.start(*py.pyenv, "threads.py");
  ASSERT_TRUE(newcomer.ok()) << newcomer.error().message;
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "threads.py") >= 2; }, 20s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("configuration reloaded"), std::string::npos) << daemon->log();

  const auto profiles = r.server->profiles();
  size_t newcomer_profiles = 0;
  for (const auto& p : profiles) {
    if (p.application == "threads.py") {
      ++newcomer_profiles;
      EXPECT_EQ(label_of(p, "team"), "after");
    }
  }
  EXPECT_GE(newcomer_profiles, 2u) << "profiles of the process started after the reload";
  auto received = decode_received(profiles);
  ASSERT_TRUE(received.ok()) << received.error().message;
  // The reload did not disturb the intervals. The running process changed
  // series (its label) at the reload: each series tiles time, and the new
  // one starts in the interval where the old one ends (both have a part of
  // it) or right after it.
  std::map<std::string, std::vector<const Delivered*>> by_team;
  for (const Delivered* d : of_application(*received, "chain.py"))
    by_team[d->labels.count("team") ? d->labels.at("team") : ""].push_back(d);
  ASSERT_EQ(by_team.size(), 2u) << "chain.py profiles labelled other than before and after";
  const auto& before = by_team["before"];
  const auto& after = by_team["after"];
  expect_tiling(before, "chain.py, team=before");
  expect_tiling(after, "chain.py, team=after");
  ASSERT_FALSE(before.empty() || after.empty());
  EXPECT_TRUE(after.front()->from_ns == before.back()->from_ns ||
              after.front()->from_ns == before.back()->until_ns)
      << "before ends with [" << before.back()->from_ns << ", " << before.back()->until_ns
      << "), after starts with [" << after.front()->from_ns << ", " << after.front()->until_ns
      << ")";
  const auto got = received_seconds(*received, "chain.py");
  size_t files = 0;
  for (const CutInterval& c : cut_intervals(r.dir)) {
    if (c.application == "chain.py") {
      ++files;
      EXPECT_TRUE(got.contains({c.from_s, c.until_s})) << "file and upload disagree";
    }
  }
  // The directory output ran for the two intervals threads.py took at least.
  EXPECT_GE(files, 1u) << "no file of chain.py to compare with the uploads";
}

// docs/daemon.md: SIGHUP reloads "naming, labels"; a static label is a
// property of the configuration, so the processes already running carry
// the new one from the reload on.
TEST(Daemon, SighupRelabelsRunningProcesses) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  const std::string config = r.out.file("krait.toml");
  replace_file(config, config_text(*r.server, r.staged.selector(), "before", ""));
  auto daemon = Daemon::start({"--config", config});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "chain.py") >= 1; }, 20s))
      << daemon->log();
  replace_file(config, config_text(*r.server, r.staged.selector(), "after", r.dir));
  ASSERT_TRUE(daemon->signal(SIGHUP).ok());
  // Two whole intervals after the reload took effect (the directory output
  // is its witness).
  ASSERT_TRUE(r.wait_for_cut(2, 20s)) << daemon->log();
  ASSERT_TRUE(r.wait_for_delivery_of_cut(0, 20s)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  const auto cut = cut_intervals(r.dir);
  ASSERT_FALSE(cut.empty());
  size_t after_reload = 0;
  for (const auto& p : r.server->profiles()) {
    if (p.application != "chain.py")
      continue;
    auto pprof = exporter::decode_pprof(p.raw_pprof);
    ASSERT_TRUE(pprof.ok());
    // Profiles of intervals that began after the reload had taken effect.
    if (pprof->time_nanos() / kNs >= cut.front().until_s) {
      ++after_reload;
      EXPECT_EQ(label_of(p, "team"), "after") << "profile from " << pprof->time_nanos() / kNs
                                              << " still labelled '" << label_of(p, "team") << "'";
    }
  }
  // Every file after the first is such an interval, and was uploaded too
  // (at least one: two whole intervals were cut).
  const auto later_files =
      static_cast<size_t>(std::count_if(cut.begin(), cut.end(), [&](const CutInterval& c) {
        return c.application == "chain.py" && c.from_s >= cut.front().until_s;
      }));
  EXPECT_GE(later_files, 1u);
  EXPECT_GE(after_reload, later_files) << "profiles of intervals after the reload";
}

}  // namespace
}  // namespace krait::test
