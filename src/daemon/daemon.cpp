#include "daemon/daemon.h"

#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "bpf/features.h"
#include "daemon/app_name.h"
#include "daemon/process_filter.h"
#include "engine/collector.h"
#include "engine/loop_support.h"
#include "export/directory_output.h"
#include "export/pprof.h"
#include "export/pyroscope.h"
#include "export/upload_queue.h"
#include "proc/container.h"
#include "util/clock.h"

namespace krait::daemon {
namespace {

using engine::Collector;
using engine::SeriesRef;
using engine::TrackedProcess;

// Labels that differ per process go on each sample inside the pprof; the
// rest name the series (a Pyroscope series per application, host and
// container, not per pid).
bool is_sample_label(const std::string& name) {
  static const std::set<std::string> names{"pid", "process_name", "python_version",
                                           "container_pid"};
  return names.count(name) > 0;
}

// Where profiles go. Used from the builder thread (deliver) and the run loop
// (reload, flush, health): one mutex.
class Outputs {
 public:
  static Result<std::unique_ptr<Outputs>> create(const DaemonConfig& config) {
    auto out = std::make_unique<Outputs>();
    if (!config.pyroscope.url.empty()) {
      auto options = pyroscope_options(config);
      if (!options)
        return options.error();
      auto sender = exporter::PyroscopeSender::create(std::move(*options));
      if (!sender)
        return sender.error();
      out->sender_ = std::move(*sender);
      out->queue_ =
          std::make_unique<exporter::UploadQueue>(*out->sender_, upload_queue_options(config));
    }
    if (!config.directory.path.empty())
      out->directory_ =
          std::make_unique<exporter::DirectoryOutput>(directory_output_options(config));
    out->rate_hz_ = config.sampling_rate_hz;
    return out;
  }

  void deliver(const engine::Series& series, profile::Profile profile, int64_t from_ns,
               int64_t until_ns) {
    profile.meta().start_time_unix_ns = from_ns;
    profile.meta().duration_ns = until_ns - from_ns;
    profile.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / rate_hz_);
    auto bytes = exporter::encode_pprof(profile);
    std::lock_guard lock(mutex_);
    if (!bytes) {
      ++encode_failures_;
      spdlog::error("{}: cannot encode its profile: {}", series.application, bytes.error().message);
      return;
    }
    if (directory_) {
      auto written = directory_->write(series.application, from_ns / 1'000'000'000,
                                       until_ns / 1'000'000'000, *bytes);
      // A full or unwritable directory is reported, never fatal.
      if (!written && written.error().message != last_directory_error_) {
        spdlog::error("profile directory: {}", written.error().message);
        last_directory_error_ = written.error().message;
      } else if (written) {
        last_directory_error_.clear();
      }
    }
    if (queue_) {
      exporter::Upload upload;
      upload.application = series.application;
      upload.labels = series.labels;
      upload.from_unix_ns = from_ns;
      upload.until_unix_ns = until_ns;
      upload.sample_rate_hz = rate_hz_;
      upload.pprof = std::move(*bytes);
      upload.id = exporter::make_upload_id();
      queue_->enqueue(std::move(upload));
    }
    ++delivered_;
  }

  // Sends what is queued until `deadline`; the queue stops after this.
  void flush(std::chrono::steady_clock::time_point deadline) {
    std::lock_guard lock(mutex_);
    if (queue_ && !queue_->flush(deadline)) {
      auto s = queue_->stats();
      spdlog::warn("{} profile(s) could not be uploaded before exiting: {}", s.queued,
                   s.last_error.empty() ? "timeout" : s.last_error);
    }
  }

