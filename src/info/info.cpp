#include "info/info.h"

#include <fmt/format.h>
#include <unistd.h>

#include <map>
#include <memory>

#include "inspect/inspector.h"
#include "proc/processes.h"
#include "python/offsets/debug_offsets.h"
#include "python/offsets/offset_table.h"
#include "util/json_writer.h"

namespace krait::info {
namespace {

const char* status_name(python::AttachStatus s) {
  switch (s) {
    case python::AttachStatus::kAttached:
      return "profilable";
    case python::AttachStatus::kNotYet:
      return "starting";
    case python::AttachStatus::kNotPython:
      return "not-python";
    case python::AttachStatus::kGone:
      return "exited";
    case python::AttachStatus::kRefused:
      return "refused";
  }
  return "?";
}

// Every process is looked at on the Inspector's workers: one that does
// not answer is reported as stalled instead of holding `krait info` up.
std::vector<ProcessReport> python_processes(const std::vector<pid_t>& only) {
  const std::vector<pid_t> pids = only.empty() ? proc::list_pids() : only;
  auto inspector = inspect::Inspector::create({});
  if (!inspector)
    return {};
  auto images = std::make_shared<python::ImageCache>();
  std::map<pid_t, python::Attachment> found;
  for (pid_t pid : pids) {
    if (pid == ::getpid())
      continue;
    (*inspector)
        ->post(static_cast<uint64_t>(pid), "attach",
               [pid, images, &found](inspect::TaskContext&) -> inspect::Completion {
                 auto a =
                     std::make_shared<python::Attachment>(python::attach_process(pid, *images, {}));
                 return [pid, a, &found] { found[pid] = std::move(*a); };
               });
  }
  (*inspector)->drain(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  std::map<uint64_t, std::string> stalled;
  for (const auto& notice : (*inspector)->take_notices())
    stalled[notice.key] = notice.reason;
  std::vector<ProcessReport> out;
  for (pid_t pid : pids) {
    if (pid == ::getpid())
      continue;
    python::Attachment a;
    if (auto it = found.find(pid); it != found.end()) {
      a = std::move(it->second);
    } else {
      a.status = python::AttachStatus::kRefused;
      auto s = stalled.find(static_cast<uint64_t>(pid));
      a.reason = s != stalled.end() ? s->second : "not read within 30 s";
    }
    if (a.status == python::AttachStatus::kNotPython && only.empty())
      continue;
    if (a.status == python::AttachStatus::kGone && only.empty())
      continue;
    out.push_back({pid, proc::comm_or_unknown(pid), std::move(a)});
  }
  return out;
}

std::vector<std::string> debug_offsets_minors() {
  std::vector<std::string> out;
  for (int minor = 13; minor < 40; ++minor)
    if (python::find_debug_offsets_layout(3, minor))
      out.push_back(fmt::format("3.{}", minor));
  return out;
}

}  // namespace

HostReport survey_host(const std::vector<pid_t>& only) {
  HostReport r;
  r.features = bpf::probe_kernel_features();
  r.capabilities = bpf::effective_capabilities();
  r.missing = bpf::missing_capabilities(r.capabilities);
  r.processes = python_processes(only);
  for (const auto& t : python::builtin_offset_tables())
    r.offset_tables.push_back(t.version.str());
  r.debug_offsets_layouts = debug_offsets_minors();
  return r;
}

std::string report_json(const HostReport& r) {
  JsonWriter w;
  w.begin_object();
  w.key("kernel").begin_object();
  w.key("release").value(r.features.release);
  w.key("btf").value(r.features.btf);
  w.key("cycles_event").value(r.features.cycles_event);
  w.key("cpu_clock_event").value(r.features.cpu_clock_event);
  w.key("bpf_stats_enabled").value(r.features.bpf_stats_enabled);
  w.key("online_cpus").value(static_cast<int64_t>(r.features.online_cpus));
  w.key("notes").begin_array();
  for (const auto& n : r.features.notes)
    w.value(n);
  w.end_array().end_object();
  w.key("capabilities").begin_object();
  w.key("bpf").value(r.capabilities.bpf);
  w.key("perfmon").value(r.capabilities.perfmon);
  w.key("sys_ptrace").value(r.capabilities.sys_ptrace);
  w.key("can_record").value(!r.missing.has_value());
  if (r.missing)
    w.key("missing").value(*r.missing);
  w.end_object();
  w.key("offset_tables").begin_array();
  for (const auto& t : r.offset_tables)
    w.value(t);
  w.end_array();
  w.key("debug_offsets_layouts").begin_array();
  for (const auto& l : r.debug_offsets_layouts)
    w.value(l);
  w.end_array();
  w.key("processes").begin_array();
  for (const auto& p : r.processes) {
    const auto& a = p.attachment;
    w.begin_object();
    w.key("pid").value(static_cast<int64_t>(p.pid));
    w.key("name").value(p.name);
    w.key("status").value(status_name(a.status));
    if (a.version)
      w.key("python_version").value(a.version->str());
    else
      w.key("python_version").null();
    w.key("image").value(a.image_path);
    w.key("build").value(a.shared_library ? "shared" : "static");
    w.key("stripped").value(a.stripped);
    w.key("offsets").value(a.offsets_source);
    w.key("reason").value(a.reason);
    w.end_object();
  }
  w.end_array().end_object();
  return w.str();
}

std::string report_text(const HostReport& r) {
  std::string out;
  out += fmt::format("kernel {}: BTF {}, cycles event {}, cpu-clock event {}, {} CPUs online\n",
                     r.features.release, r.features.btf ? "yes" : "NO",
                     r.features.cycles_event ? "yes" : "no",
                     r.features.cpu_clock_event ? "yes" : "NO", r.features.online_cpus);
  for (const auto& n : r.features.notes)
    out += fmt::format("  note: {}\n", n);
  out += fmt::format("permissions: {}\n",
                     r.missing ? *r.missing : "can record (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE)");
  out += fmt::format("offset tables: {}\n", fmt::join(r.offset_tables, " "));
  out += fmt::format("_Py_DebugOffsets layouts: {}\n", fmt::join(r.debug_offsets_layouts, " "));
  if (r.processes.empty()) {
    out += "no Python processes\n";
    return out;
  }
  out += fmt::format("{:>8}  {:<16} {:<8} {:<10} {}\n", "PID", "PROCESS", "PYTHON", "STATUS",
                     "DETAILS");
  for (const auto& p : r.processes) {
    const auto& a = p.attachment;
    std::string details;
    if (a.status == python::AttachStatus::kAttached)
      details = fmt::format("{} ({}{}), offsets: {}", a.image_path,
                            a.shared_library ? "shared" : "static", a.stripped ? ", stripped" : "",
                            a.offsets_source);
    else
      details = a.reason;
    out += fmt::format("{:>8}  {:<16} {:<8} {:<10} {}\n", p.pid, p.name,
                       a.version ? a.version->str() : "-", status_name(a.status), details);
  }
  return out;
}

}  // namespace krait::info
