/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * Finding the sampled thread's PyThreadState and walking its Python frames,
 * version-independently: everything version-specific comes from the
 * krait_py_layout user space wrote for the process.
 *
 * Cost model (docs/performance.md): a bpf_probe_read_user costs about the
 * same whatever its size up to a few hundred bytes, so every struct is read
 * once, as one block covering all the fields needed, into per-CPU scratch.
 */
#ifndef KRAIT_PYTHON_WALK_BPF_H
#define KRAIT_PYTHON_WALK_BPF_H

#include "sampler_state.bpf.h"

/* Loads at an offset the layout gave. User space checks every offset against
 * the read size before it writes a layout, so the mask never changes a real
 * offset; it is there because a branch per load multiplies the states the
 * verifier has to explore. Caps are powers of two. */
#define KRAIT_LOAD(type, block, cap, off) (*(const type*)((block) + ((off) & ((cap)-1))))

static __always_inline int krait_read_block(__u8* dst, __u32 cap, __u32 size, __u64 addr) {
  if (size > cap)
    size = cap;
  return bpf_probe_read_user(dst, size, (const void*)addr);
}

static __always_inline int krait_read_ptr(__u64 addr, __u64* out) {
  return bpf_probe_read_user(out, sizeof(*out), (const void*)addr);
}

/* ---- thread state lookup ------------------------------------------------ */

/* One walk over every interpreter's thread list, as a single bpf_loop: the
 * step moves on to the next interpreter when a list ends. */
struct krait_thread_walk {
  struct krait_scratch* s;
  const struct krait_py_layout* layout;
  __u64 fsbase;
  __u64 interp; /* interpreter whose list is being walked */
  __u64 cursor; /* PyThreadState being looked at, 0 at the end of a list */
  __u64 found;
  __u32 interps_left;
  __u32 done;   /* 1: searched every list, 2: read fault */
  __u32 ns_tid; /* its id in its own PID namespace; 0: not checked (main thread, or < 3.11) */
  __u32 _pad0;
};

/* The thread's id as its own PID namespace numbers it: what
 * PyThreadState.native_thread_id holds. pid->numbers[] is a flexible array
 * indexed by the namespace level, which is at most MAX_PID_NS_LEVEL (32). */
static __always_inline __u32 krait_ns_tid(struct task_struct* task) {
  struct pid* p = BPF_CORE_READ(task, thread_pid);
  __u32 level = BPF_CORE_READ(p, level);
  int nr = 0;
  const char* at = (const char*)p + bpf_core_field_offset(struct pid, numbers) +
                   (level & 31) * bpf_core_type_size(struct upid) +
                   bpf_core_field_offset(struct upid, nr);
  if (bpf_probe_read_kernel(&nr, sizeof(nr), at))
    return 0;
  return (__u32)nr;
}

/* Whether the state in s->tstate, whose pthread_t is the thread's, is the
 * thread's own (krait_py_layout.tstate_native_tid says why this is asked). */
static __always_inline int krait_tstate_is_threads(const struct krait_scratch* s,
                                                   const struct krait_py_layout* l, __u32 ns_tid) {
  __u16 off = l->tstate_native_tid;
  if (ns_tid == 0 || off == 0 || off + 8 > l->tstate_read_size)
    return 1;
  __u64 native = KRAIT_LOAD(__u64, s->tstate, KRAIT_TSTATE_READ_CAP, off);
  return native == 0 || native == ns_tid;
}

static long krait_thread_step(__u32 index, void* arg) {
  struct krait_thread_walk* w = arg;
  const struct krait_py_layout* l = w->layout;

  if (w->cursor == 0) {
    /* Subinterpreters: the thread may be registered in another one. */
    if (w->interps_left == 0 || krait_read_ptr(w->interp + l->interp_next, &w->interp) ||
        w->interp == 0) {
      w->done = 1;
      return 1;
    }
    w->interps_left -= 1;
    if (krait_read_ptr(w->interp + l->interp_tstate_head, &w->cursor)) {
      w->done = 2;
      return 1;
    }
    return 0;
  }
  if (krait_read_block(w->s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_read_size, w->cursor)) {
    w->done = 2;
    return 1;
  }
  if (KRAIT_LOAD(__u64, w->s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_thread_id) == w->fsbase &&
      krait_tstate_is_threads(w->s, l, w->ns_tid)) {
    w->found = w->cursor;
    return 1;
  }
  w->cursor = KRAIT_LOAD(__u64, w->s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_next);
  return 0;
}

