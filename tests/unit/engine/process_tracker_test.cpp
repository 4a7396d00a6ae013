// ProcessTracker's protocol with the sampler's `procs` map: what it writes,
// for which incarnation, whatever the order of exec, exit and the attach
// results. Real child processes give real start times; the attach itself
// is a stand-in, so a test controls when it ends.
#include "engine/process_tracker.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/job_queue.h"
#include "engine/pipeline.h"

namespace krait::engine {
namespace {

using namespace std::chrono_literals;

struct Write {
  uint32_t pid;
  krait_proc_info info;
};

class RecordingSink final : public ProcessMapSink {
 public:
  Result<void> set_process(uint32_t pid, const krait_proc_info& info) override {
    writes.push_back({pid, info});
    return {};
  }
  std::vector<Write> writes;
};

// A child that sleeps until killed: a live pid with a real start time.
class Child {
 public:
  Child() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::pause();
      ::_exit(0);
    }
  }
  ~Child() { stop(); }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// The identity the sampler would report for `pid`: its start time (from
// /proc, in ns) and an exec count.
krait_proc_identity identity_of(pid_t pid, uint64_t exec_id = 1) {
  const long hz = ::sysconf(_SC_CLK_TCK);
  return {read_start_ticks(pid) * (1'000'000'000ull / static_cast<uint64_t>(hz)), exec_id};
}

// An attach that succeeds once the test lets it, and counts its calls.
class StandInAttach {
 public:
  python::Attachment operator()(pid_t, python::ImageCache&, const python::AttachOptions&) {
    std::unique_lock lock(mutex_);
    ++calls_;
    cv_.wait(lock, [&] { return open_; });
    python::Attachment a;
    a.status = python::AttachStatus::kAttached;
    a.version = python::PyVersion{3, 12, 1};
    a.info.mode = KRAIT_PROC_PYTHON;
    a.info.interp_head_addr = 0x1234;
    if (shape_)
      shape_(a, calls_);
    return a;
  }
  // Changes the result of each later attach (`call` counts from 1).
  void shape(std::function<void(python::Attachment&, int call)> fn) {
    std::lock_guard lock(mutex_);
    shape_ = std::move(fn);
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  int calls_ = 0;
  std::function<void(python::Attachment&, int)> shape_;
};

class TrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto inspector = inspect::Inspector::create({});
    ASSERT_TRUE(inspector.ok());
    inspector_ = std::move(*inspector);
    attach_ = std::make_shared<StandInAttach>();
    make_tracker({});
  }
  // A tracker with the stand-in attach, the events recorded, and what
  // `more` adds to its options.
  void make_tracker(const std::function<void(TrackerOptions&)>& more) {
    TrackerOptions options;
    auto attach = attach_;
    options.attach_process = [attach](pid_t pid, python::ImageCache& images,
                                      const python::AttachOptions& o) {
      return (*attach)(pid, images, o);
    };
    options.on_process = [this](const ProcessEvent& e) { events_.push_back(e); };
    if (more)
      more(options);
    tracker_ = std::make_unique<ProcessTracker>(sink_, *inspector_, options);
  }
  void TearDown() override { attach_->open(); }
  void settle() {
    inspector_->drain(std::chrono::steady_clock::now() + 60s);
    inspector_->run_completions();
  }

  RecordingSink sink_;
  std::unique_ptr<inspect::Inspector> inspector_;
  std::shared_ptr<StandInAttach> attach_;
  std::unique_ptr<ProcessTracker> tracker_;
  std::vector<ProcessEvent> events_;
};

TEST_F(TrackerTest, AnAttachedProcessIsWrittenWithTheIdentityTheSamplerReported) {
  Child child;
  const krait_proc_identity id = identity_of(child.pid());
  attach_->open();
  tracker_->on_unknown(child.pid(), id);
  settle();
  ASSERT_EQ(sink_.writes.size(), 1u);
  EXPECT_EQ(sink_.writes[0].pid, static_cast<uint32_t>(child.pid()));
  EXPECT_EQ(sink_.writes[0].info.mode, static_cast<uint32_t>(KRAIT_PROC_PYTHON));
  EXPECT_EQ(sink_.writes[0].info.identity.start_ns, id.start_ns);
  EXPECT_EQ(sink_.writes[0].info.identity.exec_id, id.exec_id);
  EXPECT_NE(sink_.writes[0].info.generation, 0u);
}

// The bug the sampler's identity check and this rule close together: an
// attach that ends after its process exited wrote an entry no exit would
// ever remove, and the next process with that pid was walked with it.
TEST_F(TrackerTest, AnAttachThatEndsAfterItsProcessExitedWritesNothing) {
  Child child;
  tracker_->on_unknown(child.pid(), identity_of(child.pid()));
  while (attach_->calls() == 0)
    std::this_thread::yield();  // the attach is under way
  tracker_->on_exit(child.pid());
  attach_->open();
  settle();
  EXPECT_TRUE(sink_.writes.empty());
  EXPECT_EQ(tracker_->find(child.pid()), nullptr);
}

TEST_F(TrackerTest, AnAttachOfTheOldImageIsDroppedWhenTheProcessExecs) {
  Child child;
  const krait_proc_identity before = identity_of(child.pid(), 1);
  const krait_proc_identity after = identity_of(child.pid(), 2);
  tracker_->on_unknown(child.pid(), before);
  while (attach_->calls() == 0)
    std::this_thread::yield();
  tracker_->on_exec(child.pid(), after);
  attach_->open();
  settle();
  // Only the new image's attach is written, with its identity.
  ASSERT_EQ(sink_.writes.size(), 1u);
  EXPECT_EQ(sink_.writes[0].info.identity.exec_id, 2u);
  EXPECT_EQ(attach_->calls(), 2);
}

TEST_F(TrackerTest, AScannedProcessIsWrittenAtItsFirstSampleWithoutAttachingAgain) {
  Child child;
  attach_->open();
  tracker_->prepare(child.pid());
  settle();
  EXPECT_TRUE(sink_.writes.empty()) << "the sampler has no entry for it before it samples it";
  ASSERT_TRUE(tracker_->scan_result(child.pid()).has_value());
  EXPECT_EQ(*tracker_->scan_result(child.pid()), python::AttachStatus::kAttached);
  const krait_proc_identity id = identity_of(child.pid());
  tracker_->on_unknown(child.pid(), id);
  ASSERT_EQ(sink_.writes.size(), 1u);
  EXPECT_EQ(sink_.writes[0].info.identity.start_ns, id.start_ns);
  EXPECT_EQ(attach_->calls(), 1);
}

TEST_F(TrackerTest, ANewProcessWithAReusedPidIsAttachedAfresh) {
  Child child;
  attach_->open();
  const krait_proc_identity real = identity_of(child.pid());
  // First reported: an earlier process with this pid (an earlier start),
  // gone by the time the attach reads the pid.
  krait_proc_identity earlier = real;
  earlier.start_ns -= 5'000'000'000ull;
  tracker_->on_unknown(child.pid(), earlier);
  settle();
  EXPECT_TRUE(sink_.writes.empty()) << "what the attach read belongs to another process";
  EXPECT_EQ(tracker_->find(child.pid()), nullptr);
  // The process now there reports itself (its first sample).
  tracker_->on_unknown(child.pid(), real);
  settle();
  ASSERT_EQ(sink_.writes.size(), 1u);
  EXPECT_EQ(sink_.writes[0].info.identity.start_ns, real.start_ns);
  const TrackedProcess* p = tracker_->find(child.pid());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->state, ProcessState::kPython);
}

TEST_F(TrackerTest, AStalledAttachRefusesTheProcessWithTheReason) {
  Child child;
  inspect::Notice notice;
  tracker_->on_unknown(child.pid(), identity_of(child.pid()));
  const TrackedProcess* p = tracker_->find(child.pid());
  ASSERT_NE(p, nullptr);
  notice.key = p->key;
  notice.kind = inspect::Notice::Kind::kStalled;
  notice.reason = "reading it (attach) blocked";
  tracker_->on_notice(notice);
  EXPECT_EQ(p->state, ProcessState::kRefused);
  EXPECT_EQ(p->reason, notice.reason);
  ASSERT_EQ(sink_.writes.size(), 1u);
  EXPECT_EQ(sink_.writes[0].info.mode, static_cast<uint32_t>(KRAIT_PROC_REFUSED));
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, ProcessEvent::Kind::kRefused);
  EXPECT_EQ(events_[0].reason, notice.reason);
}

