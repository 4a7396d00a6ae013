// Offset table files (python/offsets/offset_table.h): parse_offset_table
// over the text of an offsets/tables file (the --offsets FILE a user
// passes), then build_layout over what it accepted.
//
// Input: the file's text.
// Checks, besides memory safety: parse_offset_table(format_offset_table(t))
// gives t back, as the header promises.
#include "fuzz_input.h"
#include "python/layout.h"
#include "python/offsets/offset_table.h"

using namespace krait;
using namespace krait::python;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  auto table = parse_offset_table(in.rest_text());
  if (!table)
    return 0;
  auto again = parse_offset_table(format_offset_table(*table));
  KRAIT_FUZZ_CHECK(again.ok());
  KRAIT_FUZZ_CHECK(*again == *table);
  (void)build_layout(*table, table->version);
  return 0;
}
