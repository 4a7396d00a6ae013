#include "top/top.h"

#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>

#include "bpf/features.h"
#include "engine/engine.h"
#include "engine/loop_support.h"
#include "proc/processes.h"
#include "profile/profile.h"
#include "top/screen.h"
#include "util/clock.h"
#include "util/unique_fd.h"

namespace krait::top {
namespace {

using engine::Engine;

Result<void> check_options(const TopOptions& o) {
  if (auto missing = bpf::missing_capabilities(bpf::effective_capabilities()))
    return Error{*missing};
  for (pid_t pid : o.pids) {
    if (pid <= 0 || !std::filesystem::exists("/proc/" + std::to_string(pid)))
      return make_error("no process with pid {}: check the pid (ps -p {})", pid, pid);
  }
  return {};
}

engine::EngineOptions engine_options(const TopOptions& o) {
  engine::EngineOptions e;
  e.max_depth = o.max_depth;
  bpf::SamplerConfig& cfg = e.sampler;
  cfg.frequency_hz = o.frequency_hz;
  cfg.max_depth = o.max_depth;
  cfg.listed_only = !o.pids.empty();
  cfg.source = o.event;
  cfg.native = o.stacks == StackMode::kMixed;
  cfg.kernel_stacks = o.kernel_stacks;
  cfg.on_cpu = o.mode != bpf::TimeMode::kOffCpu;
  cfg.off_cpu = o.mode != bpf::TimeMode::kCpu;
  cfg.switch_every = o.switch_every;
  cfg.switch_budget = o.switch_budget;
  cfg.user_stack_bytes = o.user_stack_bytes;
  return e;
}

// The builder thread's door to the run loop: each interval's profiles,
// merged into one, wait here until the loop takes them; the eventfd wakes
// the loop. The builder holds the lock only to append.
class Mailbox {
 public:
  static Result<std::unique_ptr<Mailbox>> create() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid())
      return make_error("eventfd: {}", std::strerror(errno));
    auto box = std::make_unique<Mailbox>();
    box->fd_ = std::move(fd);
    return box;
  }

  // Builder thread.
  void post(std::vector<engine::SeriesProfile> series) {
    profile::Profile merged;
    for (const auto& s : series)
      merged.merge(s.profile);
    {
      std::lock_guard lock(mutex_);
      pending_.push_back(std::move(merged));
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof one);
  }

  // Run-loop thread: the intervals delivered since the last call, oldest
  // first.
  std::vector<profile::Profile> take() {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = ::read(fd_.get(), &count, sizeof count);
    std::lock_guard lock(mutex_);
    std::vector<profile::Profile> out;
    out.swap(pending_);
    return out;
  }

  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::mutex mutex_;
  std::vector<profile::Profile> pending_;
};

// While the screen is up, krait's own log lines would scribble over it:
// warnings become the header's notice line instead. Before and after, the
// sink writes to stderr as usual.
class NoticeSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void capture(bool on) { capture_ = on; }
  std::string latest() {
    std::lock_guard lock(mutex_);
    return latest_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!capture_) {
      spdlog::memory_buf_t text;
      formatter_->format(msg, text);
      std::fwrite(text.data(), 1, text.size(), stderr);
      return;
    }
    if (msg.level >= spdlog::level::warn)
      latest_.assign(msg.payload.data(), msg.payload.size());
  }
  void flush_() override { std::fflush(stderr); }

 private:
  std::atomic<bool> capture_{false};
  std::string latest_;
};

// Puts a NoticeSink in front of the default logger for the life of the
// run; the previous logger comes back at the end. Installed before the
// engine's threads start, removed after they end.
class LogRedirect {
 public:
  LogRedirect() : previous_(spdlog::default_logger()), sink_(std::make_shared<NoticeSink>()) {
    sink_->set_pattern("krait: %l: %v");
    auto logger = std::make_shared<spdlog::logger>("krait-top", sink_);
    logger->set_level(previous_->level());
    spdlog::set_default_logger(logger);
  }
  ~LogRedirect() { spdlog::set_default_logger(previous_); }
  NoticeSink& sink() { return *sink_; }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<NoticeSink> sink_;
};

double cpu_seconds_of_self() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// The run loop's state: intervals cut and delivered, the profile shown,
// the header's figures.
class TopLoop {
 public:
  TopLoop(const TopOptions& o, Engine& engine, Mailbox& mailbox, NoticeSink& notices, int sigfd)
      : o_(o), engine_(engine), mailbox_(mailbox), notices_(notices), sigfd_(sigfd) {
    view_.grouping = o.grouping;
    view_.sort = o.sort;
    view_.filter = o.filter;
    view_.native_frames = o.native_frames && o.stacks == StackMode::kMixed;
  }

