#include "python/layout.h"

#include <algorithm>
#include <initializer_list>

namespace krait::python {
namespace {

// _PyInterpreterFrame.owner of the eval loop's C-stack shim frames:
// FRAME_OWNED_BY_CSTACK in 3.12 and 3.13, FRAME_OWNED_BY_INTERPRETER from
// 3.14 (where CSTACK moved to 4 and then went away). Shims are not frames
// of the program and are left out of stacks.
constexpr uint8_t kFrameOwnedByShim = 3;

class FieldReader {
 public:
  explicit FieldReader(const OffsetTable& table) : table_(table) {}

  uint16_t need(std::string_view name) {
    auto v = table_.get(name);
    if (!v || *v >= KRAIT_OFFSET_NONE) {
      if (missing_.empty())
        missing_ = std::string(name);
      return KRAIT_OFFSET_NONE;
    }
    return static_cast<uint16_t>(*v);
  }
  uint16_t optional(std::string_view name, uint16_t fallback = KRAIT_OFFSET_NONE) {
    auto v = table_.get(name);
    return v && *v < KRAIT_OFFSET_NONE ? static_cast<uint16_t>(*v) : fallback;
  }
  const std::string& missing() const { return missing_; }

 private:
  const OffsetTable& table_;
  std::string missing_;
};

// Bytes to read so that an 8-byte load at each present offset stays inside.
Result<uint16_t> read_size(std::string_view what, uint32_t cap,
                           std::initializer_list<uint16_t> offsets) {
  uint32_t size = 0;
  for (uint16_t off : offsets) {
    if (off == KRAIT_OFFSET_NONE)
      continue;
    if (off > cap - 8)
      return make_error("{} field at offset {} is beyond the sampler's {}-byte read", what, off,
                        cap);
    size = std::max<uint32_t>(size, off + 8u);
  }
  return static_cast<uint16_t>(size);
}

// Offsets may come from the process itself (_Py_DebugOffsets): those that
// user space applies to buffers of its own, and bit positions it shifts by,
// must be plausible, whatever validation against live memory says later.
Result<void> check_plausible(const PythonLayout& out, const OffsetTable& table) {
  // No object header krait reads is anywhere near this large.
  constexpr uint16_t kMaxHeader = 512;
  const StringLayout& s = out.strings;
  const std::pair<const char*, uint16_t> headers[] = {
      {"PyVarObject.ob_size", s.var_size},
      {"bytes data", s.bytes_data},
      {"PyASCIIObject.length", s.unicode_length},
      {"PyASCIIObject.state", s.unicode_state},
      {"sizeof(PyASCIIObject)", s.ascii_size},
      {"sizeof(PyCompactUnicodeObject)", s.compact_size},
      {"PyTupleObject.ob_item", out.tuple_items},
  };
  for (const auto& [name, value] : headers)
    if (value > kMaxHeader)
      return make_error("the offsets for Python {} ({}) are implausible: {} = {}",
                        out.version.str(), table.source, name, value);
  if (s.kind_bit >= 32 || s.compact_bit >= 32 || s.ascii_bit >= 32 || s.kind_bits == 0 ||
      s.kind_bits > 8 || s.kind_bit + s.kind_bits > 32)
    return make_error("the offsets for Python {} ({}) are implausible: PyASCIIObject.state bits",
                      out.version.str(), table.source);
  const MethodClassLayout& m = out.method_class;
  if (m.enabled && (m.entry_size > 64 || m.entry_key > m.entry_size - 8 ||
                    m.entry_value > m.entry_size - 8 || m.entry_size < 16))
    return make_error("the offsets for Python {} ({}) are implausible: sizeof(PyDictKeyEntry) {}",
                      out.version.str(), table.source, m.entry_size);
  return {};
}

// The interpreter and thread state fields, and every optional field of the
// sampler's layout set to "none" until a version-specific reader sets it.
void read_thread_fields(FieldReader& f, krait_py_layout& b) {
  b.interp_next = f.need("PyInterpreterState.next");
  b.interp_tstate_head = f.need("PyInterpreterState.tstate_head");
  b.tstate_next = f.need("PyThreadState.next");
  b.tstate_thread_id = f.need("PyThreadState.thread_id");
  b.cframe_frame = KRAIT_OFFSET_NONE;
  b.frame_owner = KRAIT_OFFSET_NONE;
  b.frame_is_entry = KRAIT_OFFSET_NONE;
  b.frame_owner_shim = KRAIT_OWNER_NONE;
  b.code_adaptive = KRAIT_OFFSET_NONE;
  b.code_tag_mask = 0;
  b.skip_non_code = 0;
  b.gil_mode = KRAIT_GIL_UNKNOWN;
  b.interp_gil_locked = KRAIT_OFFSET_NONE;
  b.interp_gil_holder = KRAIT_OFFSET_NONE;
  b.tstate_native_tid = 0;
}

// The frame chain: frame objects before 3.11, interpreter frames after.
void read_frame_fields(FieldReader& f, PyVersion v, bool frame_objects, krait_py_layout& b) {
  if (frame_objects) {
    b.tstate_frame = f.need("PyThreadState.frame");
    b.frame_back = f.need("PyFrameObject.f_back");
    b.frame_code = f.need("PyFrameObject.f_code");
    b.frame_instr = f.need("PyFrameObject.f_lasti");
    b.instr_kind = KRAIT_INSTR_LASTI;
    return;
  }
  if (v < PyVersion{3, 13, 0}) {
    b.tstate_frame = f.need("PyThreadState.cframe");
    b.cframe_frame = f.need("_PyCFrame.current_frame");
  } else {
    b.tstate_frame = f.need("PyThreadState.current_frame");
    // The entry shim's executable is None rather than a code object.
    b.skip_non_code = 1;
  }
  b.frame_back = f.need("_PyInterpreterFrame.previous");
  b.frame_code = f.need("_PyInterpreterFrame.executable");
  b.frame_instr = f.need("_PyInterpreterFrame.instr_ptr");
  b.instr_kind = KRAIT_INSTR_POINTER;
  b.code_adaptive = f.need("PyCodeObject.co_code_adaptive");
  if (v.minor == 11) {
    b.frame_is_entry = f.need("_PyInterpreterFrame.is_entry");
  } else {
    b.frame_owner = f.need("_PyInterpreterFrame.owner");
    b.frame_owner_shim = kFrameOwnedByShim;
  }
  // 3.14 made f_executable a _PyStackRef whose low bits are tags. Objects
  // are 8-byte aligned, so clearing them is a no-op where there are none:
  // every 3.13+ version is read the same way, and a new minor version
  // needs only its _Py_DebugOffsets layout (offsets/debug_offsets/).
  if (v >= PyVersion{3, 13, 0})
    b.code_tag_mask = 3;
}

void read_code_fields(FieldReader& f, PyVersion v, bool frame_objects, PythonLayout& out) {
  krait_py_layout& b = out.bpf;
  b.code_type = f.optional("PyObject.ob_type", 8);
  b.code_firstlineno = f.need("PyCodeObject.co_firstlineno");
  b.code_filename = f.need("PyCodeObject.co_filename");
  b.code_name = v >= PyVersion{3, 11, 0} ? f.need("PyCodeObject.co_qualname")
                                         : f.need("PyCodeObject.co_name");
  b.code_linetable = v >= PyVersion{3, 10, 0} ? f.need("PyCodeObject.co_linetable")
                                              : f.need("PyCodeObject.co_lnotab");
  out.code_argcount = f.optional("PyCodeObject.co_argcount");
  out.code_varnames = frame_objects ? f.optional("PyCodeObject.co_varnames")
                                    : f.optional("PyCodeObject.co_localsplusnames");
  out.tuple_items = f.optional("PyTupleObject.ob_item", 24);
}

// Before 3.11, the class of a method, found through its first argument.
// Optional: without these fields methods keep their bare names.
void read_method_class(FieldReader& f, bool py2, PythonLayout& out) {
  MethodClassLayout& m = out.method_class;
  m.frame_localsplus = f.optional("PyFrameObject.f_localsplus");
  m.type_name = f.optional("PyTypeObject.tp_name");
  m.type_mro = f.optional("PyTypeObject.tp_mro");
  m.type_dict = f.optional("PyTypeObject.tp_dict");
  m.py2_dict = py2;
  m.dict_keys = f.optional("PyDictObject.ma_keys");
  m.dict_mask = f.optional("PyDictObject.ma_mask");
  m.dict_table = f.optional("PyDictObject.ma_table");
  m.keys_size = f.optional("PyDictKeysObject.dk_size");
  m.keys_nentries = f.optional("PyDictKeysObject.dk_nentries");
  m.keys_indices = f.optional("PyDictKeysObject.dk_indices");
  m.entry_size = f.optional("sizeof(PyDictKeyEntry)", 0);
  m.entry_key = f.optional("PyDictKeyEntry.me_key");
  m.entry_value = f.optional("PyDictKeyEntry.me_value");
  m.func_code = f.optional("PyFunctionObject.func_code");
  m.classmethod_callable = f.optional("classmethod.cm_callable");
  const bool dict_ok =
      py2 ? (m.dict_mask != KRAIT_OFFSET_NONE && m.dict_table != KRAIT_OFFSET_NONE)
          : (m.dict_keys != KRAIT_OFFSET_NONE && m.keys_size != KRAIT_OFFSET_NONE &&
             m.keys_nentries != KRAIT_OFFSET_NONE && m.keys_indices != KRAIT_OFFSET_NONE);
  m.enabled = dict_ok && m.frame_localsplus != KRAIT_OFFSET_NONE &&
              m.type_name != KRAIT_OFFSET_NONE && m.type_mro != KRAIT_OFFSET_NONE &&
              m.type_dict != KRAIT_OFFSET_NONE && m.entry_size != 0 &&
              m.entry_key != KRAIT_OFFSET_NONE && m.entry_value != KRAIT_OFFSET_NONE &&
              m.func_code != KRAIT_OFFSET_NONE && out.code_argcount != KRAIT_OFFSET_NONE &&
              out.code_varnames != KRAIT_OFFSET_NONE;
}

// The interpreter a thread belongs to, the GIL, and the runtime's list of
// interpreters.
void read_runtime_fields(FieldReader& f, PyVersion v, PythonLayout& out) {
  krait_py_layout& b = out.bpf;
  out.tstate_interp = f.optional("PyThreadState.interp");
  b.tstate_interp = out.tstate_interp;
  // The GIL: a label, never a reason to refuse a process, so every field is
  // optional and a version without them just reports no GIL state.
  if (v < PyVersion{3, 7, 0}) {
    b.gil_mode = KRAIT_GIL_CURRENT_PTR;  // the caller supplies &_PyThreadState_Current
  } else if (v < PyVersion{3, 12, 0}) {
    out.runtime_tstate_current = f.optional("_PyRuntimeState.gilstate.tstate_current");
    out.runtime_gil_holder = f.optional("_PyRuntimeState.ceval.gil.last_holder");
    if (out.runtime_tstate_current != KRAIT_OFFSET_NONE)
      b.gil_mode = KRAIT_GIL_CURRENT_PTR;
  } else {
    b.interp_gil_locked = f.optional("PyInterpreterState._gil.locked");
    b.interp_gil_holder = f.optional("PyInterpreterState._gil.last_holder");
    if (b.interp_gil_locked != KRAIT_OFFSET_NONE && b.interp_gil_holder != KRAIT_OFFSET_NONE &&
        b.tstate_interp != KRAIT_OFFSET_NONE && b.interp_gil_locked == b.interp_gil_holder + 8)
      b.gil_mode = KRAIT_GIL_INTERP_LOCK;
  }
  out.tstate_native_thread_id = f.optional("PyThreadState.native_thread_id");
  // The sampler checks it only where it is in the block it reads anyway.
  if (out.tstate_native_thread_id != KRAIT_OFFSET_NONE && out.tstate_native_thread_id != 0 &&
      out.tstate_native_thread_id <= KRAIT_TSTATE_READ_CAP - 8)
    b.tstate_native_tid = out.tstate_native_thread_id;
  if (v >= PyVersion{3, 7, 0})
    out.runtime_interp_head = f.need("_PyRuntimeState.interpreters.head");
}

void read_string_layout(FieldReader& f, PyVersion v, StringLayout& s) {
  s.var_size = f.optional("PyVarObject.ob_size", 16);
  if (v.major == 2) {
    s.py2_bytes = true;
    s.bytes_data = f.need("PyStringObject.ob_sval");
    return;
  }
  s.bytes_data = f.need("PyBytesObject.ob_sval");
  s.unicode_length = f.need("PyASCIIObject.length");
  s.unicode_state = f.need("PyASCIIObject.state");
  s.ascii_size = f.need("sizeof(PyASCIIObject)");
  // _Py_DebugOffsets before 3.15 has no compact size: a compact object adds
  // utf8_length and utf8 (and wstr_length before 3.12) to the ASCII header.
  s.compact_size = f.optional("sizeof(PyCompactUnicodeObject)",
                              static_cast<uint16_t>(s.ascii_size + (v.minor >= 12 ? 16 : 24)));
  s.kind_bit = static_cast<uint8_t>(f.optional("PyASCIIObject.state.kind.bit", 2));
  s.kind_bits = static_cast<uint8_t>(f.optional("PyASCIIObject.state.kind.bits", 3));
  s.compact_bit = static_cast<uint8_t>(f.optional("PyASCIIObject.state.compact.bit", 5));
  s.ascii_bit = static_cast<uint8_t>(f.optional("PyASCIIObject.state.ascii.bit", 6));
}

// How many bytes the sampler reads of each object, checked against its caps.
Result<void> set_read_sizes(krait_py_layout& b) {
  auto tsize =
      read_size("PyThreadState", KRAIT_TSTATE_READ_CAP,
                {b.tstate_next, b.tstate_thread_id, b.tstate_frame, b.tstate_interp,
                 b.tstate_native_tid != 0 ? b.tstate_native_tid : uint16_t{KRAIT_OFFSET_NONE}});
  if (!tsize)
    return tsize.error();
  auto fsize =
      read_size("frame", KRAIT_FRAME_READ_CAP,
                {b.frame_back, b.frame_code, b.frame_instr, b.frame_owner, b.frame_is_entry});
  if (!fsize)
    return fsize.error();
  auto csize =
      read_size("PyCodeObject", KRAIT_CODE_READ_CAP,
                {b.code_type, b.code_firstlineno, b.code_filename, b.code_name, b.code_linetable});
  if (!csize)
    return csize.error();
  b.tstate_read_size = *tsize;
  b.frame_read_size = *fsize;
  b.code_read_size = *csize;
  return {};
}

}  // namespace

// The readers run in this order: the first field missing is the one the
// error names.
Result<PythonLayout> build_layout(const OffsetTable& table, PyVersion v) {
  PythonLayout out;
  out.version = v;
  FieldReader f(table);
  const bool frame_objects = v < PyVersion{3, 11, 0};  // PyFrameObject chain

  auto format = line_table_format(v.major, v.minor);
  if (!format)
    return make_error("Python {} has no known line table format", v.str());
  out.line_format = *format;
  out.instr_scale = (v.major == 3 && v.minor == 10) ? 2 : 1;
  out.every_frame_is_entry = frame_objects;

  read_thread_fields(f, out.bpf);
  read_frame_fields(f, v, frame_objects, out.bpf);
  read_code_fields(f, v, frame_objects, out);
  if (frame_objects)
    read_method_class(f, v.major == 2, out);
  read_runtime_fields(f, v, out);
  read_string_layout(f, v, out.strings);
  // The sampler reads the size inside its 256-byte view of the table's head
  // and sends the table from its start: both offsets must fit a byte.
  if (out.strings.var_size + sizeof(int64_t) <= 0xff && out.strings.bytes_data <= 0xff) {
    out.bpf.linetable_size_off = static_cast<uint8_t>(out.strings.var_size);
    out.bpf.linetable_data_off = static_cast<uint8_t>(out.strings.bytes_data);
  }

  if (!f.missing().empty())
    return make_error("the offsets for Python {} ({}) lack {}", v.str(), table.source, f.missing());
  KRAIT_TRY(check_plausible(out, table));
  KRAIT_TRY(set_read_sizes(out.bpf));
  return out;
}

}  // namespace krait::python
