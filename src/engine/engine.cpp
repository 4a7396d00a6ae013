#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "engine/loop_support.h"
#include "proc/processes.h"
#include "util/clock.h"
#include "util/text.h"

namespace krait::engine {

// Writes attach decisions into the sampler's `procs` map.
class Engine::SamplerSink final : public ProcessMapSink {
 public:
  explicit SamplerSink(bpf::Sampler& sampler) : sampler_(sampler) {}
  Result<void> set_process(uint32_t pid, const krait_proc_info& info) override {
    return sampler_.set_process(pid, info);
  }

 private:
  bpf::Sampler& sampler_;
};

Engine::Engine(Key, EngineOptions options)
    // Files are indexed when a sample first needs them (on the builder
    // thread), so a process's many mapped libraries that no sample reaches
    // cost nothing; a file is still indexed once for every process.
    : options_(std::move(options)),
      modules_(std::make_shared<unwind::ModuleCache>(
          unwind::ModuleFileOptions{.index_eagerly = false})) {}

Result<std::unique_ptr<Engine>> Engine::create(EngineOptions options) {
  auto c = std::make_unique<Engine>(Key{}, std::move(options));
  bpf::SamplerConfig& cfg = c->options_.sampler;
  {
    // Room for a quarter of a second of samples on every CPU, 25 drain
    // periods: the reader is late only when a new process is being
    // attached. A stack copy makes a record ~20x larger; the kernel
    // allocates the whole ring up front, hence the cap for hosts with
    // hundreds of CPUs (where not every CPU runs Python).
    const long cpus = std::max(1L, ::sysconf(_SC_NPROCESSORS_CONF));
    const uint64_t want = static_cast<uint64_t>(cpus) * cfg.frequency_hz *
                          (cfg.native ? cfg.user_stack_bytes + 4096 : 1024) / 4;
    uint64_t ring = 8u << 20;
    while (ring < want && ring < (128u << 20))
      ring <<= 1;
    cfg.ring_buffer_bytes = static_cast<uint32_t>(ring);
  }
  bpf::install_libbpf_logging();
  auto sampler = bpf::Sampler::open_and_load(cfg);
  if (!sampler)
    return sampler.error();
  c->sampler_ = std::move(*sampler);
  c->sink_ = std::make_unique<SamplerSink>(*c->sampler_);
  auto inspector = inspect::Inspector::create(c->options_.inspector);
  if (!inspector)
    return inspector.error();
  c->inspector_ = std::move(*inspector);
  TrackerOptions topts;
  topts.attach = c->options_.attach;
  topts.wanted = c->options_.selection.wanted;
  topts.describe = c->options_.selection.describe;
  topts.on_process = c->options_.on_process;
  topts.native = cfg.native;
  topts.modules = c->modules_;
  c->tracker_ = std::make_unique<ProcessTracker>(*c->sink_, *c->inspector_, std::move(topts));

  BuilderOptions bopts;
  bopts.native = cfg.native;
  bopts.kernel = cfg.kernel_stacks;
  auto builder = StackBuilder::create(bopts);
  if (!builder)
    return builder.error();
  c->builder_ = std::move(*builder);
  c->queue_ = std::make_unique<JobQueue>(c->options_.queue_bytes);
  c->builder_thread_ = std::make_unique<BuilderThread>(*c->builder_, *c->queue_);
  PipelineOptions popts;
  popts.max_depth = c->options_.max_depth;
  popts.native = cfg.native;
  popts.state_labels = cfg.off_cpu;
  popts.other_series = c->options_.selection.other_series;
  c->pipeline_ =
      std::make_unique<Pipeline>(*c->tracker_, *c->inspector_, *c->queue_, popts, c->modules_);
  auto reader = events::RingReader::create(c->sampler_->events_fd(), *c->pipeline_);
  if (!reader)
    return reader.error();
  c->reader_ = std::move(*reader);
  return c;
}

Engine::~Engine() {
  // The builder thread must stop before what it reads goes away.
  if (builder_thread_)
    builder_thread_->finish();
}

Result<void> Engine::scan(const std::vector<pid_t>& pids) {
  // Exec and exit are seen from here on: a process that execs after the
  // scan looked at it is attached again.
  KRAIT_TRY(sampler_->attach_tracepoints());
  if (!pids.empty()) {
    for (pid_t pid : pids) {
      KRAIT_TRY(sampler_->add_listed(static_cast<uint32_t>(pid)));
      tracker_->prepare(pid);
      scanned_.push_back(pid);
    }
    return {};
  }
  const pid_t self = ::getpid();
  for (pid_t pid : proc::list_pids()) {
    if (pid == self)
      continue;
    tracker_->prepare(pid);
    scanned_.push_back(pid);
  }
  return {};
}

void Engine::await_scan(std::chrono::steady_clock::time_point deadline) {
  auto answered = [&] {
    return std::all_of(scanned_.begin(), scanned_.end(), [&](pid_t pid) {
      return tracker_->scan_result(pid).has_value() || tracker_->settled(pid);
    });
  };
  while (!answered() && std::chrono::steady_clock::now() < deadline) {
    inspector_->drain(std::min(
        deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(kDrainPeriodMs)));
    run_inspections();
  }
}

std::optional<python::AttachStatus> Engine::scan_result(pid_t pid) const {
  return tracker_->scan_result(pid);
}

void Engine::set_interval_sink(IntervalSink sink) {
  builder_->set_interval_sink(std::move(sink));
}

Result<void> Engine::start() {
  return sampler_->start();
}

Result<void> Engine::add_to(int epfd) {
  KRAIT_TRY(epoll_add(epfd, reader_->epoll_fd()));
  return epoll_add(epfd, inspector_->wake_fd());
}

void Engine::run_inspections() {
  inspector_->run_completions();
  for (const inspect::Notice& notice : inspector_->take_notices()) {
    std::string who = "a process";
    if (const TrackedProcess* p = tracker_->find_key(notice.key)) {
      tracker_->on_notice(notice);
      who = fmt::format("pid {} ({})", p->pid, p->name);
    } else {
      pipeline_->on_notice(notice);
    }
    if (notice.kind == inspect::Notice::Kind::kThrottled)
      ++throttle_notices_;
    recent_notices_.push_back(fmt::format("{}: {}", who, notice.reason));
    if (recent_notices_.size() > 3)
      recent_notices_.pop_front();
  }
  const uint64_t now = monotonic_ns();
  pipeline_->tick(now);
  // Scan results no sample claimed: processes that exited or stay idle.
  if (now - last_prune_ns_ > 10'000'000'000ull) {
    tracker_->prune_unsampled();
    // Files no live process maps any more (the daemon also does this per
    // interval, with its other caches).
    modules_->evict_unused();
    last_prune_ns_ = now;
  }
}

std::string Engine::inspection_health() {
  size_t refused = 0, throttled = 0;
  for (const auto& [key, p] : tracker_->processes()) {
    if (p.state == ProcessState::kRefused)
      ++refused;
    if (p.throttled && p.state != ProcessState::kExited)
      ++throttled;
  }
  const inspect::InspectorStats s = inspector_->stats();
  std::string out = fmt::format(
      "{} Python processes refused, {} throttled ({} times), {} reads stalled, inspection {:.0f} "
      "ms CPU",
      refused, throttled, throttle_notices_, s.stalls, static_cast<double>(s.cpu_ns) / 1e6);
  if (!recent_notices_.empty()) {
    out += " (latest: ";
    for (size_t i = 0; i < recent_notices_.size(); ++i)
      out += (i ? "; " : "") + recent_notices_[i];
    out += ")";
  }
  return out;
}

Result<int> Engine::wait(int epfd, std::span<epoll_event> events) {
  int n = ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), kDrainPeriodMs);
  if (n < 0) {
    if (errno != EINTR)
      return make_error("epoll_wait: {}", std::strerror(errno));
    n = 0;
  }
  KRAIT_TRY(reader_->consume());
  run_inspections();
  return n;
}

