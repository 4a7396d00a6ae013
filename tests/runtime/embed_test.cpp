// Interpreters embedded in programs that are not python: krait finds the
// libpython they map and profiles the native threads that run Python. The
// host built here links pyenv's 3.12.1; Debian's gdb links Debian's
// stripped libpython3.11 and runs Python commands on its main thread.
#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/krait_harness.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

TEST(Embedded, HostThatIsNotPythonIsFoundAndEachThreadProfiled) {
  require_root();
  if (std::string(KRAIT_EMBED_HOST).empty())
    FAIL() << "the embedding host was not built: it needs pyenv's 3.12.1 ("
           << KRAIT_EMBED_PYTHONHOME
           << ") with its headers and libpython; install it and re-run cmake";
  SpawnOptions opts;
  opts.argv = {KRAIT_EMBED_HOST, workload_path("embedded_lane.py")};
  opts.env = {{"PYTHONHOME", std::string(KRAIT_EMBED_PYTHONHOME)}, {"PYTHONPATH", std::nullopt}};
  auto host = ChildProcess::spawn(opts);
  ASSERT_TRUE(host.ok()) << host.error().message;
  std::vector<Truth> lanes;
  for (int i = 0; i < 2; ++i) {
    auto line = host->read_line(60s);
    ASSERT_TRUE(line.ok()) << line.error().message;
    auto truth = parse_truth(*line);
    ASSERT_TRUE(truth.ok()) << truth.error().message << ": " << *line;
    lanes.push_back(std::move(*truth));
  }
  ASSERT_EQ(lanes[0].pid, host->pid());

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(host->pid()), "-d", "4"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  const auto mine = samples_of_pid(r->samples, host->pid());
  for (const auto& lane : lanes) {
    const ThreadTruth& t = lane.threads.at(0);
    SCOPED_TRACE("lane thread " + t.name);
    const auto thread = samples_of_tid(mine, t.tid);
    // Two threads share one interpreter lock: about half of ~400 samples each.
    ASSERT_GE(total(thread), 60) << r->stderr_text;
    EXPECT_GE(count_exact(thread, t.stack), 0.95 * total(thread))
        << describe_mismatches(thread, t.stack);
    for (const auto& s : thread) {
      EXPECT_EQ(s.labels.at("thread_name"), t.name);
      EXPECT_EQ(s.labels.at("process_name"), "krait_embed_hos");  // comm: 15 characters
      EXPECT_EQ(s.labels.at("python_version"), lane.python);
    }
  }
  const JsonValue* p = stats_process(r->stats, host->pid());
  ASSERT_NE(p, nullptr);
  EXPECT_NE(p->find("image")->string.find("libpython3.12"), std::string::npos);
}

TEST(Embedded, GdbsPythonIsProfiledExactly) {
  require_root();
  constexpr const char* kGdb = "/usr/bin/gdb";
  ASSERT_TRUE(std::filesystem::exists(kGdb)) << kGdb << " is missing: run scripts/setup --tests";
  SpawnOptions opts;
  // gdb's own Python (no PYTHONHOME or PYTHONPATH of ours) runs chain.py as
  // __main__ from a `python` command.
  opts.argv = {kGdb, "-nx", "-batch", "-ex",
               fmt::format("python import runpy, sys; sys.argv = ['chain.py']; "
                           "runpy.run_path('{}', run_name='__main__')",
                           workload_path("chain.py"))};
  opts.env = {{"PYTHONHOME", std::nullopt}, {"PYTHONPATH", std::nullopt}};
  auto gdb = ChildProcess::spawn(opts);
  ASSERT_TRUE(gdb.ok()) << gdb.error().message;
  auto line = gdb->read_line(60s);
  ASSERT_TRUE(line.ok()) << line.error().message << "\n" << gdb->stderr_text();
  auto truth = parse_truth(*line);
  ASSERT_TRUE(truth.ok()) << truth.error().message << ": " << *line;
  ASSERT_EQ(truth->pid, gdb->pid());
  const ThreadTruth& t = truth->threads.at(0);

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(gdb->pid()), "-d", "3"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  const auto thread = samples_of_tid(samples_of_pid(r->samples, gdb->pid()), t.tid);
  // ~300 samples of one thread burning a core at 99 Hz.
  ASSERT_GE(total(thread), 150) << r->stderr_text;
  EXPECT_GE(count_exact(thread, t.stack), 0.95 * total(thread))
      << describe_mismatches(thread, t.stack);
  for (const auto& s : thread) {
    EXPECT_EQ(s.labels.at("process_name"), "gdb");
    EXPECT_EQ(s.labels.at("python_version"), truth->python);
  }
  const JsonValue* p = stats_process(r->stats, gdb->pid());
  ASSERT_NE(p, nullptr);
  EXPECT_NE(p->find("image")->string.find("libpython3.11"), std::string::npos);
}

}  // namespace
}  // namespace krait::test
