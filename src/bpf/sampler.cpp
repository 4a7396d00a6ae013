#include "bpf/sampler.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/perf_event.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>

#include "sampler.skel.h"
#include "util/files.h"
#include "util/text.h"
#include "util/unique_fd.h"

namespace krait::bpf {
namespace {

std::string errno_text(int err) {
  return std::strerror(err < 0 ? -err : err);
}

// "0-3,5,7-8\n" -> {0,1,2,3,5,7,8}; parts that are not a number or a range
// of numbers below kMaxCpus are skipped.
std::vector<int> parse_cpu_list(std::string_view text) {
  // Far above any kernel's NR_CPUS; bounds the loop below.
  constexpr unsigned kMaxCpus = 1u << 16;
  std::vector<int> cpus;
  while (!text.empty() && text.back() == '\n')
    text.remove_suffix(1);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string_view::npos)
      end = text.size();
    const std::string_view part = trim(text.substr(pos, end - pos));
    pos = end + 1;
    const size_t dash = part.find('-');
    const auto lo = parse_unsigned<unsigned>(part.substr(0, dash));
    const auto hi =
        dash == std::string_view::npos ? lo : parse_unsigned<unsigned>(part.substr(dash + 1));
    if (!lo || !hi || *hi >= kMaxCpus)
      continue;
    for (unsigned c = *lo; c <= *hi; ++c)
      cpus.push_back(static_cast<int>(c));
  }
  return cpus;
}

Result<std::vector<int>> online_cpus() {
  auto text = read_file("/sys/devices/system/cpu/online");
  if (!text)
    return text.error();
  auto cpus = parse_cpu_list(*text);
  if (cpus.empty())
    return make_error("no online CPUs listed in /sys/devices/system/cpu/online");
  return cpus;
}

int perf_event_open(perf_event_attr* attr, int cpu) {
  return static_cast<int>(::syscall(__NR_perf_event_open, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC));
}

perf_event_attr make_attr(EventSource source, uint32_t hz) {
  perf_event_attr attr{};
  attr.size = sizeof(attr);
  if (source == EventSource::kCycles) {
    attr.type = PERF_TYPE_HARDWARE;
    attr.config = PERF_COUNT_HW_CPU_CYCLES;
    attr.freq = 1;
    attr.sample_freq = hz;
  } else {
    // The clock counts nanoseconds, so a fixed period is an exact rate.
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.sample_period = 1'000'000'000ull / hz;
  }
  return attr;
}

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof buf, format, args);
  std::string_view line(buf, n > 0 ? std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1) : 0);
  while (!line.empty() && line.back() == '\n')
    line.remove_suffix(1);
  if (level == LIBBPF_WARN)
    spdlog::warn("libbpf: {}", line);
  else
    spdlog::debug("libbpf: {}", line);
  return 0;
}

}  // namespace

void install_libbpf_logging() {
  libbpf_set_print(libbpf_print);
}

void Sampler::LinkDeleter::operator()(bpf_link* link) const {
  bpf_link__destroy(link);
}