  Result<void> prepare(int input_fd) {
    auto epfd = engine::epoll_fd();
    if (!epfd)
      return epfd.error();
    epfd_ = std::move(*epfd);
    KRAIT_TRY(engine_.add_to(epfd_.get()));
    for (int fd : {sigfd_, mailbox_.fd()})
      KRAIT_TRY(engine::epoll_add(epfd_.get(), fd));
    if (input_fd >= 0)
      KRAIT_TRY(engine::epoll_add(epfd_.get(), input_fd));
    input_fd_ = input_fd;
    return {};
  }

  // Call right after the engine starts: the first interval begins here,
  // and lasts the whole --interval.
  Result<void> started() {
    auto timer = engine::timer_fd(o_.interval_s, /*repeat=*/true);
    if (!timer)
      return timer.error();
    timer_ = std::move(*timer);
    KRAIT_TRY(engine::epoll_add(epfd_.get(), timer_.get()));
    last_end_ns_ = monotonic_ns();
    start_ns_ = last_end_ns_;
    last_cpu_s_ = cpu_seconds_of_self();
    last_cpu_wall_ns_ = last_end_ns_;
    return {};
  }

  // Plain mode: `iterations` snapshots on stdout, then returns.
  Result<void> run_plain() {
    uint32_t printed = 0;
    while (printed < o_.iterations) {
      auto event = next_event();
      if (!event)
        return event.error();
      if (*event == Event::kQuit)
        return {};
      if (*event == Event::kInterval) {
        std::fputs(plain_snapshot(facts(), view_, table_, o_.max_rows).c_str(), stdout);
        if (++printed < o_.iterations)
          std::fputs("\n", stdout);
        std::fflush(stdout);
      }
    }
    return {};
  }

  // Screen mode: until q, SIGINT or SIGTERM.
  Result<void> run_screen(Screen& screen) {
    screen.draw(facts(), view_, table_, ui_);
    for (;;) {
      auto event = next_event();
      if (!event)
        return event.error();
      switch (*event) {
        case Event::kQuit:
          return {};
        case Event::kResize:
          screen.resize();
          break;
        case Event::kInput: {
          const KeyResult keys = screen.read_keys(view_, ui_);
          if (keys == KeyResult::kQuit)
            return {};
          if (keys == KeyResult::kIgnored)
            continue;
          rebuild();
          break;
        }
        case Event::kInterval:
        case Event::kNone:
          break;
      }
      if (*event != Event::kNone)
        screen.draw(facts(), view_, table_, ui_);
    }
  }

 private:
  enum class Event : uint8_t { kNone, kInterval, kInput, kResize, kQuit };

  // One turn of the loop: what it brought that the caller must act on.
  Result<Event> next_event() {
    epoll_event events[8];
    auto ready = engine_.wait(epfd_.get(), events);
    if (!ready)
      return ready.error();
    Event result = Event::kNone;
    for (int i = 0; i < *ready; ++i) {
      const int fd = events[i].data.fd;
      if (fd == sigfd_) {
        const int sig = engine::read_signal(fd);
        if (sig == SIGWINCH)
          result = Event::kResize;
        else if (sig != 0)
          return Event::kQuit;
      } else if (fd == timer_.get()) {
        engine::drain_timer(fd);
        const uint64_t now = monotonic_ns();
        KRAIT_TRY(engine_.cut_interval(now));
        cuts_.push_back(now);
      } else if (fd == mailbox_.fd()) {
        if (receive())
          return Event::kInterval;
      } else if (fd == input_fd_) {
        // Handled after the engine's own events of this turn.
        if (result == Event::kNone)
          result = Event::kInput;
      }
    }
    return result;
  }

  // Takes the delivered intervals; true when the shown data changed.
  bool receive() {
    bool any = false;
    for (auto& interval : mailbox_.take()) {
      // Intervals arrive in the order they were cut.
      const uint64_t end = cuts_.empty() ? monotonic_ns() : cuts_.front();
      if (!cuts_.empty())
        cuts_.pop_front();
      const uint64_t now_cpu_wall = monotonic_ns();
      const double cpu = cpu_seconds_of_self();
      const double wall = static_cast<double>(now_cpu_wall - last_cpu_wall_ns_) / 1e9;
      if (last_cpu_wall_ns_ != 0 && wall > 0)
        krait_cpu_pct_ = 100.0 * (cpu - last_cpu_s_) / wall;
      last_cpu_s_ = cpu;
      last_cpu_wall_ns_ = now_cpu_wall;
      set_meta(interval);
      set_meta(cumulative_);
      cumulative_.merge(interval);
      const uint64_t start = last_end_ns_;
      last_end_ns_ = end;
      // Paused: the shown interval stays; the next one starts here all
      // the same.
      if (ui_.paused)
        continue;
      interval_ns_ = static_cast<int64_t>(end - start);
      end_unix_ns_ = unix_now_ns();
      latest_ = std::move(interval);
      any = true;
    }
    if (any)
      rebuild();
    return any;
  }

