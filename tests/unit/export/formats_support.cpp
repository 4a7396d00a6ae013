// Oracles and readers for the format tests; see formats_support.h.
#include "formats_support.h"

#include <fmt/format.h>

namespace krait::test {
namespace {

using profile::FrameKind;

std::string basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The fixture's mappings start at these addresses with file offset 0x1000
// (fixture_profile.cpp); only unsymbolized frames need them.
std::string unsymbolized_name(const FrameFacts& f) {
  if (f.mapping_file.empty() || f.kind == FrameKind::kKernel)
    return fmt::format("[0x{:x}]", f.address);
  const uint64_t start = f.address & ~uint64_t{0xfffffffff};
  return fmt::format("[{}+0x{:x}]", basename(f.mapping_file), f.address - start + 0x1000);
}

std::string shown_name(const FrameFacts& f) {
  if (!f.function.empty())
    return f.function;
  if (f.kind == FrameKind::kPython || f.kind == FrameKind::kSynthetic)
    return "[unknown]";
  return unsymbolized_name(f);
}

std::string shown_file(const FrameFacts& f) {
  if (!f.file.empty() || f.kind != FrameKind::kNative)
    return f.file;
  return f.mapping_file;
}

std::string kind_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::kPython:
      return "python";
    case FrameKind::kNative:
      return "native";
    case FrameKind::kKernel:
      return "kernel";
    case FrameKind::kSynthetic:
      return "synthetic";
  }
  return "?";
}

bool unsymbolized(const std::string& name) {
  return name.size() > 2 && name[0] == '[' &&
         (name.find("+0x") != std::string::npos || name.rfind("[0x", 0) == 0);
}

}  // namespace

ThreadStacks without_addresses(const ThreadStacks& stacks) {
  ThreadStacks out;
  for (const auto& [thread, by_stack] : stacks) {
    for (const auto& [shown, weight] : by_stack) {
      std::vector<ShownFrame> stack = shown;
      for (auto& f : stack) {
        if (unsymbolized(std::get<0>(f)))
          f = ShownFrame{"[address]", "", 0};
      }
      out[thread][stack] += weight;
    }
  }
  return out;
}

PageStacks without_addresses(const PageStacks& stacks) {
  PageStacks out;
  for (const auto& [shown, count] : stacks) {
    auto key = shown;
    for (auto& f : std::get<2>(key)) {
      if (unsymbolized(std::get<0>(f)))
        f = PageFrame{"[address]", "", 0, std::get<3>(f)};
    }
    out[key] += count;
  }
  return out;
}

std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t> facts_of(
    const profile::Profile& p) {
  std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t> out;
  for (const auto& s : p.samples()) {
    std::vector<FrameFacts> stack;
    for (profile::FrameId id : s.stack) {
      const auto& f = p.frames().at(id);
      FrameFacts facts{f.kind, f.function, f.system_name, f.file, f.start_line, f.line, f.address,
                       "",     ""};
      if (f.mapping != 0) {
        facts.mapping_file = p.mappings().at(f.mapping - 1).file;
        facts.build_id = p.mappings().at(f.mapping - 1).build_id;
      }
      stack.push_back(facts);
    }
    out[{stack, p.label_sets().at(s.labels)}] += s.count;
  }
  return out;
}

std::string owner_title(const profile::Labels& labels, const std::string& name_key,
                        const std::string& id_key) {
  std::string name, id;
  bool has_name = false, has_id = false;
  for (const auto& [k, v] : labels) {
    if (k == name_key) {
      name = v;
      has_name = true;
    }
    if (k == id_key) {
      id = v;
      has_id = true;
    }
  }
  if (has_name && has_id)
    return name + " (" + id + ")";
  if (has_name)
    return name;
  return has_id ? "(" + id + ")" : "";
}

ThreadStacks expected_speedscope(
    const std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t>& expected,
    int64_t period_ns) {
  ThreadStacks out;
  for (const auto& [key, count] : expected) {
    const auto& [stack, labels] = key;
    const std::string process = owner_title(labels, "process_name", "pid");
    const std::string thread = owner_title(labels, "thread_name", "tid");
    std::string title =
        process.empty() || thread.empty() ? process + thread : process + " / " + thread;
    if (title.empty())
      title = "[unlabelled]";
    std::vector<ShownFrame> shown;
    for (auto it = stack.rbegin(); it != stack.rend(); ++it) {
      std::string name = shown_name(*it);
      if (it->kind == FrameKind::kKernel)
        name += "_[k]";
      shown.emplace_back(name, shown_file(*it), it->line);
    }
    out[title][shown] +=
        period_ns > 0 ? static_cast<int64_t>(count) * period_ns : static_cast<int64_t>(count);
  }
  return out;
}