// What a live view follows: attached when the attach completes, exited
// at the exit; one event each, for the incarnation attached.
TEST_F(TrackerTest, AttachAndExitAreReportedOnceEach) {
  Child child;
  attach_->open();
  tracker_->on_unknown(child.pid(), identity_of(child.pid()));
  settle();
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, ProcessEvent::Kind::kAttached);
  EXPECT_EQ(events_[0].pid, child.pid());
  EXPECT_EQ(events_[0].python_version, "3.12.1");
  const uint64_t key = events_[0].key;
  EXPECT_EQ(tracker_->find(child.pid())->key, key);

  tracker_->on_exit(child.pid());
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[1].kind, ProcessEvent::Kind::kExited);
  EXPECT_EQ(events_[1].key, key);
  tracker_->on_exit(child.pid());
  EXPECT_EQ(events_.size(), 2u) << "an exit is reported once";
}

// Pid reuse: the sampler reports a pid the tracker holds for an earlier
// process, with another identity (the earlier one's exit event was lost,
// or is still on its way). The identities here differ by 1 ns, inside one
// clock tick: /proc cannot tell the two apart (each attach reads the same
// start time), only the sampler's identity does, which is what the tracker
// must go by.
krait_proc_identity next_incarnation(const krait_proc_identity& earlier) {
  krait_proc_identity later = earlier;
  later.start_ns += 1;
  return later;
}

