// The few fds both run loops (record, daemon) wait on: signals through a
// signalfd, timers through timerfds, all in one epoll set.
#pragma once

#include <initializer_list>

#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::engine {

// Blocks `signals` for the whole process (call before any thread starts)
// and returns an fd that reports them, so a signal ends a loop rather than
// the program.
Result<UniqueFd> signal_fd(std::initializer_list<int> signals);
// Reads one pending signal number from a signalfd, 0 if none.
int read_signal(int fd);

// A CLOCK_MONOTONIC timer firing once after `seconds`, or every `seconds`
// when `repeat`.
Result<UniqueFd> timer_fd(double seconds, bool repeat = false);
// Re-arms a timer to fire once at an absolute CLOCK_MONOTONIC time.
Result<void> arm_timer_at(int fd, uint64_t monotonic_ns);
// Consumes a timer's expirations (so epoll stops reporting it).
void drain_timer(int fd);

// Writes "ready\n" to `fd` and closes it (no-op for -1): --ready-fd, for
// service managers and tests waiting for sampling to run.
void signal_ready(int fd);

Result<UniqueFd> epoll_fd();
Result<void> epoll_add(int epfd, int fd);

}  // namespace krait::engine
