/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * The kernel/user ABI of krait: every struct and constant that crosses
 * between the BPF sampler (bpf/sampler.bpf.c) and user space (src/) is
 * defined here, once.
 *
 * Rules: plain C, fixed-width types only (addresses are __u64), no bool,
 * long or enum-typed fields, explicit padding. The C++ side static_asserts
 * the sizes (src/bpf/abi_checks.cpp), so a change that shifts a field breaks
 * the build instead of the data. Compiled into the BPF object too, so it
 * carries that object's licence.
 */
#ifndef KRAIT_ABI_H
#define KRAIT_ABI_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* ---- limits ------------------------------------------------------------ */

/* Capacity of the Python frame array in one sample record; the runtime
 * depth limit (--max-depth) may be lower, never higher. */
#define KRAIT_PY_FRAMES_CAP 1024
#define KRAIT_PY_DEPTH_DEFAULT 256
/* Interpreters (main + subinterpreters) searched for a thread's state. */
#define KRAIT_MAX_INTERPRETERS 8
#define KRAIT_THREAD_WALK_DEFAULT 4096
#define KRAIT_COMM_LEN 16

/* Bytes of a PyThreadState, frame and code object read in one go. Each
 * layout says how much of that it needs (krait_py_layout.*_read_size). */
#define KRAIT_TSTATE_READ_CAP 256
#define KRAIT_FRAME_READ_CAP 128
#define KRAIT_CODE_READ_CAP 256

/* An offset that the interpreter version does not have. */
#define KRAIT_OFFSET_NONE 0xffff
/* An owner value no frame carries: the version has no shim frames. */
#define KRAIT_OWNER_NONE 0xff

/* ---- ring buffer records ----------------------------------------------- */

/* krait_event_header.type */
#define KRAIT_EVENT_SAMPLE 1
#define KRAIT_EVENT_EXEC 2 /* a process replaced its image (krait_proc_event) */
#define KRAIT_EVENT_EXIT 3 /* the last thread of a process exited (krait_proc_event) */
/* A process user space has not classified yet (krait_proc_event). */
#define KRAIT_EVENT_PROC_UNKNOWN 4
#define KRAIT_EVENT_CODE 5 /* a code object seen for the first time (krait_code_event) */
/* A thread whose off-CPU sample was sent runs again (krait_block_end). */
#define KRAIT_EVENT_BLOCK_END 6
/* the whole line table of a code object whose table the code event holds
 * only in part (krait_linetable_event); it follows that code event */
#define KRAIT_EVENT_LINETABLE 7

struct krait_event_header {
  __u32 type;
  __u32 pid; /* thread group id, as the initial pid namespace sees it */
  __u32 tid;
  __u32 cpu;
  __u64 ktime_ns; /* bpf_ktime_get_ns() */
};

/* krait_sample.py_status: why the Python stack is missing or incomplete.
 * Frames gathered before a failure are still sent (leaf first). */
#define KRAIT_PY_OK 0
#define KRAIT_PY_PROC_REFUSED 1      /* user space refused this process; it keeps the reason */
#define KRAIT_PY_NO_INTERPRETER 2    /* runtime not initialised yet, or finalised */
#define KRAIT_PY_NO_THREAD_STATE 3   /* the thread has no PyThreadState (a native thread) */
#define KRAIT_PY_THREAD_WALK_LIMIT 4 /* thread list longer than the walk limit */
#define KRAIT_PY_READ_FAULT_STATE 5  /* runtime / interpreter / thread state unreadable */
#define KRAIT_PY_READ_FAULT_FRAME 6  /* a frame was unreadable */
#define KRAIT_PY_READ_FAULT_CODE 7   /* a code object was unreadable */
#define KRAIT_PY_BAD_CODE_OBJECT 8   /* a frame's code is not a code object: layout mismatch */
#define KRAIT_PY_NOT_PYTHON 9        /* --all-processes: a process that is not Python */
#define KRAIT_PY_STATUS_COUNT 10

/* krait_sample.py_flags */
#define KRAIT_PYF_TRUNCATED 0x1     /* more frames than the depth limit */
#define KRAIT_PYF_TSTATE_CACHED 0x2 /* the thread state came from the cache */
#define KRAIT_PYF_GIL_KNOWN 0x4     /* the version's GIL state could be read */
#define KRAIT_PYF_GIL_HELD 0x8      /* ... and the sampled thread held the GIL */

/* krait_py_frame.instr: the low 31 bits hold the instruction position as the
 * version records it (KRAIT_INSTR_* of the layout says which); the top bit
 * marks the first frame run by a C-level call of the eval loop (3.11+). */
