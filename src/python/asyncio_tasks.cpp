// The asyncio task reader: the facts it relies on are in the header. Every
// pointer read here comes from the process, so each is checked before it
// is followed and each loop has a bound of its own besides the read budget.
#include "python/asyncio_tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_set>

#include "proc/maps.h"
#include "python/code_reader.h"

namespace krait::python {
namespace {

// TaskObj is 168 bytes in 3.14 and 3.15; a section claiming much more is
// not one this reader understands.
constexpr uint64_t kMaxTaskSize = 1024;
constexpr uint64_t kMaxThreadStateSize = uint64_t{1} << 20;
constexpr uint64_t kMaxInterpreterSize = uint64_t{16} << 20;
// The largest awaited_by set table read (entries): a task awaited by more
// than a few thousand tasks is not a real program's.
constexpr int64_t kMaxSetEntries = int64_t{1} << 16;
constexpr size_t kSetChunkEntries = 256;
constexpr size_t kMaxTypeNameBytes = 128;
// _asyncio* files and the interpreter image: a process mapping more files
// of that name is not looked through further.
constexpr size_t kMaxSectionCandidates = 8;
// _PyStackRef and strong task fields may carry tag bits (Py_TAG_BITS).
constexpr uint64_t kTagBits = 3;
// tp_flags bits (Include/object.h).
constexpr uint64_t kLongSubclass = uint64_t{1} << 24;
constexpr uint64_t kUnicodeSubclass = uint64_t{1} << 28;

template <typename T>
T load(const std::vector<uint8_t>& block, uint64_t offset) {
  T value{};
  if (offset + sizeof(T) <= block.size())
    std::memcpy(&value, block.data() + offset, sizeof(T));
  return value;
}

// A NUL-terminated string (a type's tp_name), at most `max` bytes, read in
// aligned 16-byte pieces, so a name at the very end of a mapping is read
// and a short name costs one or two reads.
Result<std::string> read_c_string(BudgetedReader& reader, uint64_t address, size_t max) {
  std::string out;
  uint64_t at = address;
  while (out.size() < max) {
    const size_t chunk = std::min<size_t>(max - out.size(), 16 - (at & 15));
    std::vector<uint8_t> bytes(chunk);
    if (auto r = reader.read(at, bytes); !r)
      return r.error();
    auto nul = std::find(bytes.begin(), bytes.end(), uint8_t{0});
    out.append(bytes.begin(), nul);
    if (nul != bytes.end())
      return out;
    at += chunk;
  }
  return out;
}

class TaskReader {
 public:
  TaskReader(BudgetedReader& reader, const PythonLayout& layout, const AsyncioLayout& a,
             uint64_t code_type, const TaskLimits& limits)
      : reader_(reader), layout_(layout), a_(a), code_type_(code_type), limits_(limits) {}

  // The tasks of the circular list whose head is at `head`, appended to
  // `out`; `tstate` (0: none) gives the running task's frames.
  void read_list(uint64_t head, uint64_t tstate, LoopTasks& out) {
    auto next = reader_.value<uint64_t>(head + a_.llist_next);
    if (!next) {
      out.error = next.error().context("task list").message;
      return;
    }
    std::unordered_set<uint64_t> seen;
    for (uint64_t node = *next; node != head;) {
      if (node == 0) {
        out.error = "the task list has a NULL link";
        return;
      }
      if (out.tasks.size() >= limits_.max_tasks) {
        out.cut = true;
        return;
      }
      if (!seen.insert(node).second) {
        out.error = fmt::format("the task list is cyclic (node {:#x} again)", node);
        return;
      }
      bool not_a_task = false;
      out.tasks.push_back(
          read_task(node - a_.debug.task_node, out.running_task, tstate, not_a_task));
      if (not_a_task) {
        // A link into something else: nothing after it can be trusted.
        out.error = out.tasks.back().error;
        out.tasks.pop_back();
        return;
      }
      auto following = reader_.value<uint64_t>(node + a_.llist_next);
      if (!following) {
        out.error = following.error().context("task list link").message;
        return;
      }
      node = *following;
    }
  }

