#include "export/upload_queue.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

namespace krait::exporter {
namespace {

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  TimePoint deadline) override {
    cv.wait_until(lock, deadline);
  }
};

uint64_t seed_from(uint64_t seed) {
  if (seed != 0)
    return seed;
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace

uint64_t Upload::size_bytes() const {
  uint64_t bytes = sizeof(Upload) + application.size() + pprof.size() + id.size();
  for (const auto& [key, value] : labels)
    bytes += sizeof(labels[0]) + key.size() + value.size();
  return bytes;
}

std::string make_upload_id() {
  // random_device is getrandom(2) on Linux: unpredictable ids without a
  // shared generator to lock.
  std::random_device device;
  std::array<uint8_t, 16> bytes{};
  for (size_t i = 0; i < bytes.size(); i += 4) {
    const uint32_t word = device();
    for (size_t j = 0; j < 4; ++j)
      bytes[i + j] = static_cast<uint8_t>(word >> (8 * j));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out += '-';
    out += fmt::format("{:02x}", bytes[i]);
  }
  return out;
}

Clock& steady_clock() {
  static SteadyClock clock;
  return clock;
}

Clock::TimePoint ManualClock::now() const {
  std::lock_guard guard(mutex_);
  return now_;
}

void ManualClock::wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                             TimePoint deadline) {
  {
    // Checking the time and registering under one lock: an advance() either
    // happened before the check or finds the waiter registered.
    std::lock_guard guard(mutex_);
    if (now_ >= deadline)
      return;
    waiters_.push_back({lock.mutex(), &cv});
  }
  cv.wait(lock);
  std::lock_guard guard(mutex_);
  auto it = std::find_if(waiters_.begin(), waiters_.end(),
                         [&](const Waiter& w) { return w.mutex == lock.mutex() && w.cv == &cv; });
  if (it != waiters_.end())
    waiters_.erase(it);
}

void ManualClock::advance(std::chrono::nanoseconds by) {
  std::vector<Waiter> waiters;
  {
    std::lock_guard guard(mutex_);
    now_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(by);
    waiters = waiters_;
  }
  // Taking the waiter's mutex before notifying: a waiter that registered is
  // inside cv.wait() by the time we get the mutex, so the wakeup is not lost.
  for (const Waiter& waiter : waiters) {
    std::lock_guard guard(*waiter.mutex);
    waiter.cv->notify_all();
  }
}

UploadQueue::UploadQueue(Sender& sender, UploadQueueOptions options, Clock& clock)
    : sender_(sender),
      options_(options),
      clock_(clock),
      jitter_(seed_from(options.jitter_seed)),
      worker_([this] { run(); }) {}

UploadQueue::~UploadQueue() {
  {
    std::lock_guard guard(mutex_);
    stop_ = true;
    closed_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable())
    worker_.join();
  std::lock_guard guard(mutex_);
  counters_.abandoned += waiting_.size();
}

void UploadQueue::enqueue(Upload upload) {
  std::unique_lock lock(mutex_);
  ++counters_.enqueued;
  if (closed_) {
    ++counters_.abandoned;
    return;
  }
  const uint64_t bytes = upload.size_bytes();
  if (bytes > options_.max_bytes) {
    ++counters_.dropped_by_cap;
    spdlog::warn(
        "dropped a {} byte profile of {}: larger than the upload queue's whole memory cap of {} "
        "bytes (raise the queue memory cap)",
        bytes, upload.application, options_.max_bytes);
    return;
  }
  evict_for(bytes);
  waiting_bytes_ += bytes;
  waiting_.push_back(std::move(upload));
  lock.unlock();
  changed_.notify_all();
}

void UploadQueue::evict_for(uint64_t bytes) {
  while (!waiting_.empty() && waiting_bytes_ + bytes > options_.max_bytes) {
    const Upload& oldest = waiting_.front();
    if (!dropping_)
      spdlog::warn(
          "upload queue full ({} bytes): dropping the oldest profiles, starting with {} "
          "(uploads are failing or too slow; see the last error)",
          options_.max_bytes, oldest.application);
    else
      spdlog::debug("upload queue full: dropped a profile of {}", oldest.application);
    dropping_ = true;
    waiting_bytes_ -= oldest.size_bytes();
    waiting_.pop_front();
    ++counters_.dropped_by_cap;
  }
}

