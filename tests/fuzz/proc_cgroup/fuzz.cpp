// /proc/PID/cgroup and the NSpid line of /proc/PID/status
// (proc/container.h): container, pod and service detection, nested pids.
//
// Input: u8 selector (even: cgroup, odd: status), then the file's text.
// Checks, besides memory safety: a container id outside LXC is 64 hex
// digits, a pod UID is a dashed UUID, and NSpid values are positive.
#include <algorithm>

#include "fuzz_input.h"
#include "proc/container.h"

using namespace krait;

namespace {
bool hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const bool status = in.take<uint8_t>() & 1;
  const std::string_view text = in.rest_text();
  if (status) {
    auto pids = proc::parse_nspid(text);
    if (pids) {
      for (int pid : *pids)
        KRAIT_FUZZ_CHECK(pid > 0);
    }
    return 0;
  }
  auto info = proc::parse_cgroup(text);
  if (!info)
    return 0;
  if (!info->container_id.empty() && info->runtime != "lxc") {
    KRAIT_FUZZ_CHECK(info->container_id.size() == 64);
    KRAIT_FUZZ_CHECK(std::all_of(info->container_id.begin(), info->container_id.end(), hex));
  }
  if (!info->pod_uid.empty())
    KRAIT_FUZZ_CHECK(info->pod_uid.size() == 36);
  if (info->in_container())
    KRAIT_FUZZ_CHECK(info->systemd_unit.empty());
  return 0;
}
