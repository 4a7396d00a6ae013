// The frame-object layout (<= 3.10 style: back, code, lasti, owner) the
// frame-walk and asyncio tests build their fixture memory with.
#pragma once

#include <cstring>

#include "python/layout.h"

namespace krait::python {

inline PythonLayout frame_object_test_layout() {
  PythonLayout l;
  krait_py_layout& b = l.bpf;
  std::memset(&b, 0xff, sizeof b);
  b.tstate_frame = 8;
  b.cframe_frame = KRAIT_OFFSET_NONE;
  b.frame_back = 0;
  b.frame_code = 8;
  b.frame_instr = 16;
  b.frame_owner = 20;
  b.frame_is_entry = KRAIT_OFFSET_NONE;
  b.frame_read_size = 24;
  b.code_type = 8;
  b.code_filename = 16;
  b.code_name = 24;
  b.code_linetable = 32;
  b.code_firstlineno = 40;
  b.code_adaptive = KRAIT_OFFSET_NONE;
  b.code_read_size = 48;
  b.instr_kind = KRAIT_INSTR_LASTI;
  b.frame_owner_shim = KRAIT_OWNER_NONE;
  b.code_tag_mask = 0;
  b.skip_non_code = 0;
  return l;
}

}  // namespace krait::python
