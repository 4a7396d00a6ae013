// pprof -> profile::Profile; see pprof_import.h.
#include "export/pprof_import.h"

#include <fmt/format.h>

#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "export/pprof.h"

namespace krait::exporter {
namespace {

namespace pb = perftools::profiles;
using profile::FrameKind;

// A location may stand for many frames (inlined lines) and a sample may name
// a location many times, so frames can outnumber the input's bytes; these
// bounds keep a small hostile file from costing more than a large real one.
constexpr size_t kMaxStackFrames = 64 * 1024;
constexpr uint64_t kMaxExpandedFrames = uint64_t{1} << 28;

struct MappingInfo {
  FrameKind kind = FrameKind::kNative;
  uint32_t id = 0;  // profile mapping id, 0 = unmapped
};

class Importer {
 public:
  explicit Importer(const pb::Profile& in) : in_(in) {}

  Result<profile::Profile> run() {
    out_.meta() = meta();
    map_mappings();
    for (int i = 0; i < in_.function_size(); ++i)
      functions_.emplace(in_.function(i).id(), i);
    KRAIT_TRY(map_locations());
    const int value_index = value_of("samples", "count").value_or(0);
    // krait's off-CPU and wall profiles carry off_cpu/nanoseconds too.
    const std::optional<int> off_index = value_of("off_cpu", "nanoseconds");
    if (off_index) {
      out_.meta().off_cpu = true;
      out_.meta().on_cpu = value_of("wall", "nanoseconds").has_value();
    }
    std::vector<profile::FrameId> stack;
    profile::Labels labels;
    uint64_t expanded = 0;
    for (const auto& sample : in_.sample()) {
      if (value_index >= sample.value_size())
        return make_error("a sample has no value for its count");
      const int64_t count = sample.value(value_index);
      const int64_t off_cpu_ns =
          off_index && *off_index < sample.value_size() ? sample.value(*off_index) : 0;
      if (count <= 0 && off_cpu_ns <= 0)
        continue;
      stack.clear();
      for (uint64_t id : sample.location_id()) {
        auto it = locations_.find(id);
        if (it == locations_.end())
          return make_error("a sample refers to missing location {}", id);
        stack.insert(stack.end(), it->second.begin(), it->second.end());
        if (stack.size() > kMaxStackFrames)
          return make_error("a sample's stack is deeper than {} frames", kMaxStackFrames);
      }
      expanded += stack.size();
      if (expanded > kMaxExpandedFrames)
        return make_error("the samples expand to more than {} frames", kMaxExpandedFrames);
      labels.clear();
      for (const auto& label : sample.label()) {
        std::string value = label.str() != 0 ? str(label.str()) : fmt::format("{}", label.num());
        labels.emplace_back(str(label.key()), std::move(value));
      }
      out_.add_sample(stack, out_.intern_labels(labels),
                      count > 0 ? static_cast<uint64_t>(count) : 0,
                      off_cpu_ns > 0 ? static_cast<uint64_t>(off_cpu_ns) : 0);
    }
    return std::move(out_);
  }

 private:
  const std::string& str(int64_t index) const {
    // validate_pprof() checked every index this is called with.
    return in_.string_table(static_cast<int>(index));
  }

  profile::ProfileMeta meta() const {
    profile::ProfileMeta m;
    m.start_time_unix_ns = in_.time_nanos();
    m.duration_ns = in_.duration_nanos();
    if (str(in_.period_type().unit()) == "nanoseconds" && in_.period() > 0)
      m.period_ns = in_.period();
    for (int64_t c : in_.comment())
      m.comments.push_back(str(c));
    return m;
  }

  // The index of a value by its type: krait writes samples/count first and
  // cpu/nanoseconds second (then off_cpu and wall); other writers may have
  // only one type, which is then taken as the count.
  std::optional<int> value_of(std::string_view type, std::string_view unit) const {
    for (int i = 0; i < in_.sample_type_size(); ++i) {
      if (str(in_.sample_type(i).type()) == type && str(in_.sample_type(i).unit()) == unit)
        return i;
    }
    return std::nullopt;
  }

  void map_mappings() {
    for (const auto& m : in_.mapping()) {
      const std::string& file = str(m.filename());
      MappingInfo info;
      if (file == "[python]") {
        info.kind = FrameKind::kPython;
      } else if (file == "[synthetic]") {
        info.kind = FrameKind::kSynthetic;
      } else if (file == "[unknown]" && m.memory_start() == 0 && m.memory_limit() == 0) {
        info.kind = FrameKind::kNative;
      } else {
        info.kind = file == "[kernel.kallsyms]" ? FrameKind::kKernel : FrameKind::kNative;
        const bool pseudo = info.kind == FrameKind::kKernel && m.memory_start() == 0 &&
                            m.memory_limit() == 0 && m.file_offset() == 0;
        if (!pseudo)
          info.id = out_.intern_mapping(
              {file, str(m.build_id()), m.memory_start(), m.memory_limit(), m.file_offset()});
      }
      mappings_.emplace(m.id(), info);
    }
  }

  Result<void> map_locations() {
    for (const auto& loc : in_.location()) {
      MappingInfo mapping;
      if (loc.mapping_id() != 0) {
        auto it = mappings_.find(loc.mapping_id());
        if (it == mappings_.end())
          return make_error("location {} refers to missing mapping {}", loc.id(), loc.mapping_id());
        mapping = it->second;
      }
      const bool addressed =
          mapping.kind == FrameKind::kNative || mapping.kind == FrameKind::kKernel;
      std::vector<profile::FrameId>& frames = locations_[loc.id()];
      if (loc.line_size() == 0) {
        profile::Frame f;
        f.kind = mapping.kind;
        f.address = addressed ? loc.address() : 0;
        f.mapping = mapping.id;
        frames.push_back(out_.intern_frame(f));
        continue;
      }
      for (const auto& line : loc.line()) {
        auto fn = functions_.find(line.function_id());
        if (fn == functions_.end())
          return make_error("location {} refers to missing function {}", loc.id(),
                            line.function_id());
        const pb::Function& function = in_.function(fn->second);
        profile::Frame f;
        f.kind = mapping.kind;
        f.function = str(function.name());
        f.system_name = str(function.system_name());
        if (f.system_name == f.function)
          f.system_name.clear();
        f.file = str(function.filename());
        f.start_line = function.start_line();
        f.line = line.line();
        f.address = addressed ? loc.address() : 0;
        f.mapping = mapping.id;
        frames.push_back(out_.intern_frame(f));
      }
    }
    return {};
  }

  const pb::Profile& in_;
  profile::Profile out_;
  std::unordered_map<uint64_t, MappingInfo> mappings_;
  std::unordered_map<uint64_t, int> functions_;
  std::unordered_map<uint64_t, std::vector<profile::FrameId>> locations_;
};

}  // namespace

Result<profile::Profile> profile_from_pprof(const pb::Profile& pprof) {
  if (auto valid = validate_pprof(pprof); !valid)
    return valid.error().context("not a valid pprof profile");
  return Importer(pprof).run();
}

}  // namespace krait::exporter
