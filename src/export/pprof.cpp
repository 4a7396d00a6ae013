#include "export/pprof.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "export/atomic_file.h"
#include "util/files.h"
#include "util/utf8.h"

namespace krait::exporter {
namespace {

namespace pb = perftools::profiles;
using profile::FrameKind;

constexpr size_t kMaxInflatedBytes = size_t{1} << 30;
constexpr size_t kZlibChunk = 64 * 1024;

class StringTable {
 public:
  explicit StringTable(pb::Profile* out) : out_(out) { index(""); }
  // Strings from profiled processes may be any bytes; a protobuf string
  // must be UTF-8 or readers reject the whole profile.
  int64_t index(const std::string& s) {
    auto [it, inserted] = ids_.try_emplace(s, static_cast<int64_t>(out_->string_table_size()));
    if (inserted)
      out_->add_string_table(is_valid_utf8(s) ? s : valid_utf8(s));
    return it->second;
  }

 private:
  pb::Profile* out_;
  std::unordered_map<std::string, int64_t> ids_;
};

// The pseudo-mappings, in the order they are appended after the real ones.
constexpr std::array<FrameKind, 4> kPseudoOrder = {FrameKind::kPython, FrameKind::kKernel,
                                                   FrameKind::kNative, FrameKind::kSynthetic};

const char* pseudo_mapping_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::kPython:
      return "[python]";
    case FrameKind::kKernel:
      return "[kernel.kallsyms]";
    case FrameKind::kNative:
      return "[unknown]";
    case FrameKind::kSynthetic:
      return "[synthetic]";
  }
  return "[unknown]";
}

int64_t saturating_product(uint64_t count, int64_t period) {
  if (period <= 0)
    return 0;
  int64_t result = 0;
  const int64_t c =
      count > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(count);
  if (__builtin_mul_overflow(c, period, &result))
    return INT64_MAX;
  return result;
}

int64_t clamp_count(uint64_t count) {
  return count > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(count);
}

void add_types(pb::Profile& out, StringTable& strings, const profile::ProfileMeta& meta) {
  auto* samples_type = out.add_sample_type();
  samples_type->set_type(strings.index("samples"));
  samples_type->set_unit(strings.index("count"));
  auto* cpu_type = out.add_sample_type();
  cpu_type->set_type(strings.index("cpu"));
  cpu_type->set_unit(strings.index("nanoseconds"));
  if (meta.off_cpu) {
    // `go tool pprof -sample_index=off_cpu` (or wall) and Pyroscope show
    // each; the default is the one the mode was asked for.
    auto* off_type = out.add_sample_type();
    off_type->set_type(strings.index("off_cpu"));
    off_type->set_unit(strings.index("nanoseconds"));
    auto* wall_type = out.add_sample_type();
    wall_type->set_type(strings.index("wall"));
    wall_type->set_unit(strings.index("nanoseconds"));
    out.set_default_sample_type(strings.index(meta.on_cpu ? "wall" : "off_cpu"));
  }
  out.mutable_period_type()->set_type(strings.index("cpu"));
  out.mutable_period_type()->set_unit(strings.index("nanoseconds"));
  out.set_period(meta.period_ns);
  out.set_time_nanos(meta.start_time_unix_ns);
  out.set_duration_nanos(meta.duration_ns);
}

// Which mapping each frame's location uses (frames without one get a
// pseudo-mapping per kind), and what symbol info each mapping ends up
// carrying (for the has_* flags).
struct MappingPlan {
  const std::vector<profile::Mapping>* mappings = nullptr;
  std::map<FrameKind, uint64_t> unmapped_ids;
  std::vector<FrameKind> pseudo_kinds;  // pseudo-mappings to append, in order
  std::vector<bool> has_filenames;      // by mapping id
  std::vector<bool> has_lines;

  bool unmapped(const profile::Frame& f) const {
    return f.mapping == 0 || f.mapping > mappings->size();
  }
  uint64_t mapping_of(const profile::Frame& frame) const {
    return unmapped(frame) ? unmapped_ids.at(frame.kind) : frame.mapping;
  }
};

