// Which container (and Kubernetes pod, or systemd service) a process runs
// in, read from /proc/PID/cgroup; and the process's pid as each nested PID
// namespace sees it, from the NSpid line of /proc/PID/status.
//
// Recognised cgroup layouts (cgroup v2, v1 and hybrid; the paths may be
// relative to the reader's own cgroup namespace, e.g. "/../../kubepods...",
// when krait itself runs in a container):
// - Docker: ".../docker-<id>.scope" (systemd driver), ".../docker/<id>"
//   (cgroupfs driver)
// - containerd / CRI: ".../cri-containerd-<id>.scope", nerdctl
//   ".../nerdctl-<id>.scope"
// - CRI-O: ".../crio-<id>.scope", ".../crio-conmon-<id>.scope"
// - Podman: ".../libpod-<id>.scope[/container]", ".../libpod-conmon-<id>.scope"
// - Kubernetes pods: "kubepods[-<qos>]-pod<uid with _>.slice" (systemd) or
//   "kubepods/<qos>/pod<uid>" (cgroupfs); a bare 64-hex id below a pod has
//   no runtime prefix and leaves the runtime empty
// - LXC: "lxc.payload.<name>" (the id is the container name)
// - systemd services: the innermost "<name>.service" outside any container
// <id> is the 64-hex-digit container id. The v2 line ("0::") is read first,
// then the v1 lines in file order; the first container found wins, and in
// one path the outermost: a process may create cgroups below its own (a
// container with a delegated cgroup tree, systemd in a container) and name
// them like another container, so only the part of the path its runtime
// made is trusted. A container below a user's delegated tree
// ("user@<uid>.service", rootless Podman) is reported with that uid in
// `delegated_to`: any process of that user can name a cgroup there like a
// container of someone else's, so its id only means something together
// with the uid (the daemon labels it so, and the container_ids filter does
// not take it).
//
// All functions are pure or read /proc once; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::proc {

struct ContainerInfo {
  std::string runtime;       // docker, containerd, cri-o, podman, lxc; "" unknown or none
  std::string container_id;  // 64 hex digits (lxc: the name); "" outside containers
  std::string pod_uid;       // Kubernetes pod UID, dashed; "" outside Kubernetes
  std::string systemd_unit;  // e.g. "gunicorn.service"; "" in a container or none
  std::string cgroup_path;   // the v2 path, else the v1 name=systemd path, else the first
  std::string delegated_to;  // uid whose delegated tree the container id was found in

  bool in_container() const { return !container_id.empty(); }
  bool operator==(const ContainerInfo&) const = default;
};

// Parses the text of /proc/PID/cgroup ("hierarchy-ID:controllers:path" per
// line). Error names the 1-based line that does not have that shape.
Result<ContainerInfo> parse_cgroup(std::string_view text);

// Reads <proc_root>/PID/cgroup.
Result<ContainerInfo> read_container_info(int pid, const std::string& proc_root = "/proc");

// The pids of the NSpid line of a /proc/PID/status text, outermost PID
// namespace first, so back() is the pid inside the process's own namespace.
// Empty when there is no NSpid line (kernels before 4.1). Error when the
// line is malformed.
Result<std::vector<int>> parse_nspid(std::string_view status_text);

// Reads <proc_root>/PID/status.
Result<std::vector<int>> read_nspid(int pid, const std::string& proc_root = "/proc");

}  // namespace krait::proc