/* Returns a KRAIT_PY_* status. On KRAIT_PY_OK, *tstate is the thread's state
 * and s->tstate holds its first tstate_read_size bytes. */
static __always_inline __u32 krait_find_tstate(struct krait_scratch* s,
                                               const struct krait_proc_info* proc,
                                               struct task_struct* task, __u32 pid, __u32 tid,
                                               __u64 fsbase, __u32 walk_limit, __u64* tstate,
                                               __u16* flags) {
  const struct krait_py_layout* l = &proc->layout;
  struct krait_thread_entry* cached = bpf_map_lookup_elem(&threads, &tid);
  __u64 interp = 0, first_head = 0;

  if (cached && cached->generation == proc->generation && cached->tstate) {
    /* Validated on every use: the thread may have dropped its state and
     * the memory may hold another thread's by now. */
    if (krait_read_block(s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_read_size, cached->tstate) ==
            0 &&
        KRAIT_LOAD(__u64, s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_thread_id) == fsbase) {
      *tstate = cached->tstate;
      *flags |= KRAIT_PYF_TSTATE_CACHED;
      return KRAIT_PY_OK;
    }
  }

  if (krait_read_ptr(proc->interp_head_addr, &interp))
    return KRAIT_PY_READ_FAULT_STATE;
  if (interp == 0)
    return KRAIT_PY_NO_INTERPRETER;
  if (krait_read_ptr(interp + l->interp_tstate_head, &first_head))
    return KRAIT_PY_READ_FAULT_STATE;

  /* A thread without a state (a native worker thread) stays without one
   * until some thread registers, which pushes a new list head: only then
   * is a new walk worth its cost. */
  if (cached && cached->generation == proc->generation && cached->tstate == 0 &&
      cached->list_head == first_head)
    return cached->status == KRAIT_PY_THREAD_WALK_LIMIT ? KRAIT_PY_THREAD_WALK_LIMIT
                                                        : KRAIT_PY_NO_THREAD_STATE;

  krait_count(KRAIT_CNT_THREAD_WALKS);
  struct krait_thread_walk w = {
      .s = s,
      .layout = l,
      .fsbase = fsbase,
      .interp = interp,
      .cursor = first_head,
      .interps_left = KRAIT_MAX_INTERPRETERS - 1,
      /* Asked only where the check can use it. */
      .ns_tid = tid == pid || l->tstate_native_tid == 0 ? 0 : krait_ns_tid(task)};
  bpf_loop(walk_limit, krait_thread_step, &w, 0);
  if (w.done == 2)
    return KRAIT_PY_READ_FAULT_STATE;

  /* A list longer than the limit (a cyclic one too) is remembered like a
   * list without this thread: walked again only once its head changes. */
  const __u32 status = w.found       ? KRAIT_PY_OK
                       : w.done == 0 ? KRAIT_PY_THREAD_WALK_LIMIT
                                     : KRAIT_PY_NO_THREAD_STATE;
  struct krait_thread_entry entry = {
      .tstate = w.found, .list_head = first_head, .generation = proc->generation, .status = status};
  bpf_map_update_elem(&threads, &tid, &entry, BPF_ANY);
  if (!w.found)
    return status;
  /* The step left the found thread's block in s->tstate. */
  *tstate = w.found;
  return KRAIT_PY_OK;
}

/* ---- GIL ---------------------------------------------------------------- */

/* KRAIT_PYF_GIL_* flags for the thread whose state is `tstate` (its block in
 * s->tstate). */
