// pprof encoder: round trip through our decoder, with every rule of the
// format checked here directly (not only through validate_pprof), and the
// result compared to the fixture's plain-data description of the samples.
#include "export/pprof.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "fixture_profile.h"
#include "test_support.h"

namespace krait::exporter {
namespace {

namespace pb = perftools::profiles;
using profile::FrameKind;
using test::FrameFacts;

// Indexes of a decoded pprof message, checked for uniqueness as they are built.
struct Tables {
  const pb::Profile& p;
  std::map<uint64_t, const pb::Mapping*> mappings;
  std::map<uint64_t, const pb::Location*> locations;
  std::map<uint64_t, const pb::Function*> functions;

  explicit Tables(const pb::Profile& profile) : p(profile) {
    for (const auto& m : p.mapping()) {
      EXPECT_NE(m.id(), 0u);
      EXPECT_TRUE(mappings.emplace(m.id(), &m).second) << "mapping id repeated: " << m.id();
    }
    for (const auto& l : p.location()) {
      EXPECT_NE(l.id(), 0u);
      EXPECT_TRUE(locations.emplace(l.id(), &l).second) << "location id repeated: " << l.id();
    }
    for (const auto& f : p.function()) {
      EXPECT_NE(f.id(), 0u);
      EXPECT_TRUE(functions.emplace(f.id(), &f).second) << "function id repeated: " << f.id();
    }
  }
  const std::string& str(int64_t i) const {
    EXPECT_GE(i, 0);
    EXPECT_LT(i, p.string_table_size());
    return p.string_table(static_cast<int>(i));
  }
};

// A location read back into the fixture's terms. Kind is inferred from what
// the format carries: the mapping name tells Python/synthetic apart, an
// address means native or kernel.
struct ReadFrame {
  std::string function, system_name, file;
  int64_t start_line = 0, line = 0;
  uint64_t address = 0;
  std::string mapping_file, build_id;
  bool has_line = false;
  auto operator<=>(const ReadFrame&) const = default;
};

ReadFrame expected_read_frame(const FrameFacts& f) {
  ReadFrame r;
  const bool symbol = f.kind == FrameKind::kNative || f.kind == FrameKind::kKernel;
  r.has_line = !symbol || !f.function.empty();
  if (r.has_line) {
    r.function = f.function;
    r.system_name = !f.system_name.empty() ? f.system_name : (symbol ? f.function : "");
    r.file = f.file;
    r.start_line = f.start_line;
    r.line = f.line;
  }
  r.address = symbol ? f.address : 0;
  r.mapping_file = test::expected_pprof_mapping(f);
  r.build_id = f.build_id;
  return r;
}

ReadFrame read_location(const Tables& t, uint64_t location_id) {
  ReadFrame r;
  auto loc_it = t.locations.find(location_id);
  EXPECT_NE(loc_it, t.locations.end()) << "sample refers to missing location " << location_id;
  if (loc_it == t.locations.end())
    return r;
  const pb::Location& loc = *loc_it->second;
  EXPECT_NE(loc.mapping_id(), 0u) << "location " << loc.id() << " has no mapping";
  auto map_it = t.mappings.find(loc.mapping_id());
  EXPECT_NE(map_it, t.mappings.end());
  if (map_it != t.mappings.end()) {
    r.mapping_file = t.str(map_it->second->filename());
    r.build_id = t.str(map_it->second->build_id());
  }
  r.address = loc.address();
  EXPECT_LE(loc.line_size(), 1);
  if (loc.line_size() == 1) {
    r.has_line = true;
    r.line = loc.line(0).line();
    auto fn_it = t.functions.find(loc.line(0).function_id());
    EXPECT_NE(fn_it, t.functions.end());
    if (fn_it != t.functions.end()) {
      r.function = t.str(fn_it->second->name());
      r.system_name = t.str(fn_it->second->system_name());
      r.file = t.str(fn_it->second->filename());
      r.start_line = fn_it->second->start_line();
    }
  }
  return r;
}

using SampleKey = std::pair<std::vector<ReadFrame>, profile::Labels>;

std::map<SampleKey, uint64_t> expected_samples(const test::Fixture& fx) {
  std::map<SampleKey, uint64_t> out;
  for (const auto& [key, count] : fx.expected) {
    std::vector<ReadFrame> stack;
    for (const auto& f : key.first)
      stack.push_back(expected_read_frame(f));
    out[{stack, key.second}] += count;
  }
  return out;
}

pb::Profile decode_ok(const std::string& bytes) {
  auto decoded = decode_pprof(bytes);
  EXPECT_TRUE(decoded.ok()) << decoded.error().message;
  return decoded.ok() ? std::move(decoded).value() : pb::Profile();
}

TEST(PprofTest, RoundTripKeepsEveryFact) {
  const test::Fixture fx = test::make_fixture();
  auto bytes = encode_pprof(fx.profile);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_GE(bytes->size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[0]), 0x1f) << "not gzip";
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[1]), 0x8b) << "not gzip";

  const pb::Profile p = decode_ok(*bytes);
  auto valid = validate_pprof(p);
  EXPECT_TRUE(valid.ok()) << valid.error().message;
  const Tables t(p);

  ASSERT_GT(p.string_table_size(), 0);
  EXPECT_EQ(p.string_table(0), "");

  ASSERT_EQ(p.sample_type_size(), 2);
  EXPECT_EQ(t.str(p.sample_type(0).type()), "samples");
  EXPECT_EQ(t.str(p.sample_type(0).unit()), "count");
  EXPECT_EQ(t.str(p.sample_type(1).type()), "cpu");
  EXPECT_EQ(t.str(p.sample_type(1).unit()), "nanoseconds");
  EXPECT_EQ(t.str(p.period_type().type()), "cpu");
  EXPECT_EQ(t.str(p.period_type().unit()), "nanoseconds");
  EXPECT_EQ(p.period(), test::kFixturePeriodNs);
  EXPECT_EQ(p.time_nanos(), test::kFixtureStartNs);
  EXPECT_EQ(p.duration_nanos(), test::kFixtureDurationNs);

  std::vector<std::string> comments;
  for (int64_t c : p.comment())
    comments.push_back(t.str(c));
  EXPECT_EQ(comments, fx.profile.meta().comments);

  // Mappings: symbolized, real ones with their build ids, pseudo ones named.
  std::set<std::string> mapping_files;
  for (const auto& m : p.mapping()) {
    EXPECT_TRUE(m.has_functions()) << t.str(m.filename());
    EXPECT_TRUE(mapping_files.insert(t.str(m.filename())).second)
        << "two mappings named " << t.str(m.filename());
  }
  EXPECT_EQ(mapping_files,
            (std::set<std::string>{"/usr/lib/x86_64-linux-gnu/libc.so.6",
                                   "/opt/app/_native.cpython-312-x86_64-linux-gnu.so",
                                   "[kernel.kallsyms]", "[python]", "[unknown]", "[synthetic]"}));
  for (const auto& m : p.mapping()) {
    if (t.str(m.filename()) == "/usr/lib/x86_64-linux-gnu/libc.so.6") {
      EXPECT_EQ(m.memory_start(), 0x7f1000000000u);
      EXPECT_EQ(m.memory_limit(), 0x7f1000200000u);
      EXPECT_EQ(m.file_offset(), 0x1000u);
      EXPECT_EQ(t.str(m.build_id()), "0123abcd");
    }
  }

  // One Function per distinct (name, system name, file, start line).
  std::set<std::tuple<std::string, std::string, std::string, int64_t>> function_keys;
  for (const auto& f : p.function()) {
    EXPECT_TRUE(
        function_keys
            .emplace(t.str(f.name()), t.str(f.system_name()), t.str(f.filename()), f.start_line())
            .second)
        << "function repeated: " << t.str(f.name());
  }
  // Worker.run at lines 17 and 19: two locations, one function.
  EXPECT_EQ(std::count_if(p.function().begin(), p.function().end(),
                          [&](const pb::Function& f) { return t.str(f.name()) == "Worker.run"; }),
            1);
  // One location per frame.
  EXPECT_EQ(static_cast<size_t>(p.location_size()), fx.profile.frames().size());

  // Samples: stacks leaf first, values, string labels.
  std::map<SampleKey, uint64_t> got;
  for (const auto& s : p.sample()) {
    ASSERT_EQ(s.value_size(), 2);
    EXPECT_GT(s.value(0), 0);
    EXPECT_EQ(s.value(1), s.value(0) * test::kFixturePeriodNs);
    std::vector<ReadFrame> stack;
    for (uint64_t id : s.location_id())
      stack.push_back(read_location(t, id));
    profile::Labels labels;
    for (const auto& l : s.label()) {
      EXPECT_EQ(l.num(), 0) << "labels are strings";
      EXPECT_NE(l.str(), 0) << "label " << t.str(l.key()) << " has an empty value";
      labels.emplace_back(t.str(l.key()), t.str(l.str()));
    }
    std::sort(labels.begin(), labels.end());
    got[{stack, labels}] += static_cast<uint64_t>(s.value(0));
  }
  EXPECT_EQ(got, expected_samples(fx));
  EXPECT_EQ(static_cast<size_t>(p.sample_size()), fx.expected.size())
      << "equal (stack, labels) must be one sample";
}

