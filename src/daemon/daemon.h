// `krait daemon`: continuous host-wide profiling.
//
// One engine::Engine (sampler, tracker, pipeline, stack builder) runs for the
// life of the service. Time is cut into intervals aligned to the wall clock
// (every upload_interval seconds, e.g. :00 :15 :30 :45) that tile time with
// no gap or overlap; at each end the builder hands one profile per series
// (application + series labels) to the outputs: Pyroscope through a bounded
// retrying upload queue, and/or a directory of pprof files. Nothing the
// outputs do (a server that is down, slow or refusing; a full disk) blocks
// sampling.
//
// Signals: SIGTERM/SIGINT end the current interval at once, deliver it
// (within a few seconds) and exit 0; SIGHUP reloads the configuration
// (outputs, naming, labels, process selection, interval; sampling settings
// need a restart and say so).
//
// Threads: the run loop (the caller's), the stack builder, the upload queue.
#pragma once

#include "daemon/config.h"
#include "util/result.h"

namespace krait::daemon {

struct DaemonRunOptions {
  DaemonConfig config;
  const DaemonFlags* flags = nullptr;  // for SIGHUP: resolved again
  int ready_fd = -1;                   // written "ready\n" once sampling runs
};

Result<int> run_daemon(DaemonRunOptions options);

}  // namespace krait::daemon
