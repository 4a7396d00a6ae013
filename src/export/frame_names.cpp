// Frame and thread names for speedscope and the HTML flame graph; see
// frame_names.h.
#include "export/frame_names.h"

#include <fmt/format.h>

#include <string_view>

namespace krait::exporter {
namespace {

using profile::FrameKind;

std::string_view basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

const std::string* find_label(const profile::Labels& labels, std::string_view key) {
  for (const auto& [k, v] : labels) {
    if (k == key)
      return &v;
  }
  return nullptr;
}

std::string owner(const profile::Labels& labels, std::string_view name_key,
                  std::string_view id_key) {
  const std::string* name = find_label(labels, name_key);
  const std::string* id = find_label(labels, id_key);
  if (name != nullptr && id != nullptr)
    return fmt::format("{} ({})", *name, *id);
  if (name != nullptr)
    return *name;
  if (id != nullptr)
    return fmt::format("({})", *id);
  return {};
}

const profile::Mapping* mapping_of(const profile::Profile& profile, const profile::Frame& f) {
  if (f.mapping == 0 || f.mapping > profile.mappings().size())
    return nullptr;
  return &profile.mappings()[f.mapping - 1];
}

}  // namespace

std::string frame_display_name(const profile::Profile& profile, const profile::Frame& f) {
  if (!f.function.empty())
    return f.function;
  switch (f.kind) {
    case FrameKind::kPython:
    case FrameKind::kSynthetic:
      return "[unknown]";
    case FrameKind::kNative:
      // The offset into the file stays the same across processes and runs,
      // unlike the load address.
      if (const auto* m = mapping_of(profile, f))
        return fmt::format("[{}+0x{:x}]", basename(m->file), f.address - m->start + m->offset);
      return fmt::format("[0x{:x}]", f.address);
    case FrameKind::kKernel:
      return fmt::format("[0x{:x}]", f.address);
  }
  return "[unknown]";
}

std::string frame_display_file(const profile::Profile& profile, const profile::Frame& f) {
  if (!f.file.empty() || f.kind != FrameKind::kNative)
    return f.file;
  const auto* m = mapping_of(profile, f);
  return m == nullptr ? std::string() : m->file;
}

std::string process_title(const profile::Labels& labels) {
  return owner(labels, "process_name", "pid");
}

std::string thread_title(const profile::Labels& labels) {
  return owner(labels, "thread_name", "tid");
}

}  // namespace krait::exporter
