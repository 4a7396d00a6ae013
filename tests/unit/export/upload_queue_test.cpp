// UploadQueue with a scripted Sender and a manual clock (backoff, caps,
// flush), then with the real PyroscopeSender against the ingest stand-in
// going down, failing, hanging and coming back.
#include "export/upload_queue.h"

#include <gtest/gtest.h>

#include <deque>
#include <future>
#include <set>

#include "export/pyroscope.h"
#include "support/ingest_server.h"
#include "upload_support.h"

namespace krait::test {
namespace {

using exporter::ManualClock;
using exporter::SendOutcome;
using exporter::SendStatus;
using exporter::Upload;
using exporter::UploadQueue;
using exporter::UploadQueueOptions;
using exporter::UploadStats;
using namespace std::chrono_literals;

constexpr auto kWait = 10s;  // wall-clock guard for waits that should end at once

// Answers from a script (then "delivered"), records every call, and can be
// held inside send() to model a slow request.
class FakeSender final : public exporter::Sender {
 public:
  void script(std::vector<SendOutcome> outcomes) {
    std::lock_guard guard(mutex_);
    script_.assign(outcomes.begin(), outcomes.end());
  }
  void hold() {
    std::lock_guard guard(mutex_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard guard(mutex_);
      held_ = false;
    }
    changed_.notify_all();
  }
  SendOutcome send(const Upload& upload, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mutex_);
    calls_.push_back(upload.id);
    timeouts_.push_back(timeout);
    changed_.notify_all();
    changed_.wait(lock, [&] { return !held_; });
    SendOutcome outcome;
    if (!script_.empty()) {
      outcome = script_.front();
      script_.pop_front();
    }
    if (outcome.status == SendStatus::kDelivered)
      delivered_.push_back(upload.id);
    return outcome;
  }
  bool wait_for_calls(size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kWait, [&] { return calls_.size() >= count; });
  }
  std::vector<std::string> calls() const {
    std::lock_guard guard(mutex_);
    return calls_;
  }
  std::vector<std::string> delivered() const {
    std::lock_guard guard(mutex_);
    return delivered_;
  }
  std::vector<std::chrono::milliseconds> timeouts() const {
    std::lock_guard guard(mutex_);
    return timeouts_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<SendOutcome> script_;
  bool held_ = false;
  std::vector<std::string> calls_, delivered_;
  std::vector<std::chrono::milliseconds> timeouts_;
};

SendOutcome retry(std::string message = "HTTP 503",
                  std::optional<std::chrono::milliseconds> retry_after = std::nullopt) {
  return {SendStatus::kRetry, 503, retry_after, std::move(message)};
}

UploadQueueOptions small_options(uint64_t max_bytes = 64 << 20) {
  UploadQueueOptions options;
  options.max_bytes = max_bytes;
  options.initial_backoff = 1s;
  options.max_backoff = 8s;
  options.jitter_seed = 42;
  return options;
}

std::vector<std::string> ids_of(const std::vector<Upload>& uploads) {
  std::vector<std::string> ids;
  for (const auto& u : uploads)
    ids.push_back(u.id);
  return ids;
}

TEST(UploadQueueTest, DeliversInOrder) {
  FakeSender sender;
  ManualClock clock;
  UploadQueue queue(sender, small_options(), clock);
  std::vector<Upload> uploads = {make_upload("a"), make_upload("b"), make_upload("c")};
  for (const auto& u : uploads)
    queue.enqueue(u);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 3; }, kWait));
  EXPECT_EQ(sender.calls(), ids_of(uploads));
  const UploadStats stats = queue.stats();
  EXPECT_EQ(stats.enqueued, 3u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.queued_bytes, 0u);
  EXPECT_EQ(stats.retried + stats.rejected + stats.dropped_by_cap, 0u);
}

