/* Constants shared by ringbuf_probe.bpf.c and its loader. */
#pragma once

enum probe_mode {
  PROBE_MODE_NOTHING = 0,
  PROBE_MODE_WAKEUP = 1,     /* bpf_ringbuf_output(..., 0): the reader is woken */
  PROBE_MODE_NO_WAKEUP = 2,  /* BPF_RB_NO_WAKEUP: the reader polls on a timer */
  PROBE_MODE_CLOCK_PAIR = 3, /* two bpf_ktime_get_ns() */
  PROBE_MODE_USER_READ = 4,  /* one 8-byte read of the interrupted thread's user stack */
};

#define PROBE_RING_BYTES (1 << 22)
#define PROBE_MAX_RECORD_BYTES 4096
