#include "daemon/daemon.h"

#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <chrono>
#include <utility>

#include "bpf/features.h"
#include "daemon/outputs.h"
#include "daemon/selection.h"
#include "engine/engine.h"
#include "engine/loop_support.h"
#include "util/clock.h"

namespace krait::daemon {
namespace {

// The wall clock names intervals; the monotonic clock (the samples' own)
// decides which interval a sample falls in. One fixed mapping between them
// keeps consecutive intervals exactly adjacent.
struct IntervalClock {
  int64_t unix_at_start = unix_now_ns();
  int64_t mono_at_start = static_cast<int64_t>(monotonic_ns());

  int64_t to_unix(int64_t mono) const { return mono - mono_at_start + unix_at_start; }
  int64_t to_mono(int64_t unix) const { return unix - unix_at_start + mono_at_start; }
  // The wall-clock boundary after `unix_ns`, on multiples of the interval.
  static int64_t next_boundary(int64_t unix_ns, uint32_t interval_s) {
    const int64_t step = static_cast<int64_t>(interval_s) * 1'000'000'000;
    return (unix_ns / step + 1) * step;
  }
};

engine::EngineOptions engine_options(const DaemonConfig& config, engine::Selection selection) {
  engine::EngineOptions e;
  e.sampler.frequency_hz = config.sampling_rate_hz;
  e.sampler.native = config.stack_mode == StackMode::kMixed;
  e.sampler.kernel_stacks = config.kernel_stacks;
  e.sampler.on_cpu = config.time_mode != bpf::TimeMode::kOffCpu;
  e.sampler.off_cpu = config.time_mode != bpf::TimeMode::kCpu;
  e.sampler.switch_every = config.switch_every;
  e.sampler.switch_budget = config.switch_budget;
  e.sampler.all_processes = config.all_processes;
  e.selection = std::move(selection);
  return e;
}

// The run loop of a started engine: interval ends, health lines, signals
// (SIGHUP reloads what can change live).
class RunLoop {
 public:
  RunLoop(DaemonConfig config, const DaemonFlags* flags, engine::Engine& engine,
          OutputSwitch& outputs, const IntervalClock& clock, UniqueFd sigfd)
      : config_(std::move(config)),
        flags_(flags),
        engine_(engine),
        outputs_(outputs),
        clock_(clock),
        sigfd_(std::move(sigfd)) {}

  // Arms the timers; before the engine starts, so the first boundary is
  // not missed.
  Result<void> prepare() {
    auto epfd = engine::epoll_fd();
    auto interval = engine::timer_fd(3600);
    auto health = engine::timer_fd(config_.health_interval_s, /*repeat=*/true);
    for (auto* fd : {&epfd, &interval, &health})
      if (!*fd)
        return fd->error();
    epfd_ = std::move(*epfd);
    interval_timer_ = std::move(*interval);
    health_timer_ = std::move(*health);
    KRAIT_TRY(engine_.add_to(epfd_.get()));
    for (int fd : {sigfd_.get(), interval_timer_.get(), health_timer_.get()})
      KRAIT_TRY(engine::epoll_add(epfd_.get(), fd));
    boundary_unix_ = IntervalClock::next_boundary(clock_.unix_at_start, config_.upload_interval_s);
    return engine::arm_timer_at(interval_timer_.get(),
                                static_cast<uint64_t>(clock_.to_mono(boundary_unix_)));
  }