Result<std::unique_ptr<Sampler>> Sampler::open_and_load(const SamplerConfig& config) {
  if (config.frequency_hz < kMinFrequencyHz || config.frequency_hz > kMaxFrequencyHz)
    return make_error("sampling frequency {} Hz is out of range ({}-{})", config.frequency_hz,
                      kMinFrequencyHz, kMaxFrequencyHz);
  if (config.user_stack_bytes > KRAIT_USER_STACK_CAP || config.user_stack_bytes % 8 != 0)
    return make_error("user stack copy size {} must be a multiple of 8 up to {}",
                      config.user_stack_bytes, KRAIT_USER_STACK_CAP);
  if (!config.on_cpu && !config.off_cpu)
    return make_error("nothing to sample: neither on-CPU nor off-CPU time was asked for");
  if (config.switch_every == 0 || config.switch_every > UINT16_MAX)
    return make_error("context-switch sampling 1 in {} is out of range (1-{})", config.switch_every,
                      UINT16_MAX);
  if (config.max_depth == 0 || config.max_depth > KRAIT_PY_FRAMES_CAP)
    return make_error("stack depth limit {} is out of range (1-{})", config.max_depth,
                      KRAIT_PY_FRAMES_CAP);

  sampler_bpf* skel = sampler_bpf__open();
  if (!skel)
    return make_error("cannot open the BPF object: {}", errno_text(errno));
  std::unique_ptr<Sampler> sampler(new Sampler(skel, config));  // private constructor

  skel->rodata->cfg_max_depth = config.max_depth;
  skel->rodata->cfg_thread_walk_limit = config.thread_walk_limit;
  skel->rodata->cfg_unknown_recheck_ns = config.unknown_recheck_ns;
  skel->rodata->cfg_self_pid = static_cast<__u32>(::getpid());
  skel->rodata->cfg_listed_only = config.listed_only ? 1 : 0;
  skel->rodata->cfg_measure_cost = config.measure_cost ? 1 : 0;
  skel->rodata->cfg_gil_only = config.gil_only ? 1 : 0;
  skel->rodata->cfg_native = config.native ? 1 : 0;
  skel->rodata->cfg_kernel_stacks = config.kernel_stacks ? 1 : 0;
  skel->rodata->cfg_user_stack_bytes = config.user_stack_bytes;
  skel->rodata->cfg_all_processes = config.all_processes ? 1 : 0;
  skel->rodata->cfg_switch_every = config.switch_every;
  skel->rodata->cfg_switch_budget = config.switch_budget;
  // Not loaded when unused: one program fewer for the verifier, and the
  // tracepoint's BTF is not needed.
  bpf_program__set_autoload(skel->progs.krait_switch, config.off_cpu);
  // A quarter full: early enough that a slow drain never overflows.
  skel->rodata->cfg_wakeup_bytes = config.ring_buffer_bytes / 4;
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0)
    return make_error("cannot count the possible CPUs: {}", errno_text(cpus));
  if (int err = bpf_map__set_max_entries(skel->maps.scratch, 2 * static_cast<uint32_t>(cpus)))
    return make_error("sizing the per-CPU scratch map: {}", errno_text(err));
  if (int err = bpf_map__set_max_entries(skel->maps.events, config.ring_buffer_bytes))
    return make_error("ring buffer size {}: {}", config.ring_buffer_bytes, errno_text(err));

  if (int err = sampler_bpf__load(skel)) {
    // Capabilities were checked before: EACCES here is the verifier.
    if (err == -EPERM)
      return make_error(
          "loading the BPF sampler was refused ({}): krait needs CAP_BPF and CAP_PERFMON (or "
          "root); run it with sudo",
          errno_text(err));
    return make_error("loading the BPF sampler failed: {} (run with -v for the verifier log)",
                      errno_text(err));
  }
  // The profiler reports its own cost; the kernel's timing adds a few tens
  // of nanoseconds per run. Older kernels without BPF_ENABLE_STATS just
  // report nothing.
  sampler->stats_fd_.reset(bpf_enable_stats(BPF_STATS_RUN_TIME));
  return sampler;
}

Sampler::~Sampler() {
  switch_link_.reset();
  perf_links_.clear();
  tracepoint_links_.clear();
  sampler_bpf__destroy(skel_);
}

Result<void> Sampler::start() {
  if (tracepoint_links_.empty())
    KRAIT_TRY(attach_tracepoints());
  if (config_.off_cpu && !switch_link_) {
    bpf_link* link = bpf_program__attach(skel_->progs.krait_switch);
    if (!link)
      return make_error("cannot attach the sched_switch tracepoint: {}", errno_text(errno));
    switch_link_.reset(link);
  }
  if (!config_.on_cpu)
    return {};
  return attach_perf_events();
}

Result<void> Sampler::attach_tracepoints() {
  if (!tracepoint_links_.empty())
    return {};
  struct {
    bpf_program* prog;
    const char* name;
  } tracepoints[] = {{skel_->progs.krait_exec, "sched_process_exec"},
                     {skel_->progs.krait_exit, "sched_process_exit"}};
  for (const auto& tp : tracepoints) {
    bpf_link* link = bpf_program__attach(tp.prog);
    if (!link)
      return make_error("cannot attach the {} tracepoint: {}", tp.name, errno_text(errno));
    tracepoint_links_.emplace_back(link);
  }
  return {};
}

