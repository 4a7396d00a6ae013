// Reading one process for `krait dump`: its thread states, their frames,
// and each thread's /proc view. Runs on an Inspector worker; everything
// read from the process or its /proc files is bounded.
#include "dump/dump.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "dump/task_files.h"
#include "engine/stack_builder.h"
#include "inspect/inspector.h"
#include "krait/off_cpu.h"
#include "proc/maps.h"
#include "proc/memory.h"
#include "proc/processes.h"
#include "python/asyncio_tasks.h"
#include "python/attach.h"
#include "python/code_reader.h"
#include "python/forked.h"
#include "python/frame_walk.h"
#include "python/method_class.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "util/files.h"
#include "util/text.h"

namespace krait::dump {
namespace {

template <typename T>
T value_or(const Result<T>& r, T fallback) {
  return r ? *r : fallback;
}

// Remote reads one process's dump may make: a 4096-thread process with
// deep stacks needs a few hundred thousand; a hostile one stops here.
constexpr int kMaxReadsPerProcess = 2'000'000;
// /proc/PID/task entries looked at.
constexpr size_t kMaxTasks = 16'384;
// Before 3.8 a thread state holds only pthread_self(), and a worker forked
// from C holds its parent's native thread id: there the tid is read from
// glibc's struct pthread (python::kPthreadTidOffset) and used only when it
// is a thread of the process.
using python::kPthreadTidOffset;
constexpr size_t kCommandBytes = 1024;
// Distinct code objects named per process: real processes share their code
// between threads; a hostile one cannot make the names grow without end
// (each holds at most two names of kMaxStringChars and a bounded line table).
constexpr size_t kMaxCodeObjects = 16'384;
constexpr auto kProcessDeadline = std::chrono::seconds(60);

std::string task_file(pid_t pid, int64_t tid, std::string_view name) {
  return fmt::format("/proc/{}/task/{}/{}", pid, tid, name);
}

// The thread ids of a process, ascending; `complete` false when cut.
std::vector<int64_t> list_tasks(pid_t pid, bool& complete) {
  std::vector<int64_t> out;
  complete = true;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (out.size() >= kMaxTasks) {
      complete = false;
      break;
    }
    if (auto tid = parse_unsigned<uint32_t>(it->path().filename().string()))
      out.push_back(*tid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The last NSpid field of a /proc status text: the id in the innermost PID
// namespace (what PyThreadState.native_thread_id holds in a container).
std::optional<uint64_t> innermost_id(std::string_view status) {
  while (!status.empty()) {
    std::string_view line = take_line(status);
    if (!line.starts_with("NSpid:"))
      continue;
    line = trim(line);
    const size_t last = line.find_last_of(" \t");
    if (last == std::string_view::npos)
      return std::nullopt;
    return parse_unsigned<uint64_t>(line.substr(last + 1));
  }
  return std::nullopt;
}

// Host tid of each thread id as the process's own PID namespace sees it.
// Identity outside a namespace, so status files are read only in one.
std::unordered_map<uint64_t, int64_t> namespace_tids(pid_t pid, const std::vector<int64_t>& tasks) {
  std::unordered_map<uint64_t, int64_t> out;
  auto status = read_file(fmt::format("/proc/{}/status", pid), kMaxTaskFileBytes);
  const auto own = status ? innermost_id(*status) : std::nullopt;
  const bool in_namespace = own && *own != static_cast<uint64_t>(pid);
  for (int64_t tid : tasks) {
    out[static_cast<uint64_t>(tid)] = tid;
    if (!in_namespace)
      continue;
    if (auto s = read_file(task_file(pid, tid, "status"), kMaxTaskFileBytes))
      if (auto inner = innermost_id(*s))
        out[*inner] = tid;
  }
  return out;
}

std::string command_line(pid_t pid) {
  auto raw = read_file_prefix(fmt::format("/proc/{}/cmdline", pid), kCommandBytes);
  if (!raw)
    return "";
  std::string out = std::move(*raw);
  std::replace(out.begin(), out.end(), '\0', ' ');
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out;
}

// One thread state of the interpreter lists.
struct PyThread {
  uint64_t tstate = 0;
  uint64_t interp = 0;
  uint64_t ident = 0;      // pthread_self()
  uint64_t native_id = 0;  // PyThreadState.native_thread_id (3.11+), 0 unknown
};

struct ThreadStates {
  std::vector<PyThread> threads;
  std::string error;                        // the lists could not be read whole
  bool cut = false;                         // more than max_threads
  std::map<uint64_t, uint64_t> gil_holder;  // interpreter -> thread state holding its GIL (0: none)
  uint64_t current = 0;  // gil_mode CURRENT_PTR: the thread state holding the GIL
  bool gil_known = false;
};

// Every thread state of every interpreter, with the GIL holder.
ThreadStates thread_states(python::BudgetedReader& mem, const python::Attachment& a,
                           size_t max_threads) {
  const python::PythonLayout& layout = *a.layout;
  const krait_py_layout& b = layout.bpf;
  ThreadStates out;
  if (b.gil_mode == KRAIT_GIL_CURRENT_PTR && a.info.gil_current_addr != 0) {
    auto current = mem.value<uint64_t>(a.info.gil_current_addr);
    out.gil_known = current.ok();
    out.current = value_or<uint64_t>(current, 0);
  }
  auto head = mem.value<uint64_t>(a.info.interp_head_addr);
  if (!head) {
    out.error = head.error().context("interpreter list").message;
    return out;
  }
  std::set<uint64_t> interps, seen;
  for (uint64_t ip = *head; ip != 0;) {
    if (interps.size() >= KRAIT_MAX_INTERPRETERS || !interps.insert(ip).second) {
      out.error = "the interpreter list is longer than 8 or cyclic";
      return out;
    }
    if (b.gil_mode == KRAIT_GIL_INTERP_LOCK && b.interp_gil_locked == b.interp_gil_holder + 8) {
      // last_holder and locked are neighbours (as the sampler reads them).
      struct {
        uint64_t holder;
        uint32_t locked;
        uint32_t pad;
      } gil{};
      auto r = mem.read(ip + b.interp_gil_holder,
                        std::span(reinterpret_cast<uint8_t*>(&gil), sizeof gil));
      if (r) {
        out.gil_holder[ip] = gil.locked ? gil.holder : 0;
        out.gil_known = true;
      }
    }
    auto t = mem.value<uint64_t>(ip + b.interp_tstate_head);
    if (!t) {
      out.error = t.error().context("thread list").message;
      return out;
    }
    for (uint64_t ts = *t; ts != 0;) {
      if (out.threads.size() >= max_threads) {
        out.cut = true;
        return out;
      }
      if (!seen.insert(ts).second) {
        out.error = fmt::format("the thread list is cyclic (thread state {:#x} again)", ts);
        return out;
      }
      PyThread pt{ts, ip, 0, 0};
      pt.ident = value_or<uint64_t>(mem.value<uint64_t>(ts + b.tstate_thread_id), 0);
      if (layout.tstate_native_thread_id != KRAIT_OFFSET_NONE)
        pt.native_id =
            value_or<uint64_t>(mem.value<uint64_t>(ts + layout.tstate_native_thread_id), 0);
      out.threads.push_back(pt);
      auto next = mem.value<uint64_t>(ts + b.tstate_next);
      if (!next) {
        out.error = next.error().context("thread list link").message;
        return out;
      }
      ts = *next;
    }
    auto next = mem.value<uint64_t>(ip + b.interp_next);
    if (!next) {
      out.error = next.error().context("interpreter list").message;
      return out;
    }
    ip = *next;
  }
  return out;
}

// Names of the code objects of one process, read once each.
class CodeNames {
 public:
  CodeNames(const proc::RemoteMemory& memory, const python::PythonLayout& layout,
            uint64_t code_type)
      : memory_(memory), layout_(layout), code_type_(code_type) {}

  DumpFrame name(const python::WalkedFrame& w) {
    const auto key = std::make_pair(w.record.code, w.record.token);
    auto it = codes_.find(key);
    if (it == codes_.end() && codes_.size() >= kMaxCodeObjects) {
      DumpFrame f;
      f.kind = FrameKind::kNote;
      f.function = fmt::format("[unknown Python code: more than {} code objects]", kMaxCodeObjects);
      return f;
    }
    if (it == codes_.end()) {
      Entry e;
      auto read =
          python::read_code_object(memory_, layout_, code_type_, w.record.code, w.record.token);
      if (read) {
        e.info = std::move(*read);
        if (layout_.method_class.enabled)
          if (auto cls = python::method_class_name(memory_, layout_, w.frame, w.record.code))
            e.info->name = *cls + "." + e.info->name;
      } else {
        e.error = read.error().message;
      }
      it = codes_.emplace(key, std::move(e)).first;
    }
    DumpFrame f;
    f.kind = FrameKind::kPython;
    if (!it->second.info) {
      f.kind = FrameKind::kNote;
      f.function = "[unknown Python code: " + it->second.error + "]";
      return f;
    }
    const python::CodeInfo& info = *it->second.info;
    f.function = info.name;
    f.file = info.filename;
    const int32_t line = info.line_at(layout_, w.record.instr & KRAIT_FRAME_INSTR_MASK);
    f.line = line < 0 ? 0 : line;
    return f;
  }

 private:
  struct Entry {
    std::optional<python::CodeInfo> info;
    std::string error;
  };
  const proc::RemoteMemory& memory_;
  const python::PythonLayout& layout_;
  uint64_t code_type_;
  std::map<std::pair<uint64_t, uint32_t>, Entry> codes_;
};

// What a thread blocked in a system call waits for, told as the off-CPU
// sampler tells it (krait/off_cpu.h).
std::string waiting_reason(const std::optional<TaskSyscall>& sys, const krait_proc_info& info) {
  if (!sys || sys->kind != TaskSyscall::Kind::kSyscall)
    return "";
  return krait_off_cpu_reason_name(
      krait_off_cpu_reason(sys->number, sys->args[0], sys->args[1], info.gil_addr, info.gil_size));
}

// A thread's view from /proc/PID/task/TID.
void read_task(pid_t pid, ThreadDump& t, std::optional<TaskSyscall>& syscall, std::string& why,
               std::vector<std::string>& kernel, bool kernel_stack) {
  if (auto comm = read_file_prefix(task_file(pid, t.tid, "comm"), 64)) {
    t.name = std::move(*comm);
    while (!t.name.empty() && t.name.back() == '\n')
      t.name.pop_back();
  }
  if (auto stat = read_file(task_file(pid, t.tid, "stat"), kMaxTaskFileBytes))
    t.kernel_state = value_or<char>(parse_stat_state(*stat), 0);
  auto text = read_file(task_file(pid, t.tid, "syscall"), kMaxTaskFileBytes);
  Result<TaskSyscall> parsed = text ? parse_syscall(*text) : Result<TaskSyscall>(text.error());
  if (parsed) {
    syscall = *parsed;
    if (parsed->kind == TaskSyscall::Kind::kSyscall)
      t.syscall = syscall_name(parsed->number);
  } else {
    why = parsed.error().message;
  }
  if (kernel_stack)
    if (auto stack = read_file(task_file(pid, t.tid, "stack"), kMaxTaskFileBytes))
      kernel = parse_kernel_stack(*stack);

  const bool on_cpu = syscall && syscall->kind == TaskSyscall::Kind::kRunning;
  switch (t.kernel_state) {
    case 0:
      t.state = on_cpu ? "running" : "";
      break;
    case 'R':
      // R is "on a CPU or waiting for one"; the syscall file tells which.
      t.state = !syscall || on_cpu ? "running" : "runnable";
      break;
    case 'S':
    case 'D':
      t.state = "blocked";
      break;
    default:
      t.state = state_name(t.kernel_state);
  }
}

// The bytes of [from, to), or of its longest readable start that reaches
// past `sp`'s page: the stacks of neighbouring threads can share one
// mapping, with guard pages between them that no map shows (madvise guard
// regions). A binary search over pages: a few reads.
Result<std::vector<uint8_t>> readable_prefix(const proc::RemoteMemory& memory, uint64_t from,
                                             uint64_t sp, uint64_t to) {
  auto whole = memory.read_bytes(from, to - from);
  if (whole)
    return whole;
  constexpr uint64_t kPage = 4096;
  uint64_t good = std::min(to, (sp | (kPage - 1)) + 1);
  auto first = memory.read_bytes(from, good - from);
  if (!first)
    return first;
  uint64_t bad = to;
  while (bad - good > kPage) {
    const uint64_t mid = good + (((bad - good) / 2) & ~(kPage - 1));
    if (mid == good)
      break;
    if (memory.read_bytes(from, mid - from))
      good = mid;
    else
      bad = mid;
  }
  return memory.read_bytes(from, good - from);
}

// The merge of `record`'s mixed stacks, on one thread: its user stack
// copied from the sp of its syscall file, unwound and merged with its
// Python frames by the engine's StackBuilder.
class NativeStacks {
 public:
  static Result<NativeStacks> create(pid_t pid, unwind::ModuleCache& cache) {
    auto maps = proc::read_maps(pid);
    if (!maps)
      return maps.error().context("memory map");
    engine::BuilderOptions options;
    options.native = true;
    options.kernel = false;  // kernel frames come named from /proc/.../stack
    auto builder = engine::StackBuilder::create(options);
    if (!builder)
      return builder.error();
    NativeStacks out;
    out.slot_ = std::make_shared<engine::ModulesSlot>();
    out.slot_->set(std::make_shared<const unwind::ProcessModules>(
        unwind::ProcessModules::from_maps(pid, *maps, cache)));
    out.maps_ = std::move(*maps);
    out.builder_ = std::move(*builder);
    return out;
  }

  // Native and Python frames merged, leaf first; error says why not.
  Result<std::vector<DumpFrame>> merge(const proc::RemoteMemory& memory, const TaskSyscall& sys,
                                       const std::vector<DumpFrame>& python,
                                       const std::vector<bool>& entry, bool every_entry,
                                       bool truncated) {
    auto stack = std::find_if(maps_.begin(), maps_.end(), [&](const proc::MapEntry& m) {
      return m.start <= sys.sp && sys.sp < m.end;
    });
    if (stack == maps_.end())
      return make_error("the stack pointer {:#x} is in no mapping", sys.sp);
    const bool red_zone = sys.sp - stack->start >= KRAIT_RED_ZONE_BYTES;
    const uint64_t from = red_zone ? sys.sp - KRAIT_RED_ZONE_BYTES : sys.sp;
    const uint64_t to = std::min<uint64_t>(stack->end, sys.sp + KRAIT_USER_STACK_CAP);
    auto bytes = readable_prefix(memory, from, sys.sp, to);
    if (!bytes)
      return bytes.error().context("user stack");
    engine::SampleJob job;
    job.native = true;
    job.python_process = true;
    job.python_truncated = truncated;
    job.labels = std::make_shared<const profile::Labels>();
    job.regs.ip = sys.pc;
    job.regs.sp = sys.sp;
    job.native_flags = KRAIT_NATIVE_CAPTURED | (red_zone ? KRAIT_NATIVE_RED_ZONE : 0);
    job.user_stack = std::move(*bytes);
    job.modules = slot_;
    for (size_t i = 0; i < python.size(); ++i) {
      auto f = std::make_shared<profile::Frame>();
      f->kind = python[i].kind == FrameKind::kNote ? profile::FrameKind::kSynthetic
                                                   : profile::FrameKind::kPython;
      f->function = python[i].function;
      f->file = python[i].file;
      f->line = python[i].line;
      job.python.push_back({std::move(f), every_entry || entry[i]});
    }
    builder_->add(job);
    std::vector<engine::SeriesProfile> profiles = builder_->take_profiles(0);
    std::vector<DumpFrame> out;
    if (profiles.empty())
      return out;
    const profile::Profile& p = profiles.front().profile;
    const auto samples = p.samples();
    if (samples.empty())
      return out;
    for (profile::FrameId id : samples.front().stack) {
      const profile::Frame& f = p.frames()[id];
      DumpFrame d;
      d.function = f.function;
      d.file = f.file;
      d.line = f.line;
      switch (f.kind) {
        case profile::FrameKind::kPython:
          d.kind = FrameKind::kPython;
          break;
        case profile::FrameKind::kNative:
          d.kind = FrameKind::kNative;
          break;
        case profile::FrameKind::kKernel:
          d.kind = FrameKind::kKernel;
          break;
        case profile::FrameKind::kSynthetic:
          d.kind = FrameKind::kNote;
          break;
      }
      out.push_back(std::move(d));
    }
    return out;
  }

 private:
  NativeStacks() = default;
  std::shared_ptr<engine::ModulesSlot> slot_;
  std::vector<proc::MapEntry> maps_;
  std::unique_ptr<engine::StackBuilder> builder_;
};

const char* attach_failure(python::AttachStatus status) {
  switch (status) {
    case python::AttachStatus::kNotPython:
      return "not a Python process";
    case python::AttachStatus::kGone:
      return "the process exited";
    case python::AttachStatus::kNotYet:
      return "Python is not initialised yet";
    case python::AttachStatus::kRefused:
      return "cannot read its Python threads";
    case python::AttachStatus::kAttached:
      break;
  }
  return "";
}

// One thread's stack: Python frames, then (native) merged with native and
// kernel frames.
void fill_stack(ThreadDump& t, const python::FrameChain& chain, CodeNames& names,
                const python::PythonLayout& layout, const std::optional<TaskSyscall>& sys,
                const std::string& sys_error, const std::vector<std::string>& kernel,
                NativeStacks* native, const std::string& native_setup_error,
                const proc::RemoteMemory& memory) {
  std::vector<DumpFrame> python;
  std::vector<bool> entry;
  for (const python::WalkedFrame& w : chain.frames) {
    python.push_back(names.name(w));
    entry.push_back((w.record.instr & KRAIT_FRAME_ENTRY) != 0);
  }
  t.truncated = chain.truncated;
  if (chain.status != KRAIT_PY_OK)
    t.error = chain.reason;
  if (!native && native_setup_error.empty()) {
    t.frames = std::move(python);
    return;
  }
  for (const std::string& k : kernel)
    t.frames.push_back({FrameKind::kKernel, k, "", 0});
  std::string why = native_setup_error;
  if (why.empty() && !sys)
    why = "no registers: " + sys_error;
  else if (why.empty() && sys->kind == TaskSyscall::Kind::kRunning)
    why = "the thread is running (registers are read only from a blocked thread)";
  if (why.empty()) {
    auto merged =
        native->merge(memory, *sys, python, entry, layout.every_frame_is_entry, chain.truncated);
    if (merged) {
      t.frames.insert(t.frames.end(), merged->begin(), merged->end());
      return;
    }
    why = merged.error().message;
  }
  t.native_error = why;
  t.frames.insert(t.frames.end(), python.begin(), python.end());
}

// The asyncio layout of the process, or (`why`) the reason there is none.
std::optional<python::AsyncioLayout> asyncio_layout(pid_t pid, const proc::RemoteMemory& memory,
                                                    const python::Attachment& a, std::string& why) {
  if (!a.version || !a.table) {
    why = "no offsets to read asyncio tasks with";
    return std::nullopt;
  }
  if (*a.version < python::PyVersion{3, 14, 0}) {
    why = fmt::format(
        "asyncio tasks are read from Python 3.14 on (earlier versions publish no asyncio "
        "layout); this is {}",
        a.version->str());
    return std::nullopt;
  }
  auto found = python::find_asyncio_debug(pid, memory, a.image_path);
  if (!found) {
    why = found.error().context("asyncio").message;
    return std::nullopt;
  }
  if (!*found) {
    why = "asyncio is not imported (no mapped _asyncio module has an .AsyncioDebug section)";
    return std::nullopt;
  }
  auto layout = python::build_asyncio_layout(**found, *a.table, *a.version);
  if (!layout) {
    why = layout.error().context("asyncio").message;
    return std::nullopt;
  }
  return *layout;
}

TaskDump task_dump(const python::AsyncTask& t, CodeNames& names) {
  TaskDump d;
  d.id = t.address;
  d.name = t.name;
  d.state = python::task_state_name(t.state);
  for (const python::WalkedFrame& w : t.coroutine.frames)
    d.frames.push_back(names.name(w));
  d.truncated = t.coroutine.truncated;
  d.awaited_by = t.awaited_by;
  d.waiting_on = t.waiter_type;
  d.error = t.error;
  if (t.coroutine.status != KRAIT_PY_OK)
    d.error += (d.error.empty() ? "coroutine: " : "; coroutine: ") + t.coroutine.reason;
  if (t.awaited_by_cut)
    d.error += (d.error.empty() ? "" : "; ") + std::string("awaited by more tasks than listed");
  return d;
}

AsyncioDump loop_dump(const python::LoopTasks& lt, CodeNames& names,
                      std::map<uint64_t, uint64_t>& waiters) {
  AsyncioDump d;
  d.loop = lt.loop;
  d.running_task = lt.running_task;
  d.truncated = lt.cut;
  d.error = lt.error;
  for (const python::AsyncTask& t : lt.tasks) {
    d.tasks.push_back(task_dump(t, names));
    waiters[t.address] = t.waiter;
  }
  return d;
}

// Tasks of threads that exited go to the thread running their loop; then
// each task's awaited_by is kept to the tasks listed and turned around
// into what each task awaits (with the task its fut_waiter names, if any).
void link_tasks(std::vector<ThreadDump*> threads, const std::vector<python::LoopTasks>& orphans,
                CodeNames& names, std::map<uint64_t, uint64_t>& waiters,
                std::vector<std::string>& notes) {
  size_t unplaced = 0;
  for (const python::LoopTasks& list : orphans) {
    for (const python::AsyncTask& t : list.tasks) {
      auto owner = std::find_if(threads.begin(), threads.end(), [&t](const ThreadDump* d) {
        return d->asyncio && d->asyncio->loop != 0 && d->asyncio->loop == t.loop;
      });
      if (owner == threads.end()) {
        ++unplaced;
        continue;
      }
      (*owner)->asyncio->tasks.push_back(task_dump(t, names));
      waiters[t.address] = t.waiter;
    }
    if (!list.error.empty())
      notes.push_back("asyncio tasks of exited threads: " + list.error);
  }
  if (unplaced > 0)
    notes.push_back(fmt::format(
        "{} asyncio tasks created by threads that exited run on no running loop: not listed",
        unplaced));
  std::map<uint64_t, TaskDump*> by_id;
  for (ThreadDump* t : threads)
    if (t->asyncio)
      for (TaskDump& task : t->asyncio->tasks)
        by_id.emplace(task.id, &task);
  for (auto& [id, task] : by_id) {
    std::erase_if(task->awaited_by, [&by_id](uint64_t a) { return !by_id.contains(a); });
    for (uint64_t a : task->awaited_by)
      by_id[a]->awaits.push_back(id);
  }
  for (auto& [id, task] : by_id) {
    auto w = waiters.find(id);
    if (w != waiters.end() && by_id.contains(w->second))
      task->awaits.push_back(w->second);
    for (auto* list : {&task->awaits, &task->awaited_by}) {
      std::sort(list->begin(), list->end());
      list->erase(std::unique(list->begin(), list->end()), list->end());
    }
  }
}

ProcessDump dump_one(pid_t pid, python::ImageCache& images, unwind::ModuleCache& modules,
                     const DumpOptions& options, bool& python_process) {
  ProcessDump out;
  out.pid = pid;
  out.name = proc::comm_or_unknown(pid);
  python::Attachment a = python::attach_process(pid, images, {});
  python_process = a.status != python::AttachStatus::kNotPython;
  if (a.version)
    out.version = a.version->str();
  out.command = command_line(pid);
  if (a.status != python::AttachStatus::kAttached || !a.layout) {
    out.error = attach_failure(a.status);
    // A process krait may not read (another user namespace, a ptrace
    // restriction) looks gone to the attach: it is not.
    if (a.status == python::AttachStatus::kGone &&
        ::access(fmt::format("/proc/{}", pid).c_str(), F_OK) == 0)
      out.error = "cannot read the process";
    if (!a.reason.empty())
      out.error += ": " + a.reason;
    return out;
  }
  const python::PythonLayout& layout = *a.layout;
  proc::ProcessMemory memory(pid);
  python::BudgetedReader reader(memory, kMaxReadsPerProcess);

  bool all_tasks = true;
  const std::vector<int64_t> tasks = list_tasks(pid, all_tasks);
  if (!all_tasks)
    out.notes.push_back(fmt::format("more than {} threads: only the first are listed", kMaxTasks));
  const auto host_tid = namespace_tids(pid, tasks);

  ThreadStates states = thread_states(reader, a, options.max_threads);
  if (states.cut)
    out.notes.push_back(
        fmt::format("more than {} Python threads: the rest are not listed", options.max_threads));
  if (!states.error.empty())
    out.notes.push_back("thread list: " + states.error);

  std::optional<NativeStacks> native;
  std::string native_setup_error;
  if (options.native) {
    auto n = NativeStacks::create(pid, modules);
    if (n)
      native = std::move(*n);
    else
      native_setup_error = n.error().message;
  }
  const bool kernel_stacks = options.native;

  CodeNames names(memory, layout, a.info.code_type_addr);
  std::optional<python::AsyncioLayout> asyncio;
  if (options.tasks)
    asyncio = asyncio_layout(pid, memory, a, out.tasks_error);
  python::TaskLimits task_limits;
  task_limits.max_depth = options.max_depth;
  std::map<uint64_t, uint64_t> waiters;  // task -> the future it waits on
  std::set<int64_t> placed;
  std::vector<ThreadDump> python_threads, unknown_tid;
  for (const PyThread& pt : states.threads) {
    ThreadDump t;
    t.python = true;
    if (pt.native_id != 0) {
      auto it = host_tid.find(pt.native_id);
      if (it == host_tid.end() && pt.ident != 0) {
        // A state the process inherited by fork names the parent's thread;
        // its pthread_t still leads to the thread that now runs it.
        if (auto tid = reader.value<uint32_t>(pt.ident + kPthreadTidOffset))
          it = host_tid.find(*tid);
      }
      if (it != host_tid.end())
        t.tid = it->second;
      else
        t.tid_error =
            fmt::format("native thread id {} is not a thread of the process", pt.native_id);
    } else if (layout.tstate_native_thread_id == KRAIT_OFFSET_NONE && pt.ident != 0) {
      auto tid = reader.value<uint32_t>(pt.ident + kPthreadTidOffset);
      auto it = tid ? host_tid.find(*tid) : host_tid.end();
      if (it != host_tid.end())
        t.tid = it->second;
      else
        t.tid_error = "the thread's pthread_t does not lead to a thread of the process";
    } else {
      t.tid_error = "the thread state has no thread id yet";
    }
    if (t.tid >= 0 && !placed.insert(t.tid).second) {
      t.tid_error = fmt::format("thread {} has two thread states", t.tid);
      t.tid = -1;
    }
    if (states.gil_known) {
      const uint64_t holder =
          layout.bpf.gil_mode == KRAIT_GIL_INTERP_LOCK
              ? (states.gil_holder.count(pt.interp) ? states.gil_holder[pt.interp] : 0)
              : states.current;
      const bool known =
          layout.bpf.gil_mode != KRAIT_GIL_INTERP_LOCK || states.gil_holder.count(pt.interp) != 0;
      if (known)
        t.gil = holder == pt.tstate ? Gil::kHeld : Gil::kNotHeld;
    }
    std::optional<TaskSyscall> sys;
    std::string sys_error = "the thread's kernel id is unknown";
    std::vector<std::string> kernel;
    if (t.tid >= 0)
      read_task(pid, t, sys, sys_error, kernel, kernel_stacks);
    t.waiting = waiting_reason(sys, a.info);
    python::FrameChain chain = python::walk_frame_chain(reader, layout, pt.tstate,
                                                        a.info.code_type_addr, options.max_depth);
    fill_stack(t, chain, names, layout, sys, sys_error, kernel, native ? &*native : nullptr,
               native_setup_error, memory);
    if (asyncio) {
      const python::LoopTasks lt = python::read_thread_tasks(
          reader, layout, *asyncio, a.info.code_type_addr, pt.tstate, task_limits);
      if (lt.loop != 0 || !lt.tasks.empty() || !lt.error.empty())
        t.asyncio = loop_dump(lt, names, waiters);
    }
    (t.tid >= 0 ? python_threads : unknown_tid).push_back(std::move(t));
  }
  if (asyncio) {
    std::vector<python::LoopTasks> orphans;
    std::set<uint64_t> interps;
    for (const PyThread& pt : states.threads)
      if (interps.insert(pt.interp).second)
        orphans.push_back(python::read_interpreter_tasks(
            reader, layout, *asyncio, a.info.code_type_addr, pt.interp, task_limits));
    std::vector<ThreadDump*> all;
    for (auto* list : {&python_threads, &unknown_tid})
      for (ThreadDump& t : *list)
        all.push_back(&t);
    link_tasks(all, orphans, names, waiters, out.notes);
  }
  if (reader.exhausted())
    out.notes.push_back(
        fmt::format("read budget of {} reads used up: later stacks are cut", kMaxReadsPerProcess));

  // Threads without a thread state: listed so the count of threads is right
  // and a native thread stuck in a lock shows where.
  for (int64_t tid : tasks) {
    if (placed.contains(tid))
      continue;
    ThreadDump t;
    t.tid = tid;
    std::optional<TaskSyscall> sys;
    std::string sys_error;
    std::vector<std::string> kernel;
    read_task(pid, t, sys, sys_error, kernel, kernel_stacks);
    t.waiting = waiting_reason(sys, a.info);
    t.gil = states.gil_known ? Gil::kNotHeld : Gil::kUnknown;
    fill_stack(t, python::FrameChain{}, names, layout, sys, sys_error, kernel,
               native ? &*native : nullptr, native_setup_error, memory);
    t.error = "no Python thread state";
    python_threads.push_back(std::move(t));
  }
  std::sort(python_threads.begin(), python_threads.end(),
            [](const ThreadDump& x, const ThreadDump& y) { return x.tid < y.tid; });
  out.threads = std::move(python_threads);
  out.threads.insert(out.threads.end(), std::make_move_iterator(unknown_tid.begin()),
                     std::make_move_iterator(unknown_tid.end()));
  return out;
}

}  // namespace

DumpReport dump_processes(const DumpOptions& options) {
  DumpReport report;
  const bool named = !options.pids.empty();
  std::vector<pid_t> pids;
  std::set<pid_t> unique;
  for (pid_t pid : named ? options.pids : proc::list_pids())
    if (unique.insert(pid).second)
      pids.push_back(pid);
  inspect::InspectorOptions io;
  io.stall_ns = std::chrono::nanoseconds(kProcessDeadline).count();
  // The user asked for these processes: a large one may take seconds of CPU.
  io.budget.cpu_burst_ns = uint64_t{600} * 1'000'000'000;
  io.budget.bytes_burst = uint64_t{16} << 30;
  auto inspector = inspect::Inspector::create(io);
  if (!inspector) {
    report.failures.push_back("cannot start reader threads: " + inspector.error().message);
    return report;
  }
  auto images = std::make_shared<python::ImageCache>();
  auto modules = std::make_shared<unwind::ModuleCache>();
  struct Found {
    ProcessDump dump;
    bool python = false;
  };
  std::map<pid_t, Found> found;
  for (pid_t pid : pids) {
    if (pid == ::getpid())
      continue;
    (*inspector)
        ->post(static_cast<uint64_t>(pid), "dump",
               [pid, images, modules, options, &found](inspect::TaskContext&) {
                 auto f = std::make_shared<Found>();
                 f->dump = dump_one(pid, *images, *modules, options, f->python);
                 return inspect::Completion([pid, f, &found] { found[pid] = std::move(*f); });
               });
  }
  (*inspector)->drain(std::chrono::steady_clock::now() + kProcessDeadline);
  std::map<uint64_t, std::string> stalled;
  for (const auto& notice : (*inspector)->take_notices())
    stalled[notice.key] = notice.reason;
  for (pid_t pid : pids) {
    if (pid == ::getpid()) {
      if (named)
        report.failures.push_back(fmt::format("pid {}: krait itself", pid));
      continue;
    }
    auto it = found.find(pid);
    if (it == found.end()) {
      auto s = stalled.find(static_cast<uint64_t>(pid));
      const std::string why = s != stalled.end()
                                  ? s->second
                                  : fmt::format("not read within {} s", kProcessDeadline.count());
      if (named) {
        report.failures.push_back(fmt::format("pid {}: {}", pid, why));
      } else {
        // Python or not is unknown: listed, so a stuck process is seen.
        ProcessDump stuck;
        stuck.pid = pid;
        stuck.name = proc::comm_or_unknown(pid);
        stuck.error = why;
        report.processes.push_back(std::move(stuck));
      }
      continue;
    }
    Found& f = it->second;
    if (!f.dump.error.empty()) {
      if (named)
        report.failures.push_back(fmt::format("pid {}: {}", pid, f.dump.error));
      else if (f.python && f.dump.error.rfind("the process exited", 0) != 0 &&
               f.dump.error.rfind("cannot read the process", 0) != 0)
        report.processes.push_back(std::move(f.dump));
      continue;
    }
    report.processes.push_back(std::move(f.dump));
  }
  return report;
}

}  // namespace krait::dump
