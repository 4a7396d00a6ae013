// `krait daemon` when uploads fail (daemon_harness.h: isolation and helpers):
// refused connections, 500, 429 with Retry-After, a hanging server, a memory
// cap on the queue, a full and then read-only output directory.
//
// Oracles: the ingest server's record and the directory output (which
// intervals were cut while the server could not take them).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <regex>

#include "export/pprof.h"
#include "runtime/daemon_harness.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Failure paths. One workload (chain.py, Debian's static interpreter) and
// the directory output beside the upload: the files say which intervals
// were cut while the server could not take them.

TEST(Daemon, RefusedConnectionsDeliverLaterWithoutDuplicates) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  auto daemon = Daemon::start(r.args({"--pyroscope-connect-timeout", "1"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  // Three whole intervals cut while nobody listens.
  ASSERT_TRUE(r.wait_for_cut(3)) << daemon->log();
  const auto during_outage = cut_seconds(cut_intervals(r.dir), "chain.py");
  EXPECT_TRUE(r.server->requests().empty()) << "the server was refusing connections";
  ASSERT_TRUE(r.server->accept_normally().ok());
  const auto back = SteadyClock::now();

  // The backlog and two more intervals arrive.
  ASSERT_TRUE(r.wait_for_delivery_of_cut(2)) << daemon->log();
  const double backlog_seconds = seconds_since(back);
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("connection refused"), std::string::npos) << daemon->log();

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  const auto got = received_seconds(*received, "chain.py");
  for (const auto& interval : during_outage)
    EXPECT_TRUE(got.contains(interval))
        << "interval of the outage lost: " << describe_intervals({interval});
  std::cout << fmt::format(
      "[ stats    ] {} intervals cut during the outage, delivered within "
      "{:.1f} s of the server's return\n",
      during_outage.size(), backlog_seconds);
}

// The numbers of the daemon's last log line ("stopped; ... 3 dropped (queue
// full) ..."): the only place the daemon reports its upload counters.
std::optional<int64_t> logged_counter(const std::string& log, const std::string& what) {
  std::smatch m;
  const std::regex re("stopped;.* ([0-9]+) " + regex_escape(what));
  if (!std::regex_search(log, m, re))
    return std::nullopt;
  return std::stoll(m[1].str());
}

TEST(Daemon, QueueMemoryCapKeepsTheNewestProfiles) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  ASSERT_TRUE(r.server->refuse_connections().ok());
  // Room for two profiles of this workload (one stack: about 2 KiB each,
  // as the queue counts them).
  constexpr uint64_t kCap = 5 * 1024;
  auto daemon = Daemon::start(
      r.args({"--queue-max-bytes", std::to_string(kCap), "--pyroscope-connect-timeout", "1"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  ASSERT_TRUE(r.wait_for_cut(4)) << daemon->log();
  const auto outage = cut_intervals(r.dir);
  ASSERT_TRUE(r.server->accept_normally().ok());
  // Whatever survived the cap, then two intervals cut after the return.
  const int64_t back_s = unix_now_ns() / kNs;
  ASSERT_TRUE(wait_for(
      *r.server,
      [&](const auto& p) {
        size_t after = 0;
        for (const auto& profile : p)
          after += profile.application == "chain.py" && !profile.raw_pprof.empty() &&
                   exporter::decode_pprof(profile.raw_pprof)->time_nanos() / kNs >= back_s;
        return after >= 2;
      },
      60s))
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto got = received_seconds(*received, "chain.py");
  EXPECT_EQ(got.size(), of_application(*received, "chain.py").size()) << "duplicates";
  // Every interval cut was either delivered or dropped by the cap, and only
  // the oldest are dropped: profiles arrive in order and a drop always takes
  // the oldest waiting, so what arrived is the newest run of what was cut,
  // whenever the retries happened to come.
  const auto cut = cut_intervals(r.dir);
  std::vector<bool> arrived;
  for (const CutInterval& c : cut)
    arrived.push_back(got.contains({c.from_s, c.until_s}));
  const auto first_kept = std::find(arrived.begin(), arrived.end(), true);
  EXPECT_TRUE(std::all_of(first_kept, arrived.end(), [](bool a) { return a; }))
      << "an older profile survived a newer one; cut: "
      << describe_intervals(cut_seconds(cut, "chain.py"))
      << "\nreceived: " << describe_intervals(got);
  const auto cut_set = cut_seconds(cut, "chain.py");
  EXPECT_TRUE(std::includes(cut_set.begin(), cut_set.end(), got.begin(), got.end()))
      << "received an interval that was never cut";
  const auto dropped = static_cast<int64_t>(cut_set.size() - got.size());
  EXPECT_GE(dropped, 2) << "the cap of " << kCap << " bytes held " << outage.size()
                        << " profiles of the outage";
  EXPECT_EQ(logged_counter(daemon->log(), "dropped (queue full)"), dropped) << daemon->log();
  EXPECT_NE(daemon->log().find("upload queue full"), std::string::npos) << daemon->log();
  const auto outage_kept = std::count_if(outage.begin(), outage.end(), [&](const CutInterval& c) {
    return got.contains({c.from_s, c.until_s});
  });
  std::cout << fmt::format(
      "[ stats    ] {} profiles cut during the outage, {} of them delivered; {} cut in all, {} "
      "dropped\n",
      outage.size(), outage_kept, cut_set.size(), dropped);
}

TEST(Daemon, ServerErrorsAreRetried) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  r.server->fail_with_status(500, "internal error");
  auto daemon = Daemon::start(r.args());
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  // Three failed attempts (backoff 0.5-1 s, then 1-2 s), then the server heals.
  ASSERT_TRUE(r.server->wait_for_requests(3, 30s)) << daemon->log();
  // Each retry waited at least the shorter end of its backoff (the initial
  // 1 s, doubled per failure in a row, with jitter down to half), timed by
  // the server from its 500 to the next arrival.
  {
    const auto failed = r.server->requests();
    double floor_s = 0.5;
    std::string gaps;
    for (size_t i = 0; i + 1 < 3; ++i, floor_s *= 2) {
      ASSERT_EQ(failed[i].status, 500) << "request " << i;
      const double gap = seconds_between(failed[i].answered, failed[i + 1].arrived);
      EXPECT_GE(gap, floor_s) << "retry " << i + 1 << " came " << gap << " s after a 500";
      gaps += fmt::format(" {:.2f} s (>= {:.1f})", gap, floor_s);
    }
    std::cout << "[ stats    ] retries after a 500:" << gaps << "\n";
  }
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  const auto requests = r.server->requests();
  std::string statuses;
  for (const ReceivedRequest& q : requests)
    statuses += fmt::format("{} {} -> {}\n", q.method, q.target, q.status);
  EXPECT_GE(std::count_if(requests.begin(), requests.end(),
                          [](const ReceivedRequest& q) { return q.status == 500; }),
            3)
      << statuses;
  EXPECT_NE(daemon->log().find("HTTP 500"), std::string::npos) << daemon->log();
  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
}

TEST(Daemon, RetryAfterIsHonoured) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  // Longer than the first backoff (at most 1 s), so only Retry-After can
  // explain a wait this long.
  constexpr double kRetryAfter = 3;
  r.server->fail_with_status(429, "slow down", "3");
  auto daemon = Daemon::start(r.args());
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;

  ASSERT_TRUE(r.server->wait_for_requests(2, 30s)) << daemon->log();
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  // The first request was answered 429; the next came no sooner than the
  // server asked. The server timed both (the answer before the daemon can
  // have read it, the retry after the daemon sent it), so the gap can only
  // be longer than the daemon's wait, never shorter: no margin.
  const auto requests = r.server->requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[0].status, 429);
  const double gap = seconds_between(requests[0].answered, requests[1].arrived);
  EXPECT_GE(gap, kRetryAfter) << "the retry came " << gap << " s after a Retry-After of "
                              << kRetryAfter << " s";
  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  std::cout << fmt::format("[ stats    ] retry {:.2f} s after the 429\n", gap);
}

