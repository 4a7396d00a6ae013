#include "python/offsets/debug_offsets.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

#include "util/embedded.h"
#include "util/text.h"

namespace krait::python {
namespace {

// "3.13.txt" -> {3, 13}.
std::optional<std::pair<int, int>> minor_from_file_name(std::string_view name) {
  int major = 0;
  int minor = 0;
  const char* p = name.data();
  const char* end = name.data() + name.size();
  auto r1 = std::from_chars(p, end, major);
  if (r1.ec != std::errc() || r1.ptr == end || *r1.ptr != '.')
    return std::nullopt;
  auto r2 = std::from_chars(r1.ptr + 1, end, minor);
  if (r2.ec != std::errc() || std::string_view(r2.ptr, end) != ".txt")
    return std::nullopt;
  return std::pair{major, minor};
}

}  // namespace

const std::vector<DebugOffsetsLayout>& builtin_debug_offsets_layouts() {
  static const std::vector<DebugOffsetsLayout> layouts = [] {
    std::vector<DebugOffsetsLayout> out;
    for (const auto& file : embedded::debug_offset_layouts()) {
      auto mm = minor_from_file_name(file.name);
      if (!mm) {
        spdlog::error(
            "built-in _Py_DebugOffsets layout {} ignored: name is not <major>.<minor>.txt",
            file.name);
        continue;
      }
      auto layout = parse_debug_offsets_layout(file.text, mm->first, mm->second);
      if (!layout) {
        spdlog::error("built-in _Py_DebugOffsets layout {} is broken and ignored: {}", file.name,
                      layout.error().message);
        continue;
      }
      out.push_back(std::move(layout).value());
    }
    std::sort(out.begin(), out.end(), [](const DebugOffsetsLayout& a, const DebugOffsetsLayout& b) {
      return std::pair(a.major, a.minor) < std::pair(b.major, b.minor);
    });
    return out;
  }();
  return layouts;
}

namespace {

// Canonical names are "<Type>.<path>" or "sizeof(<Type>)"; the type of the
// former, to compare an offset with the size of its struct.
std::string_view type_of_canonical(std::string_view canonical) {
  if (canonical.starts_with("sizeof("))
    return {};
  return canonical.substr(0, canonical.find('.'));
}

}  // namespace

Result<DebugOffsetsLayout> parse_debug_offsets_layout(std::string_view text, int major, int minor) {
  DebugOffsetsLayout layout;
  layout.major = major;
  layout.minor = minor;
  std::set<std::string, std::less<>> seen;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = trim(text.substr(0, eol));
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    ++line_no;
    if (line.empty() || line.front() == '#')
      continue;
    DebugOffsetsSlot slot;
    size_t eq = line.find('=');
    std::string_view path = trim(line.substr(0, eq));
    if (eq != std::string_view::npos) {
      std::string_view canonical = trim(line.substr(eq + 1));
      if (!is_field_name(canonical))
        return make_error("_Py_DebugOffsets layout {}.{} line {}: bad canonical name '{}'", major,
                          minor, line_no, canonical);
      slot.canonical = std::string(canonical);
    }
    if (!is_field_name(path))
      return make_error("_Py_DebugOffsets layout {}.{} line {}: bad slot name '{}'", major, minor,
                        line_no, path);
    if (!seen.insert(std::string(path)).second)
      return make_error("_Py_DebugOffsets layout {}.{} line {}: slot {} appears twice", major,
                        minor, line_no, path);
    slot.path = std::string(path);
    layout.slots.push_back(std::move(slot));
  }
  if (layout.slots.size() < 2 || layout.slots[0].path != "cookie" ||
      layout.slots[1].path != "version")
    return make_error(
        "_Py_DebugOffsets layout {}.{}: the first slots must be `cookie` and `version`", major,
        minor);
  return layout;
}

