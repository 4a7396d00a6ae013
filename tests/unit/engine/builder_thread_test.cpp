// The threads of a run, as `krait record` and `krait daemon` start them:
// reader threads pushing SampleJobs (Python and mixed) into the JobQueue
// while interval ends arrive, the BuilderThread turning them into
// profiles, and the daemon's interval sink handing each interval to the
// UploadQueue's worker. Every sample the queue accepted must come out
// exactly once, in its series. Labelled `threads`: the TSan tier runs these
// (docs/testing.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/job_queue.h"
#include "engine/stack_builder.h"
#include "export/upload_queue.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

namespace krait::engine {
namespace {

using namespace std::chrono_literals;

constexpr int kProducers = 4;
constexpr int kJobsPerProducer = 3000;
constexpr int kJobsWaitingForRoom = 20;
constexpr int kIntervals = 25;

// A function of this binary whose address a mixed sample points at.
__attribute__((noinline)) int sampled_function(int x) {
  return x * 3 + 1;
}

FrameRef python_frame(const std::string& name, int line) {
  auto f = std::make_shared<profile::Frame>();
  f->kind = profile::FrameKind::kPython;
  f->function = name;
  f->file = "/srv/app.py";
  f->line = line;
  return f;
}

// One producer's series and frames, and the jobs it builds.
struct Producer {
  SeriesRef series;
  LabelsRef labels;
  std::vector<PythonFrameRef> stack;
  std::shared_ptr<const unwind::ProcessModules> modules;  // mixed jobs when set

  SampleJob job(uint64_t ktime) const {
    SampleJob j;
    j.process_key = 1;
    j.ktime_ns = ktime;
    j.series = series;
    j.labels = labels;
    j.python = stack;
    j.python_process = true;
    // Every job is the size of a mixed one: a full queue refuses pushes
    // that do not fit, and bigger jobs alone would starve.
    j.user_stack.assign(256, 0);
    if (modules) {
      j.native = true;
      j.native_flags = KRAIT_NATIVE_CAPTURED;
      j.regs.ip = reinterpret_cast<uint64_t>(&sampled_function);
      j.regs.sp = 0x7ff0'0000'0000;
      j.modules = std::make_shared<ModulesSlot>();
      j.modules->set(modules);
    }
    return j;
  }
};

std::vector<Producer> make_producers(std::shared_ptr<const unwind::ProcessModules> modules) {
  std::vector<Producer> out;
  for (int p = 0; p < kProducers; ++p) {
    Producer prod;
    auto series = std::make_shared<Series>();
    series->application = "app" + std::to_string(p % 2);  // two producers per series
    prod.series = series;
    prod.labels = std::make_shared<profile::Labels>(
        profile::Labels{{"pid", std::to_string(100 + p)}, {"thread", "main"}});
    prod.stack = {{python_frame("leaf" + std::to_string(p), 10 + p), false},
                  {python_frame("<module>", 1), true}};
    if (p == kProducers - 1)
      prod.modules = modules;
    out.push_back(std::move(prod));
  }
  return out;
}

uint64_t total(const std::vector<SeriesProfile>& profiles, const std::string& application) {
  uint64_t n = 0;
  for (const auto& p : profiles)
    if (p.series && p.series->application == application)
      n += p.profile.total_count();
  return n;
}

// Producers push from their own threads while another thread ends
// intervals; the builder thread hands every interval to the sink. The
// samples the queue accepted all reach a profile of their series, once.
TEST(BuilderThread, ConcurrentProducersAndIntervalEndsLoseNoAcceptedSample) {
  unwind::ModuleCache cache;
  auto loaded = unwind::ProcessModules::load(static_cast<int>(::getpid()), cache);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  auto modules = std::make_shared<const unwind::ProcessModules>(std::move(*loaded));
  ASSERT_NE(modules->find(reinterpret_cast<uint64_t>(&sampled_function)), nullptr);

  auto builder = StackBuilder::create({.native = true, .kernel = false});
  ASSERT_TRUE(builder.ok()) << builder.error().message;
  std::mutex sunk_mutex;
  std::vector<SeriesProfile> sunk;
  int intervals_sunk = 0;
  (*builder)->set_interval_sink([&](std::vector<SeriesProfile> profiles) {
    std::lock_guard lock(sunk_mutex);
    ++intervals_sunk;
    for (auto& p : profiles)
      sunk.push_back(std::move(p));
  });

  // Small enough that some pushes are refused while the builder is busy.
  JobQueue queue(64u << 10);
  const auto producers = make_producers(modules);
  std::atomic<uint64_t> ktime{1};
  std::vector<uint64_t> accepted(kProducers, 0);
  std::atomic<int> intervals_accepted{0};
  {
    BuilderThread thread(**builder, queue);
    std::vector<std::thread> threads;
    for (int p = 0; p < kProducers; ++p)
      threads.emplace_back([&, p] {
        for (int i = 0; i < kJobsPerProducer; ++i) {
          bool ok = queue.push(producers[p].job(ktime.fetch_add(1)));
          // The first jobs of each producer wait for room, so that a
          // producer started last still has samples in the profile;
          // the rest are refused when the queue is full.
          while (!ok && i < kJobsWaitingForRoom) {
            std::this_thread::yield();
            ok = queue.push(producers[p].job(ktime.fetch_add(1)));
          }
          if (ok)
            ++accepted[p];
        }
      });
    // The reader also reloads a process's modules while the builder unwinds
    // with the ones it has (one ModuleCache, shared).
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto again = unwind::ProcessModules::load(static_cast<int>(::getpid()), cache);
        EXPECT_TRUE(again.ok());
      }
    });
    threads.emplace_back([&] {
      for (int i = 0; i < kIntervals; ++i) {
        SampleJob end;
        end.interval_end = true;
        end.ktime_ns = ktime.fetch_add(1);
        if (queue.push(std::move(end), /*control=*/true))
          ++intervals_accepted;
        std::this_thread::yield();
      }
    });
    for (auto& t : threads)
      t.join();
    thread.finish();
  }
  EXPECT_EQ(intervals_accepted.load(), kIntervals) << "control jobs ignore the byte cap";
  EXPECT_EQ(intervals_sunk, kIntervals);
  auto rest = (*builder)->take_profiles(static_cast<int64_t>(ktime.load()));
  for (auto& p : rest)
    sunk.push_back(std::move(p));

  const uint64_t app0 = accepted[0] + accepted[2], app1 = accepted[1] + accepted[3];
  EXPECT_GT(app0 + app1, 0u);
  EXPECT_EQ(total(sunk, "app0"), app0);
  EXPECT_EQ(total(sunk, "app1"), app1);
  EXPECT_EQ((*builder)->stats().samples, app0 + app1);
  const auto& unwinding = (*builder)->stats().unwinding;
  ASSERT_EQ(unwinding.count(1), 1u) << "no mixed job was unwound";
  EXPECT_EQ(unwinding.at(1).unwinds, accepted[kProducers - 1]);
}

