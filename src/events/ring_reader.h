// Reads the sampler's ring buffer and hands each record, checked and typed,
// to an EventHandler on the calling thread.
//
// Records are validated against their size before a handler sees them (a
// sample's frame count must fit the record); malformed ones are counted,
// never dispatched. The views passed to handlers point into the ring buffer
// and are valid only during the call.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "krait/abi.h"
#include "util/result.h"

struct ring_buffer;

namespace krait::events {

struct SampleView {
  const krait_sample& sample;              // fields up to `frames` are valid
  std::span<const krait_py_frame> frames;  // leaf first
  std::span<const uint64_t> kernel_ips;    // leaf first (mixed mode)
  std::span<const uint8_t> user_stack;     // see krait_sample (mixed mode)
};

class EventHandler {
 public:
  virtual ~EventHandler() = default;
  virtual void on_sample(const SampleView& sample) = 0;
  virtual void on_exec(const krait_proc_event& event) = 0;
  virtual void on_exit(const krait_proc_event& event) = 0;
  virtual void on_unknown_process(const krait_proc_event& event) = 0;
  virtual void on_code_capture(const krait_code_event& event) = 0;
  // The whole line table of a code object whose code event held it only in
  // part; `bytes` (the table object from its start) are inside the record.
  // Handlers that do not name Python frames ignore it.
  virtual void on_linetable_capture(const krait_linetable_event& /*event*/,
                                    std::span<const uint8_t> /*bytes*/) {}
  // Off-CPU and wall modes only; handlers that never run in them ignore it.
  virtual void on_block_end(const krait_block_end& /*event*/) {}
};

// Checks one ring buffer record against its size and, when it is well
// formed, hands it to `handler`; false (nothing dispatched) when it is not.
// RingReader calls it for every record; exposed so that tests and the
// fuzzing harness reach the validation without a BPF ring buffer. `data`
// must be 8-byte aligned, as ring buffer records are.
bool dispatch_record(const void* data, size_t size, EventHandler& handler);

class RingReader {
 public:
  static Result<std::unique_ptr<RingReader>> create(int events_map_fd, EventHandler& handler);
  // A reader without a ring buffer, for tests: records reach it through
  // handle_record() only (epoll_fd() and consume() must not be called).
  static std::unique_ptr<RingReader> without_ring(EventHandler& handler);
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // An fd that becomes readable when records are waiting (for epoll).
  int epoll_fd() const;
  // Dispatches every record available now; returns how many.
  Result<uint64_t> consume();
  uint64_t malformed() const { return malformed_; }
  // What the ring buffer's callback does with each record: dispatch_record,
  // and a refused record counted in malformed().
  void handle_record(const void* data, size_t size);

 private:
  explicit RingReader(EventHandler& handler) : handler_(handler) {}
  static int on_record(void* ctx, void* data, size_t size);

  EventHandler& handler_;
  ring_buffer* ring_ = nullptr;
  uint64_t malformed_ = 0;
};

}  // namespace krait::events
