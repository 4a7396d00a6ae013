/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/* What one ring-buffer record costs a perf_event BPF program, apart from
 * everything else krait's sampler does: the program runs on the cpu-clock
 * event of every CPU and, depending on cfg_mode, does nothing, writes one
 * record (letting the kernel wake the reader, as krait's sampler does, or
 * not), or reads the clock twice (what --measure-sampler-cost adds). The
 * kernel's bpf_stats of this program give the cost per run of each. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "ringbuf_probe.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 cfg_mode = PROBE_MODE_NOTHING;
const volatile __u32 cfg_record_bytes = 512;

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, PROBE_RING_BYTES);
} records SEC(".maps");

/* The record's source, like the sampler's per-CPU scratch sample. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u8[PROBE_MAX_RECORD_BYTES]);
} scratch SEC(".maps");

/* Keeps the clock reads from being optimised away. */
__u64 clock_sink = 0;
/* Runs that read user memory (user-read mode): the others hit an idle CPU
 * or a kernel thread. */
__u64 user_reads = 0;

SEC("perf_event")
int ringbuf_probe(struct bpf_perf_event_data* ctx) {
  __u32 zero = 0;
  __u8* record = bpf_map_lookup_elem(&scratch, &zero);
  __u32 size = cfg_record_bytes;

  if (!record)
    return 0;
  if (size > PROBE_MAX_RECORD_BYTES)
    size = PROBE_MAX_RECORD_BYTES;
  if (cfg_mode == PROBE_MODE_WAKEUP) {
    bpf_ringbuf_output(&records, record, size, 0);
  } else if (cfg_mode == PROBE_MODE_NO_WAKEUP) {
    bpf_ringbuf_output(&records, record, size, BPF_RB_NO_WAKEUP);
  } else if (cfg_mode == PROBE_MODE_CLOCK_PAIR) {
    __u64 start = bpf_ktime_get_ns();
    clock_sink += bpf_ktime_get_ns() - start;
  } else if (cfg_mode == PROBE_MODE_USER_READ) {
    struct task_struct* task = bpf_get_current_task_btf();
    if (!task->mm)
      return 0;
    struct pt_regs* regs = (struct pt_regs*)bpf_task_pt_regs(task);
    __u64 word = 0;
    if (bpf_probe_read_user(&word, sizeof(word), (const void*)regs->sp) == 0)
      __sync_fetch_and_add(&user_reads, 1);
    clock_sink += word;
  }
  return 0;
}