TEST(UploadQueueTest, RetriesWithExponentialBackoffAndJitter) {
  FakeSender sender;
  sender.script({retry(), retry(), retry(), retry(), retry()});
  ManualClock clock;
  UploadQueue queue(sender, small_options(), clock);
  const Upload upload = make_upload("a");
  queue.enqueue(upload);
  for (uint64_t failure = 1; failure <= 5; ++failure) {
    ASSERT_TRUE(queue.wait_for(
        [&](const UploadStats& s) { return s.retried == failure && s.next_attempt; }, kWait))
        << "failure " << failure;
    const auto delay = *queue.stats().next_attempt - clock.now();
    const auto base = std::min<std::chrono::milliseconds>(8s, 1s * (1 << (failure - 1)));
    EXPECT_GE(delay, base / 2) << "failure " << failure;
    EXPECT_LE(delay, base) << "failure " << failure;
    EXPECT_EQ(queue.stats().last_error, "HTTP 503");
    clock.advance(delay);
  }
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 1; }, kWait));
  EXPECT_EQ(sender.calls(), std::vector<std::string>(6, upload.id));
  EXPECT_EQ(sender.delivered(), std::vector<std::string>{upload.id});
  EXPECT_FALSE(queue.stats().next_attempt.has_value());
}

TEST(UploadQueueTest, HonoursRetryAfterUpToItsCap) {
  FakeSender sender;
  sender.script({retry("429", 30s), retry("429", 10h)});
  ManualClock clock;
  auto options = small_options();
  options.max_retry_after = 5min;
  UploadQueue queue(sender, options, clock);
  queue.enqueue(make_upload("a"));
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried == 1 && s.next_attempt; }, kWait));
  EXPECT_EQ(*queue.stats().next_attempt - clock.now(), 30s);
  clock.advance(30s);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried == 2 && s.next_attempt; }, kWait));
  EXPECT_EQ(*queue.stats().next_attempt - clock.now(), 5min);
  clock.advance(5min);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 1; }, kWait));
}

TEST(UploadQueueTest, GivesUpOnRejectedItemsAndMovesOn) {
  FakeSender sender;
  sender.script({{SendStatus::kRejected, 400, std::nullopt, "HTTP 400: bad labels"}});
  ManualClock clock;
  UploadQueue queue(sender, small_options(), clock);
  const Upload bad = make_upload("bad"), good = make_upload("good");
  queue.enqueue(bad);
  queue.enqueue(good);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.sent == 1 && s.rejected == 1; }, kWait));
  EXPECT_EQ(sender.calls(), (std::vector<std::string>{bad.id, good.id}));
  EXPECT_EQ(queue.stats().retried, 0u);
  EXPECT_EQ(queue.stats().last_error, "HTTP 400: bad labels");
}

TEST(UploadQueueTest, DropsTheOldestWaitingItemsWhenFull) {
  FakeSender sender;
  sender.hold();
  ManualClock clock;
  std::vector<Upload> uploads;
  for (int i = 0; i < 7; ++i)
    uploads.push_back(make_upload("app"));
  const uint64_t item = uploads[0].size_bytes();
  ASSERT_EQ(uploads[6].size_bytes(), item);
  UploadQueue queue(sender, small_options(item * 3 + item / 2), clock);
  queue.enqueue(uploads[0]);
  ASSERT_TRUE(sender.wait_for_calls(1));  // uploads[0] is in flight, outside the budget
  for (int i = 1; i < 7; ++i) {
    queue.enqueue(uploads[i]);
    EXPECT_LE(queue.stats().queued_bytes, item * 3 + item / 2);
  }
  EXPECT_EQ(queue.stats().dropped_by_cap, 3u);
  EXPECT_EQ(queue.stats().queued, 4u);
  sender.release();
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.queued == 0; }, kWait));
  EXPECT_EQ(sender.delivered(),
            (std::vector<std::string>{uploads[0].id, uploads[4].id, uploads[5].id, uploads[6].id}));
  EXPECT_EQ(queue.stats().sent, 4u);
}

