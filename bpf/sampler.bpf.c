/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * krait's kernel side: one perf_event program run on every CPU at the
 * sampling frequency, plus exec/exit BTF tracepoints (no tracefs needed) that keep the per-process
 * state honest. The ABI with user space is include/krait/abi.h.
 *
 * Per sample: pid -> krait_proc_info (written by user space) -> the thread's
 * PyThreadState (cached per tid, validated each time) -> frames, leaf first
 * -> one record into the `events` ring buffer. A pid user space has not
 * classified yet is reported once (rate-limited) so user space can attach.
 */
#include "native_stack.bpf.h"
#include "python_walk.bpf.h"
#include "sampler_state.bpf.h"

#include "krait/off_cpu.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The incarnation of the current process (see krait_proc_identity). */
static __always_inline void krait_current_identity(struct task_struct* task,
                                                   struct krait_proc_identity* id) {
  struct task_struct* leader = BPF_CORE_READ(task, group_leader);
  id->start_ns = BPF_CORE_READ(leader, start_boottime);
  id->exec_id = BPF_CORE_READ(leader, self_exec_id);
}

static __always_inline int krait_same_identity(const struct krait_proc_identity* a,
                                               const struct krait_proc_identity* b) {
  return a->start_ns == b->start_ns && a->exec_id == b->exec_id;
}

static __always_inline void krait_emit_proc(__u32 type, __u64 pid_tgid,
                                            const struct krait_proc_identity* id) {
  struct krait_proc_event* e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    krait_count(KRAIT_CNT_EVENTS_LOST);
    return;
  }
  krait_fill_header(&e->hdr, type, pid_tgid);
  e->identity = *id;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  bpf_ringbuf_submit(e, 0);
}

/* Makes `pid`'s entry a fresh, unclassified one for incarnation `id`, to be
 * reported again after the recheck time. */
static __always_inline int krait_put_pending(__u32 pid, const struct krait_proc_identity* id,
                                             __u64 now, __u64 flags) {
  struct krait_proc_info pending = {
      .mode = KRAIT_PROC_IGNORE, .recheck_after_ns = now + cfg_unknown_recheck_ns, .identity = *id};
  return (int)bpf_map_update_elem(&procs, &pid, &pending, flags);
}

/* The process's info when user space attached or refused it; 0 otherwise,
 * after reporting a pid user space has not classified (rate-limited). */
static __always_inline struct krait_proc_info* krait_classify(__u32 pid, __u64 pid_tgid,
                                                              struct task_struct* task) {
  struct krait_proc_info* proc = bpf_map_lookup_elem(&procs, &pid);
  struct krait_proc_identity id;
  __u64 now;

  krait_current_identity(task, &id);
  if (proc && krait_same_identity(&proc->identity, &id) && proc->mode != KRAIT_PROC_IGNORE)
    return proc;
  now = bpf_ktime_get_ns();
  if (!proc) {
    /* --pid mode: only the listed pids are of interest. */
    if (cfg_listed_only && !bpf_map_lookup_elem(&listed, &pid))
      return 0;
    /* NOEXIST: another CPU may have created it meanwhile. */
    int err = krait_put_pending(pid, &id, now, BPF_NOEXIST);
    if (err == 0)
      krait_emit_proc(KRAIT_EVENT_PROC_UNKNOWN, pid_tgid, &id);
    else if (err != -KRAIT_EEXIST)
      krait_count(KRAIT_CNT_PROCS_UPDATE_FAILED);
    return 0;
  }
  if (!krait_same_identity(&proc->identity, &id)) {
    /* Another incarnation's entry: its exit was missed, or user space wrote
     * it after the process had gone. */
    krait_count(KRAIT_CNT_STALE_PROCS);
    if (krait_put_pending(pid, &id, now, BPF_ANY) == 0)
      krait_emit_proc(KRAIT_EVENT_PROC_UNKNOWN, pid_tgid, &id);
    else
      krait_count(KRAIT_CNT_PROCS_UPDATE_FAILED);
    return 0;
  }
  if (now >= proc->recheck_after_ns) {
    /* Two CPUs may both pass: a duplicate report is harmless. */
    proc->recheck_after_ns = now + cfg_unknown_recheck_ns;
    krait_emit_proc(KRAIT_EVENT_PROC_UNKNOWN, pid_tgid, &id);
  }
  return 0;
}

