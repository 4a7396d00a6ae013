#include "record/record.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "bpf/features.h"
#include "engine/engine.h"
#include "engine/loop_support.h"
#include "export/atomic_file.h"
#include "proc/processes.h"
#include "profile/profile.h"
#include "record/status_line.h"
#include "util/clock.h"
#include "util/files.h"
#include "util/unique_fd.h"

namespace krait::record {
namespace {

using engine::Engine;
using engine::EngineOptions;

Result<std::vector<python::OffsetTable>> load_user_tables(const std::vector<std::string>& files) {
  std::vector<python::OffsetTable> tables;
  // The operator's --offsets files: tables of a few KiB each.
  constexpr size_t kOffsetsFileMaxBytes = size_t{64} << 20;
  for (const auto& file : files) {
    auto text = read_file(file, kOffsetsFileMaxBytes);
    if (!text)
      return text.error().context("--offsets");
    auto table = python::parse_offset_table(*text);
    if (!table)
      return table.error().context(file);
    tables.push_back(std::move(*table));
  }
  return tables;
}

Result<void> check_options(const RecordOptions& o) {
  if (auto missing = bpf::missing_capabilities(bpf::effective_capabilities()))
    return Error{*missing};
  if (o.duration_s && !(*o.duration_s > 0))
    return make_error("duration must be positive (got {})", *o.duration_s);
  for (pid_t pid : o.pids) {
    if (pid <= 0 || !std::filesystem::exists("/proc/" + std::to_string(pid)))
      return make_error("no process with pid {}: check the pid (ps -p {})", pid, pid);
  }
  if (o.all_processes && o.stacks != StackMode::kMixed)
    return make_error("--all-processes records native stacks: it needs --stacks mixed");
  if (o.all_processes && !o.pids.empty())
    return make_error("--all-processes and --pid exclude each other");
  return {};
}

Result<EngineOptions> engine_options(const RecordOptions& o) {
  EngineOptions e;
  auto tables = load_user_tables(o.offsets_files);
  if (!tables)
    return tables.error();
  e.attach.user_tables = std::move(*tables);
  e.attach.builtin_tables = o.builtin_offsets;
  e.max_depth = o.max_depth;
  bpf::SamplerConfig& cfg = e.sampler;
  cfg.frequency_hz = o.frequency_hz;
  cfg.max_depth = o.max_depth;
  cfg.listed_only = !o.pids.empty();
  cfg.source = o.event;
  cfg.measure_cost = o.measure_cost;
  cfg.gil_only = o.gil_only;
  cfg.native = o.stacks == StackMode::kMixed;
  cfg.kernel_stacks = o.kernel_stacks;
  cfg.user_stack_bytes = o.user_stack_bytes;
  cfg.all_processes = o.all_processes;
  cfg.on_cpu = o.mode != bpf::TimeMode::kOffCpu;
  cfg.off_cpu = o.mode != bpf::TimeMode::kCpu;
  cfg.switch_every = o.switch_every;
  cfg.switch_budget = o.switch_budget;
  return e;
}

void show_status(Engine& engine, StatusLine& status, uint64_t start_mono,
                 std::optional<double> duration_s) {
  const engine::EngineHealth health = engine.health();
  status.show({.elapsed_s = static_cast<double>(monotonic_ns() - start_mono) / 1e9,
               .duration_s = duration_s,
               .samples = health.samples,
               .processes = health.python_processes,
               .dropped = health.ring_full + health.queue_full});
}

// Runs until SIGINT/SIGTERM or the end of --duration.
Result<void> run_until_stopped(Engine& engine, int sigfd, std::optional<double> duration_s,
                               StatusLine& status) {
  const uint64_t start_mono = monotonic_ns();
  auto epfd = engine::epoll_fd();
  if (!epfd)
    return epfd.error();
  KRAIT_TRY(engine.add_to(epfd->get()));
  KRAIT_TRY(engine::epoll_add(epfd->get(), sigfd));
  UniqueFd timer;
  if (duration_s) {
    auto t = engine::timer_fd(*duration_s);
    if (!t)
      return t.error();
    timer = std::move(*t);
    KRAIT_TRY(engine::epoll_add(epfd->get(), timer.get()));
  }
  UniqueFd tick;
  if (status.live()) {
    auto t = engine::timer_fd(1.0, /*repeat=*/true);
    if (!t)
      return t.error();
    tick = std::move(*t);
    KRAIT_TRY(engine::epoll_add(epfd->get(), tick.get()));
    show_status(engine, status, start_mono, duration_s);
  }
  for (;;) {
    epoll_event events[8];
    auto ready = engine.wait(epfd->get(), events);
    if (!ready)
      return ready.error();
    for (int i = 0; i < *ready; ++i) {
      const int fd = events[i].data.fd;
      if (fd == sigfd) {
        spdlog::debug("stopping: signal {}", engine::read_signal(fd));
        return {};
      }
      if (fd == timer.get())
        return {};
      if (fd == tick.get()) {
        engine::drain_timer(fd);
        show_status(engine, status, start_mono, duration_s);
      }
    }
  }
}

// Writes the profile (and --stats-json), prints the summary.
Result<void> write_outputs(const RecordOptions& o, const std::string& output,
                           profile::Profile profile, const engine::RunSummary& run_summary,
                           int64_t start_unix, uint64_t duration_ns) {
  auto summary = engine::summary_text(run_summary);
  profile.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / o.frequency_hz);
  profile.meta().off_cpu = o.mode != bpf::TimeMode::kCpu;
  profile.meta().on_cpu = o.mode != bpf::TimeMode::kOffCpu;
  profile.meta().start_time_unix_ns = start_unix;
  profile.meta().duration_ns = static_cast<int64_t>(duration_ns);
  profile.meta().comments = summary;
  Result<void> written = exporter::write_profile_file(profile, o.format, output);
  for (const auto& line : summary)
    fmt::print(stderr, "{}\n", line);
  if (!written)
    return written.error().context("writing " + output);
  if (!o.stats_json.empty())
    KRAIT_TRY(
        exporter::write_file_atomically(o.stats_json, engine::summary_json(run_summary) + "\n"));
  if (profile.meta().off_cpu)
    fmt::print(stderr, "krait: wrote {} ({} samples on CPU, {:.3f} s off CPU, {} stacks)\n", output,
               profile.total_count(), static_cast<double>(profile.total_off_cpu_ns()) / 1e9,
               profile.distinct_samples());
  else
    fmt::print(stderr, "krait: wrote {} ({} samples, {} stacks)\n", output, profile.total_count(),
               profile.distinct_samples());
  return {};
}

}  // namespace