#define KRAIT_FRAME_ENTRY 0x80000000u
#define KRAIT_FRAME_INSTR_MASK 0x7fffffffu

struct krait_py_frame {
  __u64 code;  /* code object address, tag bits cleared */
  __u32 token; /* krait_code_token() of the code object when sampled */
  __u32 instr; /* see KRAIT_FRAME_ENTRY */
};

/* krait_sample.cpu_state: where the thread was. An on-CPU sample comes from
 * the perf event and stands for one sampling period; an off-CPU sample is
 * taken when the thread leaves the CPU, and the time it stays off is sent
 * when it runs again (krait_block_end). */
#define KRAIT_STATE_ON_CPU 0
#define KRAIT_STATE_OFF_CPU 1

/* krait_sample.off_cpu_reason (see krait/off_cpu.h for how it is told). */
#define KRAIT_OFF_OTHER 0
#define KRAIT_OFF_SLEEP 1    /* a sleep: nanosleep, or select/poll with no descriptors */
#define KRAIT_OFF_IO 2       /* waiting on a descriptor or the disk */
#define KRAIT_OFF_LOCK 3     /* a futex that is not the GIL's */
#define KRAIT_OFF_GIL 4      /* a futex inside the process's GIL */
#define KRAIT_OFF_RUNNABLE 5 /* preempted: ready to run, waiting for a CPU */
#define KRAIT_OFF_REASON_COUNT 6

/* x86_64 user registers at the sample (from the task's saved pt_regs), the
 * ones DWARF CFI can refer to. This is the one list of them, in record
 * order and named as in struct pt_regs: the BPF program copies them with
 * it, and user space builds its register sets from it (unwind::Registers). */
// clang-format off
#define KRAIT_USER_REGS(X) \
  X(ip) X(sp) X(bp) X(bx) X(r12) X(r13) X(r14) X(r15) \
  X(ax) X(cx) X(dx) X(si) X(di) X(r8) X(r9) X(r10) X(r11)
// clang-format on
#define KRAIT_USER_REG_FIELD(name) __u64 name;
struct krait_user_regs {
  KRAIT_USER_REGS(KRAIT_USER_REG_FIELD)
};
#undef KRAIT_USER_REG_FIELD

/* krait_sample.native_flags */
#define KRAIT_NATIVE_CAPTURED 0x1 /* user_regs and the stack copy are valid */
/* The copy stopped before the requested size (the top of the stack). */
#define KRAIT_NATIVE_STACK_SHORT 0x2
#define KRAIT_NATIVE_NO_USER 0x4      /* a kernel thread: no user context */
#define KRAIT_NATIVE_KERNEL_FAULT 0x8 /* the kernel stack could not be read */
#define KRAIT_NATIVE_RED_ZONE 0x10    /* the copy starts KRAIT_RED_ZONE_BYTES below sp */

/* The x86-64 red zone. Functions that pop a register just before `ret`
 * leave CFI that still finds the caller's value there, below sp; copying
 * the red zone too lets samples taken at such epilogues unwind. */
#define KRAIT_RED_ZONE_BYTES 128

/* Bounds of the variable parts of a sample record. */
#define KRAIT_KERNEL_FRAMES_CAP 128
#define KRAIT_USER_STACK_CAP 65536
#define KRAIT_USER_STACK_DEFAULT 16384

struct krait_sample {
  struct krait_event_header hdr;
  __u32 proc_generation; /* krait_proc_info.generation the walk used */
  __u16 py_status;
  __u16 py_flags;
  __u32 py_nframes; /* frames[] entries filled, leaf first */
  __u32 cost_ns;    /* sampler time spent on this sample (0 unless cost measurement is on) */
  __u8 cpu_state;   /* KRAIT_STATE_* */
  __u8 off_cpu_reason;
  /* Off CPU: the context switches this one stands for (one in `weight` is
   * captured, at random, when switches are sampled). */
  __u16 weight;
  __u32 _pad0;
  __u64 tstate;
  char comm[KRAIT_COMM_LEN]; /* the thread's name */
  /* Native stacks (mixed mode): the record continues after frames[py_nframes]
   * with __u64 kernel_ips[kernel_nframes] (leaf first), then
   * __u8 user_stack[user_stack_size] copied from user_regs.sp upwards
   * (KRAIT_RED_ZONE_BYTES lower with KRAIT_NATIVE_RED_ZONE). */
  __u16 kernel_nframes;
  __u16 native_flags;
  __u32 user_stack_size;
  struct krait_user_regs user_regs;
  struct krait_py_frame frames[KRAIT_PY_FRAMES_CAP];
};

