#include "export/folded.h"

#include <fmt/format.h>

#include <limits>
#include <map>
#include <string_view>
#include <vector>

#include "export/atomic_file.h"
#include "util/utf8.h"

namespace krait::exporter {
namespace {

using profile::FrameKind;

void append_escaped(std::string& out, std::string_view name) {
  // Flame graph tools read the file as UTF-8 text, one stack per line.
  const std::string valid = is_valid_utf8(name) ? std::string() : valid_utf8(name);
  if (!valid.empty())
    name = valid;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == ';')
      out.push_back(':');
    else if (u < 0x20 || u == 0x7f)
      out.push_back(' ');
    else
      out.push_back(c);
  }
}

std::string_view basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

void append_frame(std::string& out, const profile::Profile& profile, const profile::Frame& f) {
  switch (f.kind) {
    case FrameKind::kPython: {
      append_escaped(out, f.function.empty() ? std::string_view("[unknown]") : f.function);
      if (f.file.empty() && f.line <= 0)
        return;
      out += " (";
      append_escaped(out, f.file.empty() ? std::string_view("?") : f.file);
      if (f.line > 0)
        fmt::format_to(std::back_inserter(out), ":{}", f.line);
      out += ')';
      return;
    }
    case FrameKind::kNative:
    case FrameKind::kKernel: {
      const bool kernel = f.kind == FrameKind::kKernel;
      if (!f.function.empty()) {
        append_escaped(out, f.function);
      } else if (!kernel && f.mapping != 0 && f.mapping <= profile.mappings().size()) {
        // Offsets into the file stay the same across processes and runs,
        // unlike the load address.
        const auto& m = profile.mappings()[f.mapping - 1];
        out += '[';
        append_escaped(out, basename(m.file));
        fmt::format_to(std::back_inserter(out), "+0x{:x}]", f.address - m.start + m.offset);
      } else {
        fmt::format_to(std::back_inserter(out), "[0x{:x}]", f.address);
      }
      if (kernel)
        out += "_[k]";
      return;
    }
    case FrameKind::kSynthetic:
      append_escaped(out, f.function.empty() ? std::string_view("[unknown]") : f.function);
      return;
  }
}

const std::string* find_label(const profile::Labels& labels, std::string_view key) {
  for (const auto& [k, v] : labels) {
    if (k == key)
      return &v;
  }
  return nullptr;
}

// Appends "<name> (<id>)" (or the part that exists) and a ';' separator.
void append_owner(std::string& out, const profile::Labels& labels, std::string_view name_key,
                  std::string_view id_key) {
  const std::string* name = find_label(labels, name_key);
  const std::string* id = find_label(labels, id_key);
  if (name == nullptr && id == nullptr)
    return;
  if (name != nullptr)
    append_escaped(out, *name);
  if (name != nullptr && id != nullptr)
    out += ' ';
  if (id != nullptr) {
    out += '(';
    append_escaped(out, *id);
    out += ')';
  }
  out += ';';
}

}  // namespace

std::string encode_folded(const profile::Profile& profile) {
  const auto& frames = profile.frames();
  const auto& label_sets = profile.label_sets();
  std::map<std::string, uint64_t> lines;
  std::string text;
  for (const auto& sample : profile.samples()) {
    text.clear();
    const auto& labels = label_sets.at(sample.labels);
    append_owner(text, labels, "process_name", "pid");
    append_owner(text, labels, "thread_name", "tid");
    for (auto it = sample.stack.rbegin(); it != sample.stack.rend(); ++it) {
      append_frame(text, profile, frames.at(*it));
      text += ';';
    }
    if (text.empty())
      text = "[empty stack]";
    else
      text.pop_back();
    uint64_t& count = lines[text];
    const uint64_t room = std::numeric_limits<uint64_t>::max() - count;
    const uint64_t weight = profile.weight(sample);
    count += weight < room ? weight : room;
  }
  std::string out;
  for (const auto& [line, count] : lines)
    fmt::format_to(std::back_inserter(out), "{} {}\n", line, count);
  return out;
}

Result<void> write_folded_file(const profile::Profile& profile, const std::string& path) {
  return write_file_atomically(path, encode_folded(profile));
}

}  // namespace krait::exporter