TEST(PprofTest, PythonFunctionNamesSurvivePprofDemangling) {
  // "<module>" with a system name equal to its name would be "demangled" to ""
  // by go tool pprof; the encoder leaves Python system names empty instead.
  const test::Fixture fx = test::make_fixture();
  auto bytes = encode_pprof(fx.profile);
  ASSERT_TRUE(bytes.ok());
  const pb::Profile p = decode_ok(*bytes);
  const Tables t(p);
  int seen = 0;
  for (const auto& f : p.function()) {
    const std::string& name = t.str(f.name());
    if (name == "<module>" || name == "<lambda>" || name == "Worker.run") {
      EXPECT_EQ(f.system_name(), 0) << name;
      ++seen;
    }
    if (name == "std::vector<int>::push_back(int const&)") {
      EXPECT_EQ(t.str(f.system_name()), "_ZNSt6vectorIiSaIiEE9push_backERKi");
    }
    if (name == "do_syscall_64") {
      EXPECT_EQ(t.str(f.system_name()), "do_syscall_64");
    }
  }
  EXPECT_EQ(seen, 3);
}

TEST(PprofTest, OutputIsDeterministic) {
  const test::Fixture a = test::make_fixture();
  const test::Fixture b = test::make_fixture();
  auto first = encode_pprof(a.profile);
  auto again = encode_pprof(a.profile);
  auto other = encode_pprof(b.profile);
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(*first, *other);
}