MappingPlan plan_mappings(const profile::Profile& in) {
  const auto& mappings = in.mappings();
  const auto& frames = in.frames();
  MappingPlan plan;
  plan.mappings = &mappings;
  // Kernel frames without a mapping belong to the profile's kernel mapping
  // when it has one; a second "[kernel.kallsyms]" would split the kernel.
  for (size_t i = 0; i < mappings.size(); ++i) {
    if (mappings[i].file == pseudo_mapping_name(FrameKind::kKernel)) {
      plan.unmapped_ids[FrameKind::kKernel] = i + 1;
      break;
    }
  }
  uint64_t next_mapping_id = mappings.size() + 1;
  for (FrameKind kind : kPseudoOrder) {
    if (plan.unmapped_ids.contains(kind))
      continue;
    const bool used = std::any_of(frames.begin(), frames.end(), [&](const profile::Frame& f) {
      return f.kind == kind && plan.unmapped(f);
    });
    if (used) {
      plan.unmapped_ids[kind] = next_mapping_id++;
      plan.pseudo_kinds.push_back(kind);
    }
  }
  plan.has_filenames.assign(next_mapping_id, false);
  plan.has_lines.assign(next_mapping_id, false);
  for (const auto& frame : frames) {
    const uint64_t id = plan.mapping_of(frame);
    plan.has_filenames[id] = plan.has_filenames[id] || !frame.file.empty();
    plan.has_lines[id] = plan.has_lines[id] || frame.line > 0;
  }
  return plan;
}

void add_mappings(pb::Profile& out, StringTable& strings, const MappingPlan& plan) {
  const auto& mappings = *plan.mappings;
  for (size_t i = 0; i < mappings.size(); ++i) {
    const auto& m = mappings[i];
    auto* pm = out.add_mapping();
    pm->set_id(i + 1);
    pm->set_memory_start(m.start);
    pm->set_memory_limit(m.limit);
    pm->set_file_offset(m.offset);
    pm->set_filename(strings.index(m.file));
    pm->set_build_id(strings.index(m.build_id));
    pm->set_has_functions(true);
    pm->set_has_filenames(plan.has_filenames[i + 1]);
    pm->set_has_line_numbers(plan.has_lines[i + 1]);
  }
  for (FrameKind kind : plan.pseudo_kinds) {
    const uint64_t id = plan.unmapped_ids.at(kind);
    auto* pm = out.add_mapping();
    pm->set_id(id);
    pm->set_filename(strings.index(pseudo_mapping_name(kind)));
    pm->set_has_functions(true);
    pm->set_has_filenames(plan.has_filenames[id]);
    pm->set_has_line_numbers(plan.has_lines[id]);
  }
}

// Functions, added to the profile as locations first refer to them.
// Keyed on string indexes, so the key is cheap to compare and the
// first-seen order (frames() order) fixes the ids.
class FunctionTable {
 public:
  FunctionTable(pb::Profile& out, StringTable& strings) : out_(out), strings_(strings) {}

  uint64_t id(const profile::Frame& frame) {
    const int64_t name = strings_.index(frame.function);
    // go tool pprof treats a function whose system name equals its name as
    // still mangled and strips <...> and (...) from names that look like C++,
    // which would turn Python's "<module>" and "<lambda>" into "". Python has
    // no mangled names, so those frames carry a system name only when the
    // frame gives a different one.
    const bool symbol = frame.kind == FrameKind::kNative || frame.kind == FrameKind::kKernel;
    int64_t system_name = 0;
    if (symbol && frame.system_name.empty())
      system_name = name;
    else if (frame.system_name != frame.function)
      system_name = strings_.index(frame.system_name);
    const int64_t file = strings_.index(frame.file);
    auto [it, inserted] = ids_.try_emplace(
        std::make_tuple(name, system_name, file, frame.start_line), ids_.size() + 1);
    if (inserted) {
      auto* f = out_.add_function();
      f->set_id(it->second);
      f->set_name(name);
      f->set_system_name(system_name);
      f->set_filename(file);
      f->set_start_line(frame.start_line);
    }
    return it->second;
  }

 private:
  pb::Profile& out_;
  StringTable& strings_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, uint64_t> ids_;
};

void add_locations(pb::Profile& out, StringTable& strings, const profile::Profile& in,
                   const MappingPlan& plan) {
  FunctionTable functions(out, strings);
  const auto& frames = in.frames();
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto& frame = frames[i];
    auto* loc = out.add_location();
    loc->set_id(i + 1);
    loc->set_mapping_id(plan.mapping_of(frame));
    const bool addressed = frame.kind == FrameKind::kNative || frame.kind == FrameKind::kKernel;
    if (addressed)
      loc->set_address(frame.address);
    if (!addressed || !frame.function.empty()) {
      auto* line = loc->add_line();
      line->set_function_id(functions.id(frame));
      line->set_line(frame.line);
    }
  }
}