static __always_inline __u16 krait_gil_state(struct krait_scratch* s,
                                             const struct krait_proc_info* proc, __u64 tstate) {
  const struct krait_py_layout* l = &proc->layout;
  if (l->gil_mode == KRAIT_GIL_CURRENT_PTR) {
    __u64 current = 0;
    if (krait_read_ptr(proc->gil_current_addr, &current))
      return 0;
    return KRAIT_PYF_GIL_KNOWN | (current == tstate ? KRAIT_PYF_GIL_HELD : 0);
  }
  if (l->gil_mode == KRAIT_GIL_INTERP_LOCK) {
    __u64 interp = KRAIT_LOAD(__u64, s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_interp);
    /* last_holder and locked are neighbours in every version: one read. */
    struct {
      __u64 holder;
      __u32 locked;
      __u32 pad;
    } gil = {};
    if (l->interp_gil_locked != l->interp_gil_holder + 8)
      return 0;
    if (bpf_probe_read_user(&gil, sizeof(gil), (const void*)(interp + l->interp_gil_holder)))
      return 0;
    return KRAIT_PYF_GIL_KNOWN | (gil.locked && gil.holder == tstate ? KRAIT_PYF_GIL_HELD : 0);
  }
  return 0;
}

/* ---- frame walk --------------------------------------------------------- */

/* The depth limit is the bpf_loop count, so the step never compares the
 * frame count with a constant: a count the verifier must track exactly
 * would make it verify every iteration separately. */
struct krait_frame_walk {
  struct krait_scratch* s;
  struct krait_proc_info* proc; /* its capture budget is spent here */
  __u64 frame;                  /* next frame to visit, 0 at the end of the chain */
  __u32 n;                      /* frames emitted */
  __u32 status;
  __u32 pid;
};

/* One capture of the process's budget (KRAIT_CAPTURE_BURST in abi.h). CPUs
 * update the bucket without a lock: a lost update only shifts a few
 * captures between two moments. */
static __always_inline int krait_take_capture_token(struct krait_proc_info* proc) {
  __u64 now = bpf_ktime_get_ns();
  __u64 refill = (now - proc->capture_refilled_ns) >> KRAIT_CAPTURE_REFILL_SHIFT;
  __u32 tokens = proc->capture_tokens;
  if (tokens > KRAIT_CAPTURE_BURST)
    tokens = KRAIT_CAPTURE_BURST;
  if (refill > 0) {
    tokens = refill >= KRAIT_CAPTURE_BURST - tokens ? KRAIT_CAPTURE_BURST : tokens + (__u32)refill;
    proc->capture_refilled_ns = now;
  }
  if (tokens == 0) {
    krait_count(KRAIT_CNT_CODE_CAPTURES_THROTTLED);
    return 0;
  }
  proc->capture_tokens = tokens - 1;
  return 1;
}

/* Bytes from addr to the end of its 4 KiB page, at most cap (>= 1). */
static __always_inline __u32 krait_to_page_end(__u64 addr, __u32 cap) {
  __u32 n = 4096 - (__u32)(addr & 4095);
  return n < cap ? n : cap;
}

/* Sends the names of a code object the first time (pid, code, token) is seen
 * (the table is shared by all CPUs and direct-mapped: a collision only means
 * one more capture later). */
