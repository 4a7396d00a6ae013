// The sampling options, described once for every command that samples
// (`krait record`, `krait daemon`): their flags, help, ranges and choices,
// and the TOML key where the daemon reads them from its file. A command
// binds the ones it uses to its own fields:
//   options::bind<RecordOptions>(options::sampling::rate_hz(), &RecordOptions::frequency_hz)
// Limits come from bpf/sampling_options.h and krait/abi.h, which the
// sampler checks its configuration against.
#pragma once

#include "options/option.h"

namespace krait::options::sampling {

Spec rate_hz();        // sampling.rate_hz, -r,--rate
Spec stack_mode();     // sampling.stack_mode, --stacks,--stack-mode (python|mixed)
Spec kernel_frames();  // sampling.kernel, --no-kernel (sets false)
Spec all_processes();  // sampling.all_processes, --all-processes
Spec time_mode();      // sampling.mode, --mode (cpu|off-cpu|wall)
Spec switch_every();   // sampling.switch_every, --switch-every
Spec switch_budget();  // sampling.switch_budget, --switch-budget

// Only `krait record` has these so far, hence no TOML key.
Spec event();            // --event (auto|cycles|cpu-clock)
Spec max_depth();        // --max-depth
Spec user_stack_size();  // --user-stack-size
Spec gil_only();         // --gil-only

}  // namespace krait::options::sampling