const DebugOffsetsLayout* find_debug_offsets_layout(int major, int minor) {
  for (const auto& layout : builtin_debug_offsets_layouts()) {
    if (layout.major == major && layout.minor == minor)
      return &layout;
  }
  return nullptr;
}

size_t debug_offsets_read_size(int major, int minor) {
  const DebugOffsetsLayout* layout = find_debug_offsets_layout(major, minor);
  return layout ? layout->size_bytes() : 0;
}

namespace {

struct Header {
  PyVersion version;
};

Result<Header> read_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < 16)
    return make_error("_Py_DebugOffsets needs at least 16 bytes, got {}", bytes.size());
  std::string_view cookie(reinterpret_cast<const char*>(bytes.data()), kDebugOffsetsCookie.size());
  if (cookie != kDebugOffsetsCookie)
    return make_error(
        "no _Py_DebugOffsets cookie \"{}\" at the start of _PyRuntime: not CPython 3.13+ or the "
        "wrong address",
        kDebugOffsetsCookie);
  uint64_t hex = 0;
  std::memcpy(&hex, bytes.data() + 8, sizeof hex);
  return Header{PyVersion::from_hex(hex)};
}

}  // namespace

Result<OffsetTable> decode_debug_offsets(std::span<const uint8_t> bytes) {
  auto header = read_header(bytes);
  KRAIT_TRY(header);
  const PyVersion v = header->version;
  const DebugOffsetsLayout* layout = find_debug_offsets_layout(v.major, v.minor);
  if (!layout)
    return make_error(
        "no _Py_DebugOffsets layout for {}.{}: add offsets/debug_offsets/{}.{}.txt, transcribed "
        "from that version's struct _Py_DebugOffsets (see offsets/README.md)",
        v.major, v.minor, v.major, v.minor);
  return decode_debug_offsets(bytes, *layout);
}

Result<OffsetTable> decode_debug_offsets(std::span<const uint8_t> bytes,
                                         const DebugOffsetsLayout& layout) {
  auto header = read_header(bytes);
  KRAIT_TRY(header);
  const PyVersion v = header->version;
  if (v.major != layout.major || v.minor != layout.minor)
    return make_error("_Py_DebugOffsets says {}, but the layout given is for {}.{}", v.str(),
                      layout.major, layout.minor);
  if (bytes.size() < layout.size_bytes())
    return make_error(
        "_Py_DebugOffsets of {}.{} needs {} bytes, got {}: read "
        "debug_offsets_read_size() bytes",
        v.major, v.minor, layout.size_bytes(), bytes.size());

  OffsetTable table;
  table.version = v;
  table.source = "_Py_DebugOffsets";
  for (size_t i = 1; i < layout.slots.size(); ++i) {
    const DebugOffsetsSlot& slot = layout.slots[i];
    uint64_t value = 0;
    std::memcpy(&value, bytes.data() + 8 * i, sizeof value);
    table.fields.emplace(fmt::format("{}{}", kDebugOffsetsRawPrefix, slot.path), value);
    if (slot.canonical.empty())
      continue;
    auto [it, inserted] = table.fields.emplace(slot.canonical, value);
    if (!inserted && it->second != value)
      return make_error(
          "_Py_DebugOffsets of {} is inconsistent: {} is both {} and {}; wrong address or layout",
          v.str(), slot.canonical, it->second, value);
  }

  // Garbage read from the wrong place rarely passes this: every offset must
  // lie within its struct when the struct's size is known.
  for (const auto& [name, value] : table.fields) {
    std::string_view type = type_of_canonical(name);
    if (type.empty() || name.starts_with(kDebugOffsetsRawPrefix))
      continue;
    auto size = table.get(fmt::format("sizeof({})", type));
    if (size && value > *size)
      return make_error(
          "_Py_DebugOffsets of {} looks corrupt: {} = {} lies beyond sizeof({}) = {}; wrong "
          "address or layout",
          v.str(), name, value, type, *size);
  }
  return table;
}

}  // namespace krait::python