/* Bytes of a sample record with n Python frames, k kernel frames and m bytes
 * of user stack. */
#define KRAIT_SAMPLE_SIZE(n, k, m)                                                             \
  (sizeof(struct krait_sample) - sizeof(struct krait_py_frame) * (KRAIT_PY_FRAMES_CAP - (n)) + \
   (k) * sizeof(__u64) + (m))

/* Which incarnation of a pid a record or a `procs` entry is about: the
 * process's start time and how many times it has exec'd. A pid can be
 * reused and a process can exec a new image; these two cannot repeat for
 * one pid. Both are the thread group leader's (start_boottime and
 * self_exec_id of its task_struct). */
struct krait_proc_identity {
  __u64 start_ns; /* boot-based: /proc/PID/stat's start time, in ns */
  __u64 exec_id;
};

/* KRAIT_EVENT_EXEC, KRAIT_EVENT_EXIT and KRAIT_EVENT_PROC_UNKNOWN. */
struct krait_proc_event {
  struct krait_event_header hdr;
  struct krait_proc_identity identity; /* exec: the new image's */
  char comm[KRAIT_COMM_LEN];
};

/* The names of a code object, captured by the sampler the first time it sees
 * (pid, code, token): user space reads code objects after the fact, and one
 * that dies first (a module body after its import, exec'd code, the last
 * samples of an exiting process) would otherwise lose its name. Raw bytes of
 * the two string objects from their start; user space decodes them with the
 * same layout as live memory, and uses them only when the live read fails. */
#define KRAIT_CAPTURE_NAME_BYTES 128
#define KRAIT_CAPTURE_FILE_BYTES 256
#define KRAIT_CAPTURE_LINETABLE_BYTES 512
#define KRAIT_SEEN_SLOTS 16384 /* direct-mapped table of (pid, code, token) already captured */

struct krait_code_event {
  struct krait_event_header hdr;
  __u64 code;
  __u32 token;
  __u32 firstlineno;
  __u64 name_addr;
  __u64 file_addr;
  __u64 frame; /* the frame that ran it when first seen (names methods before 3.11) */
  __u64 linetable_addr;
  __u8 name[KRAIT_CAPTURE_NAME_BYTES];
  __u8 file[KRAIT_CAPTURE_FILE_BYTES];
  /* The line table object's first bytes: whole for most functions, so even
   * a code object that died before user space read it gets exact lines. */
  __u8 linetable[KRAIT_CAPTURE_LINETABLE_BYTES];
};

/* A code object's line table object, from its start, when it is longer than
 * the code event's inline copy (a module body's usually is): up to
 * KRAIT_CAPTURE_LINETABLE_MAX bytes, sent right after the code event of the
 * same (pid, code, token). The record is variable-size: `size` bytes of
 * `bytes` follow the fixed part, the rest is not sent. */
#define KRAIT_CAPTURE_LINETABLE_MAX 16384

struct krait_linetable_event {
  struct krait_event_header hdr;
  __u64 code;
  __u32 token;
  __u32 size; /* bytes of `bytes` sent, <= KRAIT_CAPTURE_LINETABLE_MAX */
  __u8 bytes[KRAIT_CAPTURE_LINETABLE_MAX];
};
#define KRAIT_LINETABLE_EVENT_HEAD 40 /* offsetof(struct krait_linetable_event, bytes) */

/* KRAIT_EVENT_BLOCK_END: the thread of an off-CPU sample is back on a CPU
 * at hdr.ktime_ns. start_ns is that sample's hdr.ktime_ns, so user space
 * pairs the two by (tid, start_ns) whatever order they reach it in. */
struct krait_block_end {
  struct krait_event_header hdr;
  __u64 start_ns;
  __u16 weight; /* the sample's */
  __u16 _pad0;
  /* How long taking the sample kept the thread on its way out: not time it
   * waited. Left in, a weighted sample of a short wait (a pipe ping-pong)
   * would stand for many waits each as long as the walk made this one. */
  __u32 walk_ns;
};

struct krait_seen_slot {
  __u64 code;
  __u32 token;
  __u32 pid;
};

/* ---- per-process configuration: the `procs` map (pid -> krait_proc_info) */

/* krait_proc_info.mode */
#define KRAIT_PROC_IGNORE 0  /* not Python (yet): report again after recheck_after_ns */
#define KRAIT_PROC_PYTHON 1  /* walk Python stacks with the layout */
#define KRAIT_PROC_REFUSED 2 /* Python, but not profiled: samples are counted, not walked */

