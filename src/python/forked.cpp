// The ancestors of a process, for thread states a fork left behind.
#include "python/forked.h"

#include <sys/stat.h>

#include <optional>
#include <set>

#include "util/files.h"
#include "util/text.h"

namespace krait::python {
namespace {

// Deeper chains exist (shells, supervisors, containers), but the fork that
// copied a thread state is the process's own parent or close to it.
constexpr size_t kMaxAncestors = 32;
constexpr size_t kStatusBytes = 16 * 1024;

struct StatusIds {
  std::optional<pid_t> ppid;
  std::optional<uint64_t> inner;  // last NSpid field
};

std::optional<std::string_view> field(std::string_view text, std::string_view name) {
  while (!text.empty()) {
    std::string_view line = take_line(text);
    if (line.starts_with(name))
      return trim(line.substr(name.size()));
  }
  return std::nullopt;
}

StatusIds read_status(const std::string& proc_root, pid_t pid) {
  StatusIds out;
  auto text = read_file(proc_root + "/" + std::to_string(pid) + "/status", kStatusBytes);
  if (!text)
    return out;
  if (auto v = field(*text, "PPid:"))
    if (auto p = parse_unsigned<uint32_t>(*v); p && *p <= 0x7fff'ffffu)
      out.ppid = static_cast<pid_t>(*p);
  if (auto v = field(*text, "NSpid:")) {
    const size_t last = v->find_last_of(" \t");
    out.inner = parse_unsigned<uint64_t>(last == std::string_view::npos ? *v : v->substr(last + 1));
  }
  return out;
}

}  // namespace

void Ancestry::load() {
  loaded_ = true;
  const StatusIds self = read_status(proc_root_, pid_);
  inner_pid_ = self.inner.value_or(static_cast<uint64_t>(pid_));
  in_namespace_ = inner_pid_ != static_cast<uint64_t>(pid_);
  std::set<pid_t> seen{pid_};
  std::optional<pid_t> next = self.ppid;
  while (next && *next > 0 && chain_.size() < kMaxAncestors && seen.insert(*next).second) {
    const StatusIds s = read_status(proc_root_, *next);
    chain_.emplace_back(*next, s.inner.value_or(static_cast<uint64_t>(*next)));
    next = s.ppid;
  }
}

const std::vector<std::pair<pid_t, uint64_t>>& Ancestry::chain() {
  if (!loaded_)
    load();
  return chain_;
}

bool Ancestry::is_main_thread(uint64_t tid) {
  if (!loaded_)
    load();
  return tid != 0 && (tid == static_cast<uint64_t>(pid_) || tid == inner_pid_);
}

bool Ancestry::has_thread(uint64_t tid) {
  if (tid == 0 || tid > 0x7fff'ffffu)
    return false;
  for (const auto& [host, inner] : chain()) {
    if (in_namespace_) {
      // Ids are the namespace's: only an ancestor inside it can have
      // given the id, and only its main thread is known by that id here.
      if (inner == tid && inner != static_cast<uint64_t>(host))
        return true;
      continue;
    }
    if (host == 1)
      continue;
    if (static_cast<uint64_t>(host) == tid)
      return true;
    struct stat st {};
    const std::string task =
        proc_root_ + "/" + std::to_string(host) + "/task/" + std::to_string(tid);
    if (::stat(task.c_str(), &st) == 0)
      return true;
  }
  return false;
}

}  // namespace krait::python