static __always_inline void krait_capture_code(const struct krait_frame_walk* w, __u64 code,
                                               __u32 token, __u64 name, __u64 file, __u64 linetable,
                                               __u32 firstlineno) {
  __u32 slot = (__u32)((code >> 4) ^ token ^ (w->pid * 0x9e3779b1u)) & (KRAIT_SEEN_SLOTS - 1);
  struct krait_seen_slot* seen_slot = bpf_map_lookup_elem(&seen, &slot);
  if (!seen_slot)
    return;
  if (seen_slot->code == code && seen_slot->token == token && seen_slot->pid == w->pid)
    return;
  if (!krait_take_capture_token(w->proc))
    return;

  struct krait_code_event* e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    krait_count(KRAIT_CNT_CODE_CAPTURES_LOST);
    return;
  }
  seen_slot->code = code;
  seen_slot->token = token;
  seen_slot->pid = w->pid;
  krait_fill_header(&e->hdr, KRAIT_EVENT_CODE, bpf_get_current_pid_tgid());
  e->code = code;
  e->token = token;
  e->firstlineno = firstlineno;
  e->name_addr = name;
  e->file_addr = file;
  e->frame = w->frame;
  e->linetable_addr = linetable;
  /* An object near the end of a mapping cannot be read to the copy's size:
   * then up to the end of its page, which is mapped (user space decodes a
   * cut string as cut, and a cut table as far as it is whole). */
  if (bpf_probe_read_user(e->name, sizeof(e->name), (const void*)name))
    bpf_probe_read_user(e->name, krait_to_page_end(name, sizeof(e->name)), (const void*)name);
  if (bpf_probe_read_user(e->file, sizeof(e->file), (const void*)file))
    bpf_probe_read_user(e->file, krait_to_page_end(file, sizeof(e->file)), (const void*)file);
  if (bpf_probe_read_user(e->linetable, sizeof(e->linetable), (const void*)linetable))
    bpf_probe_read_user(e->linetable, krait_to_page_end(linetable, sizeof(e->linetable)),
                        (const void*)linetable);
  const struct krait_py_layout* l = &w->proc->layout;
  /* The object's size field, within the copy's first 256 bytes by the mask. */
  __s64 table_size = *(const __s64*)(e->linetable + (l->linetable_size_off & 0xff));
  bpf_ringbuf_submit(e, krait_wakeup_flag());
  krait_count(KRAIT_CNT_CODE_CAPTURES);

  /* The inline copy holds the table whole (most functions): done. Else the
   * whole table follows in a record of its own, so that a module body or
   * exec'd code freed before user space reads it still has every line. */
  if (l->linetable_data_off == 0 || table_size <= 0)
    return;
  __u64 total = (__u64)table_size + l->linetable_data_off;
  if (total <= KRAIT_CAPTURE_LINETABLE_BYTES)
    return;
  if (total > KRAIT_CAPTURE_LINETABLE_MAX)
    total = KRAIT_CAPTURE_LINETABLE_MAX;
  __u32 n = (__u32)total;
  struct krait_linetable_event* t = &w->s->linetable;
  krait_fill_header(&t->hdr, KRAIT_EVENT_LINETABLE, bpf_get_current_pid_tgid());
  t->code = code;
  t->token = token;
  t->size = n;
  if (n > KRAIT_CAPTURE_LINETABLE_MAX || bpf_probe_read_user(t->bytes, n, (const void*)linetable) ||
      bpf_ringbuf_output(&events, t, KRAIT_LINETABLE_EVENT_HEAD + n, krait_wakeup_flag())) {
    krait_count(KRAIT_CNT_LINETABLES_LOST);
    return;
  }
  krait_count(KRAIT_CNT_LINETABLES);
}

#define KRAIT_FRAME_SLOT(n) ((n) & (KRAIT_PY_FRAMES_CAP - 1))

/* The eval loop's C-stack shim sits just below (older than) the first frame
 * that C call runs, so the frame emitted last is an entry frame. With no
 * frame emitted yet this marks an unused slot, which is harmless. */
static __always_inline void krait_mark_entry(struct krait_frame_walk* w) {
  w->s->sample.frames[KRAIT_FRAME_SLOT(w->n - 1)].instr |= KRAIT_FRAME_ENTRY;
}