TEST(UploadQueueTest, AFailedOldestItemIsTheOneDroppedWhenFull) {
  FakeSender sender;
  sender.script({retry("connection refused")});
  sender.hold();
  ManualClock clock;
  std::vector<Upload> uploads;
  for (int i = 0; i < 4; ++i)
    uploads.push_back(make_upload("app"));
  const uint64_t item = uploads[0].size_bytes();
  UploadQueue queue(sender, small_options(item * 3), clock);
  queue.enqueue(uploads[0]);
  ASSERT_TRUE(sender.wait_for_calls(1));
  for (int i = 1; i < 4; ++i)
    queue.enqueue(uploads[i]);
  EXPECT_EQ(queue.stats().dropped_by_cap, 0u);
  sender.release();
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.retried == 1; }, kWait));
  EXPECT_EQ(queue.stats().dropped_by_cap, 1u);
  clock.advance(8s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.queued == 0; }, kWait));
  EXPECT_EQ(sender.delivered(),
            (std::vector<std::string>{uploads[1].id, uploads[2].id, uploads[3].id}));
}

TEST(UploadQueueTest, DropsAnItemLargerThanTheWholeCap) {
  FakeSender sender;
  ManualClock clock;
  const Upload upload = make_upload("huge");
  UploadQueue queue(sender, small_options(upload.size_bytes() - 1), clock);
  queue.enqueue(upload);
  EXPECT_EQ(queue.stats().dropped_by_cap, 1u);
  EXPECT_EQ(queue.stats().queued, 0u);
  EXPECT_TRUE(queue.flush(clock.now()));
  EXPECT_TRUE(sender.calls().empty());
}

TEST(UploadQueueTest, EnqueueDoesNotWaitForASendInProgress) {
  FakeSender sender;
  sender.hold();
  ManualClock clock;
  UploadQueue queue(sender, small_options(), clock);
  queue.enqueue(make_upload("first"));
  ASSERT_TRUE(sender.wait_for_calls(1));
  auto more = std::async(std::launch::async, [&] {
    for (int i = 0; i < 50; ++i)
      queue.enqueue(make_upload("more"));
  });
  EXPECT_EQ(more.wait_for(kWait), std::future_status::ready)
      << "enqueue() blocked while the sender was busy";
  EXPECT_EQ(queue.stats().queued, 51u);
  EXPECT_TRUE(queue.stats().sending);
  sender.release();
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 51; }, kWait));
}

TEST(UploadQueueTest, FlushDeliversWhatIsQueued) {
  FakeSender sender;
  ManualClock clock;
  UploadQueue queue(sender, small_options(), clock);
  sender.hold();
  for (int i = 0; i < 3; ++i)
    queue.enqueue(make_upload("a"));
  auto flushed = std::async(std::launch::async, [&] { return queue.flush(clock.now() + 10s); });
  sender.release();
  ASSERT_EQ(flushed.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(flushed.get());
  EXPECT_EQ(queue.stats().sent, 3u);
  EXPECT_EQ(queue.stats().abandoned, 0u);
  queue.enqueue(make_upload("late"));
  EXPECT_EQ(queue.stats().abandoned, 1u);
}

TEST(UploadQueueTest, FlushRetriesAtOnceInsteadOfWaitingOutTheBackoff) {
  FakeSender sender;
  sender.script({retry()});
  ManualClock clock;
  auto options = small_options();
  options.initial_backoff = 60s;
  UploadQueue queue(sender, options, clock);
  queue.enqueue(make_upload("a"));
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.retried == 1; }, kWait));
  EXPECT_TRUE(queue.flush(clock.now() + 5s));  // the clock never moves
  EXPECT_EQ(queue.stats().sent, 1u);
}