  AsyncTask read_task(uint64_t address, uint64_t running, uint64_t tstate, bool& not_a_task) {
    AsyncTask t;
    t.address = address;
    std::vector<uint8_t> block(a_.debug.task_size);
    if (auto r = reader_.read(address, block); !r) {
      t.error = r.error().context(fmt::format("task at {:#x}", address)).message;
      not_a_task = true;
      return t;
    }
    if (load<uint8_t>(block, a_.debug.task_is_task) != 1) {
      t.error = fmt::format("the object at {:#x} is not a task", address);
      not_a_task = true;
      return t;
    }
    t.loop = load<uint64_t>(block, a_.fut_loop);
    switch (load<int32_t>(block, a_.fut_state)) {
      case 0:
        t.state = TaskState::kPending;
        break;
      case 1:
        t.state = TaskState::kCancelled;
        break;
      case 2:
        t.state = TaskState::kDone;
        break;
      default:
        t.state = TaskState::kUnknown;
    }
    if (address == running && running != 0)
      t.state = TaskState::kRunning;

    auto name = read_name(load<uint64_t>(block, a_.debug.task_name) & ~kTagBits);
    if (name)
      t.name = std::move(*name);
    else
      t.error = name.error().context("name").message;

    const uint64_t awaited_by = load<uint64_t>(block, a_.debug.task_awaited_by) & ~kTagBits;
    if (awaited_by != 0 && load<uint8_t>(block, a_.debug.task_awaited_by_is_set) != 0) {
      if (auto r = read_set(awaited_by, t.awaited_by, t.awaited_by_cut); !r)
        add_error(t, r.error().context("awaited_by").message);
    } else if (awaited_by != 0) {
      t.awaited_by.push_back(awaited_by);
    }

    t.waiter = load<uint64_t>(block, a_.task_fut_waiter) & ~kTagBits;
    if (t.waiter != 0) {
      auto type = type_name(t.waiter);
      if (type)
        t.waiter_type = std::move(*type);
      else
        add_error(t, type.error().context("the awaited future's type").message);
    }

    const uint64_t coro = load<uint64_t>(block, a_.debug.task_coro) & ~kTagBits;
    if (coro == 0) {
      t.coroutine.status = KRAIT_PY_READ_FAULT_FRAME;
      t.coroutine.reason = "the task has no coroutine";
    } else if (t.state == TaskState::kRunning && tstate != 0) {
      t.coroutine = running_chain(tstate, coro);
    } else {
      t.coroutine = suspended_chain(coro);
    }
    return t;
  }

 private:
  static void add_error(AsyncTask& t, const std::string& what) {
    t.error += (t.error.empty() ? "" : "; ") + what;
  }

  Result<uint64_t> type_of(uint64_t object) {
    auto type = reader_.value<uint64_t>(object + a_.ob_type);
    if (!type)
      return type.error();
    if (*type == 0)
      return make_error("object at {:#x} has no type", object);
    return *type;
  }

  Result<std::string> type_name(uint64_t object) {
    auto type = type_of(object);
    if (!type)
      return type.error();
    auto name = reader_.value<uint64_t>(*type + a_.tp_name);
    if (!name)
      return name.error();
    return read_c_string(reader_, *name, kMaxTypeNameBytes);
  }

  // A str, or the int N of the default name "Task-N".
  Result<std::string> read_name(uint64_t object) {
    if (object == 0)
      return make_error("NULL");
    auto type = type_of(object);
    if (!type)
      return type.error();
    auto flags = reader_.value<uint64_t>(*type + a_.tp_flags);
    if (!flags)
      return flags.error();
    if (*flags & kUnicodeSubclass)
      return read_py_string(reader_.memory(), layout_.strings, object);
    if (!(*flags & kLongSubclass))
      return make_error("neither a str nor an int");
    // 3.12+ int: lv_tag = digits << 3 | sign (0 positive, 1 zero, 2
    // negative), 30-bit digits. Default names count up from 1.
    auto tag = reader_.value<uint64_t>(object + a_.long_tag);
    if (!tag)
      return tag.error();
    const uint64_t digits = *tag >> 3;
    if ((*tag & 3) == 1)
      return std::string("Task-0");
    if ((*tag & 3) != 0 || digits > 2)
      return make_error("a task number out of range");
    uint64_t n = 0;
    for (uint64_t i = 0; i < digits; ++i) {
      auto d = reader_.value<uint32_t>(object + a_.long_digits + 4 * i);
      if (!d)
        return d.error();
      n |= static_cast<uint64_t>(*d & ((1u << 30) - 1)) << (30 * i);
    }
    return fmt::format("Task-{}", n);
  }

