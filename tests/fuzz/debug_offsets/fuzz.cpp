// _Py_DebugOffsets (python/offsets/debug_offsets.h): the first bytes of
// _PyRuntime of a 3.13+ process, which the process itself chose, decoded
// into an offset table and turned into a layout (build_layout) as attaching
// does.
//
// Input: the bytes read from the start of _PyRuntime.
#include "fuzz_input.h"
#include "python/layout.h"
#include "python/offsets/debug_offsets.h"

using namespace krait;
using namespace krait::python;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto table = decode_debug_offsets({data, size});
  if (!table)
    return 0;
  KRAIT_FUZZ_CHECK(table->version.major == 3 && table->version.minor >= 13);
  (void)build_layout(*table, table->version);
  return 0;
}