TEST_F(TrackerTest, APidReusedWithoutAnExitIsANewIncarnationWithNothingOfTheOld) {
  std::vector<uint64_t> retired;
  int named = 0;
  make_tracker([&](TrackerOptions& o) {
    // Daemon naming: each attach gets labels of its own.
    o.describe = [&named](pid_t, const std::string&) {
      ProcessNaming n;
      n.series = std::make_shared<const Series>(Series{"app", {}});
      n.sample_labels = {{"incarnation", std::to_string(++named)}};
      return n;
    };
  });
  tracker_->on_retire([&](uint64_t key) { retired.push_back(key); });
  attach_->shape([](python::Attachment& a, int call) {
    a.info.interp_head_addr = 0x1000u * static_cast<uint64_t>(call);
  });
  Child child;
  attach_->open();
  const krait_proc_identity first = identity_of(child.pid());
  tracker_->on_unknown(child.pid(), first);
  settle();
  const TrackedProcess* old = tracker_->find(child.pid());
  ASSERT_NE(old, nullptr);
  ASSERT_EQ(old->state, ProcessState::kPython);
  const uint64_t old_key = old->key;
  const uint32_t old_generation = old->generation;
  ASSERT_EQ(sink_.writes.size(), 1u);

  const krait_proc_identity second = next_incarnation(first);
  tracker_->on_unknown(child.pid(), second);
  // Until its own attach ends, the new incarnation has no state at all: a
  // sample of it is not walked or named with the old one's.
  const TrackedProcess* fresh = tracker_->find(child.pid());
  ASSERT_NE(fresh, nullptr);
  EXPECT_NE(fresh->key, old_key);
  EXPECT_EQ(fresh->state, ProcessState::kPending);
  EXPECT_EQ(fresh->generation, 0u) << "no sample matches a generation before the attach";
  EXPECT_FALSE(fresh->attachment.version.has_value());
  EXPECT_EQ(fresh->memory, nullptr);
  EXPECT_EQ(fresh->series, nullptr);
  EXPECT_TRUE(fresh->extra_labels.empty());
  ASSERT_TRUE(fresh->identity.has_value());
  EXPECT_EQ(fresh->identity->start_ns, second.start_ns);
  EXPECT_EQ(sink_.writes.size(), 1u) << "the old incarnation's entry was written again";
  // The old incarnation is over: retired, reported exited, kept for the summary.
  EXPECT_EQ(tracker_->find_key(old_key), nullptr);
  EXPECT_EQ(tracker_->processes().at(old_key).state, ProcessState::kExited);
  EXPECT_EQ(retired, std::vector<uint64_t>{old_key});
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[1].kind, ProcessEvent::Kind::kExited);
  EXPECT_EQ(events_[1].key, old_key);

  settle();
  ASSERT_EQ(sink_.writes.size(), 2u);
  const krait_proc_info& written = sink_.writes[1].info;
  EXPECT_EQ(written.identity.start_ns, second.start_ns);
  EXPECT_EQ(written.interp_head_addr, 0x2000u) << "written from the new attach";
  EXPECT_NE(written.generation, 0u);
  EXPECT_NE(written.generation, old_generation) << "old samples would match the new process";
  fresh = tracker_->find(child.pid());
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->state, ProcessState::kPython);
  EXPECT_EQ(fresh->generation, written.generation);
  EXPECT_EQ(fresh->extra_labels, (profile::Labels{{"incarnation", "2"}}));
  EXPECT_EQ(tracker_->attached(), 2u);
  ASSERT_EQ(events_.size(), 3u);
  EXPECT_EQ(events_[2].kind, ProcessEvent::Kind::kAttached);
  EXPECT_EQ(events_[2].key, fresh->key);
}

