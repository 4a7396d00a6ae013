/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * What the sampler's programs share: the configuration user space sets
 * before load, every map, the per-CPU scratch record and the small helpers
 * over them. The walk headers (python_walk.bpf.h, native_stack.bpf.h)
 * include this and nothing of sampler.bpf.c, so each compiles on its own;
 * sampler.bpf.c holds the programs.
 */
#ifndef KRAIT_SAMPLER_STATE_BPF_H
#define KRAIT_SAMPLER_STATE_BPF_H

#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "krait/abi.h"

/* vmlinux.h has no errno values. */
#define KRAIT_EEXIST 17

/* Set by user space before load (rodata: the verifier prunes on them). */
const volatile __u32 cfg_max_depth = KRAIT_PY_DEPTH_DEFAULT;
const volatile __u32 cfg_thread_walk_limit = KRAIT_THREAD_WALK_DEFAULT;
const volatile __u64 cfg_unknown_recheck_ns = 1000000000ULL;
const volatile __u32 cfg_self_pid = 0;
/* Time each walk into krait_sample.cost_ns (two clock reads per sample). */
const volatile __u8 cfg_measure_cost = 0;
/* --gil-only: threads that do not hold the GIL are not walked nor sent. */
const volatile __u8 cfg_gil_only = 0;
/* Mixed stacks: capture the kernel stack and the user registers and stack. */
const volatile __u8 cfg_native = 0;
const volatile __u8 cfg_kernel_stacks = 1;
const volatile __u32 cfg_user_stack_bytes = KRAIT_USER_STACK_DEFAULT;
/* --all-processes: non-Python processes are sampled too (native stacks). */
const volatile __u8 cfg_all_processes = 0;
/* Samples do not wake the reader (a wakeup costs more than a stack walk):
 * it drains the ring on a short timer, or when this much is pending. */
const volatile __u32 cfg_wakeup_bytes = 1 << 20;
/* --pid mode: processes absent from `procs` are not reported. */
const volatile __u8 cfg_listed_only = 0;
/* Off-CPU and wall modes: one context switch in this many is captured. */
const volatile __u32 cfg_switch_every = 1;
/* Off-CPU and wall modes: at most about this many switches captured per
 * second per CPU (0: no limit); above it one in N is, N from the rate of
 * the previous window (see krait_switch_every_now). */
const volatile __u32 cfg_switch_budget = 0;

struct krait_switch_window {
  __u64 start_ns;
  __u32 seen;  /* Python threads' switches in this window */
  __u32 every; /* one in this many is captured in this window */
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct krait_switch_window);
} switch_window SEC(".maps");

/* LRU: entries of processes that exited without an exit event seen (a
 * full ring buffer, or a pid reported just before it exited) cannot fill
 * it; an evicted live process is reported again at its next sample. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, struct krait_proc_info);
} procs SEC(".maps");

/* --pid mode: the pids to profile (user space fills it before start). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, __u8);
} listed SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, struct krait_thread_entry);
} threads SEC(".maps");

/* Threads off the CPU whose off-CPU sample was sent: tid -> when. LRU: a
 * thread that never runs again (its process was killed while it slept)
 * cannot fill it. */
struct krait_blocked {
  __u64 start_ns;
  __u16 weight;
  __u16 _pad0;
  __u32 walk_ns; /* see krait_block_end */
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, struct krait_blocked);
} blocked SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, KRAIT_CNT_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

static __always_inline __u64 krait_wakeup_flag(void) {
  return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= cfg_wakeup_bytes ? BPF_RB_FORCE_WAKEUP
                                                                           : BPF_RB_NO_WAKEUP;
}

static __always_inline void krait_count(__u32 index) {
  __u64* v = bpf_map_lookup_elem(&counters, &index);
  if (v)
    *v += 1;
}

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, KRAIT_SEEN_SLOTS);
  __type(key, __u32);
  __type(value, struct krait_seen_slot);
} seen SEC(".maps");

/* Per-CPU working memory: too large for the 512-byte BPF stack. Each block
 * has 8 bytes of slack past its cap so a load at any masked offset stays
 * inside it. */
struct krait_scratch {
  struct krait_sample sample;
  /* Continues sample.frames: kernel frames and the user stack copy follow the
   * last Python frame in the record. */
  __u8 tail[KRAIT_KERNEL_FRAMES_CAP * sizeof(__u64) + KRAIT_USER_STACK_CAP];
  __u8 tstate[KRAIT_TSTATE_READ_CAP + 8];
  __u8 frame[KRAIT_FRAME_READ_CAP + 8];
  __u8 code[KRAIT_CODE_READ_CAP + 8];
  /* A line table longer than a code event holds, sent in a record of its
   * own at first sight of its code object only. */
  struct krait_linetable_event linetable;
};

/* Two slots per CPU, one per program (user space sizes it to twice the
 * possible CPUs): the record is built here, too large for a per-CPU map
 * value. Each program runs with interrupts or preemption off, so a slot has
 * one user at a time. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct krait_scratch);
} scratch SEC(".maps");

static __always_inline void krait_fill_header(struct krait_event_header* h, __u32 type,
                                              __u64 pid_tgid) {
  h->type = type;
  h->pid = pid_tgid >> 32;
  h->tid = (__u32)pid_tgid;
  h->cpu = bpf_get_smp_processor_id();
  h->ktime_ns = bpf_ktime_get_ns();
}

/* A sample's Python frame count, bounded for the verifier (the walk never
 * writes more than KRAIT_PY_FRAMES_CAP). */
static __always_inline __u32 krait_py_nframes(const struct krait_sample* sample) {
  __u32 n = sample->py_nframes;
  return n > KRAIT_PY_FRAMES_CAP ? KRAIT_PY_FRAMES_CAP : n;
}

#endif /* KRAIT_SAMPLER_STATE_BPF_H */
