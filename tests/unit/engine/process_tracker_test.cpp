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
#include <mutex>
#include <thread>
#include <vector>

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
    return a;
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
};

class TrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto inspector = inspect::Inspector::create({});
    ASSERT_TRUE(inspector.ok());
    inspector_ = std::move(*inspector);
    attach_ = std::make_shared<StandInAttach>();
    TrackerOptions options;
    auto attach = attach_;
    options.attach_process = [attach](pid_t pid, python::ImageCache& images,
                                      const python::AttachOptions& o) {
      return (*attach)(pid, images, o);
    };
    options.on_process = [this](const ProcessEvent& e) { events_.push_back(e); };
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

}  // namespace
}  // namespace krait::engine
