// events::dispatch_record and RingReader's handling of each record: which
// ring buffer records reach which handler, the views a sample's handler
// gets, and the count of refused records, against records laid out by hand
// from include/krait/abi.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "events/ring_reader.h"

namespace krait::events {
namespace {

struct Seen {
  int samples = 0, execs = 0, exits = 0, unknown = 0, codes = 0, block_ends = 0, linetables = 0;
  uint64_t block_start_ns = 0;
  std::vector<uint32_t> pids;  // hdr.pid of every record dispatched, in order
  std::vector<krait_py_frame> frames;
  std::vector<uint64_t> kernel_ips;
  std::vector<uint8_t> user_stack;
  std::vector<uint8_t> linetable;
};

class Recorder final : public EventHandler {
 public:
  void on_sample(const SampleView& s) override {
    ++seen.samples;
    seen.pids.push_back(s.sample.hdr.pid);
    seen.frames.assign(s.frames.begin(), s.frames.end());
    seen.kernel_ips.assign(s.kernel_ips.begin(), s.kernel_ips.end());
    seen.user_stack.assign(s.user_stack.begin(), s.user_stack.end());
  }
  void on_exec(const krait_proc_event& e) override {
    ++seen.execs;
    seen.pids.push_back(e.hdr.pid);
  }
  void on_exit(const krait_proc_event& e) override {
    ++seen.exits;
    seen.pids.push_back(e.hdr.pid);
  }
  void on_unknown_process(const krait_proc_event& e) override {
    ++seen.unknown;
    seen.pids.push_back(e.hdr.pid);
  }
  void on_code_capture(const krait_code_event& e) override {
    ++seen.codes;
    seen.pids.push_back(e.hdr.pid);
  }
  void on_linetable_capture(const krait_linetable_event& e,
                            std::span<const uint8_t> bytes) override {
    ++seen.linetables;
    seen.pids.push_back(e.hdr.pid);
    seen.linetable.assign(bytes.begin(), bytes.end());
  }
  void on_block_end(const krait_block_end& e) override {
    ++seen.block_ends;
    seen.block_start_ns = e.start_ns;
    seen.pids.push_back(e.hdr.pid);
  }
  int total() const { return seen.samples + seen.execs + seen.exits + seen.unknown + seen.codes; }
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

// A line table record is variable-size: its handler sees exactly the bytes
// its size names, and only when the record holds them.
TEST(DispatchRecord, LineTableRecordsCarryTheBytesTheirSizeNames) {
  std::vector<uint64_t> words(sizeof(krait_linetable_event) / 8 + 1, 0);
  auto* t = reinterpret_cast<krait_linetable_event*>(words.data());
  t->hdr.type = KRAIT_EVENT_LINETABLE;
  t->hdr.pid = 77;
  t->size = 700;
  for (uint32_t i = 0; i < t->size; ++i)
    t->bytes[i] = static_cast<uint8_t>(i * 7);
  Recorder r;
  EXPECT_TRUE(dispatch_record(t, KRAIT_LINETABLE_EVENT_HEAD + 700, r));
  ASSERT_EQ(r.seen.linetables, 1);
  ASSERT_EQ(r.seen.linetable.size(), 700u);
  EXPECT_EQ(r.seen.linetable[699], static_cast<uint8_t>(699 * 7));
  // Shorter than its size says, a size past the cap, a bare header.
  EXPECT_FALSE(dispatch_record(t, KRAIT_LINETABLE_EVENT_HEAD + 699, r));
  t->size = KRAIT_CAPTURE_LINETABLE_MAX + 1;
  EXPECT_FALSE(dispatch_record(t, sizeof(krait_linetable_event) + 8, r));
  EXPECT_FALSE(dispatch_record(t, KRAIT_LINETABLE_EVENT_HEAD - 1, r));
  EXPECT_EQ(r.seen.linetables, 1);
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
  krait_block_end end{};
  end.hdr.type = KRAIT_EVENT_BLOCK_END;
  end.start_ns = 12345;
  EXPECT_TRUE(dispatch_record(&end, sizeof end, r));
  EXPECT_EQ(r.seen.execs, 1);
  EXPECT_EQ(r.seen.exits, 1);
  EXPECT_EQ(r.seen.unknown, 1);
  EXPECT_EQ(r.seen.codes, 1);
  EXPECT_EQ(r.seen.block_ends, 1);
  EXPECT_EQ(r.seen.block_start_ns, 12345u);
  // One byte short of a whole record: refused.
  EXPECT_FALSE(dispatch_record(&end, sizeof end - 1, r));
  EXPECT_EQ(r.seen.block_ends, 1);
}

// RingReader::handle_record is what the ring buffer's callback runs: each
// kind of record reaches its own handler with its own contents, once.
TEST(RingReaderRecords, EachKindReachesItsHandler) {
  Recorder r;
  auto reader = RingReader::without_ring(r);
  auto sample = sample_record(2, 1, 3);
  reinterpret_cast<krait_sample*>(sample.data())->hdr.pid = 10;
  reader->handle_record(sample.data(), KRAIT_SAMPLE_SIZE(2, 1, 3));
  EXPECT_EQ(r.seen.samples, 1);
  EXPECT_EQ(r.total(), 1);

  krait_proc_event exec{};
  exec.hdr.type = KRAIT_EVENT_EXEC;
  exec.hdr.pid = 11;
  reader->handle_record(&exec, sizeof exec);
  EXPECT_EQ(r.seen.execs, 1);
  EXPECT_EQ(r.total(), 2);

  krait_proc_event exit{};
  exit.hdr.type = KRAIT_EVENT_EXIT;
  exit.hdr.pid = 12;
  reader->handle_record(&exit, sizeof exit);
  EXPECT_EQ(r.seen.exits, 1);
  EXPECT_EQ(r.total(), 3);

  krait_proc_event unknown{};
  unknown.hdr.type = KRAIT_EVENT_PROC_UNKNOWN;
  unknown.hdr.pid = 13;
  reader->handle_record(&unknown, sizeof unknown);
  EXPECT_EQ(r.seen.unknown, 1);
  EXPECT_EQ(r.total(), 4);

  krait_code_event code{};
  code.hdr.type = KRAIT_EVENT_CODE;
  code.hdr.pid = 14;
  reader->handle_record(&code, sizeof code);
  EXPECT_EQ(r.seen.codes, 1);
  EXPECT_EQ(r.total(), 5);

  EXPECT_EQ(r.seen.pids, (std::vector<uint32_t>{10, 11, 12, 13, 14}));
  ASSERT_EQ(r.seen.frames.size(), 2u);
  EXPECT_EQ(r.seen.frames[1].code, 0x1001u);
  EXPECT_EQ(r.seen.kernel_ips, (std::vector<uint64_t>{0xffffffff81000000ull}));
  EXPECT_EQ(r.seen.user_stack, (std::vector<uint8_t>{0, 1, 2}));
  EXPECT_EQ(reader->malformed(), 0u);
}

// Truncated records (shorter than their kind or their counts), records
// whose counts exceed the caps, and records of an unknown kind are counted,
// one each, and reach no handler; the reader goes on with the next record.
TEST(RingReaderRecords, RefusedRecordsAreCountedNotDispatched) {
  Recorder r;
  auto reader = RingReader::without_ring(r);
  uint64_t expected = 0;
  auto refused = [&](const void* data, size_t size, const char* what) {
    reader->handle_record(data, size);
    ++expected;
    EXPECT_EQ(reader->malformed(), expected) << what;
    EXPECT_EQ(r.total(), 0) << what;
  };

  krait_event_header header{};
  header.type = KRAIT_EVENT_EXEC;
  refused(&header, sizeof header - 1, "shorter than a header");

  auto sample = sample_record(3, 2, 5);
  refused(sample.data(), KRAIT_SAMPLE_SIZE(3, 2, 5) - 1, "sample short of its stack bytes");
  refused(sample.data(), KRAIT_SAMPLE_SIZE(0, 0, 0) - 1, "sample short of its fixed part");
  {
    auto over = sample_record(3, 2, 5);
    reinterpret_cast<krait_sample*>(over.data())->py_nframes = KRAIT_PY_FRAMES_CAP + 1;
    refused(over.data(), over.size() * 8, "Python frames over the cap");
  }
  {
    auto over = sample_record(3, 2, 5);
    reinterpret_cast<krait_sample*>(over.data())->kernel_nframes = KRAIT_KERNEL_FRAMES_CAP + 1;
    refused(over.data(), over.size() * 8, "kernel frames over the cap");
  }
  {
    auto over = sample_record(3, 2, 5);
    reinterpret_cast<krait_sample*>(over.data())->user_stack_size = KRAIT_USER_STACK_CAP + 1;
    refused(over.data(), over.size() * 8, "stack copy over the cap");
  }
  for (uint32_t type : {KRAIT_EVENT_EXEC, KRAIT_EVENT_EXIT, KRAIT_EVENT_PROC_UNKNOWN}) {
    krait_proc_event event{};
    event.hdr.type = type;
    refused(&event, sizeof event - 1, "process event one byte short");
  }
  krait_code_event code{};
  code.hdr.type = KRAIT_EVENT_CODE;
  refused(&code, sizeof code - 1, "code capture one byte short");
  krait_proc_event unknown_kind{};
  unknown_kind.hdr.type = 99;
  refused(&unknown_kind, sizeof unknown_kind, "unknown kind");
  unknown_kind.hdr.type = KRAIT_EVENT_SAMPLE + 1000;
  refused(&unknown_kind, sizeof unknown_kind, "unknown kind");

  // A good record after all that is dispatched, and not counted.
  reader->handle_record(sample.data(), KRAIT_SAMPLE_SIZE(3, 2, 5));
  EXPECT_EQ(r.seen.samples, 1);
  EXPECT_EQ(reader->malformed(), expected);
}

}  // namespace
}  // namespace krait::events
