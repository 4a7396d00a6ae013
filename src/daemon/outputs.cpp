#include "daemon/outputs.h"

#include <spdlog/spdlog.h>

#include "export/pprof.h"

namespace krait::daemon {

Result<std::unique_ptr<Outputs>> Outputs::create(const DaemonConfig& config) {
  auto out = std::make_unique<Outputs>();
  if (!config.pyroscope.url.empty()) {
    auto options = pyroscope_options(config);
    if (!options)
      return options.error();
    auto sender = exporter::PyroscopeSender::create(std::move(*options));
    if (!sender)
      return sender.error();
    out->sender_ = std::move(*sender);
    out->queue_ =
        std::make_unique<exporter::UploadQueue>(*out->sender_, upload_queue_options(config));
  }
  if (!config.directory.path.empty())
    out->directory_ = std::make_unique<exporter::DirectoryOutput>(directory_output_options(config));
  out->rate_hz_ = config.sampling_rate_hz;
  out->time_mode_ = config.time_mode;
  return out;
}

void Outputs::deliver(const engine::Series& series, profile::Profile profile, int64_t from_ns,
                      int64_t until_ns) {
  profile.meta().start_time_unix_ns = from_ns;
  profile.meta().duration_ns = until_ns - from_ns;
  profile.meta().period_ns = static_cast<int64_t>(1'000'000'000ull / rate_hz_);
  profile.meta().off_cpu = time_mode_ != bpf::TimeMode::kCpu;
  profile.meta().on_cpu = time_mode_ != bpf::TimeMode::kOffCpu;
  auto bytes = exporter::encode_pprof(profile);
  std::lock_guard lock(mutex_);
  if (!bytes) {
    ++encode_failures_;
    spdlog::error("{}: cannot encode its profile: {}", series.application, bytes.error().message);
    return;
  }
  if (directory_) {
    auto written = directory_->write(series.application, from_ns / 1'000'000'000,
                                     until_ns / 1'000'000'000, *bytes);
    // A full or unwritable directory is reported, never fatal.
    if (!written && written.error().message != last_directory_error_) {
      spdlog::error("profile directory: {}", written.error().message);
      last_directory_error_ = written.error().message;
    } else if (written) {
      last_directory_error_.clear();
    }
  }
  if (queue_) {
    exporter::Upload upload;
    upload.application = series.application;
    upload.labels = series.labels;
    upload.from_unix_ns = from_ns;
    upload.until_unix_ns = until_ns;
    upload.sample_rate_hz = rate_hz_;
    upload.pprof = std::move(*bytes);
    upload.id = exporter::make_upload_id();
    queue_->enqueue(std::move(upload));
  }
  ++delivered_;
}

void Outputs::flush(std::chrono::steady_clock::time_point deadline) {
  std::lock_guard lock(mutex_);
  if (queue_ && !queue_->flush(deadline)) {
    auto s = queue_->stats();
    spdlog::warn("{} profile(s) could not be uploaded before exiting: {}", s.queued,
                 s.last_error.empty() ? "timeout" : s.last_error);
  }
}

std::string Outputs::health() const {
  std::lock_guard lock(mutex_);
  std::string out = fmt::format("{} profiles cut", delivered_);
  // A profile that cannot be encoded is lost: say so where operators look.
  if (encode_failures_)
    out += fmt::format(" ({} could not be encoded)", encode_failures_);
  if (queue_) {
    auto s = queue_->stats();
    out += fmt::format(
        ", uploads: {} sent, {} queued, {} retried, {} dropped (queue full), {} "
        "rejected",
        s.sent, s.queued, s.retried, s.dropped_by_cap, s.rejected);
    if (!s.last_error.empty() && s.queued)
      out += " (last error: " + s.last_error + ")";
  }
  if (directory_) {
    auto s = directory_->stats();
    out += fmt::format(", files: {} written, {} failed", s.written, s.failed);
  }
  return out;
}

void OutputSwitch::replace(std::unique_ptr<Outputs> next) {
  std::shared_ptr<Outputs> old;
  {
    std::lock_guard lock(mutex_);
    old = std::exchange(outputs_, std::move(next));
  }
  std::erase_if(retiring_, [](const Retiring& r) { return r.done->load(); });
  Retiring& r = retiring_.emplace_back();
  r.thread = std::jthread([old = std::move(old), done = r.done] {
    old->flush(std::chrono::steady_clock::now() + kFlushTime);
    *done = true;
  });
}

std::string OutputSwitch::health() const {
  std::shared_ptr<Outputs> out;
  {
    std::lock_guard lock(mutex_);
    out = outputs_;
  }
  return out->health();
}

std::string OutputSwitch::finish() {
  if (!finished_) {
    finished_ = true;
    std::shared_ptr<Outputs> out;
    {
      std::lock_guard lock(mutex_);
      out = outputs_;
    }
    out->flush(std::chrono::steady_clock::now() + kFlushTime);
    retiring_.clear();  // joins: outputs replaced by a late reload get the same time
  }
  return health();
}

}  // namespace krait::daemon
