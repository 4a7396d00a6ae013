// Line tables of every CPython format (python/line_table.h): decoding
// untrusted co_lnotab / co_linetable bytes and looking lines up in them.
//
// Input: u8 format (0 lnotab-unsigned, 1 lnotab-signed, 2 linetable-3.10,
// 3 locations-3.11; taken modulo 4), i32 co_firstlineno, u32 code size in
// bytes, then the table bytes.
// Checks, besides memory safety: the ranges keep decode_line_table's
// promises (non-empty, sorted, contiguous from 0, adjacent lines merged,
// clipped to the code size, at most one range per table byte plus one) and
// line_for_offset answers each range's own line.
#include <algorithm>

#include "fuzz_input.h"
#include "python/line_table.h"

using namespace krait;
using namespace krait::python;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const auto format = static_cast<LineTableFormat>(in.take<uint8_t>() % 4);
  const auto firstlineno = in.take<int32_t>();
  const auto code_size = in.take<uint32_t>();
  const auto table = in.rest();

  auto ranges = decode_line_table(format, table, firstlineno, code_size);
  if (!ranges)
    return 0;
  KRAIT_FUZZ_CHECK(ranges->size() <= table.size() + 2);
  uint32_t expect_start = 0;
  for (size_t i = 0; i < ranges->size(); ++i) {
    const LineRange& r = (*ranges)[i];
    KRAIT_FUZZ_CHECK(r.start == expect_start);
    KRAIT_FUZZ_CHECK(r.start < r.end);
    if (code_size != 0)
      KRAIT_FUZZ_CHECK(r.end <= code_size);
    if (i > 0)
      KRAIT_FUZZ_CHECK((*ranges)[i - 1].line != r.line);
    KRAIT_FUZZ_CHECK(line_for_offset(*ranges, r.start) == r.line);
    KRAIT_FUZZ_CHECK(line_for_offset(*ranges, r.end - 1) == r.line);
    expect_start = r.end;
  }
  // Past the last range, and a sweep over the first offsets.
  KRAIT_FUZZ_CHECK(line_for_offset(*ranges, expect_start) == kNoLine);
  for (uint32_t off = 0; off < 512; off += 2)
    (void)line_for_offset(*ranges, off);
  return 0;
}