TEST(PprofTest, EmptyProfileIsValid) {
  profile::Profile empty;
  auto bytes = encode_pprof(empty);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  const pb::Profile p = decode_ok(*bytes);
  EXPECT_TRUE(validate_pprof(p).ok());
  EXPECT_EQ(p.sample_size(), 0);
  EXPECT_EQ(p.mapping_size(), 0);
  EXPECT_EQ(p.sample_type_size(), 2);
}

TEST(PprofTest, CpuValueSaturates) {
  profile::ProfileMeta meta;
  meta.period_ns = 1'000'000'000;
  profile::Profile prof(meta);
  profile::Frame f;
  f.function = "f";
  const std::vector<profile::FrameId> stack = {prof.intern_frame(f)};
  prof.add_sample(stack, prof.intern_labels({}), std::numeric_limits<uint64_t>::max() / 2);
  auto bytes = encode_pprof(prof);
  ASSERT_TRUE(bytes.ok());
  const pb::Profile p = decode_ok(*bytes);
  ASSERT_EQ(p.sample_size(), 1);
  EXPECT_EQ(p.sample(0).value(0), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(p.sample(0).value(1), std::numeric_limits<int64_t>::max());
}

std::string gzip_raw(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, data.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST(PprofTest, DecodeRejectsBadInput) {
  auto not_gzip = decode_pprof("plain text, not gzip");
  ASSERT_FALSE(not_gzip.ok());
  EXPECT_NE(not_gzip.error().message.find("gzip"), std::string::npos);

  const test::Fixture fx = test::make_fixture();
  auto bytes = encode_pprof(fx.profile);
  ASSERT_TRUE(bytes.ok());
  auto truncated = decode_pprof(std::string_view(*bytes).substr(0, bytes->size() / 2));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message.find("truncated"), std::string::npos)
      << truncated.error().message;

  // Valid gzip around bytes that are not a protobuf message (a field tag of
  // 0 is never valid).
  auto garbage = decode_pprof(gzip_raw(std::string("\x00\x01\x02\x03", 4)));
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.error().message.find("pprof"), std::string::npos);
}

