// Which processes the daemon profiles and how each is named: the process
// selection (process_filter.h) and application names and labels
// (app_name.h) turned into the engine's Selection hooks, with the series
// they intern. Rebuilt on SIGHUP.
//
// Threading: the hooks run on Inspector workers and hold what they use
// (shared pointers), so a reload never pulls anything from under a read in
// flight; the series table has its own lock.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "daemon/app_name.h"
#include "daemon/config.h"
#include "daemon/process_filter.h"
#include "engine/engine.h"

namespace krait::daemon {

// The series of every application, shared by all its processes.
class SeriesTable {
 public:
  engine::SeriesRef intern(const std::string& application, const profile::Labels& labels);

 private:
  std::mutex mutex_;
  std::map<std::pair<std::string, profile::Labels>, engine::SeriesRef> series_;
};

class ProcessNaming {
 public:
  static Result<ProcessNaming> create(const DaemonConfig& config);
  // The hooks for the engine.
  engine::Selection selection() const;

 private:
  std::shared_ptr<const ProcessFilter> filter_;
  std::shared_ptr<const ProcessDescriber> describer_;
  std::shared_ptr<SeriesTable> series_ = std::make_shared<SeriesTable>();
};

}  // namespace krait::daemon
