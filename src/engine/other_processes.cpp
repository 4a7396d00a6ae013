// The Pipeline's processes that are not Python (--all-processes): named on
// the Inspector (the daemon's selection may refuse them), their modules
// loaded, and their samples parked until both are known.
#include <spdlog/spdlog.h>

#include "engine/pipeline.h"
#include "proc/processes.h"
#include "util/clock.h"

namespace krait::engine {
namespace {

// Stats and label keys of processes that are not Python: the top bit keeps
// them apart from the tracker's generations, which count up from 1.
constexpr uint64_t kOtherProcessKeyBit = uint64_t{1} << 63;

}  // namespace

void Pipeline::release_other(OtherProcess& other) {
  const bool ready = other.named && (!options_.native || other.modules_loaded_ns != 0);
  if (!ready)
    return;
  while (!other.parked.empty()) {
    ParkedSample s = std::move(other.parked.front());
    other.parked.pop_front();
    parked_bytes_ -= std::min(parked_bytes_, s.bytes());
    if (!other.wanted) {
      ++stats_.unwanted_native_samples;
      continue;
    }
    s.job.series = other.series;
    submit(std::move(s.job));
  }
  other.parked_bytes = 0;
}

void Pipeline::on_other_sample(const events::SampleView& view) {
  const krait_sample& s = view.sample;
  const int pid = static_cast<int>(s.hdr.pid);
  ++stats_.native_samples;
  OtherProcess& other = others_[pid];
  if (other.key == 0) {
    other.key = tracker_.new_key();
    other.name = proc::comm_or_unknown(pid);
    other.modules = std::make_shared<ModulesSlot>();
    if (!options_.other_series)
      other.named = true;
  }
  if (!other.named && !other.naming) {
    auto series_of = options_.other_series;
    const std::string name = other.name;
    const uint64_t key = other.key;
    other.naming = inspector_.post(key, "name process",
                                   [=, this](inspect::TaskContext&) -> inspect::Completion {
                                     SeriesRef series = series_of(pid, name);
                                     return [this, pid, key, series] {
                                       auto it = others_.find(pid);
                                       if (it == others_.end() || it->second.key != key)
                                         return;
                                       it->second.named = true;
                                       it->second.naming = false;
                                       it->second.series = series;
                                       it->second.wanted = series != nullptr;
                                       release_other(it->second);
                                     };
                                   });
    if (!other.naming) {
      other.named = true;  // throttled or stalled: in the default series
      other.wanted = true;
    }
  }
  if (other.named && !other.wanted) {
    ++stats_.unwanted_native_samples;
    return;
  }
  SampleJob job;
  job.process_key = kOtherProcessKeyBit | static_cast<uint32_t>(pid);
  job.ktime_ns = s.hdr.ktime_ns;
  job.series = other.series;
  job.labels = labels_for(job.process_key, pid, other.name, nullptr, s.hdr.tid, s.comm, 0);
  if (options_.native) {
    if (other.modules_loaded_ns == 0)
      request_modules(other.key, pid, other.modules, other.modules_loading);
    add_native(view, job, other.modules, other.modules_loaded_ns, other.key, pid,
               other.modules_loading);
  }
  const bool ready = other.named && (!options_.native || other.modules_loaded_ns != 0);
  if (ready) {
    submit(std::move(job));
    return;
  }
  ParkedSample parked;
  parked.job = std::move(job);
  parked.parked_ns = monotonic_ns();
  const size_t bytes = parked.bytes();
  if (!room_to_park(other.parked.size(), other.parked_bytes, bytes)) {
    ++stats_.park_full;
    submit(std::move(parked.job));
    return;
  }
  ++stats_.parked;
  other.parked_bytes += bytes;
  parked_bytes_ += bytes;
  other.parked.push_back(std::move(parked));
}

void Pipeline::on_notice(const inspect::Notice& notice) {
  for (auto& [pid, other] : others_) {
    if (other.key != notice.key)
      continue;
    spdlog::warn("pid {} ({}): {}", pid, other.name, notice.reason);
    other.named = true;
    other.naming = false;
    other.modules_loading = false;
    if (other.modules_loaded_ns == 0)
      other.modules_loaded_ns = monotonic_ns();
    release_other(other);
  }
}

void Pipeline::rename_others() {
  for (auto& [pid, other] : others_) {
    other.named = !options_.other_series;
    other.naming = false;
  }
}

}  // namespace krait::engine
