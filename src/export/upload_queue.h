// Delivering profiles in the background: a bounded FIFO of uploads drained by
// one worker thread through a Sender (the Pyroscope client, or a fake in
// tests), with retries, backoff and a memory cap.
//
// Delivery rules:
// - enqueue() never waits for the network: it appends under a mutex the
//   worker never holds while sending, and returns.
// - Items are sent one at a time, oldest first. An item leaves the queue only
//   when the Sender reports it delivered (a 2xx) or rejected (a 4xx other
//   than 408/429): a delivered item is never sent again.
// - kRetry outcomes (connection errors, timeouts, 408, 429, 5xx) keep the item
//   at the head and wait: exponential backoff from initial_backoff, doubling
//   per consecutive failure up to max_backoff, with "equal jitter" (a uniform
//   draw in [delay/2, delay]); a Retry-After from the server is a lower bound
//   (capped at max_retry_after). Any success resets the backoff.
// - Memory: the bytes of the waiting items never exceed max_bytes; to make
//   room the OLDEST waiting items are dropped and counted (dropped_by_cap).
//   The item being sent is held outside that budget, so the peak is
//   max_bytes plus one item. An item larger than max_bytes alone is dropped
//   on arrival. An item whose retry finds the queue full is the oldest, so
//   it is the one dropped.
// - flush(deadline) is for shutdown: it retries at once, keeps delivering
//   until the queue is empty or the clock reaches the deadline, shortens
//   each send's timeout so none outlives the deadline, then stops the worker.
//   Afterwards the queue is closed: enqueue() counts items as abandoned.
//
// Threading: every public member is thread-safe. The Sender is called from
// the worker thread only, one call at a time, without the queue's lock held.
// The Sender and the Clock must outlive the queue. Destroying the queue
// stops the worker (waiting for a send in progress, which its timeout
// bounds) and abandons what is left; call flush() first to deliver it.
//
// Logging (spdlog): a warning when uploads start failing and when the cap
// first drops a profile, info when they recover, one warning per distinct
// rejecting status; everything else at debug. stats() has the counts.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>  // std::jthread
#include <utility>
#include <vector>

#include "profile/profile.h"

namespace krait::exporter {

// One profile of one application over one interval, ready to send.
struct Upload {
  std::string application;  // becomes service_name
  profile::Labels labels;   // series labels besides service_name and __name__
  int64_t from_unix_ns = 0;
  int64_t until_unix_ns = 0;
  uint32_t sample_rate_hz = 0;
  std::string pprof;  // gzipped pprof (encode_pprof)
  std::string id;     // unique per profile, kept across retries (make_upload_id)

  // The memory this item holds, as counted against the queue's cap.
  uint64_t size_bytes() const;
};

// A random (version 4) UUID in its 36-character text form.
std::string make_upload_id();

enum class SendStatus : uint8_t {
  kDelivered,  // 2xx: done
  kRetry,      // worth another try later: connection, timeout, 408, 429, 5xx
  kRejected,   // the server refused this item for good (other 4xx), or it cannot be sent
};

struct SendOutcome {
  SendStatus status = SendStatus::kDelivered;
  int http_status = 0;                                   // 0: no HTTP answer
  std::optional<std::chrono::milliseconds> retry_after;  // the server's Retry-After
  std::string message;                                   // one line; empty when delivered
};

// Sends one upload, synchronously. Implementations need not be thread-safe:
// the queue calls send() from its worker only.
class Sender {
 public:
  virtual ~Sender() = default;
  // Gives up after `timeout` (then kRetry with a timeout message).
  virtual SendOutcome send(const Upload& upload, std::chrono::milliseconds timeout) = 0;
};

// The time source of the queue's backoff and deadlines.
class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  // Called with `lock` held (the mutex `cv` waits with): blocks until `cv` is
  // notified or now() reaches `deadline`. Spurious returns are allowed.
  virtual void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          TimePoint deadline) = 0;
};

// std::chrono::steady_clock. Shared, stateless, thread-safe.
Clock& steady_clock();

// A clock that moves only when advance() is called: tests drive backoff and
// deadlines with it, never by sleeping. Thread-safe. A waiter's mutex and
// condition variable must stay alive while advance() may run.
class ManualClock final : public Clock {
 public:
  TimePoint now() const override;
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  TimePoint deadline) override;
  // Moves time forward and wakes every waiter.
  void advance(std::chrono::nanoseconds by);

 private:
  struct Waiter {
    std::mutex* mutex;
    std::condition_variable* cv;
  };
  mutable std::mutex mutex_;
  TimePoint now_{std::chrono::hours(24)};  // arbitrary, not the epoch
  std::vector<Waiter> waiters_;
};

struct UploadQueueOptions {
  uint64_t max_bytes = 64ull << 20;
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{60'000};
  std::chrono::milliseconds max_retry_after{300'000};
  std::chrono::milliseconds send_timeout{30'000};
  uint64_t jitter_seed = 0;  // 0: seeded from std::random_device
};

struct UploadStats {
  uint64_t enqueued = 0;        // enqueue() calls
  uint64_t sent = 0;            // delivered (2xx)
  uint64_t retried = 0;         // failed attempts that will be retried
  uint64_t dropped_by_cap = 0;  // dropped to stay under max_bytes
  uint64_t rejected = 0;        // refused for good (4xx, unsendable)
  uint64_t abandoned = 0;       // left over when the queue stopped, or enqueued after
  uint64_t queued = 0;          // waiting, plus the one being sent
  uint64_t queued_bytes = 0;    // bytes of the waiting items (<= max_bytes)
  bool sending = false;         // a send is in progress
  std::string last_error;       // the last failed attempt's message; "" before any
  std::optional<Clock::TimePoint> next_attempt;  // set while the head waits for backoff
};

class UploadQueue {
 public:
  UploadQueue(Sender& sender, UploadQueueOptions options, Clock& clock = steady_clock());
  ~UploadQueue();
  UploadQueue(const UploadQueue&) = delete;
  UploadQueue& operator=(const UploadQueue&) = delete;

  void enqueue(Upload upload);

  // Delivers until the queue is empty or `deadline` (by the queue's clock),
  // then stops the worker. True when nothing was left undelivered (rejected
  // items count as settled). Call once, at shutdown.
  bool flush(Clock::TimePoint deadline);

  UploadStats stats() const;

  // Blocks until `predicate(stats())` holds, re-checking after every change
  // of the queue's state; false if it still does not hold after
  // `real_timeout` of wall time. For tests and shutdown reporting.
  bool wait_for(const std::function<bool(const UploadStats&)>& predicate,
                std::chrono::milliseconds real_timeout) const;

 private:
  void run();
  void settle(Upload item, const SendOutcome& outcome);  // lock held
  void evict_for(uint64_t bytes);                        // lock held
  std::chrono::milliseconds backoff_delay();             // lock held
  UploadStats stats_locked() const;

  Sender& sender_;
  const UploadQueueOptions options_;
  Clock& clock_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::deque<Upload> waiting_;
  uint64_t waiting_bytes_ = 0;
  bool sending_ = false;
  bool stop_ = false;
  bool closed_ = false;
  std::optional<Clock::TimePoint> flush_deadline_;
  std::optional<Clock::TimePoint> next_attempt_;
  uint32_t consecutive_failures_ = 0;
  bool dropping_ = false;  // logged the current run of cap drops
  std::set<int> logged_rejections_;
  std::mt19937_64 jitter_;
  UploadStats counters_;
  std::jthread worker_;  // last: starts after everything above is ready; joins on destruction
};

}  // namespace krait::exporter
