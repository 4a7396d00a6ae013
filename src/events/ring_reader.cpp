#include "events/ring_reader.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

namespace krait::events {

Result<std::unique_ptr<RingReader>> RingReader::create(int events_map_fd, EventHandler& handler) {
  std::unique_ptr<RingReader> reader(new RingReader(handler));  // private constructor
  reader->ring_ = ring_buffer__new(events_map_fd, &RingReader::on_record, reader.get(), nullptr);
  if (!reader->ring_)
    return make_error("cannot open the sample ring buffer: {}", std::strerror(errno));
  return reader;
}

RingReader::~RingReader() {
  ring_buffer__free(ring_);
}

int RingReader::epoll_fd() const {
  return ring_buffer__epoll_fd(ring_);
}

Result<uint64_t> RingReader::consume() {
  int n = ring_buffer__consume(ring_);
  if (n < 0)
    return make_error("reading the sample ring buffer: {}", std::strerror(-n));
  return static_cast<uint64_t>(n);
}

std::unique_ptr<RingReader> RingReader::without_ring(EventHandler& handler) {
  return std::unique_ptr<RingReader>(new RingReader(handler));  // private constructor
}

void RingReader::handle_record(const void* data, size_t size) {
  if (!dispatch_record(data, size, handler_))
    ++malformed_;
}

int RingReader::on_record(void* ctx, void* data, size_t size) {
  static_cast<RingReader*>(ctx)->handle_record(data, size);
  return 0;
}

bool dispatch_record(const void* data, size_t size, EventHandler& handler) {
  if (size < sizeof(krait_event_header))
    return false;
  const auto* header = static_cast<const krait_event_header*>(data);
  switch (header->type) {
    case KRAIT_EVENT_SAMPLE: {
      if (size < KRAIT_SAMPLE_SIZE(0, 0, 0))
        return false;
      const auto* sample = static_cast<const krait_sample*>(data);
      const size_t n = sample->py_nframes, k = sample->kernel_nframes, m = sample->user_stack_size;
      if (n > KRAIT_PY_FRAMES_CAP || k > KRAIT_KERNEL_FRAMES_CAP || m > KRAIT_USER_STACK_CAP ||
          size < KRAIT_SAMPLE_SIZE(n, k, m))
        return false;
      // The kernel frames and the stack copy follow the last Python frame.
      const auto* tail = reinterpret_cast<const uint8_t*>(sample->frames + n);
      handler.on_sample(SampleView{*sample,
                                   {sample->frames, n},
                                   {reinterpret_cast<const uint64_t*>(tail), k},
                                   {tail + k * sizeof(uint64_t), m}});
      return true;
    }
    case KRAIT_EVENT_EXEC:
      if (size < sizeof(krait_proc_event))
        return false;
      handler.on_exec(*static_cast<const krait_proc_event*>(data));
      return true;
    case KRAIT_EVENT_EXIT:
      if (size < sizeof(krait_proc_event))
        return false;
      handler.on_exit(*static_cast<const krait_proc_event*>(data));
      return true;
    case KRAIT_EVENT_CODE:
      if (size < sizeof(krait_code_event))
        return false;
      handler.on_code_capture(*static_cast<const krait_code_event*>(data));
      return true;
    case KRAIT_EVENT_LINETABLE: {
      // Variable-size: the fixed part, then `size` bytes of the table.
      if (size < KRAIT_LINETABLE_EVENT_HEAD)
        return false;
      const auto* table = static_cast<const krait_linetable_event*>(data);
      if (table->size > KRAIT_CAPTURE_LINETABLE_MAX ||
          table->size > size - KRAIT_LINETABLE_EVENT_HEAD)
        return false;
      handler.on_linetable_capture(*table, {table->bytes, table->size});
      return true;
    }
    case KRAIT_EVENT_BLOCK_END:
      if (size < sizeof(krait_block_end))
        return false;
      handler.on_block_end(*static_cast<const krait_block_end*>(data));
      return true;
    case KRAIT_EVENT_PROC_UNKNOWN:
      if (size < sizeof(krait_proc_event))
        return false;
      handler.on_unknown_process(*static_cast<const krait_proc_event*>(data));
      return true;
    default:
      return false;
  }
}

}  // namespace krait::events
