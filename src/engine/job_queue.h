// A bounded hand-off from the reader thread to the stack builder thread.
// push() never blocks: when the queue holds `max_bytes` the job is refused
// and the caller counts the drop. pop() blocks until a job arrives or the
// queue is closed and empty.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

#include "engine/sample_job.h"

namespace krait::engine {

class JobQueue {
 public:
  explicit JobQueue(size_t max_bytes) : max_bytes_(max_bytes) {}

  // `control` jobs (interval ends) are tiny and must not be lost: they
  // ignore the byte cap.
  bool push(SampleJob job, bool control = false) {
    const size_t size = job.bytes();
    {
      std::lock_guard lock(mutex_);
      if (closed_ || (!control && bytes_ + size > max_bytes_))
        return false;
      bytes_ += size;
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
    return true;
  }

  std::optional<SampleJob> pop() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
    if (jobs_.empty())
      return std::nullopt;
    SampleJob job = std::move(jobs_.front());
    jobs_.pop_front();
    bytes_ -= job.bytes();
    return job;
  }

  // A job if one is waiting, without blocking (tests, draining).
  std::optional<SampleJob> try_pop() {
    std::lock_guard lock(mutex_);
    if (jobs_.empty())
      return std::nullopt;
    SampleJob job = std::move(jobs_.front());
    jobs_.pop_front();
    bytes_ -= job.bytes();
    return job;
  }

  // No more pushes; pop() returns what is left, then nullopt.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
  }

 private:
  const size_t max_bytes_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<SampleJob> jobs_;
  size_t bytes_ = 0;
  bool closed_ = false;
};

}  // namespace krait::engine
