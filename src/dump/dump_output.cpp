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
    for (const ThreadDump& t : p.threads) {
      const std::string id = t.tid >= 0 ? std::to_string(t.tid) : "?";
      out += fmt::format("  Thread {} \"{}\"  {}  GIL: {}\n", id, printable(t.name), activity(t),
                         gil_name(t.gil));
      if (t.tid < 0)
        out += "    (thread id unknown: " + printable(t.tid_error) + ")\n";
      for (const DumpFrame& f : t.frames)
        out += "    " + frame_text(f) + "\n";
      if (t.truncated)
        out += "    [more frames than the depth limit]\n";
      if (!t.error.empty())
        out += "    (" + printable(t.error) + ")\n";
      if (!t.native_error.empty())
        out += "    (native frames unavailable: " + printable(t.native_error) + ")\n";
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
      w.key("frames").begin_array();
      for (const DumpFrame& f : t.frames) {
        w.begin_object();
        w.key("function").value(f.function);
        w.key("file").value(f.file);
        w.key("line").value(f.line);
        w.key("kind").value(kind_name(f.kind));
        w.end_object();
      }
      w.end_array();
      w.key("truncated").value(t.truncated);
      w.key("error").value(t.error);
      w.key("native_error").value(t.native_error);
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