TEST(PprofTest, DecodeAcceptsConcatenatedGzipMembers) {
  // A message split in two gzip members is still one message.
  pb::Profile original;
  original.add_string_table("");
  original.add_string_table("hello");
  original.set_period(77);
  std::string raw;
  ASSERT_TRUE(original.SerializeToString(&raw));
  const size_t half = raw.size() / 2;
  auto decoded = decode_pprof(gzip_raw(raw.substr(0, half)) + gzip_raw(raw.substr(half)));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(decoded->period(), 77);
  ASSERT_EQ(decoded->string_table_size(), 2);
  EXPECT_EQ(decoded->string_table(1), "hello");
}

TEST(PprofTest, ValidateCatchesBrokenProfiles) {
  auto base = [] {
    pb::Profile p;
    p.add_string_table("");
    p.add_string_table("f");
    auto* st = p.add_sample_type();
    st->set_type(1);
    auto* fn = p.add_function();
    fn->set_id(1);
    fn->set_name(1);
    auto* loc = p.add_location();
    loc->set_id(1);
    loc->add_line()->set_function_id(1);
    auto* s = p.add_sample();
    s->add_location_id(1);
    s->add_value(1);
    return p;
  };
  EXPECT_TRUE(validate_pprof(base()).ok());

  auto p = base();
  p.set_string_table(0, "x");
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  p.mutable_function(0)->set_id(0);
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  p.mutable_sample(0)->set_location_id(0, 9);
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  p.mutable_location(0)->set_mapping_id(3);
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  p.mutable_function(0)->set_name(5);
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  p.mutable_sample(0)->add_value(2);
  EXPECT_FALSE(validate_pprof(p).ok());
  p = base();
  *p.add_location() = p.location(0);
  EXPECT_FALSE(validate_pprof(p).ok());
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(PprofTest, WriteFileReplacesAtomicallyAndLeavesNoTemporaries) {
  test::TempDir dir;
  ASSERT_TRUE(dir.ok()) << "cannot create a temporary directory";
  const std::string path = dir.path() + "/cpu.pb.gz";
  {
    std::ofstream old(path);
    old << "old contents";
  }
  const test::Fixture fx = test::make_fixture();
  auto written = write_pprof_file(fx.profile, path);
  ASSERT_TRUE(written.ok()) << written.error().message;
  auto expected = encode_pprof(fx.profile);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(slurp(path), *expected);
  EXPECT_EQ(dir.list(), std::vector<std::string>{"cpu.pb.gz"});

  auto read_back = read_pprof_file(path);
  ASSERT_TRUE(read_back.ok()) << read_back.error().message;
  EXPECT_EQ(read_back->sample_size(), static_cast<int>(fx.expected.size()));
}

TEST(PprofTest, WriteFileIntoMissingDirectoryFailsWithThePath) {
  test::TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.path() + "/no/such/dir/cpu.pb.gz";
  const test::Fixture fx = test::make_fixture();
  auto written = write_pprof_file(fx.profile, path);
  ASSERT_FALSE(written.ok());
  EXPECT_NE(written.error().message.find(path), std::string::npos) << written.error().message;
  EXPECT_TRUE(dir.list().empty());
}

}  // namespace
}  // namespace krait::exporter