bool UploadQueue::flush(Clock::TimePoint deadline) {
  std::unique_lock lock(mutex_);
  flush_deadline_ = deadline;
  next_attempt_.reset();  // a shutdown does not wait out a long backoff
  changed_.notify_all();
  while ((!waiting_.empty() || sending_) && clock_.now() < deadline)
    clock_.wait_until(lock, changed_, deadline);
  const bool done = waiting_.empty() && !sending_;
  stop_ = true;
  closed_ = true;
  lock.unlock();
  changed_.notify_all();
  if (worker_.joinable())
    worker_.join();
  lock.lock();
  if (!waiting_.empty())
    spdlog::warn("shutting down with {} profiles not uploaded ({})", waiting_.size(),
                 counters_.last_error.empty() ? "out of time" : counters_.last_error);
  counters_.abandoned += waiting_.size();
  waiting_.clear();
  waiting_bytes_ = 0;
  return done;
}

UploadStats UploadQueue::stats() const {
  std::lock_guard guard(mutex_);
  return stats_locked();
}

UploadStats UploadQueue::stats_locked() const {
  UploadStats s = counters_;
  s.queued = waiting_.size() + (sending_ ? 1 : 0);
  s.queued_bytes = waiting_bytes_;
  s.sending = sending_;
  s.next_attempt = next_attempt_;
  return s;
}

bool UploadQueue::wait_for(const std::function<bool(const UploadStats&)>& predicate,
                           std::chrono::milliseconds real_timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, real_timeout, [&] { return predicate(stats_locked()); });
}

std::chrono::milliseconds UploadQueue::backoff_delay() {
  const uint32_t doublings = std::min<uint32_t>(consecutive_failures_ - 1, 30);
  const auto max_ms = options_.max_backoff.count();
  int64_t delay = options_.initial_backoff.count();
  for (uint32_t i = 0; i < doublings && delay < max_ms; ++i)
    delay *= 2;
  delay = std::min<int64_t>(delay, max_ms);
  // Equal jitter: never less than half the delay, so a fleet restarted at
  // once spreads out without any instance retrying too eagerly.
  std::uniform_int_distribution<int64_t> draw(delay / 2, delay);
  return std::chrono::milliseconds(draw(jitter_));
}

void UploadQueue::settle(Upload item, const SendOutcome& outcome) {
  switch (outcome.status) {
    case SendStatus::kDelivered:
      ++counters_.sent;
      if (consecutive_failures_ > 0)
        spdlog::info("uploads recovered after {} failed attempts", consecutive_failures_);
      consecutive_failures_ = 0;
      dropping_ = false;
      next_attempt_.reset();
      return;
    case SendStatus::kRejected:
      ++counters_.rejected;
      counters_.last_error = outcome.message;
      if (logged_rejections_.insert(outcome.http_status).second)
        spdlog::warn("profile of {} rejected, not retried: {}", item.application, outcome.message);
      else
        spdlog::debug("profile of {} rejected: {}", item.application, outcome.message);
      return;
    case SendStatus::kRetry:
      break;
  }
  ++counters_.retried;
  ++consecutive_failures_;
  counters_.last_error = outcome.message;
  auto delay = backoff_delay();
  if (outcome.retry_after)
    delay = std::max(delay, std::min(*outcome.retry_after, options_.max_retry_after));
  if (consecutive_failures_ == 1)
    spdlog::warn("upload failed, retrying with backoff: {}", outcome.message);
  else
    spdlog::debug("upload failed ({} in a row), next try in {} ms: {}", consecutive_failures_,
                  delay.count(), outcome.message);
  next_attempt_ = clock_.now() + delay;
  // The item coming back is older than everything waiting, so when the
  // waiting items filled the budget while it was out, it is the one to go.
  const uint64_t bytes = item.size_bytes();
  if (waiting_bytes_ + bytes > options_.max_bytes) {
    ++counters_.dropped_by_cap;
    spdlog::debug("upload queue full: dropped the failed profile of {}", item.application);
    return;
  }
  waiting_bytes_ += bytes;
  waiting_.push_front(std::move(item));
}

void UploadQueue::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stop_)
      return;
    if (waiting_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const Clock::TimePoint now = clock_.now();
    if (next_attempt_ && now < *next_attempt_) {
      clock_.wait_until(lock, changed_, *next_attempt_);
      continue;
    }
    next_attempt_.reset();
    auto timeout = options_.send_timeout;
    if (flush_deadline_) {
      if (now >= *flush_deadline_) {
        changed_.wait(lock);  // flush() is about to stop us
        continue;
      }
      timeout =
          std::min(timeout, std::chrono::ceil<std::chrono::milliseconds>(*flush_deadline_ - now));
    }
    Upload item = std::move(waiting_.front());
    waiting_.pop_front();
    waiting_bytes_ -= item.size_bytes();
    sending_ = true;
    lock.unlock();
    changed_.notify_all();
    const SendOutcome outcome = sender_.send(item, timeout);
    lock.lock();
    sending_ = false;
    settle(std::move(item), outcome);
    lock.unlock();
    changed_.notify_all();
    lock.lock();
  }
}

}  // namespace krait::exporter