TEST(UploadQueueTest, FlushStopsAtTheDeadlineAndCountsWhatIsLeft) {
  FakeSender sender;
  std::vector<SendOutcome> failures(20, retry("connection refused"));
  sender.script(failures);
  ManualClock clock;
  auto options = small_options();
  options.send_timeout = 30s;
  UploadQueue queue(sender, options, clock);
  queue.enqueue(make_upload("a"));
  queue.enqueue(make_upload("b"));
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.retried == 1; }, kWait));
  const auto deadline = clock.now() + 5s;
  auto flushed = std::async(std::launch::async, [&] { return queue.flush(deadline); });
  // flush() retries at once, with the send timeout cut to the time left.
  ASSERT_TRUE(sender.wait_for_calls(2));
  EXPECT_LE(sender.timeouts().back(), 5s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.retried == 2; }, kWait));
  clock.advance(6s);
  ASSERT_EQ(flushed.wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(flushed.get());
  const UploadStats stats = queue.stats();
  EXPECT_EQ(stats.sent, 0u);
  EXPECT_EQ(stats.abandoned, 2u);
  EXPECT_EQ(stats.last_error, "connection refused");
}

// The real sender and the ingest stand-in, with the queue's clock in the
// test's hands: every retry happens when the test advances time.
struct Delivery {
  std::unique_ptr<IngestServer> server;
  std::unique_ptr<exporter::PyroscopeSender> sender;
};

Delivery start_delivery(exporter::PyroscopeProtocol protocol, std::chrono::milliseconds timeout) {
  Delivery d;
  auto server = IngestServer::start();
  EXPECT_TRUE(server.ok()) << (server.ok() ? "" : server.error().message);
  if (!server.ok())
    return d;
  d.server = std::move(*server);
  exporter::PyroscopeOptions options;
  options.url = d.server->url();
  options.protocol = protocol;
  options.timeout = timeout;
  auto sender = exporter::PyroscopeSender::create(options);
  EXPECT_TRUE(sender.ok()) << (sender.ok() ? "" : sender.error().message);
  if (sender.ok())
    d.sender = std::move(*sender);
  return d;
}

// Profiles the server accepted, in arrival order, identified by the pprof
// bytes (unique per upload here) since the legacy API carries no id.
std::vector<std::string> arrived(const IngestServer& server) {
  std::vector<std::string> out;
  for (const auto& p : server.profiles())
    out.push_back(p.raw_pprof);
  return out;
}

std::vector<Upload> distinct_uploads(int count) {
  std::vector<Upload> uploads;
  for (int i = 0; i < count; ++i)
    uploads.push_back(make_upload(fmt::format("app{}", i)));
  return uploads;
}

std::vector<std::string> pprofs_of(const std::vector<Upload>& uploads) {
  std::vector<std::string> out;
  for (const auto& u : uploads)
    out.push_back(u.pprof);
  return out;
}

class QueueDeliveryTest : public ::testing::TestWithParam<exporter::PyroscopeProtocol> {};

TEST_P(QueueDeliveryTest, ProfilesArriveOnceAfterTheServerComesBack) {
  Delivery d = start_delivery(GetParam(), 5s);
  ASSERT_TRUE(d.server && d.sender);
  ASSERT_TRUE(d.server->refuse_connections().ok());
  ManualClock clock;
  UploadQueue queue(*d.sender, small_options(), clock);
  const auto uploads = distinct_uploads(3);
  for (const auto& u : uploads)
    queue.enqueue(u);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried >= 1 && s.next_attempt; }, kWait));
  EXPECT_NE(queue.stats().last_error.find("connection refused"), std::string::npos)
      << queue.stats().last_error;
  ASSERT_TRUE(d.server->accept_normally().ok());
  clock.advance(8s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 3; }, kWait));
  EXPECT_EQ(arrived(*d.server), pprofs_of(uploads));
}

TEST_P(QueueDeliveryTest, ServerErrorsAreRetriedUntilTheyStop) {
  Delivery d = start_delivery(GetParam(), 5s);
  ASSERT_TRUE(d.server && d.sender);
  d.server->fail_with_status(503, "overloaded");
  ManualClock clock;
  UploadQueue queue(*d.sender, small_options(), clock);
  const auto uploads = distinct_uploads(2);
  for (const auto& u : uploads)
    queue.enqueue(u);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried >= 1 && s.next_attempt; }, kWait));
  EXPECT_NE(queue.stats().last_error.find("HTTP 503"), std::string::npos);
  clock.advance(8s);  // still failing: one more attempt
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried >= 2 && s.next_attempt; }, kWait));
  ASSERT_TRUE(d.server->accept_normally().ok());
  clock.advance(8s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 2; }, kWait));
  EXPECT_EQ(arrived(*d.server), pprofs_of(uploads));
}