Result<void> Sampler::attach_perf_events() {
  auto cpus = online_cpus();
  if (!cpus)
    return cpus.error();

  EventSource source = config_.source;
  if (source == EventSource::kAuto || source == EventSource::kCycles) {
    perf_event_attr attr = make_attr(EventSource::kCycles, config_.frequency_hz);
    UniqueFd probe(perf_event_open(&attr, cpus->front()));
    if (probe.valid()) {
      source = EventSource::kCycles;
    } else if (source == EventSource::kCycles) {
      return make_error("the cycles event is not available here ({}); use --event cpu-clock",
                        errno_text(errno));
    } else {
      // VMs and some containers have no hardware PMU.
      spdlog::debug("cycles event unavailable ({}), sampling on cpu-clock", errno_text(errno));
      source = EventSource::kCpuClock;
    }
  }
  source_ = source;

  for (int cpu : *cpus) {
    perf_event_attr attr = make_attr(source, config_.frequency_hz);
    UniqueFd fd(perf_event_open(&attr, cpu));
    if (!fd.valid()) {
      int err = errno;
      if (err == ENODEV)
        continue;  // went offline since we listed it
      if (err == EACCES || err == EPERM)
        return make_error(
            "perf_event_open on CPU {} was refused: krait needs CAP_PERFMON (or root); run it "
            "with sudo",
            cpu);
      return make_error("perf_event_open on CPU {}: {}", cpu, errno_text(err));
    }
    bpf_link* link = bpf_program__attach_perf_event(skel_->progs.krait_sample, fd.get());
    if (!link)
      return make_error("attaching the sampler to CPU {}: {}", cpu, errno_text(errno));
    fd.release();  // the link owns the perf event fd now
    perf_links_.emplace_back(link);
  }
  if (perf_links_.empty())
    return make_error("no CPU accepted a perf event");
  cpus_ = static_cast<uint32_t>(perf_links_.size());
  return {};
}

void Sampler::stop() {
  perf_links_.clear();
  switch_link_.reset();
}

Result<void> Sampler::set_process(uint32_t pid, const krait_proc_info& info) {
  // BPF_EXIST: the sampler creates entries; one that is gone belongs to a
  // process that is gone, and must not come back.
  if (bpf_map__update_elem(skel_->maps.procs, &pid, sizeof pid, &info, sizeof info, BPF_EXIST))
    return make_error("updating the process map for pid {}: {}", pid, errno_text(errno));
  return {};
}

Result<void> Sampler::add_listed(uint32_t pid) {
  const uint8_t yes = 1;
  if (bpf_map__update_elem(skel_->maps.listed, &pid, sizeof pid, &yes, sizeof yes, BPF_ANY))
    return make_error("listing pid {} for the sampler: {}", pid, errno_text(errno));
  return {};
}

Counters Sampler::counters() const {
  Counters total{};
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0)
    return total;
  std::vector<uint64_t> values(static_cast<size_t>(ncpu));
  for (uint32_t i = 0; i < KRAIT_CNT_COUNT; ++i) {
    if (bpf_map__lookup_elem(skel_->maps.counters, &i, sizeof i, values.data(),
                             values.size() * sizeof(uint64_t), 0))
      continue;
    for (uint64_t v : values)
      total[i] += v;
  }
  return total;
}

int Sampler::events_fd() const {
  return bpf_map__fd(skel_->maps.events);
}

const char* Sampler::source_name() const {
  return source_ == EventSource::kCycles ? "cycles" : "cpu-clock";
}

Sampler::RunStats Sampler::run_stats() const {
  RunStats total;
  for (bpf_program* prog : {skel_->progs.krait_sample, skel_->progs.krait_switch}) {
    const int fd = bpf_program__fd(prog);
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len))
      continue;
    total.runs += info.run_cnt;
    total.run_time_ns += info.run_time_ns;
  }
  return total;
}

}  // namespace krait::bpf