void add_samples(pb::Profile& out, StringTable& strings, const profile::Profile& in) {
  const auto& label_sets = in.label_sets();
  const int64_t period_ns = in.meta().period_ns;
  for (const auto& sample : in.samples()) {
    auto* ps = out.add_sample();
    for (profile::FrameId id : sample.stack)
      ps->add_location_id(uint64_t{id} + 1);
    ps->add_value(clamp_count(sample.count));
    ps->add_value(saturating_product(sample.count, period_ns));
    if (in.meta().off_cpu) {
      ps->add_value(clamp_count(sample.off_cpu_ns));
      ps->add_value(clamp_count(in.weight(sample)));
    }
    for (const auto& [key, value] : label_sets.at(sample.labels)) {
      auto* label = ps->add_label();
      label->set_key(strings.index(key));
      label->set_str(strings.index(value));
    }
  }
}

// The string table fills in the order these run: keep it, or the bytes of
// every profile change.
pb::Profile build(const profile::Profile& in) {
  pb::Profile out;
  StringTable strings(&out);
  add_types(out, strings, in.meta());
  const MappingPlan plan = plan_mappings(in);
  add_mappings(out, strings, plan);
  add_locations(out, strings, in, plan);
  add_samples(out, strings, in);
  for (const auto& comment : in.meta().comments)
    out.add_comment(strings.index(comment));
  return out;
}

Result<std::string> gzip(std::string_view data) {
  z_stream zs{};
  // windowBits 15 + 16 selects the gzip wrapper; zlib writes mtime 0, so the
  // bytes depend on the input only.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return make_error("zlib deflateInit2 failed: {}", zs.msg ? zs.msg : "out of memory");
  std::string out;
  out.resize(deflateBound(&zs, data.size()));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const size_t written = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END)
    return make_error("zlib deflate failed (code {})", rc);
  out.resize(written);
  return out;
}

Result<std::string> gunzip(std::string_view data) {
  if (data.size() < 2 || static_cast<uint8_t>(data[0]) != 0x1f ||
      static_cast<uint8_t>(data[1]) != 0x8b)
    return make_error("not gzip data (a pprof file must be gzip-compressed)");
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK)
    return make_error("zlib inflateInit2 failed: {}", zs.msg ? zs.msg : "out of memory");
  std::string out;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  size_t in_left = data.size();
  int rc = Z_OK;
  while (true) {
    if (zs.avail_in == 0 && in_left > 0) {
      const size_t take = std::min<size_t>(in_left, UINT_MAX);
      zs.avail_in = static_cast<uInt>(take);
      in_left -= take;
    }
    const size_t old_size = out.size();
    if (old_size >= kMaxInflatedBytes) {
      inflateEnd(&zs);
      return make_error("gzip data inflates beyond {} bytes; refusing it as a pprof file",
                        kMaxInflatedBytes);
    }
    out.resize(old_size + kZlibChunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old_size);
    zs.avail_out = static_cast<uInt>(kZlibChunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(out.size() - zs.avail_out);
    if (rc == Z_STREAM_END) {
      // Concatenated gzip members are one valid gzip stream.
      if (zs.avail_in == 0 && in_left == 0)
        break;
      if (inflateReset(&zs) != Z_OK)
        break;
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
      inflateEnd(&zs);
      return make_error("gzip data is truncated");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      std::string msg = zs.msg ? zs.msg : fmt::format("code {}", rc);
      inflateEnd(&zs);
      return make_error("corrupt gzip data: {}", msg);
    }
  }
  inflateEnd(&zs);
  if (rc != Z_STREAM_END)
    return make_error("corrupt gzip data: cannot restart after a gzip member");
  return out;
}

}  // namespace

Result<std::string> encode_pprof(const profile::Profile& profile) {
  const pb::Profile message = build(profile);
  const size_t size = message.ByteSizeLong();
  if (size > static_cast<size_t>(INT_MAX))
    return make_error(
        "pprof message of {} bytes exceeds protobuf's 2 GiB limit; write shorter "
        "profiles (lower the duration or frequency)",
        size);
  std::string bytes;
  if (!message.SerializeToString(&bytes))
    return make_error("serializing the pprof message failed");
  return gzip(bytes);
}