  // Off-CPU and wall: rows weigh time, not samples (Profile::weight).
  void set_meta(profile::Profile& p) const {
    p.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / o_.frequency_hz);
    p.meta().off_cpu = o_.mode != bpf::TimeMode::kCpu;
    p.meta().on_cpu = o_.mode != bpf::TimeMode::kOffCpu;
  }

  void rebuild() {
    const int64_t period = static_cast<int64_t>(1'000'000'000ull / o_.frequency_hz);
    table_ = ui_.cumulative ? build_table(cumulative_, view_, period,
                                          static_cast<int64_t>(last_end_ns_ - start_ns_))
                            : build_table(latest_, view_, period, interval_ns_);
  }

  HeaderFacts facts() {
    const engine::EngineHealth health = engine_.health();
    HeaderFacts f;
    f.unix_time_ns = end_unix_ns_ ? end_unix_ns_ : unix_now_ns();
    f.cumulative = ui_.cumulative;
    f.interval_s =
        static_cast<double>(ui_.cumulative ? last_end_ns_ - start_ns_ : interval_ns_) / 1e9;
    f.rate_hz = o_.frequency_hz;
    f.samples_per_s =
        f.interval_s > 0 ? static_cast<double>(table_.on_cpu_samples) / f.interval_s : 0;
    f.python_processes = table_.processes;
    f.krait_cpu_pct = krait_cpu_pct_;
    f.drops = health.ring_full + health.queue_full;
    f.paused = ui_.paused;
    f.notice = notices_.latest();
    return f;
  }

  const TopOptions& o_;
  Engine& engine_;
  Mailbox& mailbox_;
  NoticeSink& notices_;
  int sigfd_;
  int input_fd_ = -1;
  UniqueFd epfd_, timer_;
  std::deque<uint64_t> cuts_;  // interval ends not delivered yet
  uint64_t start_ns_ = 0;
  uint64_t last_end_ns_ = 0;
  int64_t interval_ns_ = 0;
  int64_t end_unix_ns_ = 0;
  double last_cpu_s_ = 0;
  uint64_t last_cpu_wall_ns_ = 0;
  double krait_cpu_pct_ = 0;
  profile::Profile latest_;
  profile::Profile cumulative_;
  ViewSettings view_;
  UiState ui_;
  Table table_;
};

}  // namespace

Result<int> run_top(const TopOptions& o) {
  KRAIT_TRY(check_options(o));
  const bool plain = o.once || ::isatty(STDOUT_FILENO) == 0 || ::isatty(STDIN_FILENO) == 0;
  TopOptions options = o;
  if (o.once)
    options.iterations = 1;
  // Signals are blocked before the engine's threads start, so they inherit
  // the mask and the signalfd alone receives them (SIGWINCH included: a
  // resize is an event of the loop, not a handler's flag).
  auto sigfd = engine::signal_fd({SIGINT, SIGTERM, SIGWINCH});
  if (!sigfd)
    return sigfd.error();
  LogRedirect log;
  auto mailbox = Mailbox::create();
  if (!mailbox)
    return mailbox.error();
  auto created = Engine::create(engine_options(options));
  if (!created)
    return created.error();
  Engine& engine = **created;
  engine.set_interval_sink([box = mailbox->get()](std::vector<engine::SeriesProfile> series) {
    box->post(std::move(series));
  });
  KRAIT_TRY(engine::attach_running(engine, options.pids));

  std::unique_ptr<Screen> screen;
  if (!plain) {
    auto opened = Screen::open();
    if (!opened)
      return opened.error();
    screen = std::move(*opened);
    log.sink().capture(true);
  }
  TopLoop loop(options, engine, **mailbox, log.sink(), sigfd->get());
  KRAIT_TRY(loop.prepare(screen ? screen->input_fd() : -1));
  KRAIT_TRY(engine.start());
  KRAIT_TRY(loop.started());
  // signal_ready() closes its fd: stdout (the snapshot's) stays open
  // through a copy.
  engine::signal_ready(options.ready_fd == STDOUT_FILENO ? ::dup(STDOUT_FILENO) : options.ready_fd);
  // The screen goes (and the terminal is restored) before any error is
  // printed, whichever way the loop ends.
  Result<void> ran = screen ? loop.run_screen(*screen) : loop.run_plain();
  screen.reset();
  log.sink().capture(false);
  KRAIT_TRY(engine.stop());
  engine.finish();
  if (!ran)
    return ran.error();
  return 0;
}

}  // namespace krait::top