  // The keys of a set (its live entries), at most limits_.max_awaiters.
  Result<void> read_set(uint64_t set, std::vector<uint64_t>& keys, bool& cut) {
    auto used = reader_.value<int64_t>(set + a_.set_used);
    auto mask = reader_.value<int64_t>(set + a_.set_mask);
    auto table = reader_.value<uint64_t>(set + a_.set_table);
    if (!used || !mask || !table)
      return make_error("the set at {:#x} is unreadable", set);
    const int64_t entries = *mask + 1;
    if (*mask < 0 || entries > kMaxSetEntries || (entries & *mask) != 0 || *used < 0 ||
        *used > entries)
      return make_error("the set at {:#x} is not a set (used {}, mask {})", set, *used, *mask);
    struct Entry {
      uint64_t key;
      int64_t hash;
    };
    std::vector<Entry> chunk;
    int64_t found = 0;
    for (int64_t i = 0; i < entries && found < *used; i += kSetChunkEntries) {
      chunk.resize(std::min<int64_t>(kSetChunkEntries, entries - i));
      auto r = reader_.read(
          *table + static_cast<uint64_t>(i) * sizeof(Entry),
          std::span(reinterpret_cast<uint8_t*>(chunk.data()), chunk.size() * sizeof(Entry)));
      if (!r)
        return r.error().context("set table");
      for (const Entry& e : chunk) {
        // hash -1 with a key: the dummy of a deleted entry.
        if (e.key == 0 || e.hash == -1)
          continue;
        ++found;
        if (keys.size() >= limits_.max_awaiters) {
          cut = true;
          return {};
        }
        keys.push_back(e.key & ~kTagBits);
      }
    }
    return {};
  }

  // A suspended task: its coroutine, then the coroutine it awaits, and so
  // on while the awaited object is a coroutine of the same type.
  FrameChain suspended_chain(uint64_t coro) {
    FrameChain out;
    auto fail = [&out](std::string reason) {
      out.status = KRAIT_PY_READ_FAULT_FRAME;
      out.reason = std::move(reason);
    };
    std::unordered_set<uint64_t> seen;
    uint64_t kind = 0;
    while (coro != 0) {
      if (out.frames.size() >= limits_.max_depth) {
        out.truncated = true;
        break;
      }
      if (!seen.insert(coro).second) {
        fail(fmt::format("the coroutine chain is cyclic (coroutine {:#x} again)", coro));
        break;
      }
      auto type = type_of(coro);
      if (!type) {
        fail(type.error().context("coroutine").message);
        break;
      }
      if (kind == 0)
        kind = *type;
      else if (*type != kind)
        break;  // a Future's iterator, or another awaitable: the chain ends here
      auto state = reader_.value<int8_t>(coro + a_.gen_frame_state);
      if (!state) {
        fail(state.error().context("coroutine state").message);
        break;
      }
      if (*state == a_.state_cleared) {
        if (out.frames.empty())
          fail("the coroutine has finished");
        break;
      }
      const uint64_t iframe = coro + a_.gen_iframe;
      FrameChain one = walk_frames_from(reader_, layout_, iframe, code_type_, 1);
      if (one.frames.empty()) {
        fail(one.reason.empty() ? fmt::format("coroutine {:#x} has no code frame", coro)
                                : one.reason);
        break;
      }
      out.frames.push_back(one.frames.front());
      if (*state != a_.state_yield_from && *state != a_.state_yield_from_locked)
        break;
      auto owner = reader_.value<uint8_t>(iframe + a_.frame_owner);
      if (!owner || *owner != a_.owned_by_generator) {
        fail(fmt::format("coroutine {:#x} does not own its frame", coro));
        break;
      }
      auto sp = reader_.value<uint64_t>(iframe + a_.frame_stackpointer);
      if (!sp) {
        fail(sp.error().context("stack pointer").message);
        break;
      }
      const uint64_t top = *sp & ~kTagBits;
      if (top <= iframe || top - iframe < 8 * a_.awaited_slot)
        break;
      auto awaited = reader_.value<uint64_t>(top - 8 * a_.awaited_slot);
      if (!awaited) {
        fail(awaited.error().context("awaited object").message);
        break;
      }
      coro = *awaited & ~kTagBits;
    }
    std::reverse(out.frames.begin(), out.frames.end());
    return out;
  }

  // The running task: the thread's frames from the leaf up to its
  // coroutine's own frame.
  FrameChain running_chain(uint64_t tstate, uint64_t coro) {
    const uint64_t target = coro + a_.gen_iframe;
    bool found = false;
    FrameChain chain = walk_frame_chain(reader_, layout_, tstate, code_type_, limits_.max_depth,
                                        [&found, target](const WalkedFrame& w) {
                                          if (found)
                                            return false;
                                          found = w.frame == target;
                                          return true;
                                        });
    if (!found && chain.status == KRAIT_PY_OK) {
      chain.frames.clear();
      chain.status = KRAIT_PY_READ_FAULT_FRAME;
      chain.reason = chain.truncated ? "the running coroutine is deeper than the depth limit"
                                     : "the running task's coroutine is not on the thread's stack";
      chain.truncated = false;
    }
    return chain;
  }