// A refusal, and the count of failed validations that leads to it, belong
// to one incarnation: the process that takes the pid over starts from none.
TEST_F(TrackerTest, APidReusedAfterARefusalIsAttachedOnItsOwnMerits) {
  Child child;
  attach_->shape([](python::Attachment& a, int) {
    a.status = python::AttachStatus::kRefused;
    a.validation_failed = true;
    a.reason = "the layout did not validate";
    a.info = {};
  });
  attach_->open();
  const krait_proc_identity first = identity_of(child.pid());
  int attempts = 0;
  for (; attempts < 100; ++attempts) {
    const TrackedProcess* p = tracker_->find(child.pid());
    if (p && p->state == ProcessState::kRefused)
      break;
    tracker_->on_unknown(child.pid(), first);  // the next sample asks again
    settle();
  }
  ASSERT_EQ(tracker_->find(child.pid())->state, ProcessState::kRefused);
  ASSERT_GT(attempts, 1) << "a layout is refused only after failing more than once";
  ASSERT_FALSE(sink_.writes.empty());
  EXPECT_EQ(sink_.writes.back().info.mode, static_cast<uint32_t>(KRAIT_PROC_REFUSED));
  const size_t writes_before = sink_.writes.size();

  // The new process fails validation once: not yet refused, it has its own
  // count.
  const krait_proc_identity second = next_incarnation(first);
  tracker_->on_unknown(child.pid(), second);
  settle();
  const TrackedProcess* fresh = tracker_->find(child.pid());
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->state, ProcessState::kNotYet);
  EXPECT_EQ(fresh->failed_validations, 1);
  ASSERT_GT(sink_.writes.size(), writes_before);
  for (size_t i = writes_before; i < sink_.writes.size(); ++i) {
    EXPECT_EQ(sink_.writes[i].info.identity.start_ns, second.start_ns);
    EXPECT_NE(sink_.writes[i].info.mode, static_cast<uint32_t>(KRAIT_PROC_REFUSED));
  }

  // Its next attach validates: it is profiled.
  attach_->shape(nullptr);
  tracker_->on_unknown(child.pid(), second);
  settle();
  fresh = tracker_->find(child.pid());
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->state, ProcessState::kPython);
  EXPECT_EQ(sink_.writes.back().info.mode, static_cast<uint32_t>(KRAIT_PROC_PYTHON));
  EXPECT_EQ(sink_.writes.back().info.identity.start_ns, second.start_ns);
}