/* krait_py_layout.instr_kind: what frame_instr holds. LASTI: an int
 * (f_lasti), sent as is, negatives as 0. POINTER: a pointer into
 * co_code_adaptive, sent as a byte offset from its start. */
#define KRAIT_INSTR_LASTI 0
#define KRAIT_INSTR_POINTER 1

/* krait_py_layout.gil_mode: how to tell whether the sampled thread holds the
 * GIL. CURRENT_PTR (2.7-3.11): *gil_current_addr, the current thread state,
 * equals the thread's state. INTERP_LOCK (3.12+): the interpreter's
 * _gil.locked is set and _gil.last_holder is the thread's state. */
#define KRAIT_GIL_UNKNOWN 0
#define KRAIT_GIL_CURRENT_PTR 1
#define KRAIT_GIL_INTERP_LOCK 2

/* Where the fields the sampler reads live, for one interpreter build.
 * Offsets are in bytes from the start of the struct; KRAIT_OFFSET_NONE
 * where the version lacks the field. */
struct krait_py_layout {
  /* PyInterpreterState */
  __u16 interp_next;
  __u16 interp_tstate_head;
  /* PyThreadState */
  __u16 tstate_next;
  __u16 tstate_thread_id; /* pthread_self() of the thread: its fsbase on x86_64 */
  __u16 tstate_frame;     /* the current frame, or the _PyCFrame holding it (3.11, 3.12) */
  __u16 cframe_frame;     /* _PyCFrame.current_frame, or NONE */
  __u16 tstate_read_size;
  /* PyFrameObject (<= 3.10) or _PyInterpreterFrame (3.11+) */
  __u16 frame_back;
  __u16 frame_code;
  __u16 frame_instr;
  __u16 frame_owner;    /* u8; NONE before 3.12 */
  __u16 frame_is_entry; /* u8; 3.11 only */
  __u16 frame_read_size;
  /* PyCodeObject */
  __u16 code_type; /* ob_type */
  __u16 code_firstlineno;
  __u16 code_filename;
  __u16 code_name; /* co_qualname where the version has it, else co_name */
  __u16 code_linetable;
  __u16 code_adaptive; /* co_code_adaptive (3.11+), the base of KRAIT_INSTR_POINTER */
  __u16 code_read_size;
  __u8 instr_kind;
  /* Owner value of the eval loop's C-stack shim frames, or KRAIT_OWNER_NONE. */
  __u8 frame_owner_shim;
  __u8 code_tag_mask; /* low bits of frame_code that are tags, not address (3.14 _PyStackRef) */
  __u8 skip_non_code; /* 1: a frame whose code is not a code object is a shim, not an error */
  /* GIL (gil_mode KRAIT_GIL_INTERP_LOCK): fields of PyInterpreterState */
  __u16 interp_gil_locked; /* int */
  __u16 interp_gil_holder; /* PyThreadState* */
  __u16 tstate_interp;     /* PyThreadState.interp */
  __u8 gil_mode;
  /* The line table object (bytes; str on 2.7): where its size and its data
   * are, so a table longer than the inline copy can be sent whole. 0: not
   * sent. */
  __u8 linetable_size_off;
  __u8 linetable_data_off;
  __u8 _pad0;
  /* PyThreadState.native_thread_id (3.11+), inside tstate_read_size; 0:
   * none. A state is taken as a thread's only when this names the thread
   * too (or the thread is its process's main one): a process forked from C
   * keeps its parent's other states, whose pthread_t a new thread of the
   * child gets again when glibc hands it their cached stack. */
  __u16 tstate_native_tid;
};

/* Capture events (krait_code_event) a process may cause: a bucket of
 * KRAIT_CAPTURE_BURST, refilled by one every 2^KRAIT_CAPTURE_REFILL_SHIFT ns
 * (about a thousand a second). A process that creates code objects without
 * end cannot flood the shared ring buffer; its captures past the budget are
 * counted (KRAIT_CNT_CODE_CAPTURES_THROTTLED) and retried at later samples. */
#define KRAIT_CAPTURE_BURST 512
#define KRAIT_CAPTURE_REFILL_SHIFT 20

/* Entries are created by the sampler only, when it first samples a pid
 * (KRAIT_PROC_IGNORE, reported to user space) or when a process execs.
 * User space updates existing entries only, with the identity the sampler
 * reported, and the sampler treats an entry whose identity is not the
 * sampled process's as stale: it replaces it and reports the pid again.
 * So no order of exec, exit and user-space writes leaves one incarnation's
 * layout on another. */
