// Ring buffer records (events/ring_reader.h dispatch_record): the checks a
// record from the sampler passes before a handler sees it. The records are
// written by our BPF program, but their contents (frame counts, stack copy
// sizes) come from what it read in profiled processes.
//
// Input: one record, as the ring buffer delivers it (8-byte aligned copy of
// exactly the input's size).
// Checks, besides memory safety: every view a handler gets lies inside the
// record, and every record type reaches its handler only when whole.
#include <memory>

#include "events/ring_reader.h"
#include "fuzz_input.h"

using namespace krait;

namespace {

class Checker final : public events::EventHandler {
 public:
  Checker(const uint8_t* begin, size_t size) : begin_(begin), end_(begin + size) {}

  void on_sample(const events::SampleView& s) override {
    inside(&s.sample, sizeof(krait_event_header));
    inside(s.frames.data(), s.frames.size_bytes());
    inside(s.kernel_ips.data(), s.kernel_ips.size_bytes());
    inside(s.user_stack.data(), s.user_stack.size_bytes());
    for (const auto& f : s.frames)
      sum_ += f.code + f.token + f.instr;
    for (uint64_t ip : s.kernel_ips)
      sum_ += ip;
    for (uint8_t b : s.user_stack)
      sum_ += b;
    sum_ += s.sample.py_status + s.sample.native_flags;
  }
  void on_exec(const krait_proc_event& e) override { proc(e); }
  void on_exit(const krait_proc_event& e) override { proc(e); }
  void on_unknown_process(const krait_proc_event& e) override { proc(e); }
  void on_code_capture(const krait_code_event& e) override {
    inside(&e, sizeof e);
    sum_ += e.name[0] + e.file[0] + e.linetable[sizeof e.linetable - 1];
  }
  void on_linetable_capture(const krait_linetable_event& e,
                            std::span<const uint8_t> bytes) override {
    inside(&e, KRAIT_LINETABLE_EVENT_HEAD);
    inside(bytes.data(), bytes.size());
    KRAIT_FUZZ_CHECK(bytes.size() == e.size && bytes.size() <= KRAIT_CAPTURE_LINETABLE_MAX);
    for (uint8_t b : bytes)
      sum_ += b;
  }
  uint64_t sum() const { return sum_; }

 private:
  void proc(const krait_proc_event& e) {
    inside(&e, sizeof e);
    sum_ += e.comm[0] + e.identity.start_ns + e.identity.exec_id;
  }
  void inside(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    if (n == 0)
      return;
    KRAIT_FUZZ_CHECK(b >= begin_ && b <= end_ && n <= static_cast<size_t>(end_ - b));
  }
  const uint8_t* begin_;
  const uint8_t* end_;
  uint64_t sum_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Exactly `size` bytes (so ASan sees a read past the record), aligned as
  // malloc aligns: ring buffer records are 8-byte aligned.
  auto record = std::make_unique<uint8_t[]>(size);
  if (size)
    std::memcpy(record.get(), data, size);
  Checker checker(record.get(), size);
  const bool dispatched = events::dispatch_record(record.get(), size, checker);
  volatile uint64_t sink = checker.sum();
  (void)sink;
  (void)dispatched;
  return 0;
}
