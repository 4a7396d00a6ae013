/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only */
/*
 * Why a thread is off the CPU, told from the system call it is blocked in
 * (x86_64 numbers) and its first two arguments: the same answer in the BPF
 * sampler (at the context switch) and in `krait dump` (from
 * /proc/TID/syscall). A system call says more than the kernel stack's
 * function names, which change between kernel versions, and costs nothing
 * to read: the registers saved at kernel entry hold it.
 *
 * Plain C, included by BPF and user space alike.
 */
#ifndef KRAIT_OFF_CPU_H
#define KRAIT_OFF_CPU_H

#include "krait/abi.h"

static inline __u8 krait_off_cpu_reason(__s64 nr, __u64 arg0, __u64 arg1, __u64 gil_addr,
                                        __u32 gil_size) {
  switch (nr) {
    case 202: /* futex */
    case 449: /* futex_waitv */
      if (gil_size != 0 && arg0 >= gil_addr && arg0 - gil_addr < gil_size)
        return KRAIT_OFF_GIL;
      return KRAIT_OFF_LOCK;
    case 34:  /* pause */
    case 35:  /* nanosleep */
    case 230: /* clock_nanosleep */
      return KRAIT_OFF_SLEEP;
    case 23:  /* select: nfds */
    case 270: /* pselect6 */
      return arg0 == 0 ? KRAIT_OFF_SLEEP : KRAIT_OFF_IO;
    case 7:   /* poll: nfds is the second argument */
    case 271: /* ppoll */
      return arg1 == 0 ? KRAIT_OFF_SLEEP : KRAIT_OFF_IO;
    case 0:   /* read */
    case 1:   /* write */
    case 2:   /* open */
    case 17:  /* pread64 */
    case 18:  /* pwrite64 */
    case 19:  /* readv */
    case 20:  /* writev */
    case 40:  /* sendfile */
    case 42:  /* connect */
    case 43:  /* accept */
    case 44:  /* sendto */
    case 45:  /* recvfrom */
    case 46:  /* sendmsg */
    case 47:  /* recvmsg */
    case 74:  /* fsync */
    case 75:  /* fdatasync */
    case 208: /* io_getevents */
    case 232: /* epoll_wait */
    case 257: /* openat */
    case 275: /* splice */
    case 277: /* sync_file_range */
    case 281: /* epoll_pwait */
    case 288: /* accept4 */
    case 295: /* preadv */
    case 296: /* pwritev */
    case 299: /* recvmmsg */
    case 307: /* sendmmsg */
    case 326: /* copy_file_range */
    case 327: /* preadv2 */
    case 328: /* pwritev2 */
    case 426: /* io_uring_enter */
    case 441: /* epoll_pwait2 */
      return KRAIT_OFF_IO;
    default:
      return KRAIT_OFF_OTHER;
  }
}

/* The label value of a reason. */
static inline const char* krait_off_cpu_reason_name(__u32 reason) {
  switch (reason) {
    case KRAIT_OFF_SLEEP:
      return "sleep";
    case KRAIT_OFF_IO:
      return "io";
    case KRAIT_OFF_LOCK:
      return "lock";
    case KRAIT_OFF_GIL:
      return "gil";
    case KRAIT_OFF_RUNNABLE:
      return "runnable";
    default:
      return "other";
  }
}

#endif /* KRAIT_OFF_CPU_H */
