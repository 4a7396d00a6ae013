// The ABI header is plain C shared with the BPF program; these assertions
// pin its layout so a field added in the wrong place fails the build rather
// than silently shifting what the kernel writes.
#include <cstddef>

#include "krait/abi.h"

static_assert(sizeof(krait_event_header) == 24);
static_assert(sizeof(krait_py_frame) == 16);
static_assert(offsetof(krait_sample, frames) == 216);
static_assert(sizeof(krait_sample) == 216 + 16 * KRAIT_PY_FRAMES_CAP);
static_assert(sizeof(krait_user_regs) == 136);
static_assert(KRAIT_SAMPLE_SIZE(0, 0, 0) == 216);
static_assert(KRAIT_SAMPLE_SIZE(2, 3, 100) == 216 + 32 + 24 + 100);
static_assert(sizeof(krait_proc_event) == 56);
static_assert(sizeof(krait_proc_identity) == 16);
static_assert(offsetof(krait_sample, cost_ns) == 36);
static_assert(sizeof(krait_py_layout) == 56);
static_assert(sizeof(krait_code_event) == 968);
static_assert(sizeof(krait_seen_slot) == 16);
static_assert(offsetof(krait_linetable_event, bytes) == KRAIT_LINETABLE_EVENT_HEAD);
static_assert(sizeof(krait_linetable_event) ==
              KRAIT_LINETABLE_EVENT_HEAD + KRAIT_CAPTURE_LINETABLE_MAX);
static_assert(offsetof(krait_py_layout, linetable_size_off) == 51);
static_assert(sizeof(krait_proc_info) == 144);
static_assert(sizeof(krait_block_end) == 40);
static_assert(offsetof(krait_sample, cpu_state) == 40);
static_assert(offsetof(krait_proc_info, layout) == 72);
static_assert(sizeof(krait_thread_entry) == 24);
static_assert(KRAIT_PY_STATUS_COUNT == 10);