static long krait_frame_step(__u32 index, void* arg) {
  struct krait_frame_walk* w = arg;
  struct krait_scratch* s = w->s;
  const struct krait_py_layout* l = &w->proc->layout;

  if (w->frame == 0)
    return 1;
  if (krait_read_block(s->frame, KRAIT_FRAME_READ_CAP, l->frame_read_size, w->frame)) {
    w->status = KRAIT_PY_READ_FAULT_FRAME;
    return 1;
  }
  __u64 back = KRAIT_LOAD(__u64, s->frame, KRAIT_FRAME_READ_CAP, l->frame_back);
  __u64 code =
      KRAIT_LOAD(__u64, s->frame, KRAIT_FRAME_READ_CAP, l->frame_code) & ~(__u64)l->code_tag_mask;
  if (l->frame_owner_shim != KRAIT_OWNER_NONE &&
      KRAIT_LOAD(__u8, s->frame, KRAIT_FRAME_READ_CAP, l->frame_owner) == l->frame_owner_shim) {
    krait_mark_entry(w);
    w->frame = back;
    return 0;
  }
  __u64 instr_raw = KRAIT_LOAD(__u64, s->frame, KRAIT_FRAME_READ_CAP, l->frame_instr);
  __u32 entry = l->frame_is_entry != KRAIT_OFFSET_NONE &&
                        KRAIT_LOAD(__u8, s->frame, KRAIT_FRAME_READ_CAP, l->frame_is_entry)
                    ? KRAIT_FRAME_ENTRY
                    : 0;

  if (krait_read_block(s->code, KRAIT_CODE_READ_CAP, l->code_read_size, code)) {
    w->status = KRAIT_PY_READ_FAULT_CODE;
    return 1;
  }
  if (KRAIT_LOAD(__u64, s->code, KRAIT_CODE_READ_CAP, l->code_type) != w->proc->code_type_addr) {
    if (!l->skip_non_code) {
      w->status = KRAIT_PY_BAD_CODE_OBJECT;
      return 1;
    }
    /* 3.13+: the shim's executable is None, not a code object. */
    krait_mark_entry(w);
    w->frame = back;
    return 0;
  }

  __u32 instr;
  if (l->instr_kind == KRAIT_INSTR_LASTI) {
    __s32 lasti = (__s32)instr_raw;
    instr = lasti < 0 ? 0 : (__u32)lasti;
  } else {
    __u64 base = code + l->code_adaptive;
    instr = instr_raw > base ? (__u32)(instr_raw - base) : 0;
  }

  __u64 file = KRAIT_LOAD(__u64, s->code, KRAIT_CODE_READ_CAP, l->code_filename);
  __u64 name = KRAIT_LOAD(__u64, s->code, KRAIT_CODE_READ_CAP, l->code_name);
  __u32 firstlineno = KRAIT_LOAD(__u32, s->code, KRAIT_CODE_READ_CAP, l->code_firstlineno);
  __u64 linetable = KRAIT_LOAD(__u64, s->code, KRAIT_CODE_READ_CAP, l->code_linetable);
  __u32 token = krait_code_token(file, name, linetable, firstlineno);
  krait_capture_code(w, code, token, name, file, linetable, firstlineno);

  struct krait_py_frame* f = &s->sample.frames[KRAIT_FRAME_SLOT(w->n)];
  f->code = code;
  f->token = token;
  f->instr = (instr & KRAIT_FRAME_INSTR_MASK) | entry;
  w->n += 1;
  w->frame = back;
  return 0;
}

/* Walks from the thread's current frame towards the root, at most max_depth
 * frames (shim frames included). Fills s->sample.frames, py_nframes,
 * py_status and py_flags. */
static __always_inline void krait_walk_frames(struct krait_scratch* s, struct krait_proc_info* proc,
                                              __u32 pid, __u32 max_depth) {
  const struct krait_py_layout* l = &proc->layout;
  __u64 frame = KRAIT_LOAD(__u64, s->tstate, KRAIT_TSTATE_READ_CAP, l->tstate_frame);

  if (frame && l->cframe_frame != KRAIT_OFFSET_NONE) {
    __u64 cframe = frame;
    if (krait_read_ptr(cframe + l->cframe_frame, &frame)) {
      s->sample.py_status = KRAIT_PY_READ_FAULT_FRAME;
      return;
    }
  }
  struct krait_frame_walk w = {
      .s = s, .proc = proc, .frame = frame, .status = KRAIT_PY_OK, .pid = pid};
  bpf_loop(max_depth, krait_frame_step, &w, 0);
  if (w.frame != 0 && w.status == KRAIT_PY_OK)
    s->sample.py_flags |= KRAIT_PYF_TRUNCATED;
  s->sample.py_nframes = w.n;
  s->sample.py_status = w.status;
}

#endif /* KRAIT_PYTHON_WALK_BPF_H */