/* The per-CPU scratch slot of a program: the perf event and the context
 * switch each have their own, so a sampling NMI that lands inside the switch
 * program (hardware events) cannot overwrite the record it is building. */
#define KRAIT_SLOT_PERF 0
#define KRAIT_SLOT_SWITCH 1

/* Walks the current thread and sends one sample record: on CPU from the
 * perf event, off CPU from the context switch (`ctx` is the program's own,
 * for bpf_get_stack). Returns the record's ktime, 0 when nothing was sent. */
static __always_inline __u64 krait_capture(void* ctx, __u32 slot, __u64 pid_tgid,
                                           struct task_struct* task, struct krait_proc_info* proc,
                                           __u8 state, __u8 reason, __u16 weight) {
  __u64 start_ns = cfg_measure_cost ? bpf_ktime_get_ns() : 0;
  __u32 pid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;
  __u32 index = bpf_get_smp_processor_id() * 2 + slot;
  struct krait_scratch* s = bpf_map_lookup_elem(&scratch, &index);
  if (!s) {
    krait_count(KRAIT_CNT_SCRATCH_MISSING);
    return 0;
  }
  struct krait_sample* sample = &s->sample;
  krait_fill_header(&sample->hdr, KRAIT_EVENT_SAMPLE, pid_tgid);
  sample->proc_generation = proc ? proc->generation : 0;
  sample->py_status = KRAIT_PY_OK;
  sample->py_flags = 0;
  sample->py_nframes = 0;
  sample->tstate = 0;
  sample->kernel_nframes = 0;
  sample->native_flags = 0;
  sample->user_stack_size = 0;
  sample->cpu_state = state;
  sample->off_cpu_reason = reason;
  sample->weight = weight;
  sample->_pad0 = 0;
  bpf_get_current_comm(sample->comm, sizeof(sample->comm));

  if (!proc) {
    sample->py_status = KRAIT_PY_NOT_PYTHON;
  } else if (proc->mode == KRAIT_PROC_REFUSED) {
    sample->py_status = KRAIT_PY_PROC_REFUSED;
  } else {
    __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
    __u64 tstate = 0;
    __u16 flags = 0;
    __u32 status =
        krait_find_tstate(s, proc, task, pid, tid, fsbase, cfg_thread_walk_limit, &tstate, &flags);
    sample->py_flags = flags;
    sample->py_status = status;
    if (status == KRAIT_PY_OK) {
      sample->tstate = tstate;
      __u16 gil = krait_gil_state(s, proc, tstate);
      sample->py_flags |= gil;
      if (state == KRAIT_STATE_ON_CPU && cfg_gil_only && (gil & KRAIT_PYF_GIL_KNOWN) &&
          !(gil & KRAIT_PYF_GIL_HELD)) {
        krait_count(KRAIT_CNT_GIL_SKIPPED);
        return 0;
      }
      krait_walk_frames(s, proc, pid, cfg_max_depth);
    }
  }
  if (cfg_native)
    krait_capture_native(s, ctx, task, cfg_kernel_stacks, cfg_user_stack_bytes);

  sample->cost_ns = cfg_measure_cost ? (__u32)(bpf_ktime_get_ns() - start_ns) : 0;
  __u32 n = krait_py_nframes(sample);
  __u32 k = sample->kernel_nframes;
  if (k > KRAIT_KERNEL_FRAMES_CAP)
    k = KRAIT_KERNEL_FRAMES_CAP;
  __u32 m = sample->user_stack_size;
  if (m > KRAIT_USER_STACK_CAP)
    m = KRAIT_USER_STACK_CAP;
  if (bpf_ringbuf_output(&events, sample, KRAIT_SAMPLE_SIZE(n, k, m), krait_wakeup_flag())) {
    krait_count(state == KRAIT_STATE_ON_CPU ? KRAIT_CNT_RINGBUF_FULL : KRAIT_CNT_SWITCHES_LOST);
    return 0;
  }
  krait_count(state == KRAIT_STATE_ON_CPU ? KRAIT_CNT_SAMPLES : KRAIT_CNT_SWITCHES);
  return sample->hdr.ktime_ns;
}