Result<void> write_pprof_file(const profile::Profile& profile, const std::string& path) {
  auto bytes = encode_pprof(profile);
  if (!bytes)
    return std::move(bytes).context(fmt::format("writing {}", path)).error();
  return write_file_atomically(path, *bytes);
}

Result<pb::Profile> decode_pprof(std::string_view gzipped_bytes) {
  auto raw = gunzip(gzipped_bytes);
  if (!raw)
    return raw.error();
  pb::Profile message;
  if (!message.ParseFromString(*raw))
    return make_error("not a pprof profile: the protobuf message does not parse");
  return message;
}

Result<pb::Profile> read_pprof_file(const std::string& path) {
  // Profiles krait or the operator wrote; a day of a busy host stays far below.
  constexpr size_t kPprofFileMaxBytes = size_t{1} << 30;
  auto bytes = read_file(path, kPprofFileMaxBytes);
  if (!bytes)
    return bytes.error();
  return decode_pprof(*bytes).context(path);
}

Result<void> validate_pprof(const pb::Profile& p) {
  const auto strings = static_cast<int64_t>(p.string_table_size());
  if (strings == 0 || !p.string_table(0).empty())
    return make_error("string_table[0] must be the empty string");
  auto check_str = [&](int64_t index, std::string_view what) -> Result<void> {
    if (index < 0 || index >= strings)
      return make_error("{} refers to string {} outside the table of {}", what, index, strings);
    return {};
  };
  for (const auto& t : p.sample_type()) {
    KRAIT_TRY(check_str(t.type(), "sample_type.type"));
    KRAIT_TRY(check_str(t.unit(), "sample_type.unit"));
  }
  KRAIT_TRY(check_str(p.period_type().type(), "period_type.type"));
  KRAIT_TRY(check_str(p.period_type().unit(), "period_type.unit"));
  KRAIT_TRY(check_str(p.drop_frames(), "drop_frames"));
  KRAIT_TRY(check_str(p.keep_frames(), "keep_frames"));
  KRAIT_TRY(check_str(p.default_sample_type(), "default_sample_type"));
  for (int64_t c : p.comment())
    KRAIT_TRY(check_str(c, "comment"));

  std::set<uint64_t> mapping_ids;
  for (const auto& m : p.mapping()) {
    if (m.id() == 0 || !mapping_ids.insert(m.id()).second)
      return make_error("mapping id {} is zero or repeated", m.id());
    KRAIT_TRY(check_str(m.filename(), "mapping.filename"));
    KRAIT_TRY(check_str(m.build_id(), "mapping.build_id"));
  }
  std::set<uint64_t> function_ids;
  for (const auto& f : p.function()) {
    if (f.id() == 0 || !function_ids.insert(f.id()).second)
      return make_error("function id {} is zero or repeated", f.id());
    KRAIT_TRY(check_str(f.name(), "function.name"));
    KRAIT_TRY(check_str(f.system_name(), "function.system_name"));
    KRAIT_TRY(check_str(f.filename(), "function.filename"));
  }
  std::set<uint64_t> location_ids;
  for (const auto& l : p.location()) {
    if (l.id() == 0 || !location_ids.insert(l.id()).second)
      return make_error("location id {} is zero or repeated", l.id());
    if (l.mapping_id() != 0 && !mapping_ids.contains(l.mapping_id()))
      return make_error("location {} refers to missing mapping {}", l.id(), l.mapping_id());
    for (const auto& line : l.line()) {
      if (!function_ids.contains(line.function_id()))
        return make_error("location {} refers to missing function {}", l.id(), line.function_id());
    }
  }
  for (int i = 0; i < p.sample_size(); ++i) {
    const auto& s = p.sample(i);
    if (s.value_size() != p.sample_type_size())
      return make_error("sample {} has {} values for {} sample types", i, s.value_size(),
                        p.sample_type_size());
    for (uint64_t id : s.location_id()) {
      if (!location_ids.contains(id))
        return make_error("sample {} refers to missing location {}", i, id);
    }
    for (const auto& label : s.label()) {
      KRAIT_TRY(check_str(label.key(), "label.key"));
      KRAIT_TRY(check_str(label.str(), "label.str"));
      KRAIT_TRY(check_str(label.num_unit(), "label.num_unit"));
    }
  }
  return {};
}

}  // namespace krait::exporter
