// `krait dump`'s output: text for people (leaf first, like a traceback read
// from the bottom: the frame running now is the first line under a thread),
// JSON for machines. Names come from the processes: text output escapes
// control characters so a thread cannot rewrite the terminal.
#include <fmt/format.h>

#include "dump/dump.h"
#include "util/json_writer.h"

namespace krait::dump {
namespace {

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

const char* gil_name(Gil gil) {
  switch (gil) {
    case Gil::kHeld:
      return "held";
    case Gil::kNotHeld:
      return "not held";
    case Gil::kUnknown:
      break;
  }
  return "unknown";
}

const char* kind_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::kPython:
      return "python";
    case FrameKind::kNative:
      return "native";
    case FrameKind::kKernel:
      return "kernel";
    case FrameKind::kNote:
      break;
  }
  return "note";
}

std::string activity(const ThreadDump& t) {
  if (t.state.empty())
    return "state unknown";
  if (t.state == "blocked")
    return t.syscall.empty()   ? "blocked"
           : t.waiting.empty() ? "blocked in " + t.syscall
                               : "blocked in " + t.syscall + " (" + t.waiting + ")";
  return t.state;
}

std::string frame_text(const DumpFrame& f) {
  std::string where;
  if (!f.file.empty())
    where = f.line > 0 ? fmt::format(" ({}:{})", printable(f.file), f.line)
                       : fmt::format(" ({})", printable(f.file));
  switch (f.kind) {
    case FrameKind::kPython:
    case FrameKind::kNote:
      return printable(f.function) + where;
    case FrameKind::kNative:
      return "[native] " + printable(f.function) + where;
    case FrameKind::kKernel:
      return "[kernel] " + printable(f.function);
  }
  return printable(f.function);
}

std::string task_label(const AsyncioDump& loop, uint64_t id) {
  for (const TaskDump& t : loop.tasks)
    if (t.id == id)
      return "\"" + printable(t.name) + "\"";
  return fmt::format("{:#x}", id);
}

std::string task_list(const AsyncioDump& loop, const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids)
    out += (out.empty() ? "" : ", ") + task_label(loop, id);
  return out;
}

// A stack's lines at `indent`, leaf first, then whether it was cut and why
// it stops: the same for a thread and for a task's coroutine chain.
void stack_text(const std::vector<DumpFrame>& frames, bool truncated, const std::string& error,
                std::string_view indent, std::string& out) {
  for (const DumpFrame& f : frames)
    out += fmt::format("{}{}\n", indent, frame_text(f));
  if (truncated)
    out += fmt::format("{}[more frames than the depth limit]\n", indent);
  if (!error.empty())
    out += fmt::format("{}({})\n", indent, printable(error));
}

// A thread's event loop: each task with its state, what it waits on, who
// awaits it, and its coroutine chain leaf first.
void loop_text(const AsyncioDump& loop, std::string& out) {
  std::string running = "no task running";
  if (loop.running_task != 0)
    running = "running " + task_label(loop, loop.running_task);
  out += fmt::format("    asyncio: {} tasks, {}\n", loop.tasks.size(), running);
  for (const TaskDump& t : loop.tasks) {
    out += fmt::format("      Task \"{}\" {}", printable(t.name), t.state);
    if (!t.waiting_on.empty() || !t.awaits.empty()) {
      out += ", waits on";
      if (!t.waiting_on.empty())
        out += " " + printable(t.waiting_on);
      if (!t.awaits.empty())
        out += (t.waiting_on.empty() ? " " : ": ") + task_list(loop, t.awaits);
    }
    if (!t.awaited_by.empty())
      out += ", awaited by " + task_list(loop, t.awaited_by);
    out += "\n";
    stack_text(t.frames, t.truncated, t.error, "        ", out);
  }
  if (loop.truncated)
    out += "      [more tasks than the limit]\n";
  if (!loop.error.empty())
    out += "      (" + printable(loop.error) + ")\n";
}

void frames_json(JsonWriter& w, const std::vector<DumpFrame>& frames) {
  w.key("frames").begin_array();
  for (const DumpFrame& f : frames) {
    w.begin_object();
    w.key("function").value(f.function);
    w.key("file").value(f.file);
    w.key("line").value(f.line);
    w.key("kind").value(kind_name(f.kind));
    w.end_object();
  }
  w.end_array();
}

void ids_json(JsonWriter& w, const char* key, const std::vector<uint64_t>& ids) {
  w.key(key).begin_array();
  for (uint64_t id : ids)
    w.value(static_cast<int64_t>(id));
  w.end_array();
}