Result<ThreadStacks> speedscope_stacks(const JsonValue& doc) {
  auto shared = json_object(doc, "shared");
  if (!shared)
    return shared.error();
  auto frames = json_array(**shared, "frames");
  if (!frames)
    return frames.error();
  std::vector<ShownFrame> table;
  for (const auto& f : (*frames)->items) {
    auto name = json_string(f, "name");
    if (!name)
      return name.error();
    const JsonValue* file = f.find("file");
    const JsonValue* line = f.find("line");
    table.emplace_back(*name, file ? file->string : "", line ? line->integer : 0);
  }
  auto profiles = json_array(doc, "profiles");
  if (!profiles)
    return profiles.error();
  ThreadStacks out;
  for (const auto& p : (*profiles)->items) {
    auto name = json_string(p, "name");
    auto samples = json_array(p, "samples");
    auto weights = json_array(p, "weights");
    if (!name || !samples || !weights)
      return make_error("a profile lacks name, samples or weights");
    if ((*samples)->items.size() != (*weights)->items.size())
      return make_error("profile {}: {} samples, {} weights", *name, (*samples)->items.size(),
                        (*weights)->items.size());
    auto& stacks = out[*name];
    for (size_t i = 0; i < (*samples)->items.size(); ++i) {
      std::vector<ShownFrame> stack;
      for (const auto& index : (*samples)->items[i].items) {
        if (!index.is_int() || index.integer < 0 ||
            static_cast<size_t>(index.integer) >= table.size())
          return make_error("profile {}: frame index out of range", *name);
        stack.push_back(table[static_cast<size_t>(index.integer)]);
      }
      stacks[stack] += (*weights)->items[i].integer;
    }
  }
  return out;
}

PageStacks expected_page(
    const std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t>& expected) {
  PageStacks out;
  for (const auto& [key, count] : expected) {
    const auto& [stack, labels] = key;
    std::string process = owner_title(labels, "process_name", "pid");
    std::string thread = owner_title(labels, "thread_name", "tid");
    std::vector<PageFrame> shown;
    for (auto it = stack.rbegin(); it != stack.rend(); ++it)
      shown.emplace_back(shown_name(*it), shown_file(*it), it->line, kind_name(it->kind));
    out[{process.empty() ? "[unknown process]" : process,
         thread.empty() ? "[unknown thread]" : thread, shown}] += static_cast<int64_t>(count);
  }
  return out;
}

Result<std::string> page_data_text(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"krait-data\">";
  const size_t start = html.find(open);
  if (start == std::string::npos)
    return make_error("no #krait-data script element");
  const size_t end = html.find("</script>", start + open.size());
  if (end == std::string::npos)
    return make_error("the #krait-data script element does not end");
  return html.substr(start + open.size(), end - start - open.size());
}

Result<PageStacks> page_stacks(const JsonValue& data) {
  auto frames = json_array(data, "frames");
  auto kinds = json_array(data, "kinds");
  auto nodes = json_array(data, "nodes");
  if (!frames || !kinds || !nodes)
    return make_error("frames, kinds or nodes missing");
  const auto& flat = (*nodes)->items;
  if (flat.size() % 3 != 0 || flat.empty())
    return make_error("nodes is not a list of triples");
  const size_t n = flat.size() / 3;
  std::vector<int64_t> frame(n), parent(n), self(n);
  for (size_t i = 0; i < n; ++i) {
    frame[i] = flat[3 * i].integer;
    parent[i] = flat[3 * i + 1].integer;
    self[i] = flat[3 * i + 2].integer;
    if (i == 0 ? parent[i] != -1 : (parent[i] < 0 || static_cast<size_t>(parent[i]) >= i))
      return make_error("node {} has parent {}", i, parent[i]);
  }
  for (size_t i = 1; i < n; ++i)
    self[static_cast<size_t>(parent[i])] -= flat[3 * i + 2].integer;
  auto page_frame = [&](int64_t index) -> Result<PageFrame> {
    if (index < 0 || static_cast<size_t>(index) >= (*frames)->items.size())
      return make_error("frame {} out of range", index);
    const auto& f = (*frames)->items[static_cast<size_t>(index)].items;
    if (f.size() != 4)
      return make_error("frame {} is not [name, file, line, kind]", index);
    return PageFrame{f[0].string, f[1].string, f[2].integer,
                     (*kinds)->items.at(static_cast<size_t>(f[3].integer)).string};
  };
  PageStacks out;
  for (size_t i = 0; i < n; ++i) {
    if (self[i] < 0)
      return make_error("node {} has children heavier than itself", i);
    if (self[i] == 0)
      continue;
    std::vector<PageFrame> path;
    for (size_t at = i; at != 0; at = static_cast<size_t>(parent[at])) {
      auto f = page_frame(frame[at]);
      if (!f)
        return f.error();
      path.insert(path.begin(), *f);
    }
    if (path.size() < 2)
      return make_error("samples above the thread level at node {}", i);
    const std::string process = std::get<0>(path[0]);
    const std::string thread = std::get<0>(path[1]);
    path.erase(path.begin(), path.begin() + 2);
    out[{process, thread, path}] += self[i];
  }
  return out;
}

}  // namespace krait::test