SEC("perf_event")
int krait_sample(struct bpf_perf_event_data* ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 pid = pid_tgid >> 32;

  krait_count(KRAIT_CNT_RUNS);
  if (pid == 0 || pid == cfg_self_pid)
    return 0;

  struct task_struct* task = bpf_get_current_task_btf();
  struct krait_proc_info* proc = krait_classify(pid, pid_tgid, task);
  if (!proc && !cfg_all_processes)
    return 0;
  krait_capture(ctx, KRAIT_SLOT_PERF, pid_tgid, task, proc, KRAIT_STATE_ON_CPU, 0, 1);
  return 0;
}

/* Why `prev` leaves the CPU: preempted, or blocked in the system call its
 * saved registers name. */
static __always_inline __u8 krait_switch_reason(struct task_struct* prev, bool preempt,
                                                unsigned int prev_state,
                                                const struct krait_proc_info* proc) {
  if (preempt || prev_state == 0 /* TASK_RUNNING: yielded */)
    return KRAIT_OFF_RUNNABLE;
  struct pt_regs* regs = (struct pt_regs*)bpf_task_pt_regs(prev);
  __s64 nr = (__s64)BPF_CORE_READ(regs, orig_ax);
  if (nr < 0)
    return KRAIT_OFF_OTHER;
  return krait_off_cpu_reason(nr, BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, si), proc->gil_addr,
                              proc->gil_size);
}

/* A thread whose off-CPU sample was sent is back: send how long it was
 * away. Runs in `prev`'s context, so the header is filled by hand. */
static __always_inline void krait_switch_in(struct task_struct* next) {
  __u32 tid = BPF_CORE_READ(next, pid);
  struct krait_blocked* b = bpf_map_lookup_elem(&blocked, &tid);
  if (!b)
    return;
  struct krait_block_end* e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    krait_count(KRAIT_CNT_BLOCK_ENDS_LOST);
  } else {
    e->hdr.type = KRAIT_EVENT_BLOCK_END;
    e->hdr.pid = BPF_CORE_READ(next, tgid);
    e->hdr.tid = tid;
    e->hdr.cpu = bpf_get_smp_processor_id();
    e->hdr.ktime_ns = bpf_ktime_get_ns();
    e->start_ns = b->start_ns;
    e->weight = b->weight;
    e->_pad0 = 0;
    e->walk_ns = b->walk_ns;
    bpf_ringbuf_submit(e, krait_wakeup_flag());
  }
  bpf_map_delete_elem(&blocked, &tid);
}

#define KRAIT_SWITCH_WINDOW_NS 100000000ull /* 100 ms */

/* One switch in how many to capture now: --switch-every, raised so that a
 * CPU whose Python threads switched more than the budget allows in the last
 * window captures about the budget in this one. The capture is weighted by
 * the value in force when it was taken, so totals stay unbiased while the
 * rate changes. */
