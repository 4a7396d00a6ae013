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
#include "engine/collector.h"
#include "engine/loop_support.h"
#include "engine/pipeline.h"
#include "engine/process_tracker.h"
#include "engine/stack_builder.h"
#include "engine/summary.h"
#include "events/ring_reader.h"
#include "export/atomic_file.h"
#include "export/folded.h"
#include "export/pprof.h"
#include "proc/processes.h"
#include "profile/profile.h"
#include "util/clock.h"
#include "util/files.h"
#include "util/unique_fd.h"

namespace krait::record {
namespace {

using engine::Collector;
using engine::CollectorOptions;

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

}  // namespace

std::string default_output_name(OutputFormat format) {
  char host[256] = "host";
  ::gethostname(host, sizeof host - 1);
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("krait-{}-{}.{}", host, stamp,
                     format == OutputFormat::kPprof ? "pb.gz" : "folded");
}

Result<int> run_record(const RecordOptions& o) {
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

  CollectorOptions copts;
  auto tables = load_user_tables(o.offsets_files);
  if (!tables)
    return tables.error();
  copts.tracker.attach.user_tables = std::move(*tables);
  copts.tracker.attach.builtin_tables = o.builtin_offsets;
  copts.max_depth = o.max_depth;
  bpf::SamplerConfig& cfg = copts.sampler;
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
  const std::string output = o.output.empty() ? default_output_name(o.format) : o.output;

  // Signals are blocked before the builder thread starts, so it inherits
  // the mask and the signalfd alone receives them.
  auto sigfd = engine::signal_fd({SIGINT, SIGTERM});
  if (!sigfd)
    return sigfd.error();
  auto collector = Collector::create(std::move(copts));
  if (!collector)
    return collector.error();
  Collector& c = **collector;

  // Attach to what runs already (on the Inspector's workers: a process
  // that does not answer cannot hold the recording up); later processes
  // arrive through exec events and the sampler's unknown-pid reports.
  KRAIT_TRY(c.scan(o.pids));
  // What runs already is attached before sampling starts, so its first
  // samples count; for a bounded time (one that does not answer means "not
  // yet", not "no"), and the named processes of -p get longer.
  c.await_scan(std::chrono::steady_clock::now() + std::chrono::seconds(o.pids.empty() ? 3 : 10));
  if (!o.pids.empty()) {
    // The named processes must be Python.
    for (pid_t pid : o.pids) {
      auto status = c.tracker().scan_result(pid);
      if (status == python::AttachStatus::kNotPython)
        return make_error("pid {} ({}) is not a Python process", pid, proc::comm_or_unknown(pid));
      if (status == python::AttachStatus::kGone)
        return make_error("process {} exited before it could be profiled", pid);
    }
  }

  auto epfd = engine::epoll_fd();
  if (!epfd)
    return epfd.error();
  KRAIT_TRY(c.add_to(epfd->get()));
  KRAIT_TRY(engine::epoll_add(epfd->get(), sigfd->get()));
  UniqueFd timer;
  if (o.duration_s) {
    auto t = engine::timer_fd(*o.duration_s);
    if (!t)
      return t.error();
    timer = std::move(*t);
    KRAIT_TRY(engine::epoll_add(epfd->get(), timer.get()));
  }

  KRAIT_TRY(c.start());
  const int64_t start_unix = unix_now_ns();
  const uint64_t start_mono = monotonic_ns();
  spdlog::info("recording {} at {} Hz ({}){}",
               o.pids.empty() ? std::string("every Python process")
                              : fmt::format("{} process(es)", o.pids.size()),
               o.frequency_hz, c.sampler().source_name(),
               o.duration_s ? fmt::format(" for {} s", *o.duration_s) : " until Ctrl-C");
  engine::signal_ready(o.ready_fd);

  bool running = true;
  while (running) {
    epoll_event events[8];
    auto ready = c.wait(epfd->get(), events);
    if (!ready)
      return ready.error();
    for (int i = 0; i < *ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == sigfd->get()) {
        spdlog::debug("stopping: signal {}", engine::read_signal(fd));
        running = false;
      } else if (fd == timer.get()) {
        running = false;
      }
    }
  }

  // No new samples; then everything the kernel already holds; then the
  // builder finishes what is queued.
  KRAIT_TRY(c.stop());
  const uint64_t end_mono = monotonic_ns();
  c.finish();
  // One series in a recording: the profile of the whole run.
  auto profiles = c.builder().take_profiles(static_cast<int64_t>(end_mono));
  profile::Profile profile = profiles.empty() ? profile::Profile{} : std::move(profiles[0].profile);
  profile.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / o.frequency_hz);
  const engine::RunSummary run_summary =
      engine::build_summary(c.facts(static_cast<double>(end_mono - start_mono) / 1e9), c.tracker(),
                            c.pipeline().stats(), c.builder().stats());
  auto summary = engine::summary_text(run_summary);

  profile.meta().start_time_unix_ns = start_unix;
  profile.meta().duration_ns = static_cast<int64_t>(end_mono - start_mono);
  profile.meta().comments = summary;
  Result<void> written = o.format == OutputFormat::kPprof
                             ? exporter::write_pprof_file(profile, output)
                             : exporter::write_folded_file(profile, output);
  for (const auto& line : summary)
    fmt::print(stderr, "{}\n", line);
  if (!written)
    return written.error().context("writing " + output);
  if (!o.stats_json.empty())
    KRAIT_TRY(
        exporter::write_file_atomically(o.stats_json, engine::summary_json(run_summary) + "\n"));
  fmt::print(stderr, "krait: wrote {} ({} samples, {} stacks)\n", output, profile.total_count(),
             profile.samples().size());

  if (!o.pids.empty() && c.tracker().attached() == 0) {
    fmt::print(stderr, "krait: none of the requested processes could be profiled\n");
    return 1;
  }
  if (c.tracker().attached() == 0)
    spdlog::warn("no Python process was found to profile");
  return 0;
}

}  // namespace krait::record
