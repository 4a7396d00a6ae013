#include "record/session.h"

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
#include "events/ring_reader.h"
#include "export/atomic_file.h"
#include "export/folded.h"
#include "export/pprof.h"
#include "profile/profile.h"
#include "record/pipeline.h"
#include "record/process_tracker.h"
#include "record/stack_builder.h"
#include "record/summary.h"
#include "util/files.h"
#include "util/unique_fd.h"

namespace krait::record {
namespace {

// Samples waiting for the stack builder; with native stacks a job is about
// the size of its stack copy.
constexpr size_t kJobQueueBytes = 256u << 20;

class SamplerSink final : public ProcessMapSink {
 public:
  explicit SamplerSink(bpf::Sampler& sampler) : sampler_(sampler) {}
  Result<void> set_process(uint32_t pid, const krait_proc_info& info) override {
    return sampler_.set_process(pid, info);
  }
  void remove_process(uint32_t pid) override { sampler_.remove_process(pid); }

 private:
  bpf::Sampler& sampler_;
};

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> pids;
  std::error_code ec;
  const pid_t self = ::getpid();
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid != self)
      pids.push_back(pid);
  }
  return pids;
}

std::string comm_of(pid_t pid) {
  auto comm = read_file("/proc/" + std::to_string(pid) + "/comm");
  std::string s = comm ? *comm : "?";
  while (!s.empty() && s.back() == '\n')
    s.pop_back();
  return s;
}

Result<std::vector<python::OffsetTable>> load_user_tables(const std::vector<std::string>& files) {
  std::vector<python::OffsetTable> tables;
  for (const auto& file : files) {
    auto text = read_file(file);
    if (!text)
      return text.error().context("--offsets");
    auto table = python::parse_offset_table(*text);
    if (!table)
      return table.error().context(file);
    tables.push_back(std::move(*table));
  }
  return tables;
}

// Blocks SIGINT/SIGTERM for the whole process and returns an fd that reports
// them, so a signal ends the loop instead of the program.
Result<UniqueFd> signal_fd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0)
    return make_error("cannot block signals");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid())
    return make_error("signalfd: {}", std::strerror(errno));
  return fd;
}

