#include "proc/container.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include "util/files.h"

namespace krait::proc {
namespace {

constexpr size_t kIdLength = 64;

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

bool is_container_id(std::string_view s) {
  return s.size() == kIdLength && is_hex(s);
}

// "8-4-4-4-12" hex digits.
bool is_uuid(std::string_view s) {
  if (s.size() != 36)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !is_hex(s.substr(i, 1)))
      return false;
  }
  return true;
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (!part.empty())
      parts.push_back(part);
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

struct Found {
  std::string runtime;
  std::string id;
};

// A container scope or directory name: "<prefix><id>.scope" or a bare id.
std::optional<Found> container_in(std::string_view part, std::string_view parent) {
  struct Prefix {
    std::string_view prefix;
    std::string_view runtime;
  };
  static constexpr Prefix kScopes[] = {
      {"docker-", "docker"},      {"cri-containerd-", "containerd"}, {"crio-conmon-", "cri-o"},
      {"crio-", "cri-o"},         {"libpod-conmon-", "podman"},      {"libpod-", "podman"},
      {"nerdctl-", "containerd"},
  };
  if (part.ends_with(".scope")) {
    const std::string_view stem = part.substr(0, part.size() - 6);
    for (const Prefix& p : kScopes)
      if (stem.starts_with(p.prefix) && is_container_id(stem.substr(p.prefix.size())))
        return Found{std::string(p.runtime), std::string(stem.substr(p.prefix.size()))};
    return std::nullopt;
  }
  if (part.starts_with("lxc.payload.") && part.size() > 12)
    return Found{"lxc", std::string(part.substr(12))};
  if (is_container_id(part))
    return Found{parent == "docker" ? "docker" : "", std::string(part)};
  return std::nullopt;
}

// "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid_with_underscores>.slice".
std::string pod_uid_in(std::string_view part) {
  std::string_view uid;
  if (part.starts_with("pod")) {
    uid = part.substr(3);
  } else if (part.starts_with("kubepods") && part.ends_with(".slice")) {
    const size_t at = part.rfind("-pod");
    if (at == std::string_view::npos)
      return "";
    uid = part.substr(at + 4, part.size() - 6 - (at + 4));
  } else {
    return "";
  }
  std::string out(uid);
  std::replace(out.begin(), out.end(), '_', '-');
  return is_uuid(out) ? out : "";
}

// "user@1000.service": systemd's per-user manager, whose tree is delegated
// to that user. The uid, or "".
std::string delegated_uid_in(std::string_view part) {
  if (!part.starts_with("user@") || !part.ends_with(".service"))
    return "";
  const std::string_view uid = part.substr(5, part.size() - 5 - 8);
  if (uid.empty() || uid.size() > 10 ||
      !std::all_of(uid.begin(), uid.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return "";
  return std::string(uid);
}

struct Line {
  std::string_view controllers;
  std::string_view path;
  bool v2 = false;
};

}  // namespace

Result<ContainerInfo> parse_cgroup(std::string_view text) {
  std::vector<Line> lines;
  size_t number = 0;
  while (!text.empty()) {
    const size_t newline = text.find('\n');
    const std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    ++number;
    if (line.empty())
      continue;
    const size_t first = line.find(':');
    const size_t second = first == std::string_view::npos ? first : line.find(':', first + 1);
    if (second == std::string_view::npos)
      return make_error("cgroup line {} is not 'id:controllers:path': '{}'", number, line);
    Line parsed;
    parsed.controllers = line.substr(first + 1, second - first - 1);
    parsed.path = line.substr(second + 1);
    parsed.v2 = line.substr(0, first) == "0" && parsed.controllers.empty();
    lines.push_back(parsed);
  }
  // The unified hierarchy first: on hybrid systems it is the one systemd and
  // current runtimes maintain.
  std::stable_partition(lines.begin(), lines.end(), [](const Line& l) { return l.v2; });

  ContainerInfo info;
  for (const Line& line : lines)
    if (line.v2 || line.controllers == "name=systemd") {
      info.cgroup_path = std::string(line.path);
      break;
    }
  if (info.cgroup_path.empty() && !lines.empty())
    info.cgroup_path = std::string(lines.front().path);

  for (const Line& line : lines) {
    const auto parts = split_path(line.path);
    std::string pod;
    std::string delegated;
    std::optional<Found> found;
    std::string_view parent;
    for (std::string_view part : parts) {
      if (delegated.empty())
        delegated = delegated_uid_in(part);
      if (pod.empty())
        pod = pod_uid_in(part);
      if (!found)
        found = container_in(part, parent);  // outermost wins
      parent = part;
    }
    if (found) {
      info.runtime = std::move(found->runtime);
      info.container_id = std::move(found->id);
      info.pod_uid = std::move(pod);
      info.delegated_to = std::move(delegated);
      return info;
    }
    if (info.pod_uid.empty()) {
      info.pod_uid = std::move(pod);
      if (!info.pod_uid.empty())
        info.delegated_to = std::move(delegated);
    }
  }
  for (const Line& line : lines) {
    const auto parts = split_path(line.path);
    for (auto it = parts.rbegin(); it != parts.rend(); ++it)
      if (it->ends_with(".service") && it->size() > 8 && !it->starts_with("user@")) {
        info.systemd_unit = std::string(*it);
        return info;
      }
  }
  return info;
}

Result<ContainerInfo> read_container_info(int pid, const std::string& proc_root) {
  const std::string path = fmt::format("{}/{}/cgroup", proc_root, pid);
  auto text = read_file(path);
  if (!text)
    return text.error();
  return parse_cgroup(*text).context(path);
}

Result<std::vector<int>> parse_nspid(std::string_view status_text) {
  size_t at = 0;
  while (at < status_text.size()) {
    const size_t newline = status_text.find('\n', at);
    const std::string_view line = status_text.substr(at, newline - at);
    at = newline == std::string_view::npos ? status_text.size() : newline + 1;
    if (!line.starts_with("NSpid:"))
      continue;
    std::vector<int> pids;
    std::string_view rest = line.substr(6);
    while (!rest.empty()) {
      const size_t begin = rest.find_first_not_of(" \t");
      if (begin == std::string_view::npos)
        break;
      rest.remove_prefix(begin);
      const size_t end = std::min(rest.find_first_of(" \t"), rest.size());
      int pid = 0;
      const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + end, pid);
      if (ec != std::errc() || ptr != rest.data() + end || pid <= 0)
        return make_error("malformed NSpid line: '{}'", line);
      pids.push_back(pid);
      rest.remove_prefix(end);
    }
    if (pids.empty())
      return make_error("empty NSpid line");
    return pids;
  }
  return std::vector<int>{};
}

Result<std::vector<int>> read_nspid(int pid, const std::string& proc_root) {
  const std::string path = fmt::format("{}/{}/status", proc_root, pid);
  auto text = read_file(path);
  if (!text)
    return text.error();
  return parse_nspid(*text).context(path);
}

}  // namespace krait::proc