struct krait_proc_info {
  __u32 mode;
  __u32 generation;       /* changes on every attach, so stale thread cache entries miss */
  __u64 recheck_after_ns; /* KRAIT_PROC_IGNORE: ktime before which the pid is not reported again */
  __u64 interp_head_addr; /* address of the pointer to the first PyInterpreterState */
  __u64 code_type_addr;   /* &PyCode_Type in the process */
  __u64 gil_current_addr; /* gil_mode KRAIT_GIL_CURRENT_PTR: the current thread state pointer */
  struct krait_proc_identity identity;
  /* The capture budget, kept by the sampler (user space writes a full
   * bucket: KRAIT_CAPTURE_BURST tokens, time 0). */
  __u64 capture_refilled_ns;
  __u32 capture_tokens;
  __u32 _pad0;
  struct krait_py_layout layout;
  /* The GIL's condition variables and mutexes: a futex wait inside
   * [gil_addr, gil_addr + gil_size) is a wait for the GIL. 0: unknown. */
  __u64 gil_addr;
  __u32 gil_size;
  __u32 _pad2;
};

/* ---- per-thread cache: the `threads` map (tid -> krait_thread_entry) ---- */

struct krait_thread_entry {
  __u64 tstate;     /* 0: the last lookup found none (see status) */
  __u64 list_head;  /* first interpreter's thread list head when tstate was 0 */
  __u32 generation; /* krait_proc_info.generation of the lookup */
  /* tstate 0: why (KRAIT_PY_NO_THREAD_STATE, or KRAIT_PY_THREAD_WALK_LIMIT
   * for a list longer than the limit, cyclic ones included), kept until
   * the list head changes so such a list is not walked at every sample. */
  __u32 status;
};

/* ---- counters: the `counters` per-CPU array, one __u64 per index ------- */

#define KRAIT_CNT_RUNS 0                    /* sampler invocations */
#define KRAIT_CNT_SAMPLES 1                 /* sample records sent */
#define KRAIT_CNT_RINGBUF_FULL 2            /* sample records lost: ring buffer full */
#define KRAIT_CNT_EVENTS_LOST 3             /* exec/exit/unknown records lost: ring buffer full */
#define KRAIT_CNT_THREAD_WALKS 4            /* thread lists walked (cache misses) */
#define KRAIT_CNT_SCRATCH_MISSING 5         /* per-CPU scratch lookup failed (never expected) */
#define KRAIT_CNT_CODE_CAPTURES 6           /* krait_code_event records sent */
#define KRAIT_CNT_CODE_CAPTURES_LOST 7      /* ... lost: ring buffer full */
#define KRAIT_CNT_GIL_SKIPPED 8             /* --gil-only: samples of threads not holding the GIL */
#define KRAIT_CNT_CODE_CAPTURES_THROTTLED 9 /* captures over a process's budget (retried later) */
#define KRAIT_CNT_STALE_PROCS 10            /* `procs` entries of another incarnation, replaced */
#define KRAIT_CNT_PROCS_UPDATE_FAILED 11    /* a `procs` entry could not be created or replaced */
#define KRAIT_CNT_SWITCHES 12               /* off-CPU samples sent */
#define KRAIT_CNT_SWITCHES_LOST 13          /* ... lost: ring buffer full */
#define KRAIT_CNT_BLOCK_ENDS_LOST 14        /* krait_block_end records lost: ring buffer full */
#define KRAIT_CNT_SWITCHES_SKIPPED 15       /* switches not captured (one in --switch-every is) */
#define KRAIT_CNT_LINETABLES 16             /* krait_linetable_event records sent */
#define KRAIT_CNT_LINETABLES_LOST 17 /* ... lost: ring buffer full, or the table unreadable */
#define KRAIT_CNT_COUNT 18

/* ---- code object identity ---------------------------------------------- */

/* Code objects die and their addresses are reused, so a frame names its code
 * object by address plus this token over fields that differ between code
 * objects: file, name and line table objects and the first line. User space
 * recomputes it when it reads the code object and refuses a mismatch. */
static inline __u32 krait_code_token(__u64 filename, __u64 name, __u64 linetable,
                                     __u32 firstlineno) {
  __u64 h = 0xcbf29ce484222325ULL;
  h = (h ^ filename) * 0x100000001b3ULL;
  h = (h ^ (h >> 29) ^ name) * 0x9e3779b97f4a7c15ULL;
  h = (h ^ (h >> 31) ^ linetable) * 0x100000001b3ULL;
  h = (h ^ (h >> 27) ^ firstlineno) * 0x9e3779b97f4a7c15ULL;
  return (__u32)(h >> 32) ^ (__u32)h;
}

#endif /* KRAIT_ABI_H */
