#include "daemon/selection.h"

#include <optional>
#include <set>

#include "proc/container.h"

namespace krait::daemon {
namespace {

// Labels that differ per process go on each sample inside the pprof; the
// rest name the series (a Pyroscope series per application, host and
// container, not per pid).
bool is_sample_label(const std::string& name) {
  static const std::set<std::string> names{"pid", "process_name", "python_version",
                                           "container_pid"};
  return names.count(name) > 0;
}

// Whether the selection takes `pid`; nullopt when the process is gone or
// unreadable.
std::optional<bool> selects(const ProcessFilter& filter, pid_t pid) {
  auto identity = read_process_identity(pid);
  if (!identity)
    return std::nullopt;
  auto container = proc::read_container_info(pid);
  return filter.matches(*identity, container ? *container : proc::ContainerInfo{});
}

// The application's series; the labels that vary per sample (the
// container's pid) go to `sample_labels` when given.
engine::SeriesRef series_of(const ProcessDescriber& describer, SeriesTable& table, pid_t pid,
                            const std::string& version, profile::Labels* sample_labels) {
  auto d = describer.describe(pid, version);
  profile::Labels series_labels;
  std::string application = "unknown";
  if (d) {
    application = d->application;
    for (auto& [k, v] : d->labels) {
      if (!is_sample_label(k))
        series_labels.emplace_back(k, v);
      else if (k == "container_pid" && sample_labels != nullptr)
        sample_labels->emplace_back(k, v);
    }
  }
  return table.intern(application, series_labels);
}

}  // namespace

engine::SeriesRef SeriesTable::intern(const std::string& application,
                                      const profile::Labels& labels) {
  std::lock_guard lock(mutex_);
  auto key = std::make_pair(application, labels);
  auto it = series_.find(key);
  if (it == series_.end())
    it = series_
             .emplace(key,
                      std::make_shared<const engine::Series>(engine::Series{application, labels}))
             .first;
  return it->second;
}

Result<ProcessNaming> ProcessNaming::create(const DaemonConfig& config) {
  ProcessNaming n;
  auto filter = ProcessFilter::create(config.processes);
  if (!filter)
    return filter.error();
  n.filter_ = std::make_shared<const ProcessFilter>(std::move(*filter));
  auto describer = ProcessDescriber::create(config, effective_hostname(config));
  if (!describer)
    return describer.error();
  n.describer_ = std::make_shared<const ProcessDescriber>(std::move(*describer));
  return n;
}

engine::Selection ProcessNaming::selection() const {
  engine::Selection s;
  s.wanted = [filter = filter_](pid_t pid) {
    return selects(*filter, pid).value_or(true);  // gone or unreadable: the attach decides
  };
  s.describe = [describer = describer_, series = series_](pid_t pid, const std::string& version) {
    engine::ProcessNaming naming;
    naming.series = series_of(*describer, *series, pid, version, &naming.sample_labels);
    return naming;
  };
  // --all-processes: a process that is not Python, named by the same rules;
  // null when the selection does not want it. One gone before it could be
  // read cannot be shown to match a criterion: only a selection of every
  // process takes it (as "unknown").
  s.other_series = [filter = filter_, describer = describer_, series = series_](
                       pid_t pid, const std::string&) {
    if (!selects(*filter, pid).value_or(filter->selects_all()))
      return engine::SeriesRef{};
    return series_of(*describer, *series, pid, "", nullptr);
  };
  return s;
}

}  // namespace krait::daemon