  // Until SIGINT or SIGTERM.
  Result<void> run() {
    for (;;) {
      epoll_event events[8];
      auto ready = engine_.wait(epfd_.get(), events);
      if (!ready)
        return ready.error();
      for (int i = 0; i < *ready; ++i) {
        const int fd = events[i].data.fd;
        if (fd == interval_timer_.get()) {
          KRAIT_TRY(end_interval());
        } else if (fd == health_timer_.get()) {
          engine::drain_timer(fd);
          log_health();
        } else if (fd == sigfd_.get()) {
          const int sig = engine::read_signal(fd);
          if (sig != SIGHUP) {
            spdlog::info("{}: delivering the last interval and exiting",
                         sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return {};
          }
          reload();
        }
      }
    }
  }

 private:
  Result<void> end_interval() {
    engine::drain_timer(interval_timer_.get());
    KRAIT_TRY(engine_.cut_interval(static_cast<uint64_t>(clock_.to_mono(boundary_unix_))));
    boundary_unix_ = IntervalClock::next_boundary(boundary_unix_, config_.upload_interval_s);
    return engine::arm_timer_at(interval_timer_.get(),
                                static_cast<uint64_t>(clock_.to_mono(boundary_unix_)));
  }

  void log_health() {
    const engine::EngineHealth h = engine_.health();
    const uint64_t lookups = h.frame_cache.hits + h.frame_cache.misses;
    spdlog::info(
        "health: {} Python processes profiled, {} samples (+{}), {} lost (ring full), {} dropped "
        "(builder behind), frame names {:.1f}% cached ({} evicted); {}; {}",
        h.python_processes, h.samples, h.samples - last_samples_, h.ring_full, h.queue_full,
        lookups ? 100.0 * static_cast<double>(h.frame_cache.hits) / static_cast<double>(lookups)
                : 0.0,
        h.frame_cache.evictions, h.inspection, outputs_.health());
    last_samples_ = h.samples;
  }

  // SIGHUP: the configuration again, applied where it can be live (outputs,
  // selection, naming, interval length from the next boundary, log level).
  void reload() {
    if (!flags_)
      return;
    auto reloaded = resolve_config(*flags_);
    if (!reloaded) {
      spdlog::error("configuration not reloaded: {}", reloaded.error().message);
      return;
    }
    if (reloaded->sampling_rate_hz != config_.sampling_rate_hz ||
        reloaded->stack_mode != config_.stack_mode || reloaded->time_mode != config_.time_mode ||
        reloaded->switch_every != config_.switch_every ||
        reloaded->switch_budget != config_.switch_budget ||
        reloaded->kernel_stacks != config_.kernel_stacks ||
        reloaded->all_processes != config_.all_processes)
      spdlog::warn("sampling rate and stack mode changes need a restart of krait");
    auto outputs = Outputs::create(*reloaded);
    auto naming = ProcessNaming::create(*reloaded);
    if (!outputs || !naming) {
      spdlog::error("configuration not reloaded: {}",
                    (!outputs ? outputs.error() : naming.error()).message);
      return;
    }
    outputs_.replace(std::move(*outputs));
    engine_.reselect(naming->selection());
    config_ = std::move(*reloaded);
    spdlog::set_level(spdlog::level::from_str(config_.log_level));
    spdlog::info("configuration reloaded");
  }

  DaemonConfig config_;
  const DaemonFlags* flags_;
  engine::Engine& engine_;
  OutputSwitch& outputs_;
  const IntervalClock& clock_;
  UniqueFd sigfd_, epfd_, interval_timer_, health_timer_;
  int64_t boundary_unix_ = 0;
  uint64_t last_samples_ = 0;
};

}  // namespace

Result<int> run_daemon(DaemonRunOptions o) {
  if (auto missing = bpf::missing_capabilities(bpf::effective_capabilities()))
    return Error{*missing};
  // Signals are blocked before the builder thread starts, so it inherits
  // the mask and the signalfd alone receives them.
  auto sigfd = engine::signal_fd({SIGINT, SIGTERM, SIGHUP});
  if (!sigfd)
    return sigfd.error();
  const DaemonConfig& config = o.config;
  auto outputs = Outputs::create(config);
  if (!outputs)
    return outputs.error();
  OutputSwitch output_switch(std::move(*outputs));
  auto naming = ProcessNaming::create(config);
  if (!naming)
    return naming.error();
  auto created = engine::Engine::create(engine_options(config, naming->selection()));
  if (!created)
    return created.error();
  engine::Engine& engine = **created;
  const IntervalClock clock;
  // On the builder thread at every interval end.
  engine.set_interval_sink([&](std::vector<engine::SeriesProfile> profiles) {
    output_switch.deliver(std::move(profiles), clock.mono_at_start,
                          [&](int64_t mono) { return clock.to_unix(mono); });
    // The interval's profiles and the state of processes that exited are
    // freed by now; glibc keeps freed memory in its arenas unless asked,
    // and a service's RSS should come back down after a burst of processes.
    ::malloc_trim(0);
  });

  KRAIT_TRY(engine.scan());
  // What runs already is attached before sampling starts (a bounded time).
  engine.await_scan(std::chrono::steady_clock::now() + std::chrono::seconds(3));
  RunLoop loop(config, o.flags, engine, output_switch, clock, std::move(*sigfd));
  KRAIT_TRY(loop.prepare());
  KRAIT_TRY(engine.start());
  spdlog::info("profiling every {}process{} at {} Hz ({}), {} s intervals{}{}",
               config.all_processes ? "" : "Python ",
               config.processes == ProcessSelection{} ? "" : " the selection matches",
               config.sampling_rate_hz, engine.source_name(), config.upload_interval_s,
               config.pyroscope.url.empty() ? "" : ", to " + config.pyroscope.url,
               config.directory.path.empty() ? "" : ", into " + config.directory.path);
  engine::signal_ready(o.ready_fd);
  KRAIT_TRY(loop.run());

  // The last interval ends now: deliver it, then give the uploads a few
  // seconds.
  KRAIT_TRY(engine.stop());
  engine.finish(monotonic_ns());
  spdlog::info("stopped; {}", output_switch.finish());
  return 0;
}

}  // namespace krait::daemon