TEST(Daemon, HangingServerTimesOutAndSamplingGoesOn) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  r.server->hang();
  auto daemon = Daemon::start(r.args({"--pyroscope-timeout", "2"}));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const double cpu_at_start = cpu_seconds(r.chain->truth.pid).value();

  // A second request while the first hangs: the first timed out and was
  // retried. Meanwhile intervals keep being cut.
  ASSERT_TRUE(r.server->wait_for_hanging(1, 30s)) << daemon->log();
  ASSERT_TRUE(r.server->wait_for_requests(2, 30s)) << daemon->log();
  // Not sooner than the request's time limit (its clock starts when the
  // daemon connects, just before the first arrival; the backoff after the
  // timeout, at least 0.5 s, covers that).
  {
    const auto hung = r.server->requests();
    const double gap = seconds_between(hung[0].arrived, hung[1].arrived);
    EXPECT_GE(gap, 2.0) << "the second request came " << gap
                        << " s after the first, under --pyroscope-timeout 2";
  }
  ASSERT_TRUE(r.wait_for_cut(3)) << daemon->log();
  const size_t cut_while_hanging = cut_intervals(r.dir).size();
  ASSERT_TRUE(r.server->accept_normally().ok());
  ASSERT_TRUE(r.wait_for_delivery_of_cut(1)) << daemon->log();
  const double cpu_used = cpu_seconds(r.chain->truth.pid).value() - cpu_at_start;
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));
  EXPECT_NE(daemon->log().find("timed out"), std::string::npos) << daemon->log();

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  expect_every_cut_interval_delivered_once(r, *received);
  // Sampling did not wait for the network: the samples account for the
  // workload's CPU time, hang included.
  const int64_t samples = samples_of(of_application(*received, "chain.py"), r.chain->truth.pid);
  EXPECT_GE(static_cast<double>(samples), 0.8 * cpu_used * kRateHz)
      << samples << " samples for " << cpu_used << " s of CPU";
  std::cout << fmt::format(
      "[ stats    ] {} intervals cut while hanging; {} samples for {:.2f} s "
      "of CPU\n",
      cut_while_hanging, samples, cpu_used);
}

