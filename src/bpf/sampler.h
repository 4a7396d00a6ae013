// The loaded BPF sampler: skeleton, perf events on every CPU, tracepoints.
//
// Ownership: a Sampler owns the BPF object, every link and perf event fd;
// destroying it detaches everything. Lifecycle: open_and_load() ->
// attach_tracepoints() (exec/exit are seen from then on) -> start() (perf
// events: sampling) -> stop() (idempotent) -> destroy. Map updates
// (set_process, add_listed) are safe from any one thread at a time; the
// kernel side reads the maps concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bpf/sampling_options.h"
#include "krait/abi.h"
#include "util/result.h"
#include "util/unique_fd.h"

struct sampler_bpf;
struct bpf_link;

namespace krait::bpf {

enum class EventSource : uint8_t { kAuto, kCycles, kCpuClock };

struct SamplerConfig {
  uint32_t frequency_hz = 99;
  uint32_t max_depth = KRAIT_PY_DEPTH_DEFAULT;
  uint32_t thread_walk_limit = KRAIT_THREAD_WALK_DEFAULT;
  uint64_t unknown_recheck_ns = 1'000'000'000;
  uint32_t ring_buffer_bytes = 8u << 20;  // samples wake the reader only past a quarter
  bool listed_only = false;               // --pid mode
  bool measure_cost = false;              // fill krait_sample.cost_ns
  bool gil_only = false;                  // skip threads that do not hold the GIL
  // Mixed stacks: kernel stack, user registers and a copy of the user stack.
  bool native = false;
  bool kernel_stacks = true;
  uint32_t user_stack_bytes = KRAIT_USER_STACK_DEFAULT;
  bool all_processes = false;  // also sample processes that are not Python
  EventSource source = EventSource::kAuto;
  // What is sampled: threads on a CPU (the perf event), threads leaving it
  // (the sched_switch tracepoint), or both (wall-clock time).
  bool on_cpu = true;
  bool off_cpu = false;
  uint32_t switch_every = 1;  // off CPU: one switch in this many is captured (weighted by it)
  // Off CPU: about this many switches captured per second per CPU at most
  // (0: no limit); above it, one in N (weighted by N), N from the last 100 ms.
  uint32_t switch_budget = kDefaultSwitchBudget;
};

using Counters = std::array<uint64_t, KRAIT_CNT_COUNT>;

class Sampler {
 public:
  static Result<std::unique_ptr<Sampler>> open_and_load(const SamplerConfig& config);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Attaches the exec/exit tracepoints (before a scan, so that no exec
  // after it goes unseen).
  Result<void> attach_tracepoints();
  // Attaches one perf event per online CPU and the context-switch program,
  // as the configuration asks (and the tracepoints if not yet).
  Result<void> start();
  // Detaches the perf events and the context-switch program (no new
  // samples); the exec/exit tracepoints stay until destruction so exits
  // during the final drain are still seen.
  void stop();

  // Updates the entry the sampler created for pid; an Error when it has
  // none (the process exited, or it was never sampled).
  Result<void> set_process(uint32_t pid, const krait_proc_info& info);
  // --pid mode: profile this pid (before start()).
  Result<void> add_listed(uint32_t pid);

  Counters counters() const;  // summed over CPUs
  int events_fd() const;
  EventSource source() const { return source_; }  // the event actually used (after start)
  const char* source_name() const;
  uint32_t cpus() const { return cpus_; }  // CPUs sampled by the last start()
  // Kernel-measured cost of the sampler programs (perf event and context
  // switch) so far (BPF_ENABLE_STATS is
  // held for the Sampler's lifetime, so this works without the sysctl).
  struct RunStats {
    uint64_t runs = 0;
    uint64_t run_time_ns = 0;
  };
  RunStats run_stats() const;

 private:
  struct LinkDeleter {
    void operator()(bpf_link* link) const;
  };
  using Link = std::unique_ptr<bpf_link, LinkDeleter>;

  Sampler(sampler_bpf* skel, const SamplerConfig& config) : skel_(skel), config_(config) {}
  Result<void> attach_perf_events();

  sampler_bpf* skel_;
  SamplerConfig config_;
  EventSource source_ = EventSource::kAuto;
  uint32_t cpus_ = 0;
  UniqueFd stats_fd_;
  std::vector<Link> tracepoint_links_;
  std::vector<Link> perf_links_;
  Link switch_link_;
};

// Routes libbpf's own messages into spdlog (debug level unless warnings).
void install_libbpf_logging();

}  // namespace krait::bpf