  BudgetedReader& reader_;
  const PythonLayout& layout_;
  const AsyncioLayout& a_;
  uint64_t code_type_;
  const TaskLimits& limits_;
};

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

const char* task_state_name(TaskState state) {
  switch (state) {
    case TaskState::kRunning:
      return "running";
    case TaskState::kPending:
      return "pending";
    case TaskState::kCancelled:
      return "cancelled";
    case TaskState::kDone:
      return "done";
    case TaskState::kUnknown:
      break;
  }
  return "unknown";
}

Result<AsyncioDebugOffsets> decode_asyncio_debug(std::span<const uint8_t> bytes) {
  if (bytes.size() < kAsyncioDebugBytes)
    return make_error("_AsyncioDebug is {} bytes, not {}", bytes.size(), kAsyncioDebugBytes);
  uint64_t v[13];
  std::memcpy(v, bytes.data(), sizeof v);
  AsyncioDebugOffsets d{v[0], v[1], v[2], v[3],  v[4],  v[5], v[6],
                        v[7], v[8], v[9], v[10], v[11], v[12]};
  if (d.task_size < 64 || d.task_size > kMaxTaskSize)
    return make_error("_AsyncioDebug: a task size of {} bytes", d.task_size);
  for (uint64_t field : {d.task_name, d.task_awaited_by, d.task_coro})
    if (field + 8 > d.task_size)
      return make_error("_AsyncioDebug: a task field at {} of {} bytes", field, d.task_size);
  if (d.task_node + 16 > d.task_size || d.task_is_task >= d.task_size ||
      d.task_awaited_by_is_set >= d.task_size)
    return make_error("_AsyncioDebug: a task field beyond its {} bytes", d.task_size);
  if (d.interp_size < 64 || d.interp_size > kMaxInterpreterSize ||
      d.interp_tasks_head + 16 > d.interp_size)
    return make_error("_AsyncioDebug: interpreter state of {} bytes, task list at {}",
                      d.interp_size, d.interp_tasks_head);
  if (d.tstate_size < 64 || d.tstate_size > kMaxThreadStateSize ||
      d.tstate_running_loop + 8 > d.tstate_size || d.tstate_running_task + 8 > d.tstate_size ||
      d.tstate_tasks_head + 16 > d.tstate_size)
    return make_error("_AsyncioDebug: a thread state field beyond its {} bytes", d.tstate_size);
  return d;
}

Result<std::optional<AsyncioDebugOffsets>> find_asyncio_debug(pid_t pid,
                                                              const proc::RemoteMemory& memory,
                                                              const std::string& image_path) {
  auto maps = proc::read_maps(pid);
  if (!maps)
    return maps.error().context("memory map");
  std::set<std::tuple<uint32_t, uint32_t, uint64_t>> looked;
  std::string last_error;
  for (const proc::MapEntry& m : *maps) {
    if (!m.is_file() || !(m.path == image_path || base_name(m.path).starts_with("_asyncio")))
      continue;
    if (!looked.insert({m.dev_major, m.dev_minor, m.inode}).second)
      continue;
    if (looked.size() > kMaxSectionCandidates)
      break;
    auto elf = proc::open_mapped_elf(pid, m);
    if (!elf) {
      last_error = elf.error().message;
      continue;
    }
    auto section = elf->find_section(".AsyncioDebug");
    if (!section)
      continue;
    if (section->size < kAsyncioDebugBytes)
      return make_error("{}: .AsyncioDebug is {} bytes", m.path, section->size);
    auto address = proc::runtime_address(proc::maps_of_file(*maps, m), *elf, section->addr);
    if (!address)
      return address.error().context(m.path + ": .AsyncioDebug");
    auto bytes = memory.read_bytes(*address, kAsyncioDebugBytes);
    if (!bytes)
      return bytes.error().context("_AsyncioDebug");
    auto decoded = decode_asyncio_debug(*bytes);
    if (!decoded)
      return decoded.error();
    return std::optional<AsyncioDebugOffsets>(*decoded);
  }
  return std::optional<AsyncioDebugOffsets>();
}

Result<AsyncioLayout> build_asyncio_layout(const AsyncioDebugOffsets& debug,
                                           const OffsetTable& table, PyVersion version) {
  AsyncioLayout a;
  a.debug = debug;
  if (version.major != 3 || version.minor < 14)
    return make_error("asyncio tasks are read from Python 3.14 on");
  if (version.minor == 14) {
    a.state_yield_from = -1;
    a.state_yield_from_locked = -1;
    a.state_cleared = 4;
    a.awaited_slot = 1;
  } else if (version.minor == 15) {
    a.state_yield_from = 2;
    a.state_yield_from_locked = 3;
    a.state_cleared = 5;
    a.awaited_slot = 2;
  } else {
    return make_error("Python {} is newer than this krait's asyncio reader knows", version.str());
  }
  struct Need {
    const char* name;
    uint64_t* into;
  };
  uint64_t object_size = 0;
  for (const Need& n :
       {Need{"PyObject.ob_type", &a.ob_type}, Need{"sizeof(PyObject)", &object_size},
        Need{"PyTypeObject.tp_name", &a.tp_name}, Need{"PyTypeObject.tp_flags", &a.tp_flags},
        Need{"PyGenObject.gi_iframe", &a.gen_iframe},
        Need{"PyGenObject.gi_frame_state", &a.gen_frame_state},
        Need{"_PyInterpreterFrame.owner", &a.frame_owner},
        Need{"_PyInterpreterFrame.stackpointer", &a.frame_stackpointer},
        Need{"PySetObject.used", &a.set_used}, Need{"PySetObject.table", &a.set_table},
        Need{"PySetObject.mask", &a.set_mask}, Need{"PyLongObject.lv_tag", &a.long_tag},
        Need{"PyLongObject.ob_digit", &a.long_digits}, Need{"llist_node.next", &a.llist_next}}) {
    auto v = table.get(n.name);
    if (!v)
      return make_error("the offsets lack {}", n.name);
    if (*v > 4096)
      return make_error("{} = {} is not a plausible offset", n.name, *v);
    *n.into = *v;
  }
  // FutureObj_HEAD: ..., awaited_by, fut_state (int), is_task (char),
  // awaited_by_is_set (char); TaskObj: ..., fut_waiter, coro, name, ...
  if (debug.task_is_task != debug.task_awaited_by + 12 ||
      debug.task_awaited_by_is_set != debug.task_is_task + 1 ||
      debug.task_coro < debug.task_is_task + 8 || object_size + 8 > debug.task_awaited_by)
    return make_error(
        "TaskObj is not laid out as in CPython 3.14/3.15 (awaited_by {}, is_task {}, coro {})",
        debug.task_awaited_by, debug.task_is_task, debug.task_coro);
  a.fut_loop = object_size;
  a.fut_state = debug.task_awaited_by + 8;
  a.task_fut_waiter = debug.task_coro - 8;
  return a;
}

LoopTasks read_thread_tasks(BudgetedReader& reader, const PythonLayout& layout,
                            const AsyncioLayout& asyncio, uint64_t code_type, uint64_t tstate,
                            const TaskLimits& limits) {
  LoopTasks out;
  auto loop = reader.value<uint64_t>(tstate + asyncio.debug.tstate_running_loop);
  auto running = reader.value<uint64_t>(tstate + asyncio.debug.tstate_running_task);
  if (!loop || !running) {
    out.error = (loop ? running.error() : loop.error()).context("thread state").message;
    return out;
  }
  out.loop = *loop & ~kTagBits;
  out.running_task = *running & ~kTagBits;
  TaskReader tasks(reader, layout, asyncio, code_type, limits);
  tasks.read_list(tstate + asyncio.debug.tstate_tasks_head, tstate, out);
  const bool listed = std::any_of(out.tasks.begin(), out.tasks.end(), [&out](const AsyncTask& t) {
    return t.address == out.running_task;
  });
  if (out.running_task != 0 && !listed && out.tasks.size() < limits.max_tasks) {
    bool not_a_task = false;
    AsyncTask t = tasks.read_task(out.running_task, out.running_task, tstate, not_a_task);
    if (not_a_task)
      out.error += (out.error.empty() ? "" : "; ") + ("running task: " + t.error);
    else
      out.tasks.insert(out.tasks.begin(), std::move(t));
  }
  return out;
}

LoopTasks read_interpreter_tasks(BudgetedReader& reader, const PythonLayout& layout,
                                 const AsyncioLayout& asyncio, uint64_t code_type, uint64_t interp,
                                 const TaskLimits& limits) {
  LoopTasks out;
  TaskReader tasks(reader, layout, asyncio, code_type, limits);
  tasks.read_list(interp + asyncio.debug.interp_tasks_head, 0, out);
  return out;
}

}  // namespace krait::python