TEST(Daemon, FullOrReadOnlyDirectoryIsLoggedAndUploadsGoOn) {
  require_root();
  auto run = FailureRun::start();
  ASSERT_TRUE(run.ok()) << run.error().message;
  FailureRun& r = **run;
  // The daemon runs in a mount namespace of its own where its output
  // directory is a 64 KiB tmpfs, already full.
  const std::string tiny = r.out.file("tiny");
  fs::create_directory(tiny);
  const std::string setup = fmt::format(
      "mount -t tmpfs -o size=64k krait-full {0} || exit 97; "
      "head -c 65536 /dev/zero > {0}/filler 2>/dev/null; exec \"$0\" \"$@\"",
      tiny);
  auto daemon = Daemon::start(daemon_args(*r.server, r.staged.selector(), {"--output-dir", tiny}),
                              {"/usr/bin/unshare", "--mount", "--", "/bin/sh", "-c", setup});
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const std::string inside = fmt::format("/proc/{}/root{}", daemon->pid(), tiny);
  struct statvfs fsinfo {};
  ASSERT_EQ(::statvfs(inside.c_str(), &fsinfo), 0) << inside;
  ASSERT_EQ(fsinfo.f_bavail, 0u) << "the daemon's output tmpfs is not full";

  // Uploads go on while every file fails.
  ASSERT_TRUE(wait_for(
      *r.server, [](const auto& p) { return count_application(p, "chain.py") >= 3; }, 30s))
      << daemon->log();
  EXPECT_TRUE(cut_intervals(inside).empty());
  const std::string log = daemon->log();
  EXPECT_NE(log.find("profile directory: writing a profile into " + tiny), std::string::npos)
      << log;
  EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
  // Room again: the next interval is written.
  ASSERT_TRUE(fs::remove(inside + "/filler"));
  const int64_t freed_s = unix_now_ns() / kNs;
  ASSERT_TRUE(wait_for_files(
      inside, [](const auto& cut) { return !cut.empty(); }, 20s))
      << daemon->log();
  const auto written = cut_intervals(inside);
  // An unwritable directory (a read-only remount in the daemon's mount
  // namespace): logged the same way, no file, and two more uploads go out.
  auto remount =
      run_tool({"/usr/bin/nsenter", fmt::format("--mount=/proc/{}/ns/mnt", daemon->pid()), "--",
                "/bin/mount", "-o", "remount,ro", tiny},
               "util-linux");
  ASSERT_RAN(remount, "remount read-only");
  const size_t files_before = cut_intervals(inside).size();
  const size_t uploads_before = count_application(r.server->profiles(), "chain.py");
  ASSERT_TRUE(wait_for(
      *r.server,
      [&](const auto& p) { return count_application(p, "chain.py") >= uploads_before + 2; }, 30s))
      << daemon->log();
  EXPECT_NE(daemon->log().find("Read-only file system"), std::string::npos) << daemon->log();
  EXPECT_EQ(cut_intervals(inside).size(), files_before) << "a file written read-only";
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(r.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto profiles = of_application(*received, "chain.py");
  expect_tiling(profiles, "chain.py");
  const auto [matching, all] = truth_share(profiles, r.chain->truth);
  EXPECT_GE(static_cast<double>(matching), 0.9 * static_cast<double>(all));
  const auto got = received_seconds(*received, "chain.py");
  for (const CutInterval& c : written) {
    EXPECT_GE(c.until_s, freed_s) << "a file from before the disk had room";
    EXPECT_TRUE(got.contains({c.from_s, c.until_s})) << "file and upload disagree";
  }
}

}  // namespace
}  // namespace krait::test
