// Layouts the frame-walk and asyncio tests and the asyncio_tasks fuzzer
// build their fixture memory with: a frame-object model (<= 3.10 style:
// back, code, lasti, owner), the generic table the asyncio layout takes its
// object offsets from, and the .AsyncioDebug sections of sid's 3.14 and
// 3.15.
#pragma once

#include <cstring>

#include "python/layout.h"
#include "python/offsets/offset_table.h"

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

// The sections of sid's python3.14 _asyncio module and python3.15 binary.
inline constexpr uint64_t kAsyncioSection314[13] = {168,    136,   96,  108, 109, 128, 152,
                                                    225864, 10880, 936, 864, 872, 880};
inline constexpr uint64_t kAsyncioSection315[13] = {168,    136,   96,   108,  109,  128, 152,
                                                    226240, 10856, 1104, 1024, 1032, 1048};

// The object offsets an asyncio layout needs besides the section's.
inline OffsetTable asyncio_test_table(PyVersion version) {
  OffsetTable t;
  t.version = version;
  t.fields = {{"PyObject.ob_type", 8},           {"sizeof(PyObject)", 16},
              {"PyTypeObject.tp_name", 24},      {"PyTypeObject.tp_flags", 168},
              {"PyGenObject.gi_iframe", 64},     {"PyGenObject.gi_frame_state", 48},
              {"_PyInterpreterFrame.owner", 20}, {"_PyInterpreterFrame.stackpointer", 24},
              {"PySetObject.used", 24},          {"PySetObject.mask", 32},
              {"PySetObject.table", 40},         {"PyLongObject.lv_tag", 16},
              {"PyLongObject.ob_digit", 24},     {"llist_node.next", 0}};
  return t;
}

}  // namespace krait::python
