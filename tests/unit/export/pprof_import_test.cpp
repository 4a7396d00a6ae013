// Reading pprof back (export/pprof_import.h): the fixture profile survives
// encode -> decode -> import with the same (stack, labels) counts and meta,
// and damaged or hostile messages give errors, never crashes.
#include "export/pprof_import.h"

#include <gtest/gtest.h>

#include "export/pprof.h"
#include "fixture_profile.h"
#include "formats_support.h"

namespace krait::exporter {
namespace {

namespace pb = perftools::profiles;
using test::FrameFacts;

// What the import promises for the fixture: its samples, except that an
// unmapped kernel frame lands in the profile's kernel mapping.
auto expected_after_import(const test::Fixture& fx) {
  std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t> out;
  for (const auto& [key, count] : fx.expected) {
    auto stack = key.first;
    for (auto& f : stack) {
      if (f.kind == profile::FrameKind::kKernel && f.mapping_file.empty())
        f.mapping_file = test::kKernelFile;
    }
    out[{stack, key.second}] += count;
  }
  return out;
}

pb::Profile encoded_fixture(const profile::Profile& p) {
  auto bytes = encode_pprof(p);
  EXPECT_TRUE(bytes.ok());
  auto decoded = decode_pprof(*bytes);
  EXPECT_TRUE(decoded.ok());
  return *decoded;
}

TEST(PprofImport, FixtureRoundTripsWithTheSameCountsAndMeta) {
  auto fx = test::make_fixture();
  auto imported = profile_from_pprof(encoded_fixture(fx.profile));
  ASSERT_TRUE(imported.ok()) << imported.error().message;
  EXPECT_EQ(test::facts_of(*imported), expected_after_import(fx));
  EXPECT_EQ(imported->total_count(), fx.profile.total_count());
  EXPECT_EQ(imported->meta().period_ns, test::kFixturePeriodNs);
  EXPECT_EQ(imported->meta().start_time_unix_ns, test::kFixtureStartNs);
  EXPECT_EQ(imported->meta().duration_ns, test::kFixtureDurationNs);
  EXPECT_EQ(imported->meta().comments, fx.profile.meta().comments);
}

TEST(PprofImport, ReencodingTheImportKeepsTheSamples) {
  auto fx = test::make_fixture();
  auto once = profile_from_pprof(encoded_fixture(fx.profile));
  ASSERT_TRUE(once.ok());
  auto twice = profile_from_pprof(encoded_fixture(*once));
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(test::facts_of(*twice), test::facts_of(*once));
}

TEST(PprofImport, InlinedLinesBecomeOneFrameEachLeafFirst) {
  pb::Profile p;
  for (const char* s : {"", "samples", "count", "inner", "outer", "/lib/x.so"})
    p.add_string_table(s);
  auto* st = p.add_sample_type();
  st->set_type(1);
  st->set_unit(2);
  auto* m = p.add_mapping();
  m->set_id(1);
  m->set_filename(5);
  m->set_memory_start(0x1000);
  m->set_memory_limit(0x2000);
  for (uint64_t id : {1, 2}) {
    auto* f = p.add_function();
    f->set_id(id);
    f->set_name(id == 1 ? 3 : 4);
  }
  auto* loc = p.add_location();
  loc->set_id(7);
  loc->set_mapping_id(1);
  loc->set_address(0x1234);
  loc->add_line()->set_function_id(1);
  loc->add_line()->set_function_id(2);
  auto* s = p.add_sample();
  s->add_location_id(7);
  s->add_value(3);
  auto imported = profile_from_pprof(p);
  ASSERT_TRUE(imported.ok()) << imported.error().message;
  const auto samples = imported->samples();
  ASSERT_EQ(samples.size(), 1u);
  ASSERT_EQ(samples[0].stack.size(), 2u);
  EXPECT_EQ(imported->frames()[samples[0].stack[0]].function, "inner");
  EXPECT_EQ(imported->frames()[samples[0].stack[1]].function, "outer");
  EXPECT_EQ(imported->frames()[samples[0].stack[0]].kind, profile::FrameKind::kNative);
  EXPECT_EQ(samples[0].count, 3u);
}

TEST(PprofImport, BrokenStructureIsAnErrorNamingTheProblem) {
  auto fx = test::make_fixture();
  pb::Profile p = encoded_fixture(fx.profile);
  p.mutable_sample(0)->set_location_id(0, 999999);
  auto r = profile_from_pprof(p);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("missing location 999999"), std::string::npos)
      << r.error().message;

  pb::Profile q = encoded_fixture(fx.profile);
  q.set_string_table(0, "not empty");
  EXPECT_FALSE(profile_from_pprof(q).ok());

  pb::Profile values = encoded_fixture(fx.profile);
  values.mutable_sample(0)->clear_value();
  EXPECT_FALSE(profile_from_pprof(values).ok());
}

TEST(PprofImport, ANegativeOrZeroCountIsSkipped) {
  auto fx = test::make_fixture();
  pb::Profile p = encoded_fixture(fx.profile);
  p.mutable_sample(0)->set_value(0, -5);
  auto r = profile_from_pprof(p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total_count(), fx.profile.total_count() - 7);  // the first stack had 5 + 2
}

TEST(PprofImport, NotPprofBytesAreRejectedByTheDecoder) {
  EXPECT_FALSE(decode_pprof("hello, not gzip").ok());
  auto bytes = encode_pprof(test::make_fixture().profile);
  ASSERT_TRUE(bytes.ok());
  EXPECT_FALSE(decode_pprof(std::string_view(*bytes).substr(0, bytes->size() / 2)).ok());
}

}  // namespace
}  // namespace krait::exporter