Result<UniqueFd> duration_timer(double seconds) {
  UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!fd.valid())
    return make_error("timerfd_create: {}", std::strerror(errno));
  itimerspec spec{};
  double whole = std::floor(seconds);
  spec.it_value.tv_sec = static_cast<time_t>(whole);
  spec.it_value.tv_nsec = static_cast<long>((seconds - whole) * 1e9);
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0)
    spec.it_value.tv_nsec = 1;
  if (::timerfd_settime(fd.get(), 0, &spec, nullptr) != 0)
    return make_error("timerfd_settime: {}", std::strerror(errno));
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
  TrackerOptions topts;
  auto tables = load_user_tables(o.offsets_files);
  if (!tables)
    return tables.error();
  topts.attach.user_tables = std::move(*tables);
  topts.attach.builtin_tables = o.builtin_offsets;
  topts.listed_only = !o.pids.empty();
  const std::string output = o.output.empty() ? default_output_name(o.format) : o.output;

  auto sigfd = signal_fd();
  if (!sigfd)
    return sigfd.error();

  bpf::install_libbpf_logging();
  bpf::SamplerConfig cfg;
  cfg.frequency_hz = o.frequency_hz;
  cfg.max_depth = o.max_depth;
  cfg.listed_only = topts.listed_only;
  cfg.source = o.event;
  cfg.measure_cost = o.measure_cost;
  cfg.gil_only = o.gil_only;
  cfg.native = o.stacks == StackMode::kMixed;
  cfg.kernel_stacks = o.kernel_stacks;
  cfg.user_stack_bytes = o.user_stack_bytes;
  cfg.all_processes = o.all_processes;
  {
    // Room for about a second of samples on every CPU before the reader
    // must catch up; a stack copy makes a record ~20x larger.
    const long cpus = std::max(1L, ::sysconf(_SC_NPROCESSORS_CONF));
    uint64_t want = static_cast<uint64_t>(cpus) * o.frequency_hz *
                    (cfg.native ? o.user_stack_bytes + 4096 : 1024);
    uint64_t ring = 8u << 20;
    while (ring < want && ring < (512u << 20))
      ring <<= 1;
    cfg.ring_buffer_bytes = static_cast<uint32_t>(ring);
  }
  if (o.all_processes && !cfg.native)
    return make_error("--all-processes records native stacks: it needs --stacks mixed");
  if (o.all_processes && !o.pids.empty())
    return make_error("--all-processes and --pid exclude each other");
  auto sampler = bpf::Sampler::open_and_load(cfg);
  if (!sampler)
    return sampler.error();

  SamplerSink sink(**sampler);
  ProcessTracker tracker(sink, std::move(topts));
  // The stack builder owns the profile until it is joined; the reader only
  // names Python frames and queues the rest.
  unwind::ModuleCache module_cache;
  BuilderOptions bopts;
  bopts.native = cfg.native;
  bopts.kernel = o.kernel_stacks;
  auto builder = StackBuilder::create(bopts);
  if (!builder)
    return builder.error();
  JobQueue queue(kJobQueueBytes);
  BuilderThread builder_thread(**builder, queue);
  PipelineOptions popts;
  popts.max_depth = o.max_depth;
  popts.native = cfg.native;
  Pipeline pipeline(tracker, queue, popts, &module_cache);
  auto reader = events::RingReader::create((*sampler)->events_fd(), pipeline);
  if (!reader)
    return reader.error();

  // Attach to what runs already; later processes arrive through exec
  // events and the sampler's unknown-pid reports.
  if (!o.pids.empty()) {
    for (pid_t pid : o.pids) {
      auto status = tracker.classify(pid, monotonic_ns());
      if (status == python::AttachStatus::kNotPython)
        return make_error("pid {} ({}) is not a Python process", pid, comm_of(pid));
      if (status == python::AttachStatus::kGone)
        return make_error("process {} exited before it could be profiled", pid);
    }
  } else {
    for (pid_t pid : all_pids())
      (void)tracker.classify(pid, monotonic_ns());
  }

  UniqueFd epfd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epfd.valid())
    return make_error("epoll_create1: {}", std::strerror(errno));
  KRAIT_TRY(epoll_add(epfd.get(), (*reader)->epoll_fd()));
  KRAIT_TRY(epoll_add(epfd.get(), sigfd->get()));
  UniqueFd timer;
  if (o.duration_s) {
    auto t = duration_timer(*o.duration_s);
    if (!t)
      return t.error();
    timer = std::move(*t);
    KRAIT_TRY(epoll_add(epfd.get(), timer.get()));
  }

  KRAIT_TRY((*sampler)->start());
  const int64_t start_unix = unix_now_ns();
  const uint64_t start_mono = monotonic_ns();
  spdlog::info("recording {} at {} Hz ({}){}",
               o.pids.empty() ? std::string("every Python process")
                              : fmt::format("{} process(es)", o.pids.size()),
               o.frequency_hz, (*sampler)->source_name(),
               o.duration_s ? fmt::format(" for {} s", *o.duration_s) : " until Ctrl-C");
  if (o.ready_fd >= 0) {
    [[maybe_unused]] ssize_t n = ::write(o.ready_fd, "ready\n", 6);
    ::close(o.ready_fd);
  }

  bool running = true;
  std::string stop_reason = "duration reached";
  while (running) {
    epoll_event events[4];
    int n = ::epoll_wait(epfd.get(), events, 4, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return make_error("epoll_wait: {}", std::strerror(errno));
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == (*reader)->epoll_fd()) {
        if (auto r = (*reader)->consume(); !r)
          return r.error();
      } else if (fd == sigfd->get()) {
        signalfd_siginfo info{};
        [[maybe_unused]] ssize_t got = ::read(fd, &info, sizeof info);
        stop_reason = info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
        running = false;
      } else if (fd == timer.get()) {
        running = false;
      }
    }
  }

  // No new samples; then everything the kernel already holds.
  (*sampler)->stop();
  // From here on the profile waits for the builder to finish.
  for (;;) {
    auto r = (*reader)->consume();
    if (!r)
      return r.error();
    if (*r == 0)
      break;
  }
  const uint64_t end_mono = monotonic_ns();
  spdlog::debug("stopped: {}", stop_reason);

  RunFacts facts;
  facts.seconds = static_cast<double>(end_mono - start_mono) / 1e9;
  facts.frequency_hz = o.frequency_hz;
  facts.event = (*sampler)->source_name();
  facts.cpus = (*sampler)->cpus();
  facts.counters = (*sampler)->counters();
  facts.malformed_records = (*reader)->malformed();
  facts.bpf_runs = (*sampler)->run_stats();
  builder_thread.finish();
  // One series in a recording: the profile of the whole run.
  auto profiles = (*builder)->take_profiles(static_cast<int64_t>(end_mono));
  profile::Profile profile = profiles.empty() ? profile::Profile{} : std::move(profiles[0].profile);
  profile.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / o.frequency_hz);
  const RunSummary run_summary =
      build_summary(facts, tracker, pipeline.stats(), (*builder)->stats());
  auto summary = summary_text(run_summary);

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
    KRAIT_TRY(exporter::write_file_atomically(o.stats_json, summary_json(run_summary) + "\n"));
  fmt::print(stderr, "krait: wrote {} ({} samples, {} stacks)\n", output, profile.total_count(),
             profile.samples().size());

  if (!o.pids.empty() && tracker.attached() == 0) {
    fmt::print(stderr, "krait: none of the requested processes could be profiled\n");
    return 1;
  }
  if (tracker.attached() == 0)
    spdlog::warn("no Python process was found to profile");
  return 0;
}

}  // namespace krait::record