// The ring buffer can hand over a process's report after its exit event:
// the sample was taken on another CPU before the exit. The tracker must
// not bring the exited process back: nothing written for it, no second
// attach or exit reported, the exited entry kept as it was.
TEST_F(TrackerTest, AReportThatArrivesAfterTheExitDoesNotBringTheProcessBack) {
  Child child;
  attach_->open();
  const pid_t pid = child.pid();
  const krait_proc_identity id = identity_of(pid);
  tracker_->on_unknown(pid, id);
  settle();
  ASSERT_EQ(sink_.writes.size(), 1u);
  const uint64_t key = tracker_->find(pid)->key;
  tracker_->on_exit(pid);
  child.stop();  // exited and reaped: its pid has no process now

  tracker_->on_unknown(pid, id);
  settle();
  EXPECT_EQ(sink_.writes.size(), 1u) << "an entry was written for a process that exited";
  EXPECT_EQ(tracker_->find(pid), nullptr);
  ASSERT_EQ(tracker_->processes().size(), 1u);
  EXPECT_EQ(tracker_->processes().begin()->first, key);
  EXPECT_EQ(tracker_->processes().begin()->second.state, ProcessState::kExited);
  EXPECT_EQ(tracker_->attached(), 1u);
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[0].kind, ProcessEvent::Kind::kAttached);
  EXPECT_EQ(events_[1].kind, ProcessEvent::Kind::kExited);
}

// Samples that arrive after the exit event of their process, through the
// pipeline that asks the tracker about each: counted as stale, in no
// profile, not charged to the exited process nor, once its pid is taken
// over, to the new one.
TEST_F(TrackerTest, SamplesAfterTheExitOfTheirProcessAreStaleAndNeverTheNextOnes) {
  JobQueue queue(1u << 20);
  Pipeline pipeline(*tracker_, *inspector_, queue, PipelineOptions{256, false});
  Child child;
  attach_->open();
  const pid_t pid = child.pid();
  const krait_proc_identity first = identity_of(pid);
  krait_proc_event report{};
  report.hdr.type = KRAIT_EVENT_PROC_UNKNOWN;
  report.hdr.pid = static_cast<uint32_t>(pid);
  report.identity = first;
  pipeline.on_unknown_process(report);
  settle();
  const TrackedProcess* p = tracker_->find(pid);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(p->state, ProcessState::kPython);
  const uint64_t old_key = p->key;
  const uint32_t old_generation = p->generation;
  auto sample_of = [pid](uint32_t generation) {
    krait_sample s{};
    s.hdr.type = KRAIT_EVENT_SAMPLE;
    s.hdr.pid = static_cast<uint32_t>(pid);
    s.hdr.tid = static_cast<uint32_t>(pid);
    s.proc_generation = generation;
    s.py_status = KRAIT_PY_OK;
    return s;
  };
  const krait_sample before_exit = sample_of(old_generation);
  pipeline.on_sample({before_exit, {}});
  ASSERT_EQ(pipeline.process_stats(old_key).samples, 1u) << "a sample of the live process counts";
  ASSERT_EQ(pipeline.stats().stale_samples, 0u);

  krait_proc_event exit{};
  exit.hdr.type = KRAIT_EVENT_EXIT;
  exit.hdr.pid = static_cast<uint32_t>(pid);
  pipeline.on_exit(exit);
  const krait_sample late = sample_of(old_generation);
  pipeline.on_sample({late, {}});
  EXPECT_EQ(pipeline.stats().stale_samples, 1u);
  EXPECT_EQ(pipeline.process_stats(old_key).samples, 1u);

  // The pid is taken over (the same pid: see next_incarnation) and the new
  // process attached; a late sample of the old one still counts as stale.
  report.identity = next_incarnation(first);
  pipeline.on_unknown_process(report);
  settle();
  const TrackedProcess* fresh = tracker_->find(pid);
  ASSERT_NE(fresh, nullptr);
  ASSERT_EQ(fresh->state, ProcessState::kPython);
  ASSERT_NE(fresh->key, old_key);
  pipeline.on_sample({late, {}});
  EXPECT_EQ(pipeline.stats().stale_samples, 2u);
  EXPECT_EQ(pipeline.process_stats(fresh->key).samples, 0u);
  EXPECT_EQ(pipeline.process_stats(old_key).samples, 1u);
  const krait_sample current = sample_of(fresh->generation);
  pipeline.on_sample({current, {}});
  EXPECT_EQ(pipeline.process_stats(fresh->key).samples, 1u);
  EXPECT_EQ(pipeline.stats().stale_samples, 2u);
  EXPECT_FALSE(queue.try_pop().has_value()) << "no stack of these samples was built";
}

}  // namespace
}  // namespace krait::engine