static __always_inline __u32 krait_switch_every_now(void) {
  __u32 every = cfg_switch_every;
  if (cfg_switch_budget == 0)
    return every;
  __u32 zero = 0;
  struct krait_switch_window* w = bpf_map_lookup_elem(&switch_window, &zero);
  if (!w)
    return every;
  __u64 now = bpf_ktime_get_ns();
  if (now - w->start_ns >= KRAIT_SWITCH_WINDOW_NS) {
    __u32 per_window = cfg_switch_budget / (1000000000ull / KRAIT_SWITCH_WINDOW_NS);
    if (per_window == 0)
      per_window = 1;
    /* A window long past says nothing about now: start again at 1. */
    __u32 next = now - w->start_ns < 2 * KRAIT_SWITCH_WINDOW_NS
                     ? (w->seen + per_window - 1) / per_window
                     : 1;
    w->every = next ? next : 1;
    w->seen = 0;
    w->start_ns = now;
  }
  w->seen++;
  if (w->every > every)
    every = w->every;
  return every > 65535 ? 65535 : every;
}

/* Off-CPU and wall modes: a Python thread leaving the CPU is walked like a
 * sample (it is `current` here), and the time until it runs again is sent
 * when it does. Every other switch costs one hash lookup per side. */
SEC("tp_btf/sched_switch")
int BPF_PROG(krait_switch, bool preempt, struct task_struct* prev, struct task_struct* next,
             unsigned int prev_state) {
  krait_switch_in(next);

  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 pid = pid_tgid >> 32;
  if (pid == 0 || pid == cfg_self_pid)
    return 0;
  struct task_struct* task = bpf_get_current_task_btf();
  struct krait_proc_info* proc = krait_classify(pid, pid_tgid, task);
  if (!proc || proc->mode != KRAIT_PROC_PYTHON)
    return 0;
  __u32 every = krait_switch_every_now();
  if (every > 1 && bpf_get_prandom_u32() % every != 0) {
    krait_count(KRAIT_CNT_SWITCHES_SKIPPED);
    return 0;
  }
  __u8 reason = krait_switch_reason(task, preempt, prev_state, proc);
  __u16 weight = (__u16)every;
  __u64 start = krait_capture(ctx, KRAIT_SLOT_SWITCH, pid_tgid, task, proc, KRAIT_STATE_OFF_CPU,
                              reason, weight);
  if (start == 0)
    return 0;
  __u32 tid = (__u32)pid_tgid;
  __u64 left = bpf_ktime_get_ns();
  __u64 walk = left > start ? left - start : 0;
  struct krait_blocked b = {
      .start_ns = start, .weight = weight, .walk_ns = walk > 0xffffffffull ? 0xffffffffu : walk};
  bpf_map_update_elem(&blocked, &tid, &b, BPF_ANY);
  return 0;
}

SEC("tp_btf/sched_process_exec")
int krait_exec(__u64* ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 pid = pid_tgid >> 32;
  struct task_struct* task = bpf_get_current_task_btf();
  struct krait_proc_identity id;

  if (cfg_listed_only && !bpf_map_lookup_elem(&listed, &pid))
    return 0;
  /* The old image's layout is meaningless for the new one: a pending entry
   * of the new incarnation takes its place, so a user-space write meant for
   * the old image is recognised as stale, whenever it lands. */
  krait_current_identity(task, &id);
  if (krait_put_pending(pid, &id, bpf_ktime_get_ns(), BPF_ANY))
    krait_count(KRAIT_CNT_PROCS_UPDATE_FAILED);
  krait_emit_proc(KRAIT_EVENT_EXEC, pid_tgid, &id);
  return 0;
}

SEC("tp_btf/sched_process_exit")
int krait_exit(__u64* ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 pid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;
  struct task_struct* task = bpf_get_current_task_btf();
  struct krait_proc_identity id;

  bpf_map_delete_elem(&threads, &tid);
  /* do_exit() drops signal->live before this tracepoint: 0 means this was
   * the process's last thread. */
  if (BPF_CORE_READ(task, signal, live.counter) != 0)
    return 0;
  krait_current_identity(task, &id);
  if (bpf_map_delete_elem(&procs, &pid) == 0)
    krait_emit_proc(KRAIT_EVENT_EXIT, pid_tgid, &id);
  return 0;
}
