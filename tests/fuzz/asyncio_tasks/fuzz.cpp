// Reading asyncio tasks out of a process's memory (python/asyncio_tasks.h):
// the .AsyncioDebug section, the task lists, names, sets of awaiters and
// coroutine chains are all bytes the process chose.
//
// Input (front to back, FuzzInput's rules: values zero once it runs out):
//   u8  flags        bit 0: version 3.15, else 3.14; bit 1: the section is
//                    sid's own (the fields below are ignored), else the bytes
//   104 bytes        the section: 13 u64 offsets (decode_asyncio_debug)
//   u64 code_type    PyCode_Type's address
//   u64 tstate       the thread state to read the tasks of
//   u64 interp       the interpreter whose own list is read too
//   u8  count        regions (at most 64), each:
//     u64 address, u32 size, size bytes   (later regions win where they overlap)
// Runs read_thread_tasks and read_interpreter_tasks over a proc::FakeMemory
// of the regions, with a read budget and small limits, so a cycle or a huge
// count shows as a hang or an allocation past the limits.
#include <cstring>

#include "fuzz_input.h"
#include "proc/memory.h"
#include "python/asyncio_tasks.h"
#include "support/python_test_layout.h"

using namespace krait;
using namespace krait::python;

namespace {

constexpr size_t kMaxRegions = 64;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const auto flags = in.take<uint8_t>();
  const PyVersion version = (flags & 1) ? PyVersion{3, 15, 2} : PyVersion{3, 14, 10};
  std::vector<uint8_t> section(kAsyncioDebugBytes);
  {
    const auto raw = in.take_bytes(kAsyncioDebugBytes);
    std::memcpy(section.data(), raw.data(), raw.size());
  }
  if (flags & 2) {
    const auto& sid = (flags & 1) ? kAsyncioSection315 : kAsyncioSection314;
    std::memcpy(section.data(), sid, sizeof sid);
  }
  const auto code_type = in.take<uint64_t>();
  const auto tstate = in.take<uint64_t>();
  const auto interp = in.take<uint64_t>();
  proc::FakeMemory memory;
  const size_t regions = std::min<size_t>(in.take<uint8_t>(), kMaxRegions);
  for (size_t i = 0; i < regions && !in.empty(); ++i) {
    const auto address = in.take<uint64_t>();
    const auto bytes = in.take_bytes(in.take<uint32_t>());
    memory.add(address, {bytes.begin(), bytes.end()});
  }

  auto debug = decode_asyncio_debug(section);
  if (!debug)
    return 0;
  auto asyncio = build_asyncio_layout(*debug, asyncio_test_table(version), version);
  if (!asyncio)
    return 0;
  const PythonLayout layout = frame_object_test_layout();
  const TaskLimits limits{.max_tasks = 64, .max_depth = 32, .max_awaiters = 64};
  BudgetedReader reader(memory, 4096);
  (void)read_thread_tasks(reader, layout, *asyncio, code_type, tstate, limits);
  BudgetedReader interp_reader(memory, 4096);
  (void)read_interpreter_tasks(interp_reader, layout, *asyncio, code_type, interp, limits);
  return 0;
}
