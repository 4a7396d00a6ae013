// Reading Python code objects out of a process's memory (python/
// code_reader.h, method_class.h, attach.h validate_layout): every byte of
// that memory is chosen by the process, and so is a 3.13+ process's
// _Py_DebugOffsets, which decides the layout the reads use.
//
// Input: see fuzz_memory.h. Seeds are recorded from live interpreters of
// every supported version by record_seed (make_seeds.py code_reader): the
// exact regions krait's own reads touched.
// Runs, over a proc::FakeMemory of the regions: read_code_object (and the
// line at `instr`), code_info_from_capture on the event,
// lines_from_captured_table on the region at the event's linetable_addr (what
// the sampler sends whole when the event holds a table only in part, cut at
// KRAIT_CAPTURE_LINETABLE_MAX), method_class_name (before 3.11) and
// validate_layout.
#include <unistd.h>

#include <cstring>

#include "fuzz_input.h"
#include "fuzz_memory.h"
#include "krait/abi.h"
#include "proc/memory.h"
#include "python/attach.h"
#include "python/code_reader.h"
#include "python/layout.h"
#include "python/method_class.h"
#include "python/offsets/debug_offsets.h"
#include "python/offsets/offset_table.h"

using namespace krait;
using namespace krait::python;

namespace {

template <typename T>
T field(const std::vector<uint8_t>& head, uint32_t offset) {
  T v{};
  if (offset != KRAIT_OFFSET_NONE && offset + sizeof(T) <= head.size())
    std::memcpy(&v, head.data() + offset, sizeof v);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  (void)builtin_offset_tables();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const auto flags = in.take<uint8_t>();
  const auto table_index = in.take<uint8_t>();
  const auto debug_offsets = in.take_bytes(in.take<uint16_t>());
  const auto code_type = in.take<uint64_t>();
  const auto code = in.take<uint64_t>();
  auto token = in.take<uint32_t>();
  const auto instr = in.take<uint32_t>();
  const auto frame = in.take<uint64_t>();
  const auto interp_head = in.take<uint64_t>();
  krait_code_event event{};
  {
    const auto raw = in.take_bytes(in.take<uint16_t>());
    std::memcpy(&event, raw.data(), std::min(raw.size(), sizeof event));
  }
  proc::FakeMemory memory;
  std::vector<uint8_t> whole_table;
  const size_t regions = std::min<size_t>(in.take<uint8_t>(), fuzz::kMaxRegions);
  for (size_t i = 0; i < regions && !in.empty(); ++i) {
    const auto address = in.take<uint64_t>();
    const auto bytes = in.take_bytes(in.take<uint32_t>());
    if (address == event.linetable_addr && whole_table.empty())
      whole_table.assign(
          bytes.begin(),
          bytes.begin() + std::min<size_t>(bytes.size(), KRAIT_CAPTURE_LINETABLE_MAX));
    memory.add(address, {bytes.begin(), bytes.end()});
  }

  // The layout, as attaching would build it.
  std::optional<OffsetTable> decoded;
  const OffsetTable* table = nullptr;
  if (flags & fuzz::kCodeFlagDebugOffsets) {
    auto t = decode_debug_offsets(debug_offsets);
    if (!t)
      return 0;
    decoded = std::move(*t);
    table = &*decoded;
  } else {
    const auto& tables = builtin_offset_tables();
    if (tables.empty())
      return 0;
    table = &tables[table_index % tables.size()];
  }
  auto layout = build_layout(*table, table->version);
  if (!layout)
    return 0;

  if (flags & fuzz::kCodeFlagComputeToken) {
    const krait_py_layout& b = layout->bpf;
    if (auto head = memory.read_bytes(code, b.code_read_size))
      token = krait_code_token(
          field<uint64_t>(*head, b.code_filename), field<uint64_t>(*head, b.code_name),
          field<uint64_t>(*head, b.code_linetable), field<uint32_t>(*head, b.code_firstlineno));
  }

  volatile size_t sink = 0;
  if (auto info = read_code_object(memory, *layout, code_type, code, token)) {
    sink = sink + info->name.size() + info->filename.size();
    (void)info->line_at(*layout, instr);
  }
  if (auto captured = code_info_from_capture(*layout, event)) {
    sink = sink + captured->info.name.size() + captured->info.filename.size();
    (void)captured->info.line_at(*layout, instr);
    uint32_t upto = 0;
    CodeInfo whole = captured->info;
    whole.lines = lines_from_captured_table(*layout, whole_table, whole.firstlineno, upto);
    // Sorted ranges, and an answer below `upto` only where a range has one.
    for (size_t i = 1; i < whole.lines.size(); ++i)
      KRAIT_FUZZ_CHECK(whole.lines[i - 1].end <= whole.lines[i].start);
    (void)whole.line_at(*layout, instr);
  }
  if (layout->method_class.enabled) {
    if (auto name = method_class_name(memory, *layout, frame, code))
      sink = sink + name->size();
  }
  (void)validate_layout(memory, getpid(), *layout, interp_head, code_type);
  return 0;
}
