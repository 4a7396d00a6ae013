// PythonLayout: everything krait needs to read one interpreter build's
// structures, derived from an OffsetTable (built-in table, user table, or
// _Py_DebugOffsets) and the version.
//
// The `bpf` part goes into the process's krait_proc_info for the sampler;
// the rest is what user space needs to symbolize code objects (strings, line
// tables). build_layout() is the only place that knows which frame model a
// version uses; every check that keeps the sampler's reads in bounds happens
// here, so the BPF side can trust the offsets.
#pragma once

#include <cstdint>

#include "krait/abi.h"
#include "python/line_table.h"
#include "python/offsets/offset_table.h"
#include "python/offsets/version.h"
#include "util/result.h"

namespace krait::python {

struct StringLayout {
  bool py2_bytes = false;    // 2.7: names are PyStringObject (bytes)
  uint16_t var_size = 16;    // PyVarObject.ob_size
  uint16_t bytes_data = 32;  // PyBytesObject.ob_sval (PyStringObject.ob_sval on 2.7)
  // PEP 393 unicode (3.3+)
  uint16_t unicode_length = 16;
  uint16_t unicode_state = 32;
  uint16_t ascii_size = 48;    // data of a compact ASCII string follows this
  uint16_t compact_size = 72;  // data of a compact non-ASCII string follows this
  uint8_t kind_bit = 2, kind_bits = 3, compact_bit = 5, ascii_bit = 6;
};

// What naming a method's class takes before 3.11 (no co_qualname): the
// frame's first local, its type's MRO and each class's dict. Read in user
// space, once per code object.
struct MethodClassLayout {
  bool enabled = false;
  uint16_t frame_localsplus = KRAIT_OFFSET_NONE;
  uint16_t type_name = KRAIT_OFFSET_NONE;  // PyTypeObject.tp_name (char*)
  uint16_t type_mro = KRAIT_OFFSET_NONE;
  uint16_t type_dict = KRAIT_OFFSET_NONE;
  bool py2_dict = false;  // 2.7: ma_mask + ma_table; 3.x: ma_keys -> PyDictKeysObject
  uint16_t dict_keys = KRAIT_OFFSET_NONE;
  uint16_t dict_mask = KRAIT_OFFSET_NONE;
  uint16_t dict_table = KRAIT_OFFSET_NONE;
  uint16_t keys_size = KRAIT_OFFSET_NONE;
  uint16_t keys_nentries = KRAIT_OFFSET_NONE;
  uint16_t keys_indices = KRAIT_OFFSET_NONE;
  uint16_t entry_size = 0;
  uint16_t entry_key = KRAIT_OFFSET_NONE;
  uint16_t entry_value = KRAIT_OFFSET_NONE;
  uint16_t func_code = KRAIT_OFFSET_NONE;
  uint16_t classmethod_callable = KRAIT_OFFSET_NONE;
};

struct PythonLayout {
  PyVersion version;
  krait_py_layout bpf{};
  StringLayout strings;
  LineTableFormat line_format = LineTableFormat::kLocations311;
  // Bytes per unit of the sampled instruction position (3.10 counts code
  // units in f_lasti; everything else is in bytes).
  uint32_t instr_scale = 1;
  // <= 3.10: each frame is run by its own C call of the eval loop.
  bool every_frame_is_entry = false;
  // PyCodeObject fields beyond what the sampler reads.
  uint16_t code_argcount = KRAIT_OFFSET_NONE;
  uint16_t code_varnames = KRAIT_OFFSET_NONE;  // co_varnames / co_localsplusnames
  uint16_t tuple_items = 24;                   // PyTupleObject.ob_item
  MethodClassLayout method_class;              // before 3.11
  // Thread and interpreter fields the validator reads.
  uint16_t tstate_interp = KRAIT_OFFSET_NONE;
  uint16_t tstate_native_thread_id = KRAIT_OFFSET_NONE;
  uint16_t runtime_interp_head = KRAIT_OFFSET_NONE;  // _PyRuntimeState.interpreters.head (3.7+)
  // 3.7-3.11, bpf.gil_mode KRAIT_GIL_CURRENT_PTR: the current thread state in
  // _PyRuntimeState (2.7/3.6 keep it in the _PyThreadState_Current symbol).
  uint16_t runtime_tstate_current = KRAIT_OFFSET_NONE;
  // 3.7-3.11: _PyRuntimeState.ceval.gil.last_holder, which finds the GIL's
  // condition variables and mutexes (krait_proc_info.gil_addr).
  uint16_t runtime_gil_holder = KRAIT_OFFSET_NONE;
};

// struct _gil_runtime_state (3.2+): interval, last_holder, locked,
// switch_number, then the condition variables and mutexes a waiting thread
// sleeps on (two of each with FORCE_SWITCHING, every Linux build). Its
// start is last_holder's offset less 8.
inline constexpr uint32_t kGilStateBytes = 8 + 8 + 8 + 8 + 2 * (48 + 40);
inline constexpr uint32_t kGilHolderOffset = 8;

// Fails with a message naming the missing field when the table lacks one the
// version needs, or when an offset would not fit the sampler's read limits.
Result<PythonLayout> build_layout(const OffsetTable& table, PyVersion version);

}  // namespace krait::python
