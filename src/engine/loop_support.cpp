#include "engine/loop_support.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

namespace krait::engine {

Result<UniqueFd> signal_fd(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals)
    sigaddset(&set, s);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0)
    return make_error("cannot block signals");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid())
    return make_error("signalfd: {}", std::strerror(errno));
  return fd;
}

int read_signal(int fd) {
  signalfd_siginfo info{};
  ssize_t got = ::read(fd, &info, sizeof info);
  return got == static_cast<ssize_t>(sizeof info) ? static_cast<int>(info.ssi_signo) : 0;
}

Result<UniqueFd> timer_fd(double seconds, bool repeat) {
  UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!fd.valid())
    return make_error("timerfd_create: {}", std::strerror(errno));
  itimerspec spec{};
  const double whole = std::floor(seconds);
  spec.it_value.tv_sec = static_cast<time_t>(whole);
  spec.it_value.tv_nsec = static_cast<long>((seconds - whole) * 1e9);
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0)
    spec.it_value.tv_nsec = 1;
  if (repeat)
    spec.it_interval = spec.it_value;
  if (::timerfd_settime(fd.get(), 0, &spec, nullptr) != 0)
    return make_error("timerfd_settime: {}", std::strerror(errno));
  return fd;
}

Result<void> arm_timer_at(int fd, uint64_t monotonic_ns) {
  itimerspec spec{};
  spec.it_value.tv_sec = static_cast<time_t>(monotonic_ns / 1'000'000'000ull);
  spec.it_value.tv_nsec = static_cast<long>(monotonic_ns % 1'000'000'000ull);
  if (::timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, nullptr) != 0)
    return make_error("timerfd_settime: {}", std::strerror(errno));
  return {};
}

void drain_timer(int fd) {
  uint64_t expirations = 0;
  [[maybe_unused]] ssize_t got = ::read(fd, &expirations, sizeof expirations);
}

void signal_ready(int fd) {
  if (fd < 0)
    return;
  [[maybe_unused]] ssize_t n = ::write(fd, "ready\n", 6);
  ::close(fd);
}

Result<UniqueFd> epoll_fd() {
  UniqueFd fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!fd.valid())
    return make_error("epoll_create1: {}", std::strerror(errno));
  return fd;
}

Result<void> epoll_add(int epfd, int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
    return make_error("epoll_ctl: {}", std::strerror(errno));
  return {};
}

}  // namespace krait::engine
