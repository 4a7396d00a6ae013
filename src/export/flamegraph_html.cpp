// The HTML flame graph page; see flamegraph_html.h. The page itself
// (template, script, style) lives in src/export/flamegraph/.
#include "export/flamegraph_html.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "export/frame_names.h"
#include "util/embedded.h"
#include "util/json_writer.h"
#include "util/utf8.h"

namespace krait::exporter {
namespace {

using profile::FrameKind;

// Indexes into the page's "kinds".
enum Kind : int64_t { kPython, kNative, kKernel, kSynthetic, kProcess, kThread };
constexpr const char* kKindNames[] = {"python",    "native",  "kernel",
                                      "synthetic", "process", "thread"};

int64_t kind_of(FrameKind kind) {
  switch (kind) {
    case FrameKind::kPython:
      return kPython;
    case FrameKind::kNative:
      return kNative;
    case FrameKind::kKernel:
      return kKernel;
    case FrameKind::kSynthetic:
      return kSynthetic;
  }
  return kSynthetic;
}

int64_t clamp(uint64_t v) {
  return v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
}

struct PageFrame {
  std::string name;
  std::string file;
  int64_t line = 0;
  int64_t kind = 0;
  auto operator<=>(const PageFrame&) const = default;
};

struct Node {
  int64_t frame = -1;
  int64_t parent = -1;
  uint64_t count = 0;
  uint32_t depth = 0;
};

class TreeBuilder {
 public:
  explicit TreeBuilder(const profile::Profile& profile)
      : profile_(profile),
        frame_of_id_(profile.frames().size(), -1),
        owners_of_labels_(profile.label_sets().size(), {-1, -1}) {
    nodes_.push_back(Node{});
  }

  void add(const profile::Profile::Sample& sample) {
    auto& [process, thread] = owners_of_labels_.at(sample.labels);
    if (process < 0) {
      const auto& labels = profile_.label_sets()[sample.labels];
      std::string p = process_title(labels);
      std::string t = thread_title(labels);
      process = intern({p.empty() ? "[unknown process]" : std::move(p), "", 0, kProcess});
      thread = intern({t.empty() ? "[unknown thread]" : std::move(t), "", 0, kThread});
    }
    uint32_t node = 0;
    const uint64_t weight = profile_.weight(sample);
    nodes_[0].count += weight;
    node = child(node, process, weight);
    node = child(node, thread, weight);
    for (auto it = sample.stack.rbegin(); it != sample.stack.rend(); ++it)
      node = child(node, frame(*it), weight);
  }

  std::vector<PageFrame>& frames() { return frames_; }
  std::vector<Node>& nodes() { return nodes_; }

 private:
  int64_t intern(PageFrame f) {
    auto [it, inserted] = frame_index_.try_emplace(f, static_cast<int64_t>(frames_.size()));
    if (inserted)
      frames_.push_back(std::move(f));
    return it->second;
  }

  int64_t frame(profile::FrameId id) {
    int64_t& slot = frame_of_id_.at(id);
    if (slot < 0) {
      const auto& f = profile_.frames()[id];
      slot = intern({frame_display_name(profile_, f), frame_display_file(profile_, f),
                     f.line > 0 ? f.line : 0, kind_of(f.kind)});
    }
    return slot;
  }

  uint32_t child(uint32_t parent, int64_t frame, uint64_t count) {
    const uint64_t key = (uint64_t{parent} << 32) | static_cast<uint32_t>(frame);
    auto [it, inserted] = children_.try_emplace(key, static_cast<uint32_t>(nodes_.size()));
    if (inserted)
      nodes_.push_back(Node{frame, parent, 0, nodes_[parent].depth + 1});
    Node& n = nodes_[it->second];
    n.count = n.count > UINT64_MAX - count ? UINT64_MAX : n.count + count;
    return it->second;
  }

