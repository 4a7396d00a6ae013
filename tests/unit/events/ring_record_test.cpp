// events::dispatch_record: which ring buffer records reach a handler, and
// the views a sample's handler gets, against records laid out by hand from
// include/krait/abi.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "events/ring_reader.h"

namespace krait::events {
namespace {

struct Seen {
  int samples = 0, execs = 0, exits = 0, unknown = 0, codes = 0;
  std::vector<krait_py_frame> frames;
  std::vector<uint64_t> kernel_ips;
  std::vector<uint8_t> user_stack;
};

class Recorder final : public EventHandler {
 public:
  void on_sample(const SampleView& s) override {
    ++seen.samples;
    seen.frames.assign(s.frames.begin(), s.frames.end());
    seen.kernel_ips.assign(s.kernel_ips.begin(), s.kernel_ips.end());
    seen.user_stack.assign(s.user_stack.begin(), s.user_stack.end());
  }
  void on_exec(const krait_proc_event&) override { ++seen.execs; }
  void on_exit(const krait_proc_event&) override { ++seen.exits; }
  void on_unknown_process(const krait_proc_event&) override { ++seen.unknown; }
  void on_code_capture(const krait_code_event&) override { ++seen.codes; }
  Seen seen;
};

// A sample record of n frames, k kernel addresses and m stack bytes. The
// buffer holds a whole krait_sample at least (the record is written through
// one); the tests hand dispatch_record the record's own size.
std::vector<uint64_t> sample_record(uint32_t n, uint16_t k, uint32_t m) {
  const size_t bytes = std::max<size_t>(KRAIT_SAMPLE_SIZE(n, k, m), sizeof(krait_sample));
  std::vector<uint64_t> words((bytes + 7) / 8, 0);
  auto* s = reinterpret_cast<krait_sample*>(words.data());
  s->hdr.type = KRAIT_EVENT_SAMPLE;
  s->py_nframes = n;
  s->kernel_nframes = k;
  s->user_stack_size = m;
  for (uint32_t i = 0; i < n; ++i)
    s->frames[i] = {0x1000 + i, i, 2 * i};
  auto* kernel = reinterpret_cast<uint64_t*>(s->frames + n);
  for (uint16_t i = 0; i < k; ++i)
    kernel[i] = 0xffffffff81000000ull + i;
  auto* stack = reinterpret_cast<uint8_t*>(kernel + k);
  for (uint32_t i = 0; i < m; ++i)
    stack[i] = static_cast<uint8_t>(i);
  return words;
}

TEST(DispatchRecord, SampleViewsFollowTheCounts) {
  auto record = sample_record(3, 2, 5);
  Recorder r;
  ASSERT_TRUE(dispatch_record(record.data(), KRAIT_SAMPLE_SIZE(3, 2, 5), r));
  EXPECT_EQ(r.seen.samples, 1);
  ASSERT_EQ(r.seen.frames.size(), 3u);
  EXPECT_EQ(r.seen.frames[2].code, 0x1002u);
  EXPECT_EQ(r.seen.kernel_ips,
            (std::vector<uint64_t>{0xffffffff81000000ull, 0xffffffff81000001ull}));
  EXPECT_EQ(r.seen.user_stack, (std::vector<uint8_t>{0, 1, 2, 3, 4}));
}

TEST(DispatchRecord, RecordsShorterThanTheirCountsAreRefused) {
  auto record = sample_record(3, 2, 5);
  Recorder r;
  EXPECT_FALSE(dispatch_record(record.data(), KRAIT_SAMPLE_SIZE(3, 2, 5) - 1, r));
  EXPECT_FALSE(dispatch_record(record.data(), KRAIT_SAMPLE_SIZE(0, 0, 0) - 1, r));
  EXPECT_FALSE(dispatch_record(record.data(), sizeof(krait_event_header) - 1, r));
  // Counts beyond the caps, whatever the size says.
  auto* s = reinterpret_cast<krait_sample*>(record.data());
  s->py_nframes = KRAIT_PY_FRAMES_CAP + 1;
  EXPECT_FALSE(dispatch_record(record.data(), KRAIT_SAMPLE_SIZE(3, 2, 5), r));
  krait_proc_event exec{};
  exec.hdr.type = KRAIT_EVENT_EXEC;
  EXPECT_FALSE(dispatch_record(&exec, sizeof exec - 1, r));
  // Exit and unknown-process records carry the identity too: a bare header
  // is not enough.
  exec.hdr.type = KRAIT_EVENT_EXIT;
  EXPECT_FALSE(dispatch_record(&exec, sizeof exec - 1, r));
  exec.hdr.type = KRAIT_EVENT_PROC_UNKNOWN;
  EXPECT_FALSE(dispatch_record(&exec, sizeof exec - 1, r));
  krait_code_event code{};
  code.hdr.type = KRAIT_EVENT_CODE;
  EXPECT_FALSE(dispatch_record(&code, sizeof code - 1, r));
  krait_event_header unknown_type{};
  unknown_type.type = 99;
  EXPECT_FALSE(dispatch_record(&unknown_type, sizeof unknown_type, r));
  EXPECT_EQ(r.seen.samples + r.seen.execs + r.seen.exits + r.seen.unknown + r.seen.codes, 0);
}

TEST(DispatchRecord, EveryWholeRecordTypeReachesItsHandler) {
  Recorder r;
  krait_proc_event exec{};
  exec.hdr.type = KRAIT_EVENT_EXEC;
  EXPECT_TRUE(dispatch_record(&exec, sizeof exec, r));
  krait_proc_event h{};
  h.hdr.type = KRAIT_EVENT_EXIT;
  EXPECT_TRUE(dispatch_record(&h, sizeof h, r));
  h.hdr.type = KRAIT_EVENT_PROC_UNKNOWN;
  EXPECT_TRUE(dispatch_record(&h, sizeof h, r));
  krait_code_event code{};
  code.hdr.type = KRAIT_EVENT_CODE;
  EXPECT_TRUE(dispatch_record(&code, sizeof code, r));
  EXPECT_EQ(r.seen.execs, 1);
  EXPECT_EQ(r.seen.exits, 1);
  EXPECT_EQ(r.seen.unknown, 1);
  EXPECT_EQ(r.seen.codes, 1);
}

}  // namespace
}  // namespace krait::events
