#include "python/attach.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <filesystem>
#include <set>

#include "python/code_reader.h"
#include "python/forked.h"
#include "python/frame_walk.h"
#include "python/offsets/debug_offsets.h"
#include "util/files.h"
#include "util/text.h"

namespace krait::python {
namespace {

constexpr int kMaxInterpreters = KRAIT_MAX_INTERPRETERS;
constexpr int kMaxThreads = 4096;
// Frames are checked for this many threads; the thread list itself is
// checked whole (up to kMaxThreads).
constexpr int kMaxThreadsWithFrames = 64;
constexpr int kMaxFramesChecked = 64;
// Threads run while we look: a frame popped between two reads can look
// wrong once. A wrong layout fails every time.
constexpr int kValidationAttempts = 3;
// Remote reads one validate_layout() call may make, all attempts together:
// whatever the process's lists look like, validation costs at most this.
constexpr int kMaxValidationReads = 40'000;
// /proc/PID/task entries read for the set of thread ids.
constexpr size_t kMaxTaskIds = 16'384;
// Thread states whose thread id is not one of the process's, each of which
// must be explained by a fork: a forked worker has one (or one per thread
// of its parent); more than this is not a fork.
constexpr size_t kMaxInheritedThreads = 64;

// The ids of the process's threads as the host sees them and, for a process
// in a PID namespace (a container), as its own namespace does: that is what
// PyThreadState.native_thread_id holds there (the last field of NSpid).
// `complete` is false when the process has more threads than were read.
std::set<uint64_t> task_ids(pid_t pid, bool& complete) {
  std::set<uint64_t> ids;
  complete = true;
  std::error_code ec;
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  size_t seen = 0;
  for (auto it = std::filesystem::directory_iterator(task_dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (++seen > kMaxTaskIds) {
      complete = false;
      break;
    }
    const std::string tid = it->path().filename().string();
    uint64_t host = 0;
    if (std::from_chars(tid.data(), tid.data() + tid.size(), host).ec != std::errc())
      continue;
    ids.insert(host);
    auto status = read_file(task_dir + "/" + tid + "/status");
    if (!status)
      continue;
    std::string_view text = *status;
    while (!text.empty()) {
      std::string_view line = take_line(text);
      if (!line.starts_with("NSpid:"))
        continue;
      const size_t last = line.find_last_of(" \t");
      uint64_t inner = 0;
      std::string_view field = line.substr(last + 1);
      if (last != std::string_view::npos &&
          std::from_chars(field.data(), field.data() + field.size(), inner).ec == std::errc())
        ids.insert(inner);
      break;
    }
  }
  return ids;
}

Validation refuse(std::string reason) {
  return {AttachStatus::kRefused, std::move(reason)};
}

// Follows one thread's frames the way the sampler does (frame_walk.h) and
// checks that every frame's names decode; the function name of each frame
// checked goes to `functions` when given.
Validation check_frames(BudgetedReader& mem, const PythonLayout& layout, uint64_t tstate,
                        uint64_t code_type, std::vector<std::string>* functions = nullptr) {
  Validation names;
  auto decode = [&](const WalkedFrame& w) {
    auto n = read_py_string(mem.memory(), layout.strings, w.name);
    if (!n) {
      names = refuse(n.error().context("a function name does not decode").message);
      return false;
    }
    auto fn = read_py_string(mem.memory(), layout.strings, w.file);
    if (!fn) {
      names = refuse(fn.error().context("a file name does not decode").message);
      return false;
    }
    if (functions)
      functions->push_back(std::move(*n));
    return true;
  };
  FrameChain chain = walk_frame_chain(mem, layout, tstate, code_type, kMaxFramesChecked, decode);
  if (chain.status != KRAIT_PY_OK)
    return refuse(std::move(chain.reason));
  return names;
}

// A thread state naming a thread that is not one of the process's.
struct Inherited {
  uint64_t tstate = 0;
  uint64_t native = 0;  // PyThreadState.native_thread_id
  uint64_t ident = 0;   // its pthread_t
};

// Thread states naming a thread that is not one of the process's are what
// a fork from C leaves in the child (python/forked.h). The forking thread's
// state is run by the child's main thread, which its pthread_t leads to
// (and no other state names): its frames are the child's and are checked
// like any thread's. The states of the parent's other threads are run by no
// thread: their frames lay on stacks the child has reused, so only their
// id is checked, which must be a thread of a process the child descends
// from. Anything else is a wrong layout, or not a fork.
Validation check_inherited(BudgetedReader& mem, pid_t pid, const PythonLayout& layout,
                           uint64_t code_type, const std::set<uint64_t>& tids,
                           const std::set<uint64_t>& claimed,
                           const std::vector<Inherited>& inherited, bool frames_checked) {
  Ancestry ancestry(pid);
  bool forking_thread_found = false;
  for (const Inherited& s : inherited) {
    if (!forking_thread_found && s.ident != 0) {
      auto tid = mem.value<uint32_t>(s.ident + kPthreadTidOffset);
      if (tid && ancestry.is_main_thread(*tid) && tids.contains(*tid) && !claimed.contains(*tid)) {
        forking_thread_found = true;
        auto frames = check_frames(mem, layout, s.tstate, code_type);
        if (frames.status != AttachStatus::kAttached)
          return frames;
        frames_checked = true;
        continue;
      }
    }
    if (ancestry.has_thread(s.native))
      continue;
    return refuse(fmt::format(
        "thread id {} is not a thread of the process, nor of a process it was forked from",
        s.native));
  }
  if (!frames_checked)
    return {AttachStatus::kNotYet, "no thread of the process runs Python yet"};
  return {};
}

Validation validate_once(BudgetedReader& mem, pid_t pid, const PythonLayout& layout,
                         uint64_t interp_head_addr, uint64_t code_type) {
  const krait_py_layout& b = layout.bpf;
  auto interp = mem.value<uint64_t>(interp_head_addr);
  if (!interp)
    return refuse(interp.error().context("interpreter list").message);
  if (*interp == 0)
    return {AttachStatus::kNotYet, "the interpreter is not initialised yet"};

  bool all_tids = true;
  const auto tids = task_ids(pid, all_tids);
  int threads = 0;
  uint64_t ip = *interp;
  std::set<uint64_t> interpreters;
  // Thread ids of the process that thread states name, and the states
  // naming other ids (their id and pthread_t), judged once all are read.
  std::set<uint64_t> claimed;
  std::vector<Inherited> inherited;
  bool frames_checked = false;
  for (int i = 0; ip != 0; ++i) {
    if (i >= kMaxInterpreters)
      return refuse(fmt::format("more than {} interpreters", kMaxInterpreters));
    if (!interpreters.insert(ip).second)
      return refuse("the interpreter list is cyclic");
    auto head = mem.value<uint64_t>(ip + b.interp_tstate_head);
    if (!head)
      return refuse(head.error().context("thread list").message);
    uint64_t t = *head;
    std::set<uint64_t> visited;
    for (; t != 0; ++threads) {
      if (visited.size() >= static_cast<size_t>(kMaxThreads))
        return refuse(fmt::format("a thread list longer than {} threads", kMaxThreads));
      if (!visited.insert(t).second)
        return refuse(fmt::format("the thread list is cyclic (thread state {:#x} again)", t));
      if (layout.tstate_interp != KRAIT_OFFSET_NONE) {
        auto back = mem.value<uint64_t>(t + layout.tstate_interp);
        if (!back || *back != ip)
          return refuse("a thread state does not point back to its interpreter");
      }
      uint64_t native_id = 0;
      if (layout.tstate_native_thread_id != KRAIT_OFFSET_NONE) {
        auto native = mem.value<uint64_t>(t + layout.tstate_native_thread_id);
        if (!native)
          return refuse("a thread id is unreadable");
        native_id = *native;
      }
      auto ident = mem.value<uint64_t>(t + b.tstate_thread_id);
      if (!ident)
        return refuse("a thread identifier is unreadable");
      const bool foreign = native_id != 0 && all_tids && !tids.contains(native_id);
      if (foreign) {
        if (inherited.size() >= kMaxInheritedThreads)
          return refuse(
              fmt::format("more than {} thread states name threads that are not of the process",
                          kMaxInheritedThreads));
        inherited.push_back({t, native_id, *ident});
      } else {
        if (native_id != 0)
          claimed.insert(native_id);
        if (threads < kMaxThreadsWithFrames) {
          auto frames = check_frames(mem, layout, t, code_type);
          if (frames.status != AttachStatus::kAttached)
            return frames;
          frames_checked = true;
        }
      }
      auto next = mem.value<uint64_t>(t + b.tstate_next);
      if (!next)
        return refuse("a thread list link is unreadable");
      t = *next;
    }
    auto next = mem.value<uint64_t>(ip + b.interp_next);
    if (!next)
      return refuse("the interpreter list is unreadable");
    ip = *next;
  }
  if (threads == 0)
    return {AttachStatus::kNotYet, "the interpreter has no threads yet"};
  return check_inherited(mem, pid, layout, code_type, tids, claimed, inherited, frames_checked);
}

struct Candidate {
  const OffsetTable* table;
  std::string source;
};

// The candidate tables, most trusted first, and the tables the list owns
// (candidates point into them: the object stays where it was made).
struct Candidates {
  std::optional<OffsetTable> debug_table;
  std::optional<OffsetTable> nearest;
  std::vector<Candidate> list;
};

// What ImageCache::find's answer means for the attachment; true when an
// interpreter was found and attaching goes on.
bool take_find_status(const FindResult& found, Attachment& out) {
  switch (found.status) {
    case FindStatus::kNotPython:
      return false;
    case FindStatus::kGone:
      out.status = AttachStatus::kGone;
      out.reason = found.reason;
      return false;
    case FindStatus::kNotYet:
      out.status = AttachStatus::kNotYet;
      out.reason = found.reason;
      return false;
    case FindStatus::kUnusable:
      out.status = AttachStatus::kRefused;
      out.reason = found.reason;
      return false;
    case FindStatus::kFound:
      break;
  }
  return true;
}

// Reads the process's own _Py_DebugOffsets (3.13+) into a candidate, and
// warns where the built-in table of the version disagrees. False when the
// attachment is decided (`out` says why).
bool add_debug_offsets(pid_t pid, proc::ProcessMemory& mem, const ProcessInterpreter& pi,
                       const AttachOptions& options, Candidates& candidates, Attachment& out) {
  const PyVersion version = pi.image.version;
  size_t size = debug_offsets_read_size(version.major, version.minor);
  if (size == 0) {
    out.status = AttachStatus::kRefused;
    out.reason = fmt::format(
        "Python {} is newer than this krait knows: no _Py_DebugOffsets layout for {}.{}",
        version.str(), version.major, version.minor);
    return false;
  }
  auto bytes = mem.read_bytes(pi.runtime_addr, size);
  if (!bytes) {
    out.status = AttachStatus::kGone;
    out.reason = bytes.error().message;
    return false;
  }
  auto decoded = decode_debug_offsets(*bytes);
  if (!decoded) {
    out.status = AttachStatus::kRefused;
    out.reason = decoded.error().context("_Py_DebugOffsets").message;
    return false;
  }
  candidates.debug_table = std::move(*decoded);
  if (options.builtin_tables) {
    if (const OffsetTable* builtin = find_table(version)) {
      for (const auto& [name, value] : builtin->fields) {
        auto other = candidates.debug_table->get(name);
        if (other && *other != value)
          spdlog::warn(
              "pid {}: built-in offsets of Python {} disagree with its _Py_DebugOffsets "
              "on {} ({} vs {}); using _Py_DebugOffsets",
              pid, version.str(), name, value, *other);
      }
    }
  }
  candidates.list.push_back({&*candidates.debug_table, "_Py_DebugOffsets"});
  return true;
}

// No table of its own: the closest table of the same minor version, from
// the user's or the built-in ones. Used only if validation passes.
void add_nearest(PyVersion version, const AttachOptions& options, Candidates& candidates) {
  if (!candidates.list.empty() && candidates.list.back().table->version == version)
    return;
  std::vector<OffsetTable> pool(options.user_tables.begin(), options.user_tables.end());
  if (options.builtin_tables)
    pool.insert(pool.end(), builtin_offset_tables().begin(), builtin_offset_tables().end());
  if (const OffsetTable* near = nearest_table_same_minor(pool, version);
      near && near->version != version) {
    candidates.nearest = *near;
    candidates.list.push_back(
        {&*candidates.nearest, fmt::format("table {} (nearest to {}; {})", near->version.str(),
                                           version.str(), near->source)});
  }
}

// Every table that may describe the process, most trusted first. False
// when the attachment is decided (`out` says why).
bool collect_candidates(pid_t pid, proc::ProcessMemory& mem, const ProcessInterpreter& pi,
                        const AttachOptions& options, Candidates& candidates, Attachment& out) {
  const PyVersion version = pi.image.version;
  for (const auto& t : options.user_tables)
    if (t.version == version)
      candidates.list.push_back({&t, "user table " + t.source});
  if (version >= PyVersion{3, 13, 0} && pi.runtime_addr &&
      !add_debug_offsets(pid, mem, pi, options, candidates, out))
    return false;
  if (options.builtin_tables) {
    if (const OffsetTable* exact = find_table(version))
      candidates.list.push_back({exact, "built-in table " + exact->version.str()});
  }
  add_nearest(version, options, candidates);
  if (candidates.list.empty()) {
    out.status = AttachStatus::kRefused;
    out.reason = fmt::format(
        "no offsets for Python {}: krait has no table for {}.{}; generate one with `krait "
        "offsets generate` from a build with debug info and pass it with --offsets",
        version.str(), version.major, version.minor);
    return false;
  }
  return true;
}

// The attachment of a layout that passed validation: what the sampler
// needs to walk the process.
// Where the GIL's futexes are, so a wait on them reads as reason=gil; 0
// when unknown (before 3.7, or a table without the fields). From 3.12 on
// each interpreter has its own; the main one's is taken (subinterpreters
// sharing it, the default, wait on the same).
void locate_gil(proc::ProcessMemory& mem, const ProcessInterpreter& pi, uint64_t head,
                const PythonLayout& layout, krait_proc_info& info) {
  uint64_t holder = 0;
  if (layout.runtime_gil_holder != KRAIT_OFFSET_NONE) {
    holder = pi.runtime_addr + layout.runtime_gil_holder;
  } else if (layout.bpf.gil_mode == KRAIT_GIL_INTERP_LOCK) {
    uint64_t interp = 0;
    if (mem.read(head, {reinterpret_cast<uint8_t*>(&interp), sizeof interp}) && interp != 0)
      holder = interp + layout.bpf.interp_gil_holder;
  }
  if (holder < kGilHolderOffset)
    return;
  info.gil_addr = holder - kGilHolderOffset;
  info.gil_size = kGilStateBytes;
}

void attach_with(const ProcessInterpreter& pi, uint64_t head, PythonLayout layout,
                 const std::string& source, Attachment& out) {
  out.status = AttachStatus::kAttached;
  out.offsets_source = source;
  out.info.mode = KRAIT_PROC_PYTHON;
  out.info.interp_head_addr = head;
  out.info.code_type_addr = pi.code_type_addr;
  if (pi.image.version < PyVersion{3, 7, 0})
    out.info.gil_current_addr = pi.current_tstate_addr;
  else if (layout.runtime_tstate_current != KRAIT_OFFSET_NONE)
    out.info.gil_current_addr = pi.runtime_addr + layout.runtime_tstate_current;
  if (layout.bpf.gil_mode == KRAIT_GIL_CURRENT_PTR && out.info.gil_current_addr == 0)
    layout.bpf.gil_mode = KRAIT_GIL_UNKNOWN;
  out.info.layout = layout.bpf;
  out.layout = std::move(layout);
}

// Validates each candidate's layout against the live process in turn; the
// first that passes is used.
void attach_first_valid(pid_t pid, proc::ProcessMemory& mem, const ProcessInterpreter& pi,
                        const std::vector<Candidate>& candidates, Attachment& out) {
  const PyVersion version = pi.image.version;
  std::vector<std::string> failures;
  for (const Candidate& c : candidates) {
    auto layout = build_layout(*c.table, version);
    if (!layout) {
      failures.push_back(fmt::format("{}: {}", c.source, layout.error().message));
      continue;
    }
    uint64_t head = pi.interp_head_var;
    if (version >= PyVersion{3, 7, 0})
      head = pi.runtime_addr + layout->runtime_interp_head;
    Validation v = validate_layout(mem, pid, *layout, head, pi.code_type_addr);
    if (v.status == AttachStatus::kNotYet) {
      out.status = AttachStatus::kNotYet;
      out.reason = v.reason;
      return;
    }
    if (v.status != AttachStatus::kAttached) {
      failures.push_back(fmt::format("{} failed validation: {}", c.source, v.reason));
      continue;
    }
    attach_with(pi, head, std::move(*layout), c.source, out);
    out.table = *c.table;
    locate_gil(mem, pi, head, *out.layout, out.info);
    return;
  }
  out.status = AttachStatus::kRefused;
  out.validation_failed = true;
  out.reason = fmt::format("Python {}: ", version.str());
  for (size_t i = 0; i < failures.size(); ++i)
    out.reason += (i ? "; " : "") + failures[i];
}

}  // namespace

Validation validate_layout(const proc::RemoteMemory& memory, pid_t pid, const PythonLayout& layout,
                           uint64_t interp_head_addr, uint64_t code_type_addr) {
  BudgetedReader reader(memory, kMaxValidationReads);
  Validation last;
  for (int attempt = 0; attempt < kValidationAttempts && !reader.exhausted(); ++attempt) {
    Validation v = validate_once(reader, pid, layout, interp_head_addr, code_type_addr);
    if (v.status != AttachStatus::kRefused)
      return v;
    if (reader.exhausted()) {
      // The budget ran out during this attempt, which then failed at the
      // read that was refused, not at a check: an earlier attempt says why
      // the layout was refused, or else the budget is the reason.
      if (attempt == 0)
        last = refuse(fmt::format("checking its lists takes more than {} reads of its memory",
                                  kMaxValidationReads));
      break;
    }
    last = std::move(v);
  }
  return last;
}

FrameWalk walk_frames(const proc::RemoteMemory& memory, const PythonLayout& layout, uint64_t tstate,
                      uint64_t code_type_addr) {
  BudgetedReader reader(memory, kMaxValidationReads);
  FrameWalk out;
  out.validation = check_frames(reader, layout, tstate, code_type_addr, &out.functions);
  return out;
}

Attachment attach_process(pid_t pid, ImageCache& images, const AttachOptions& options) {
  Attachment out;
  FindResult found = images.find(pid);
  if (!take_find_status(found, out))
    return out;
  const ProcessInterpreter& pi = *found.interpreter;
  out.version = pi.image.version;
  out.image_path = pi.image.path;
  out.shared_library = pi.image.shared_library;
  out.stripped = pi.image.stripped;
  proc::ProcessMemory mem(pid);

  Candidates candidates;
  if (!collect_candidates(pid, mem, pi, options, candidates, out))
    return out;
  attach_first_valid(pid, mem, pi, candidates.list, out);
  return out;
}

}  // namespace krait::python
