// krait_ringbuf_probe: measures, with the kernel's own bpf_stats, what one
// ring-buffer record costs a perf_event BPF program on this machine, with
// and without the reader wakeup, and what two clock reads cost. bench/run
// runs it (part `ringbuf`) to explain the gap between the sampler's
// self-timed walk and its kernel-measured run time; with `nothing` and
// `user-read` (one 8-byte read of the interrupted thread's user stack) it
// gives the machine's floor that the sampler's cost is reported beside
// (part `peers`). One JSON line on stdout.
//
//   krait_ringbuf_probe --mode nothing|wakeup|no-wakeup|clock-pair|user-read
//                       [--hz 99] [--seconds 5] [--record-bytes 512]
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringbuf_probe.h"
#include "ringbuf_probe.skel.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::bench {
namespace {

struct Options {
  probe_mode mode = PROBE_MODE_NOTHING;
  std::string mode_name = "nothing";
  uint32_t hz = 99;
  double seconds = 5;
  uint32_t record_bytes = 512;
};

struct SkeletonDeleter {
  void operator()(ringbuf_probe_bpf* skel) const { ringbuf_probe_bpf__destroy(skel); }
};
struct LinkDeleter {
  void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
struct RingDeleter {
  void operator()(ring_buffer* ring) const { ring_buffer__free(ring); }
};

Result<Options> parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc)
      return make_error("{} needs a value", arg);
    const std::string value = argv[++i];
    if (arg == "--mode") {
      o.mode_name = value;
      if (value == "nothing")
        o.mode = PROBE_MODE_NOTHING;
      else if (value == "wakeup")
        o.mode = PROBE_MODE_WAKEUP;
      else if (value == "no-wakeup")
        o.mode = PROBE_MODE_NO_WAKEUP;
      else if (value == "clock-pair")
        o.mode = PROBE_MODE_CLOCK_PAIR;
      else if (value == "user-read")
        o.mode = PROBE_MODE_USER_READ;
      else
        return make_error("unknown --mode {}", value);
    } else if (arg == "--hz") {
      o.hz = static_cast<uint32_t>(std::strtoul(value.c_str(), nullptr, 10));
    } else if (arg == "--seconds") {
      o.seconds = std::strtod(value.c_str(), nullptr);
    } else if (arg == "--record-bytes") {
      o.record_bytes = static_cast<uint32_t>(std::strtoul(value.c_str(), nullptr, 10));
    } else {
      return make_error("unknown option {}", arg);
    }
  }
  if (o.hz == 0 || o.hz > 10000 || o.seconds <= 0 || o.record_bytes == 0 ||
      o.record_bytes > PROBE_MAX_RECORD_BYTES)
    return make_error("--hz 1..10000, --seconds > 0, --record-bytes 1..{}", PROBE_MAX_RECORD_BYTES);
  return o;
}

int count_record(void* ctx, void*, size_t) {
  ++*static_cast<uint64_t*>(ctx);
  return 0;
}

Result<std::string> run(const Options& o) {
  std::unique_ptr<ringbuf_probe_bpf, SkeletonDeleter> skel(ringbuf_probe_bpf__open());
  if (!skel)
    return make_error("opening the BPF skeleton: {}", std::strerror(errno));
  skel->rodata->cfg_mode = o.mode;
  skel->rodata->cfg_record_bytes = o.record_bytes;
  if (int err = ringbuf_probe_bpf__load(skel.get()))
    return make_error("loading the BPF program: {}", std::strerror(-err));
  // bpf_stats stay on while this fd is open.
  UniqueFd stats(bpf_enable_stats(BPF_STATS_RUN_TIME));
  if (!stats.valid())
    return make_error("enabling bpf_stats: {}", std::strerror(errno));

  std::vector<UniqueFd> events;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links;
  const int cpus = libbpf_num_possible_cpus();
  for (int cpu = 0; cpu < cpus; ++cpu) {
    perf_event_attr attr{};
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.sample_period = 1'000'000'000ull / o.hz;  // as krait sets it
    UniqueFd fd(static_cast<int>(
        ::syscall(__NR_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)));
    if (!fd.valid()) {
      if (errno == ENODEV)  // possible but offline CPU
        continue;
      return make_error("perf_event_open on CPU {}: {}", cpu, std::strerror(errno));
    }
    std::unique_ptr<bpf_link, LinkDeleter> link(
        bpf_program__attach_perf_event(skel->progs.ringbuf_probe, fd.get()));
    if (!link)
      return make_error("attaching to CPU {}: {}", cpu, std::strerror(errno));
    events.push_back(std::move(fd));
    links.push_back(std::move(link));
  }

  uint64_t records = 0;
  std::unique_ptr<ring_buffer, RingDeleter> ring(
      ring_buffer__new(bpf_map__fd(skel->maps.records), count_record, &records, nullptr));
  if (!ring)
    return make_error("creating the ring buffer reader: {}", std::strerror(errno));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    // Without wakeups epoll never fires: drain on a timer instead, as a
    // reader of a BPF_RB_NO_WAKEUP producer would.
    if (o.mode == PROBE_MODE_NO_WAKEUP) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (ring_buffer__consume(ring.get()) < 0)
        return make_error("consuming the ring buffer");
    } else if (ring_buffer__poll(ring.get(), 100) < 0 && errno != EINTR) {
      return make_error("polling the ring buffer: {}", std::strerror(errno));
    }
  }
  links.clear();  // stop the program before reading its totals
  if (ring_buffer__consume(ring.get()) < 0)
    return make_error("consuming the ring buffer");

  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(bpf_program__fd(skel->progs.ringbuf_probe), &info, &len) != 0)
    return make_error("reading the program's bpf_stats: {}", std::strerror(errno));
  return fmt::format(
      "{{\"mode\":\"{}\",\"hz\":{},\"seconds\":{},\"record_bytes\":{},\"cpus\":{},\"runs\":{},"
      "\"run_time_ns\":{},\"records\":{},\"user_reads\":{}}}",
      o.mode_name, o.hz, o.seconds, o.record_bytes, events.size(), info.run_cnt, info.run_time_ns,
      records, skel->bss->user_reads);
}

}  // namespace
}  // namespace krait::bench

int main(int argc, char** argv) {
  auto options = krait::bench::parse(argc, argv);
  if (!options) {
    fmt::print(stderr, "krait_ringbuf_probe: {}\n", options.error().message);
    return 2;
  }
  auto line = krait::bench::run(*options);
  if (!line) {
    fmt::print(stderr, "krait_ringbuf_probe: {}\n", line.error().message);
    return 1;
  }
  fmt::print("{}\n", *line);
  return 0;
}