  const profile::Profile& profile_;
  std::vector<int64_t> frame_of_id_;
  std::vector<std::pair<int64_t, int64_t>> owners_of_labels_;
  std::vector<PageFrame> frames_;
  std::map<PageFrame, int64_t> frame_index_;
  std::vector<Node> nodes_;
  std::unordered_map<uint64_t, uint32_t> children_;
};

// Keeps the `max_nodes` largest nodes. A parent's count is at least its
// child's and ties go to the shallower node, so every kept node's parent is
// kept too; nodes stay in creation order (parents first).
std::vector<Node> trim(const std::vector<Node>& nodes, size_t max_nodes) {
  if (nodes.size() <= max_nodes)
    return nodes;
  std::vector<uint32_t> order(nodes.size());
  for (uint32_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return std::tie(nodes[b].count, nodes[a].depth) < std::tie(nodes[a].count, nodes[b].depth);
  });
  std::vector<int64_t> new_index(nodes.size(), -1);
  for (size_t i = 0; i < max_nodes; ++i)
    new_index[order[i]] = 0;
  std::vector<Node> kept;
  kept.reserve(max_nodes);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (new_index[i] < 0)
      continue;
    Node n = nodes[i];
    if (n.parent >= 0)
      n.parent = new_index[static_cast<size_t>(n.parent)];
    new_index[i] = static_cast<int64_t>(kept.size());
    kept.push_back(n);
  }
  return kept;
}

std::string data_json(const profile::Profile& profile, std::string_view title, size_t max_nodes) {
  TreeBuilder tree(profile);
  for (const auto& sample : profile.samples())
    tree.add(sample);
  const size_t total_nodes = tree.nodes().size();
  const std::vector<Node> nodes = trim(tree.nodes(), std::max<size_t>(max_nodes, 1));
  const auto& meta = profile.meta();

  JsonWriter w;
  w.begin_object();
  w.key("title").value(title);
  w.key("unit").value(meta.off_cpu || meta.period_ns > 0 ? "nanoseconds" : "samples");
  // Off-CPU and wall: node values are nanoseconds, not sample counts.
  w.key("weighted_by_time").value(meta.off_cpu);
  w.key("on_cpu").value(meta.on_cpu);
  w.key("period_ns").value(meta.period_ns);
  w.key("start_time_unix_ns").value(meta.start_time_unix_ns);
  w.key("duration_ns").value(meta.duration_ns);
  w.key("comments").begin_array();
  for (const auto& c : meta.comments)
    w.value(c);
  w.end_array();
  w.key("kinds").begin_array();
  for (const char* k : kKindNames)
    w.value(k);
  w.end_array();
  w.key("frames").begin_array();
  for (const auto& f : tree.frames()) {
    w.begin_array().value(f.name).value(f.file).value(f.line).value(f.kind).end_array();
  }
  w.end_array();
  w.key("nodes").begin_array();
  for (const auto& n : nodes)
    w.value(n.frame).value(n.parent).value(clamp(n.count));
  w.end_array();
  w.key("total_nodes").value(static_cast<int64_t>(total_nodes));
  w.key("trimmed").value(nodes.size() < total_nodes);
  w.end_object();
  return w.str();
}

std::string escape_html_text(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string_view embedded(std::string_view name) {
  for (const auto& file : embedded::flamegraph_files()) {
    if (file.name == name)
      return file.text;
  }
  return {};
}

}  // namespace

std::string escape_json_for_html(std::string_view json) {
  std::string out;
  out.reserve(json.size() + json.size() / 16);
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '<') {
      out += "\\u003c";
    } else if (c == '>') {
      out += "\\u003e";
    } else if (c == '&') {
      out += "\\u0026";
    } else if (c == '\xe2' && i + 2 < json.size() && json[i + 1] == '\x80' &&
               (json[i + 2] == '\xa8' || json[i + 2] == '\xa9')) {
      // U+2028 and U+2029 end a line in older JavaScript parsers.
      out += json[i + 2] == '\xa8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::string encode_flamegraph_html(const profile::Profile& profile, std::string_view title,
                                   size_t max_nodes) {
  // The template's markers, in the order they appear; each is replaced once.
  // Everything put in is either ours (script, style) or escaped for where it
  // goes (title: HTML text; data: JSON inside a script element).
  const std::string data = escape_json_for_html(data_json(profile, title, max_nodes));
  const std::string safe_title = escape_html_text(valid_utf8(title));
  const std::pair<std::string_view, std::string_view> parts[] = {
      {"{{KRAIT_TITLE}}", safe_title},
      {"/*{{KRAIT_CSS}}*/", embedded("flamegraph.css")},
      {"{{KRAIT_DATA}}", data},
      {"/*{{KRAIT_JS}}*/", embedded("flamegraph.js")},
  };
  std::string_view rest = embedded("template.html");
  std::string out;
  out.reserve(rest.size() + data.size() + 64 * 1024);
  for (const auto& [marker, text] : parts) {
    const size_t at = rest.find(marker);
    if (at == std::string_view::npos)
      continue;
    out += rest.substr(0, at);
    out += text;
    rest.remove_prefix(at + marker.size());
  }
  out += rest;
  return out;
}

}  // namespace krait::exporter
