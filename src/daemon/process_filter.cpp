#include "daemon/process_filter.h"

#include <algorithm>
#include <cctype>

namespace krait::daemon {
namespace {

Result<std::vector<CmdlineRegex>> compile(const std::vector<std::string>& patterns,
                                          std::string_view key) {
  std::vector<CmdlineRegex> out;
  for (const auto& pattern : patterns) {
    auto regex = CmdlineRegex::compile(pattern, key);
    if (!regex)
      return regex.error();
    out.push_back(std::move(*regex));
  }
  return out;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool name_matches(const std::vector<std::string>& names, const ProcessIdentity& process) {
  if (names.empty())
    return false;
  const std::string exe = base_name(process.exe);
  const std::string app = default_application_name(process);
  const std::string program = default_program_name(process);
  return std::any_of(names.begin(), names.end(), [&](const std::string& name) {
    return name == process.comm || (!exe.empty() && name == exe) || name == app || name == program;
  });
}

bool regex_matches(const std::vector<CmdlineRegex>& regexes, const std::string& cmdline) {
  return std::any_of(regexes.begin(), regexes.end(),
                     [&](const CmdlineRegex& r) { return r.search(cmdline); });
}

}  // namespace

Result<ProcessFilter> ProcessFilter::create(const ProcessSelection& selection) {
  ProcessFilter filter;
  auto include = compile(selection.cmdline_regex, "processes.cmdline_regex");
  if (!include)
    return include.error();
  auto exclude = compile(selection.exclude_cmdline_regex, "processes.exclude_cmdline_regex");
  if (!exclude)
    return exclude.error();
  filter.selection_ = selection;
  filter.include_regex_ = std::move(*include);
  filter.exclude_regex_ = std::move(*exclude);
  filter.selects_all_ = selection.names.empty() && selection.cmdline_regex.empty() &&
                        selection.cgroups.empty() && selection.container_ids.empty();
  return filter;
}

bool ProcessFilter::matches(const ProcessIdentity& process,
                            const proc::ContainerInfo& container) const {
  std::string cmdline;
  for (const auto& arg : process.argv)
    cmdline += (cmdline.empty() ? "" : " ") + arg;
  if (name_matches(selection_.exclude_names, process) || regex_matches(exclude_regex_, cmdline))
    return false;
  if (selects_all_)
    return true;
  if (name_matches(selection_.names, process) || regex_matches(include_regex_, cmdline))
    return true;
  for (std::string prefix : selection_.cgroups) {
    while (prefix.size() > 1 && prefix.back() == '/')
      prefix.pop_back();
    const std::string& path = container.cgroup_path;
    if (prefix == "/" || path == prefix || path.starts_with(prefix + "/"))
      return true;
  }
  // A user can name a cgroup of its own like any container (container.h).
  const std::string id = container.delegated_to.empty() ? lower(container.container_id) : "";
  for (const auto& wanted : selection_.container_ids)
    if (!id.empty() && id.starts_with(lower(wanted)))
      return true;
  return false;
}

}  // namespace krait::daemon