std::string default_output_name(OutputFormat format) {
  char host[256] = "host";
  ::gethostname(host, sizeof host - 1);
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("krait-{}-{}.{}", host, stamp, exporter::output_format_info(format).extension);
}

Result<int> run_record(const RecordOptions& o) {
  KRAIT_TRY(check_options(o));
  auto options = engine_options(o);
  if (!options)
    return options.error();
  const std::string output = o.output.empty() ? default_output_name(o.format) : o.output;
  // Signals are blocked before the builder thread starts, so it inherits
  // the mask and the signalfd alone receives them.
  auto sigfd = engine::signal_fd({SIGINT, SIGTERM});
  if (!sigfd)
    return sigfd.error();
  auto created = Engine::create(std::move(*options));
  if (!created)
    return created.error();
  Engine& engine = **created;
  KRAIT_TRY(engine::attach_running(engine, o.pids));

  KRAIT_TRY(engine.start());
  const int64_t start_unix = unix_now_ns();
  const uint64_t start_mono = monotonic_ns();
  spdlog::info("recording {} at {} Hz ({}){}",
               o.pids.empty() ? std::string("every Python process")
                              : fmt::format("{} process(es)", o.pids.size()),
               o.frequency_hz, engine.source_name(),
               o.duration_s ? fmt::format(" for {} s", *o.duration_s) : " until Ctrl-C");
  engine::signal_ready(o.ready_fd);
  {
    StatusLine status(stderr);
    KRAIT_TRY(run_until_stopped(engine, sigfd->get(), o.duration_s, status));
  }

  // No new samples; then everything the kernel already holds; then the
  // builder finishes what is queued.
  KRAIT_TRY(engine.stop());
  const uint64_t end_mono = monotonic_ns();
  engine.finish();
  // One series in a recording: the profile of the whole run.
  auto profiles = engine.take_profiles(static_cast<int64_t>(end_mono));
  KRAIT_TRY(write_outputs(o, output,
                          profiles.empty() ? profile::Profile{} : std::move(profiles[0].profile),
                          engine.summary(static_cast<double>(end_mono - start_mono) / 1e9),
                          start_unix, end_mono - start_mono));

  if (!o.pids.empty() && engine.attached() == 0) {
    fmt::print(stderr, "krait: none of the requested processes could be profiled\n");
    return 1;
  }
  if (engine.attached() == 0)
    spdlog::warn("no Python process was found to profile");
  return 0;
}

}  // namespace krait::record