Result<void> Engine::cut_interval(uint64_t ktime_ns) {
  KRAIT_TRY(reader_->consume());
  end_interval(ktime_ns);
  pipeline_->forget(tracker_->prune_exited());
  pipeline_->prune_caches();
  return {};
}

void Engine::reselect(Selection selection) {
  options_.selection = std::move(selection);
  tracker_->set_hooks(options_.selection.wanted, options_.selection.describe);
  // Processes that are not Python are named again at their next sample;
  // cached labels go with the old names.
  pipeline_->set_other_series(options_.selection.other_series);
  pipeline_->rename_others();
  pipeline_->prune_caches();
}

void Engine::end_interval(uint64_t ktime_ns) {
  SampleJob marker;
  marker.interval_end = true;
  marker.ktime_ns = ktime_ns;
  queue_->push(std::move(marker), /*control=*/true);
}

Result<void> Engine::stop() {
  sampler_->stop();
  for (;;) {
    auto r = reader_->consume();
    if (!r)
      return r.error();
    if (*r == 0)
      break;
  }
  // Reads the last samples wait for; a stalled one is not waited for long.
  inspector_->drain(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  run_inspections();
  pipeline_->release_all();
  return {};
}

void Engine::finish(std::optional<uint64_t> last_interval_end) {
  if (last_interval_end)
    end_interval(*last_interval_end);
  builder_thread_->finish();
}

std::vector<SeriesProfile> Engine::take_profiles(int64_t end_ktime_ns) {
  return builder_->take_profiles(end_ktime_ns);
}

uint64_t Engine::attached() const {
  return tracker_->attached();
}

const char* Engine::source_name() const {
  return sampler_->source_name();
}

RunSummary Engine::summary(double seconds) {
  return build_summary(facts(seconds), *tracker_, *pipeline_, builder_->stats());
}

EngineHealth Engine::health() {
  EngineHealth h;
  h.python_processes = tracker_->attached();
  const PipelineStats& ps = pipeline_->stats();
  h.samples = ps.samples;
  h.queue_full = ps.queue_full;
  h.frame_cache = ps.frame_cache;
  h.ring_full = sampler_->counters()[KRAIT_CNT_RINGBUF_FULL];
  h.inspection = inspection_health();
  return h;
}

RunFacts Engine::facts(double seconds) {
  RunFacts f;
  f.seconds = seconds;
  f.frequency_hz = options_.sampler.frequency_hz;
  f.event = sampler_->source_name();
  f.cpus = sampler_->cpus();
  f.counters = sampler_->counters();
  f.malformed_records = reader_->malformed();
  f.bpf_runs = sampler_->run_stats();
  f.native_stacks = options_.sampler.native;
  f.inspector = inspector_->stats();
  return f;
}

Result<void> attach_running(Engine& engine, const std::vector<pid_t>& pids) {
  KRAIT_TRY(engine.scan(pids));
  engine.await_scan(std::chrono::steady_clock::now() + std::chrono::seconds(pids.empty() ? 3 : 10));
  for (pid_t pid : pids) {
    auto status = engine.scan_result(pid);
    if (status == python::AttachStatus::kNotPython)
      return make_error("pid {} ({}) is not a Python process", pid, proc::comm_or_unknown(pid));
    if (status == python::AttachStatus::kGone)
      return make_error("process {} exited before it could be profiled", pid);
  }
  return {};
}

}  // namespace krait::engine