  std::string health() const {
    std::lock_guard lock(mutex_);
    std::string out = fmt::format("{} profiles cut", delivered_);
    // A profile that cannot be encoded is lost: say so where operators look.
    if (encode_failures_)
      out += fmt::format(" ({} could not be encoded)", encode_failures_);
    if (queue_) {
      auto s = queue_->stats();
      out += fmt::format(
          ", uploads: {} sent, {} queued, {} retried, {} dropped (queue full), {} "
          "rejected",
          s.sent, s.queued, s.retried, s.dropped_by_cap, s.rejected);
      if (!s.last_error.empty() && s.queued)
        out += " (last error: " + s.last_error + ")";
    }
    if (directory_) {
      auto s = directory_->stats();
      out += fmt::format(", files: {} written, {} failed", s.written, s.failed);
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::unique_ptr<exporter::PyroscopeSender> sender_;
  std::unique_ptr<exporter::UploadQueue> queue_;
  std::unique_ptr<exporter::DirectoryOutput> directory_;
  uint32_t rate_hz_ = 99;
  uint64_t delivered_ = 0;
  uint64_t encode_failures_ = 0;
  std::string last_directory_error_;
};

// The series of every application, shared by all its processes. Interned
// from Inspector workers (the naming hooks run there), hence the lock.
class SeriesTable {
 public:
  SeriesRef intern(const std::string& application, const profile::Labels& labels) {
    std::lock_guard lock(mutex_);
    auto key = std::make_pair(application, labels);
    auto it = series_.find(key);
    if (it == series_.end())
      it = series_
               .emplace(key,
                        std::make_shared<const engine::Series>(engine::Series{application, labels}))
               .first;
    return it->second;
  }

 private:
  std::mutex mutex_;
  std::map<std::pair<std::string, profile::Labels>, SeriesRef> series_;
};

// How processes are chosen and named; rebuilt on SIGHUP. The hooks it
// hands out run on Inspector workers and hold what they use, so a reload
// never pulls anything from under a read in flight.
struct Naming {
  std::shared_ptr<const ProcessFilter> filter;
  std::shared_ptr<const ProcessDescriber> describer;
  std::shared_ptr<SeriesTable> series = std::make_shared<SeriesTable>();

  static Result<Naming> create(const DaemonConfig& config) {
    Naming n;
    auto filter = ProcessFilter::create(config.processes);
    if (!filter)
      return filter.error();
    n.filter = std::make_shared<const ProcessFilter>(std::move(*filter));
    auto describer = ProcessDescriber::create(config, effective_hostname(config));
    if (!describer)
      return describer.error();
    n.describer = std::make_shared<const ProcessDescriber>(std::move(*describer));
    return n;
  }

  // Whether the selection takes `pid`; nullopt when the process is gone or
  // unreadable.
  static std::optional<bool> selects(const ProcessFilter& filter, pid_t pid) {
    auto identity = read_process_identity(pid);
    if (!identity)
      return std::nullopt;
    auto container = proc::read_container_info(pid);
    return filter.matches(*identity, container ? *container : proc::ContainerInfo{});
  }

  std::function<bool(pid_t)> wanted_hook() const {
    return [filter = filter](pid_t pid) {
      return selects(*filter, pid).value_or(true);  // gone or unreadable: the attach decides
    };
  }

  std::function<engine::ProcessNaming(pid_t, const std::string&)> describe_hook() const {
    return [describer = describer, series = series](pid_t pid, const std::string& version) {
      engine::ProcessNaming naming;
      naming.series = series_of(*describer, *series, pid, version, &naming.sample_labels);
      return naming;
    };
  }

  // --all-processes: a process that is not Python, named by the same rules;
  // null when the selection does not want it. One gone before it could be
  // read cannot be shown to match a criterion: only a selection of every
  // process takes it (as "unknown").
  engine::OtherSeriesFn other_hook() const {
    return
        [filter = filter, describer = describer, series = series](pid_t pid, const std::string&) {
          if (!selects(*filter, pid).value_or(filter->selects_all()))
            return SeriesRef{};
          return series_of(*describer, *series, pid, "", nullptr);
        };
  }

 private:
  // The application's series; the labels that vary per sample (the
  // container's pid) go to `sample_labels` when given.
  static SeriesRef series_of(const ProcessDescriber& describer, SeriesTable& table, pid_t pid,
                             const std::string& version, profile::Labels* sample_labels) {
    auto d = describer.describe(pid, version);
    profile::Labels series_labels;
    std::string application = "unknown";
    if (d) {
      application = d->application;
      for (auto& [k, v] : d->labels) {
        if (!is_sample_label(k))
          series_labels.emplace_back(k, v);
        else if (k == "container_pid" && sample_labels != nullptr)
          sample_labels->emplace_back(k, v);
      }
    }
    return table.intern(application, series_labels);
  }
};

// How long uploads may take after SIGTERM (or after a reload replaced
// them) before what is left is given up.
constexpr std::chrono::seconds kFlushTime{5};

// The wall-clock boundary after `unix_ns`, on multiples of the interval.
int64_t next_boundary(int64_t unix_ns, uint32_t interval_s) {
  const int64_t step = static_cast<int64_t>(interval_s) * 1'000'000'000;
  return (unix_ns / step + 1) * step;
}

}  // namespace

Result<int> run_daemon(DaemonRunOptions o) {
  if (auto missing = bpf::missing_capabilities(bpf::effective_capabilities()))
    return Error{*missing};
  DaemonConfig config = std::move(o.config);

  auto sigfd = engine::signal_fd({SIGINT, SIGTERM, SIGHUP});
  if (!sigfd)
    return sigfd.error();

  auto outputs_result = Outputs::create(config);
  if (!outputs_result)
    return outputs_result.error();
  std::shared_ptr<Outputs> outputs = std::move(*outputs_result);
  std::mutex outputs_mutex;  // guards the pointer (swapped on reload) and delivery
  // Outputs replaced by a reload, delivering what they still hold. A
  // finished thread keeps its stack until joined: those are joined at the
  // next reload, so frequent reloads do not pile them up.
  struct Retiring {
    std::shared_ptr<std::atomic<bool>> done = std::make_shared<std::atomic<bool>>(false);
    std::jthread thread;
  };
  std::vector<Retiring> retiring;

  auto naming_result = Naming::create(config);
  if (!naming_result)
    return naming_result.error();
  Naming naming = std::move(*naming_result);

  engine::CollectorOptions copts;
  copts.sampler.frequency_hz = config.sampling_rate_hz;
  copts.sampler.native = config.stack_mode == StackMode::kMixed;
  copts.sampler.kernel_stacks = config.kernel_stacks;
  copts.sampler.all_processes = config.all_processes;
  copts.other_series = naming.other_hook();
  copts.tracker.wanted = naming.wanted_hook();
  copts.tracker.describe = naming.describe_hook();
  auto collector = Collector::create(std::move(copts));
  if (!collector)
    return collector.error();
  Collector& c = **collector;

  // The wall clock names intervals; the monotonic clock (the samples' own)
  // decides which interval a sample falls in. One fixed mapping between
  // them keeps consecutive intervals exactly adjacent.
  const int64_t unix_at_start = unix_now_ns();
  const int64_t mono_at_start = static_cast<int64_t>(monotonic_ns());
  auto to_unix = [&](int64_t mono) { return mono - mono_at_start + unix_at_start; };
  auto to_mono = [&](int64_t unix) { return unix - unix_at_start + mono_at_start; };

  // Runs on the builder thread at every interval end. The outputs lock is
  // held throughout, so once a reload has swapped the outputs no profile can
  // still go into the old ones (their queue is closed by then).
  c.builder().set_interval_sink([&](std::vector<engine::SeriesProfile> profiles) {
    std::lock_guard lock(outputs_mutex);
    const std::shared_ptr<Outputs>& out = outputs;
    for (auto& sp : profiles) {
      if (!sp.series)
        continue;
      // The builder's own start: it moves on at every interval end, also of
      // an interval without samples, so a profile after an idle interval
      // does not reach back over it. Its first interval starts at 0.
      out->deliver(*sp.series, std::move(sp.profile),
                   to_unix(std::max(sp.start_ktime_ns, mono_at_start)), to_unix(sp.end_ktime_ns));
    }
    // The interval's profiles and the state of processes that exited are
    // freed by now; glibc keeps freed memory in its arenas unless asked,
    // and a service's RSS should come back down after a burst of processes.
    profiles.clear();
    ::malloc_trim(0);
  });

  KRAIT_TRY(c.scan());
  // What runs already is attached before sampling starts (a bounded time).
  c.await_scan(std::chrono::steady_clock::now() + std::chrono::seconds(3));
  auto epfd = engine::epoll_fd();
  if (!epfd)
    return epfd.error();
  auto interval_timer = engine::timer_fd(3600);
  auto health_timer = engine::timer_fd(config.health_interval_s, /*repeat=*/true);
  if (!interval_timer)
    return interval_timer.error();
  if (!health_timer)
    return health_timer.error();
  KRAIT_TRY(c.add_to(epfd->get()));
  KRAIT_TRY(engine::epoll_add(epfd->get(), sigfd->get()));
  KRAIT_TRY(engine::epoll_add(epfd->get(), interval_timer->get()));
  KRAIT_TRY(engine::epoll_add(epfd->get(), health_timer->get()));

  int64_t boundary_unix = next_boundary(unix_at_start, config.upload_interval_s);
  KRAIT_TRY(
      engine::arm_timer_at(interval_timer->get(), static_cast<uint64_t>(to_mono(boundary_unix))));
  KRAIT_TRY(c.start());
  spdlog::info("profiling every {}process{} at {} Hz ({}), {} s intervals{}{}",
               config.all_processes ? "" : "Python ",
               config.processes == ProcessSelection{} ? "" : " the selection matches",
               config.sampling_rate_hz, c.sampler().source_name(), config.upload_interval_s,
               config.pyroscope.url.empty() ? "" : ", to " + config.pyroscope.url,
               config.directory.path.empty() ? "" : ", into " + config.directory.path);
  engine::signal_ready(o.ready_fd);

  uint64_t last_samples = 0;
  bool running = true;
  while (running) {
    epoll_event events[8];
    auto ready = c.wait(epfd->get(), events);
    if (!ready)
      return ready.error();
    for (int i = 0; i < *ready; ++i) {
      const int fd = events[i].data.fd;
      if (fd == interval_timer->get()) {
        engine::drain_timer(fd);
        // Samples already in the ring belong before the boundary.
        if (auto r = c.consume(); !r)
          return r.error();
        c.end_interval(static_cast<uint64_t>(to_mono(boundary_unix)));
        // Processes that exited and the caches they left go with the
        // interval they ended in.
        c.tracker().prune_exited();
        c.pipeline().prune_caches();
        boundary_unix = next_boundary(boundary_unix, config.upload_interval_s);
        KRAIT_TRY(engine::arm_timer_at(fd, static_cast<uint64_t>(to_mono(boundary_unix))));
      } else if (fd == health_timer->get()) {
        engine::drain_timer(fd);
        const auto& ps = c.pipeline().stats();
        std::shared_ptr<Outputs> out;
        {
          std::lock_guard lock(outputs_mutex);
          out = outputs;
        }
        auto counters = c.sampler().counters();
        spdlog::info(
            "health: {} Python processes profiled, {} samples (+{}), {} lost (ring "
            "full), {} dropped (builder behind); {}; {}",
            c.tracker().attached(), ps.samples, ps.samples - last_samples,
            counters[KRAIT_CNT_RINGBUF_FULL], ps.queue_full, c.inspection_health(), out->health());
        last_samples = ps.samples;
      } else if (fd == sigfd->get()) {
        const int sig = engine::read_signal(fd);
        if (sig != SIGHUP) {
          spdlog::info("{}: delivering the last interval and exiting",
                       sig == SIGTERM ? "SIGTERM" : "SIGINT");
          running = false;
          continue;
        }
        // SIGHUP: the configuration again, applied where it can be live.
        if (!o.flags)
          continue;
        auto reloaded = resolve_config(*o.flags);
        if (!reloaded) {
          spdlog::error("configuration not reloaded: {}", reloaded.error().message);
          continue;
        }
        if (reloaded->sampling_rate_hz != config.sampling_rate_hz ||
            reloaded->stack_mode != config.stack_mode ||
            reloaded->kernel_stacks != config.kernel_stacks ||
            reloaded->all_processes != config.all_processes)
          spdlog::warn("sampling rate and stack mode changes need a restart of krait");
        auto new_outputs = Outputs::create(*reloaded);
        auto new_naming = Naming::create(*reloaded);
        if (!new_outputs || !new_naming) {
          spdlog::error("configuration not reloaded: {}",
                        (!new_outputs ? new_outputs.error() : new_naming.error()).message);
          continue;
        }
        std::shared_ptr<Outputs> old;
        {
          std::lock_guard lock(outputs_mutex);
          old = std::exchange(outputs, std::move(*new_outputs));
        }
        // The old uploads finish on a thread of their own: flushing here
        // would stop the run loop, and the ring buffer would overflow.
        std::erase_if(retiring, [](const Retiring& r) { return r.done->load(); });
        Retiring& r = retiring.emplace_back();
        r.thread = std::jthread([old = std::move(old), done = r.done] {
          old->flush(std::chrono::steady_clock::now() + kFlushTime);
          *done = true;
        });
        naming = std::move(*new_naming);
        c.tracker().set_hooks(naming.wanted_hook(), naming.describe_hook());
        // Processes that are not Python are named again at their next
        // sample; cached labels go with the old names.
        c.pipeline().set_other_series(naming.other_hook());
        c.pipeline().rename_others();
        c.pipeline().prune_caches();
        // A new interval length applies from the next boundary on.
        config = std::move(*reloaded);
        spdlog::set_level(spdlog::level::from_str(config.log_level));
        spdlog::info("configuration reloaded");
      }
    }
  }

  // The last interval ends now: deliver it, then give the uploads a few
  // seconds.
  KRAIT_TRY(c.stop());
  c.end_interval(monotonic_ns());
  c.finish();
  std::shared_ptr<Outputs> out;
  {
    std::lock_guard lock(outputs_mutex);
    out = outputs;
  }
  out->flush(std::chrono::steady_clock::now() + kFlushTime);
  retiring.clear();  // joins: outputs replaced by a late reload get the same time
  spdlog::info("stopped; {}", out->health());
  return 0;
}

}  // namespace krait::daemon