TEST_P(QueueDeliveryTest, TooManyRequestsWaitsForRetryAfter) {
  Delivery d = start_delivery(GetParam(), 5s);
  ASSERT_TRUE(d.server && d.sender);
  d.server->fail_with_status(429, "", "30");
  ManualClock clock;
  UploadQueue queue(*d.sender, small_options(), clock);
  const auto uploads = distinct_uploads(1);
  queue.enqueue(uploads[0]);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried == 1 && s.next_attempt; }, kWait));
  EXPECT_GE(*queue.stats().next_attempt - clock.now(), 30s);
  ASSERT_TRUE(d.server->accept_normally().ok());
  clock.advance(30s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 1; }, kWait));
  EXPECT_EQ(arrived(*d.server), pprofs_of(uploads));
}

TEST_P(QueueDeliveryTest, AHangingServerTimesOutAndTheProfileArrivesOnce) {
  Delivery d = start_delivery(GetParam(), 5s);
  ASSERT_TRUE(d.server && d.sender);
  d.server->hang();
  ManualClock clock;
  auto options = small_options();
  options.send_timeout = 300ms;
  UploadQueue queue(*d.sender, options, clock);
  const auto uploads = distinct_uploads(1);
  queue.enqueue(uploads[0]);
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried == 1 && s.next_attempt; }, kWait));
  EXPECT_NE(queue.stats().last_error.find("timed out"), std::string::npos)
      << queue.stats().last_error;
  ASSERT_TRUE(d.server->accept_normally().ok());
  clock.advance(8s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.sent == 1; }, kWait));
  EXPECT_EQ(arrived(*d.server), pprofs_of(uploads));
  EXPECT_EQ(d.server->requests().size(), 2u);
}

TEST_P(QueueDeliveryTest, StaysBoundedWhileTheServerIsDown) {
  Delivery d = start_delivery(GetParam(), 5s);
  ASSERT_TRUE(d.server && d.sender);
  ASSERT_TRUE(d.server->refuse_connections().ok());
  ManualClock clock;
  const auto uploads = distinct_uploads(20);
  uint64_t largest = 0;
  for (const auto& u : uploads)
    largest = std::max(largest, u.size_bytes());
  const uint64_t cap = largest * 5;
  UploadQueue queue(*d.sender, small_options(cap), clock);
  for (const auto& u : uploads) {
    queue.enqueue(u);
    EXPECT_LE(queue.stats().queued_bytes, cap);
  }
  ASSERT_TRUE(
      queue.wait_for([](const UploadStats& s) { return s.retried >= 1 && s.next_attempt; }, kWait));
  EXPECT_GE(queue.stats().dropped_by_cap, 14u);
  ASSERT_TRUE(d.server->accept_normally().ok());
  clock.advance(8s);
  ASSERT_TRUE(queue.wait_for([](const UploadStats& s) { return s.queued == 0; }, kWait));
  const UploadStats stats = queue.stats();
  EXPECT_EQ(stats.sent + stats.dropped_by_cap, 20u);
  const auto got = arrived(*d.server);
  ASSERT_EQ(got.size(), stats.sent);
  // What arrived is the newest profiles, in order, each once.
  const auto all = pprofs_of(uploads);
  EXPECT_EQ(got, std::vector<std::string>(all.end() - static_cast<long>(got.size()), all.end()));
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()).size(), got.size());
}

INSTANTIATE_TEST_SUITE_P(BothProtocols, QueueDeliveryTest,
                         ::testing::Values(exporter::PyroscopeProtocol::kPush,
                                           exporter::PyroscopeProtocol::kIngest),
                         [](const auto& info) {
                           return info.param == exporter::PyroscopeProtocol::kPush ? "Push"
                                                                                   : "Ingest";
                         });

}  // namespace
}  // namespace krait::test
