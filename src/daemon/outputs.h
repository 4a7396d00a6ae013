// Where the daemon's profiles go: Pyroscope through the upload queue,
// and/or a directory of pprof files, as the configuration says. A reload
// builds new Outputs and swaps them in (OutputSwitch); the old ones
// deliver what they hold on a thread of their own.
//
// Threading: deliver() runs on the stack builder's thread, the rest on the
// run loop; each Outputs has one lock, OutputSwitch another.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "engine/stack_builder.h"
#include "export/directory_output.h"
#include "export/pyroscope.h"
#include "export/upload_queue.h"
#include "profile/profile.h"

namespace krait::daemon {

class Outputs {
 public:
  static Result<std::unique_ptr<Outputs>> create(const DaemonConfig& config);

  void deliver(const engine::Series& series, profile::Profile profile, int64_t from_ns,
               int64_t until_ns);
  // Sends what is queued until `deadline`; the queue stops after this.
  void flush(std::chrono::steady_clock::time_point deadline);
  // The outputs' part of the health line.
  std::string health() const;

 private:
  mutable std::mutex mutex_;
  std::unique_ptr<exporter::PyroscopeSender> sender_;
  std::unique_ptr<exporter::UploadQueue> queue_;
  std::unique_ptr<exporter::DirectoryOutput> directory_;
  uint32_t rate_hz_ = 99;
  bpf::TimeMode time_mode_ = bpf::TimeMode::kCpu;
  uint64_t delivered_ = 0;
  uint64_t encode_failures_ = 0;
  std::string last_directory_error_;
};

// How long uploads may take after SIGTERM (or after a reload replaced
// them) before what is left is given up.
inline constexpr std::chrono::seconds kFlushTime{5};

// The current Outputs, replaced by reloads. Once replace() returns no
// profile goes into the old ones (their queue is closed by then); they
// flush on a thread of their own, so the run loop (and with it the ring
// buffer) never waits for a slow server.
class OutputSwitch {
 public:
  explicit OutputSwitch(std::unique_ptr<Outputs> outputs) : outputs_(std::move(outputs)) {}

  // An interval's profiles, on the builder thread; `to_unix` maps the
  // samples' clock to the wall clock.
  template <typename ToUnix>
  void deliver(std::vector<engine::SeriesProfile> profiles, int64_t first_start_ns,
               ToUnix to_unix) {
    std::lock_guard lock(mutex_);
    for (auto& sp : profiles) {
      if (!sp.series)
        continue;
      // The builder's own start: it moves on at every interval end, also of
      // an interval without samples, so a profile after an idle interval
      // does not reach back over it. Its first interval starts at 0.
      outputs_->deliver(*sp.series, std::move(sp.profile),
                        to_unix(std::max(sp.start_ktime_ns, first_start_ns)),
                        to_unix(sp.end_ktime_ns));
    }
  }
  void replace(std::unique_ptr<Outputs> next);
  std::string health() const;
  // Flushes the current outputs and waits for the retiring ones (each gets
  // kFlushTime); returns the last health line.
  std::string finish();

 private:
  struct Retiring {
    std::shared_ptr<std::atomic<bool>> done = std::make_shared<std::atomic<bool>>(false);
    std::jthread thread;
  };
  mutable std::mutex mutex_;  // guards outputs_ (swapped) and delivery
  std::shared_ptr<Outputs> outputs_;
  // A finished thread keeps its stack until joined: those are joined at the
  // next reload, so frequent reloads do not pile them up.
  std::vector<Retiring> retiring_;
  bool finished_ = false;
};

}  // namespace krait::daemon
