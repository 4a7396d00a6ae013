#include "proc/processes.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>

#include "util/files.h"
#include "util/text.h"

namespace krait::proc {
namespace {

// comm is TASK_COMM_LEN (16) bytes with the newline; a little slack, and
// nothing more, whatever the file claims.
constexpr size_t kCommMaxBytes = 64;

}  // namespace

std::vector<pid_t> list_pids(const std::string& proc_root) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(proc_root, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const auto pid = parse_unsigned<uint32_t>(it->path().filename().string());
    if (pid && *pid > 0 && *pid <= INT32_MAX)
      pids.push_back(static_cast<pid_t>(*pid));
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

Result<std::string> read_comm(pid_t pid, const std::string& proc_root) {
  auto comm = read_file(proc_root + "/" + std::to_string(pid) + "/comm", kCommMaxBytes);
  if (!comm)
    return comm.error();
  std::string name = std::move(*comm);
  while (!name.empty() && name.back() == '\n')
    name.pop_back();
  return name;
}

std::string comm_or_unknown(pid_t pid) {
  auto comm = read_comm(pid);
  return comm ? std::move(*comm) : std::string("?");
}

}  // namespace krait::proc
