/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * The native part of a mixed stack: the kernel stack (bpf_get_stack) and
 * what user space needs to unwind the user stack itself, since interpreters
 * have no frame pointers: the saved user registers and a copy of the stack
 * from the sampled rsp (less the red zone) upwards. Both are appended to the sample record after
 * its Python frames (see krait_sample in krait/abi.h).
 */
#ifndef KRAIT_NATIVE_STACK_BPF_H
#define KRAIT_NATIVE_STACK_BPF_H

#include "sampler_state.bpf.h"

#define KRAIT_PAGE 4096

struct krait_stack_copy {
  __u8* dst;
  __u64 sp;
  __u32 want;
  __u32 copied;
};

/* Page by page, for when the whole range crosses the top of the stack: copy
 * up to the first page that cannot be read. */
static long krait_copy_stack_page(__u32 index, void* arg) {
  struct krait_stack_copy* c = arg;
  __u32 copied = c->copied;
  if (copied >= c->want || copied > KRAIT_USER_STACK_CAP - KRAIT_PAGE)
    return 1;
  __u32 size = KRAIT_PAGE - (__u32)((c->sp + copied) & (KRAIT_PAGE - 1));
  __u32 left = c->want - copied;
  if (left < size)
    size = left;
  /* Without the barrier clang passes its own unbounded copy of `left` to the
   * helper; the mask then gives the verifier a bound on what it passes. */
  asm volatile("" : "+r"(size));
  size &= 2 * KRAIT_PAGE - 1;
  if (size == 0 || size > KRAIT_PAGE)
    return 1;
  if (bpf_probe_read_user(c->dst + copied, size, (const void*)(c->sp + copied)))
    return 1;
  c->copied = copied + size;
  return 0;
}

struct krait_stack_vma {
  __u64 start;
  __u64 end;
};

static long krait_stack_vma_cb(struct task_struct* task, struct vm_area_struct* vma, void* data) {
  struct krait_stack_vma* v = data;
  v->start = vma->vm_start;
  v->end = vma->vm_end;
  return 0;
}

/* At most `want` bytes from `from`, but none past the top of the stack: the
 * mapping that holds `from`, or for the main thread mm->start_stack, above
 * which lie argv, the environment and the auxiliary vector, never frames.
 * Most threads use a few KiB of the 16 KiB a fixed copy would take, and the
 * copy (then the ring record and user space's read of it) costs per byte.
 * Nothing the old fixed copy reached is lost: it also ended at the top. */
static __always_inline __u32 krait_stack_extent(struct task_struct* task, __u64 from, __u32 want) {
  struct krait_stack_vma v = {};
  if (bpf_find_vma(task, from, krait_stack_vma_cb, &v, 0) != 0 || v.end <= from)
    return want; /* mmap lock busy or no mapping: the read decides */
  __u64 top = v.end;
  __u64 start_stack = BPF_CORE_READ(task, mm, start_stack);
  if (start_stack > from && start_stack >= v.start && start_stack < v.end)
    top = start_stack + sizeof(__u64); /* argc, the word _start's frame reads */
  if (top - from < want)
    want = (__u32)(top - from);
  return want;
}

static __always_inline void krait_capture_native(struct krait_scratch* s, void* ctx,
                                                 struct task_struct* task, __u8 kernel_stacks,
                                                 __u32 user_stack_bytes) {
  struct krait_sample* sample = &s->sample;
  __u32 n = krait_py_nframes(sample);
  /* Right after the Python frames: the record is sent as one block. */
  __u8* tail = (__u8*)&sample->frames[0] + n * sizeof(struct krait_py_frame);
  __u32 k = 0;

  if (kernel_stacks) {
    long got = bpf_get_stack(ctx, tail, KRAIT_KERNEL_FRAMES_CAP * sizeof(__u64), 0);
    if (got > 0)
      k = (__u32)got / sizeof(__u64);
    else if (got < 0)
      sample->native_flags |= KRAIT_NATIVE_KERNEL_FAULT;
  }
  if (k > KRAIT_KERNEL_FRAMES_CAP)
    k = KRAIT_KERNEL_FRAMES_CAP;
  sample->kernel_nframes = k;

  if (!BPF_CORE_READ(task, mm)) {
    sample->native_flags |= KRAIT_NATIVE_NO_USER;
    return;
  }
  /* The user registers saved at kernel entry: valid whether the sample hit
   * user code or a system call. */
  struct pt_regs* regs = (struct pt_regs*)bpf_task_pt_regs(task);
  struct krait_user_regs* r = &sample->user_regs;
#define KRAIT_COPY_USER_REG(name) r->name = BPF_CORE_READ(regs, name);
  KRAIT_USER_REGS(KRAIT_COPY_USER_REG)
#undef KRAIT_COPY_USER_REG

  __u8* dst = tail + k * sizeof(__u64);
  __u32 want = krait_stack_extent(task, r->sp - KRAIT_RED_ZONE_BYTES, user_stack_bytes);
  if (want > KRAIT_USER_STACK_CAP)
    want = KRAIT_USER_STACK_CAP;
  /* One read when the range is mapped (most samples); page by page when it
   * runs past the top of the stack (shallow stacks). */
  if (bpf_probe_read_user(dst, want, (const void*)(r->sp - KRAIT_RED_ZONE_BYTES)) == 0) {
    sample->user_stack_size = want;
    sample->native_flags |= KRAIT_NATIVE_RED_ZONE;
  } else {
    struct krait_stack_copy c = {.dst = dst, .sp = r->sp, .want = want};
    bpf_loop(KRAIT_USER_STACK_CAP / KRAIT_PAGE + 1, krait_copy_stack_page, &c, 0);
    sample->user_stack_size = c.copied;
    sample->native_flags |= KRAIT_NATIVE_STACK_SHORT;
  }
  sample->native_flags |= KRAIT_NATIVE_CAPTURED;
}

#endif /* KRAIT_NATIVE_STACK_BPF_H */