// Counts the samples of every upload; the builder's sink writes them into
// a label so the test can check them without decoding pprof.
class CountingSender final : public exporter::Sender {
 public:
  exporter::SendOutcome send(const exporter::Upload& upload, std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    for (const auto& [name, value] : upload.labels)
      if (name == "samples") {
        uint64_t n = 0;
        std::from_chars(value.data(), value.data() + value.size(), n);
        by_app_[upload.application] += n;
      }
    return {};
  }
  std::map<std::string, uint64_t> by_app() const {
    std::lock_guard lock(mutex_);
    return by_app_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> by_app_;
};

// The daemon's path: interval ends cut the builder's profiles, the sink
// enqueues one upload per series while the upload worker sends; after the
// flush every accepted sample was delivered.
TEST(BuilderThread, IntervalsFlowIntoTheUploadQueueWhileProducersRun) {
  auto builder = StackBuilder::create({});
  ASSERT_TRUE(builder.ok()) << builder.error().message;
  CountingSender sender;
  exporter::UploadQueue uploads(sender, {.max_bytes = 64u << 20, .jitter_seed = 1});
  std::atomic<uint64_t> sunk_samples{0};
  (*builder)->set_interval_sink([&](std::vector<SeriesProfile> profiles) {
    for (const auto& p : profiles) {
      exporter::Upload u;
      u.application = p.series->application;
      u.labels = {{"samples", std::to_string(p.profile.total_count())}};
      u.from_unix_ns = p.start_ktime_ns;
      u.until_unix_ns = p.end_ktime_ns;
      u.id = exporter::make_upload_id();
      sunk_samples += p.profile.total_count();
      uploads.enqueue(std::move(u));
    }
  });

  JobQueue queue(1u << 20);
  const auto producers = make_producers(nullptr);
  std::atomic<uint64_t> ktime{1};
  std::vector<uint64_t> accepted(kProducers, 0);
  {
    BuilderThread thread(**builder, queue);
    std::vector<std::thread> threads;
    for (int p = 0; p < kProducers; ++p)
      threads.emplace_back([&, p] {
        for (int i = 0; i < kJobsPerProducer; ++i) {
          bool ok = queue.push(producers[p].job(ktime.fetch_add(1)));
          // The first jobs of each producer wait for room, so that a
          // producer started last still has samples in the profile;
          // the rest are refused when the queue is full.
          while (!ok && i < kJobsWaitingForRoom) {
            std::this_thread::yield();
            ok = queue.push(producers[p].job(ktime.fetch_add(1)));
          }
          if (ok)
            ++accepted[p];
        }
      });
    threads.emplace_back([&] {
      for (int i = 0; i < kIntervals; ++i) {
        SampleJob end;
        end.interval_end = true;
        end.ktime_ns = ktime.fetch_add(1);
        EXPECT_TRUE(queue.push(std::move(end), /*control=*/true));
        std::this_thread::yield();
      }
    });
    for (auto& t : threads)
      t.join();
    // The last interval end, after every sample, as shutdown does.
    SampleJob last;
    last.interval_end = true;
    last.ktime_ns = ktime.fetch_add(1);
    EXPECT_TRUE(queue.push(std::move(last), /*control=*/true));
    thread.finish();
  }
  EXPECT_TRUE(uploads.flush(exporter::steady_clock().now() + 30s));
  const uint64_t app0 = accepted[0] + accepted[2], app1 = accepted[1] + accepted[3];
  EXPECT_EQ(sunk_samples.load(), app0 + app1);
  const auto delivered = sender.by_app();
  EXPECT_EQ(delivered.count("app0") ? delivered.at("app0") : 0, app0);
  EXPECT_EQ(delivered.count("app1") ? delivered.at("app1") : 0, app1);
  const auto stats = uploads.stats();
  EXPECT_EQ(stats.dropped_by_cap + stats.rejected + stats.abandoned, 0u);
}

}  // namespace
}  // namespace krait::engine