void loop_json(JsonWriter& w, const AsyncioDump& loop) {
  w.begin_object();
  w.key("loop").value(static_cast<int64_t>(loop.loop));
  if (loop.running_task != 0)
    w.key("running_task").value(static_cast<int64_t>(loop.running_task));
  else
    w.key("running_task").null();
  w.key("tasks").begin_array();
  for (const TaskDump& t : loop.tasks) {
    w.begin_object();
    w.key("id").value(static_cast<int64_t>(t.id));
    w.key("name").value(t.name);
    w.key("state").value(t.state);
    frames_json(w, t.frames);
    w.key("truncated").value(t.truncated);
    ids_json(w, "awaits", t.awaits);
    ids_json(w, "awaited_by", t.awaited_by);
    w.key("waiting_on").value(t.waiting_on);
    w.key("error").value(t.error);
    w.end_object();
  }
  w.end_array();
  w.key("truncated").value(loop.truncated);
  w.key("error").value(loop.error);
  w.end_object();
}

}  // namespace

std::string dump_text(const DumpReport& report) {
  std::string out;
  for (const ProcessDump& p : report.processes) {
    out += fmt::format("Process {} {}", p.pid, printable(p.name));
    if (!p.version.empty())
      out += fmt::format(" (Python {})", p.version);
    if (!p.command.empty())
      out += "  " + printable(p.command);
    out += "\n";
    if (!p.error.empty())
      out += "  " + printable(p.error) + "\n";
    for (const std::string& n : p.notes)
      out += "  note: " + printable(n) + "\n";
    if (!p.tasks_error.empty())
      out += "  asyncio tasks: " + printable(p.tasks_error) + "\n";
    for (const ThreadDump& t : p.threads) {
      const std::string id = t.tid >= 0 ? std::to_string(t.tid) : "?";
      out += fmt::format("  Thread {} \"{}\"  {}  GIL: {}\n", id, printable(t.name), activity(t),
                         gil_name(t.gil));
      if (t.tid < 0)
        out += "    (thread id unknown: " + printable(t.tid_error) + ")\n";
      stack_text(t.frames, t.truncated, t.error, "    ", out);
      if (!t.native_error.empty())
        out += "    (native frames unavailable: " + printable(t.native_error) + ")\n";
      if (t.asyncio)
        loop_text(*t.asyncio, out);
    }
    out += "\n";
  }
  return out;
}

std::string dump_json(const DumpReport& report) {
  JsonWriter w;
  w.begin_object();
  w.key("processes").begin_array();
  for (const ProcessDump& p : report.processes) {
    w.begin_object();
    w.key("pid").value(static_cast<int64_t>(p.pid));
    w.key("name").value(p.name);
    w.key("python_version").value(p.version);
    w.key("command").value(p.command);
    w.key("error").value(p.error);
    w.key("tasks_error").value(p.tasks_error);
    w.key("notes").begin_array();
    for (const std::string& n : p.notes)
      w.value(n);
    w.end_array();
    w.key("threads").begin_array();
    for (const ThreadDump& t : p.threads) {
      w.begin_object();
      if (t.tid >= 0)
        w.key("tid").value(t.tid);
      else
        w.key("tid").null();
      w.key("tid_error").value(t.tid_error);
      w.key("name").value(t.name);
      w.key("python").value(t.python);
      w.key("state").value(t.state);
      w.key("kernel_state").value(t.kernel_state ? std::string(1, t.kernel_state) : "");
      if (t.syscall.empty())
        w.key("syscall").null();
      else
        w.key("syscall").value(t.syscall);
      if (t.waiting.empty())
        w.key("waiting").null();
      else
        w.key("waiting").value(t.waiting);
      w.key("gil").value(t.gil == Gil::kHeld      ? "held"
                         : t.gil == Gil::kNotHeld ? "not_held"
                                                  : "unknown");
      frames_json(w, t.frames);
      w.key("truncated").value(t.truncated);
      w.key("error").value(t.error);
      w.key("native_error").value(t.native_error);
      if (t.asyncio) {
        w.key("asyncio");
        loop_json(w, *t.asyncio);
      }
      w.end_object();
    }
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.key("failures").begin_array();
  for (const std::string& f : report.failures)
    w.value(f);
  w.end_array();
  w.end_object();
  return w.str() + "\n";
}

}  // namespace krait::dump
