// The comparison every recording goes through (krait_harness.cpp): krait's
// decoder and `go tool pprof -raw` must read the same samples. Shown here to
// accept an honest reading and to catch a changed count, a changed frame
// and a missing sample.
#include "runtime/go_raw.h"

#include <gtest/gtest.h>

#include <string>

#include "export/pprof.h"
#include "profile/profile.h"
#include "runtime/krait_harness.h"
#include "support/temp_dir.h"

namespace krait::test {
namespace {

std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from << " not in:\n" << text;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  return text;
}

TEST(GoRaw, AgreesWithTheDecoderAndCatchesEachDifference) {
  profile::Profile prof;
  prof.meta().period_ns = 10'000'000;
  const uint32_t lib =
      prof.intern_mapping({.file = "/usr/lib/libz.so.1", .start = 0x1000, .limit = 0x9000});
  const auto hot =
      prof.intern_frame({.function = "hot", .file = "app.py", .start_line = 3, .line = 7});
  const auto main_frame =
      prof.intern_frame({.function = "<module>", .file = "app.py", .start_line = 1, .line = 20});
  const auto deflate = prof.intern_frame({.kind = profile::FrameKind::kNative,
                                          .function = "deflate",
                                          .address = 0x1234,
                                          .mapping = lib});
  // The same library in a second process, at another address: go keeps one
  // mapping of the two and moves this one's addresses into it.
  const uint32_t lib_elsewhere =
      prof.intern_mapping({.file = "/usr/lib/libz.so.1", .start = 0x71000, .limit = 0x79000});
  // One libc, by build-id, under two paths (two roots of one distribution):
  // go keeps the first path for both.
  // A file name with spaces in it, as the kernel names a deleted one.
  const uint32_t deleted =
      prof.intern_mapping({.file = "/memfd:jit (deleted)", .start = 0xa000, .limit = 0xb000});
  const auto jitted = prof.intern_frame({.kind = profile::FrameKind::kNative,
                                         .function = "jit code",
                                         .address = 0xa010,
                                         .mapping = deleted});
  const uint32_t libc_here = prof.intern_mapping(
      {.file = "/a/libc.so.6", .build_id = "93ac61ec", .start = 0x5000, .limit = 0x6000});
  const uint32_t libc_there = prof.intern_mapping(
      {.file = "/b/libc.so.6", .build_id = "93ac61ec", .start = 0x8000, .limit = 0x9000});
  const auto start_here = prof.intern_frame({.kind = profile::FrameKind::kNative,
                                             .function = "__libc_start_main",
                                             .address = 0x5100,
                                             .mapping = libc_here});
  const auto start_there = prof.intern_frame({.kind = profile::FrameKind::kNative,
                                              .function = "__libc_start_main",
                                              .address = 0x8100,
                                              .mapping = libc_there});
  const auto deflate_elsewhere = prof.intern_frame({.kind = profile::FrameKind::kNative,
                                                    .function = "deflate",
                                                    .address = 0x71234,
                                                    .mapping = lib_elsewhere});
  const auto a = prof.intern_labels({{"pid", "42"}, {"thread_name", "main thread"}});
  const auto b = prof.intern_labels({{"pid", "43"}});
  const auto c = prof.intern_labels({{"pid", "44"}});
  const profile::FrameId s1[] = {hot, main_frame, start_here};
  const profile::FrameId s2[] = {jitted, deflate, hot, main_frame};
  const profile::FrameId s3[] = {deflate_elsewhere, hot, main_frame, start_there};
  prof.add_sample(s1, a, 278);
  prof.add_sample(s2, b, 3);
  prof.add_sample(s3, c, 5);
  TempDir dir;
  const std::string file = dir.file("p.pb.gz");
  ASSERT_TRUE(exporter::write_pprof_file(prof, file).ok());
  auto raw = go_pprof_raw(file, dir);
  ASSERT_TRUE(raw.ok()) << raw.error().message;
  auto pprof = exporter::read_pprof_file(file);
  ASSERT_TRUE(pprof.ok()) << pprof.error().message;

  auto same = same_samples_as_go(*raw, *pprof);
  EXPECT_TRUE(same.ok()) << same.error().message << "\n" << *raw;
  // A count go read differently.
  EXPECT_FALSE(same_samples_as_go(replace_once(*raw, "        278 ", "        277 "), *pprof).ok());
  // A Python frame go named differently, or at another line.
  EXPECT_FALSE(
      same_samples_as_go(replace_once(*raw, " hot app.py:7 ", " cold app.py:7 "), *pprof).ok());
  EXPECT_FALSE(
      same_samples_as_go(replace_once(*raw, " hot app.py:7 ", " hot app.py:8 "), *pprof).ok());
  // A native frame at another place.
  EXPECT_FALSE(same_samples_as_go(replace_once(*raw, ": 0x1234 ", ": 0x1235 "), *pprof).ok());
  // A sample go did not see: its line and its labels gone.
  const std::string no_second = replace_once(*raw, "pid:[43]", "pid:[45]");
  EXPECT_FALSE(same_samples_as_go(no_second, *pprof).ok());
}

}  // namespace
}  // namespace krait::test
