#include "python/method_class.h"

#include <cstring>

#include "python/code_reader.h"

namespace krait::python {
namespace {

constexpr int kMaxMro = 64;
constexpr uint64_t kMaxDictEntries = 1 << 16;

template <typename T>
std::optional<T> value_at(const proc::RemoteMemory& mem, uint64_t addr) {
  auto v = mem.read_value<T>(addr);
  if (!v)
    return std::nullopt;
  return *v;
}

// The value `dict` maps the key object `key` to (compared by identity:
// method names are interned, like the code object's co_name), or 0.
uint64_t dict_value_for(const proc::RemoteMemory& mem, const MethodClassLayout& m, uint64_t dict,
                        uint64_t key) {
  uint64_t entries = 0, count = 0;
  if (m.py2_dict) {
    auto mask = value_at<int64_t>(mem, dict + m.dict_mask);
    auto table = value_at<uint64_t>(mem, dict + m.dict_table);
    if (!mask || !table || *mask < 0 || static_cast<uint64_t>(*mask) >= kMaxDictEntries)
      return 0;
    entries = *table;
    count = static_cast<uint64_t>(*mask) + 1;
  } else {
    auto keys = value_at<uint64_t>(mem, dict + m.dict_keys);
    if (!keys)
      return 0;
    auto size = value_at<int64_t>(mem, *keys + m.keys_size);
    auto used = value_at<int64_t>(mem, *keys + m.keys_nentries);
    if (!size || !used || *size <= 0 || static_cast<uint64_t>(*size) > kMaxDictEntries ||
        *used < 0 || *used > *size)
      return 0;
    // The index array's width grows with the table; entries follow it.
    const uint64_t width = *size <= 0xff ? 1 : *size <= 0xffff ? 2 : 4;
    entries = *keys + m.keys_indices + static_cast<uint64_t>(*size) * width;
    count = static_cast<uint64_t>(*used);
  }
  auto table = mem.read_bytes(entries, count * m.entry_size);
  if (!table)
    return 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t k = 0, v = 0;
    std::memcpy(&k, table->data() + i * m.entry_size + m.entry_key, sizeof k);
    std::memcpy(&v, table->data() + i * m.entry_size + m.entry_value, sizeof v);
    if (k == key)
      return v;
  }
  return 0;
}

std::optional<std::string> c_string(const proc::RemoteMemory& mem, uint64_t addr) {
  auto bytes = mem.read_bytes(addr, 128);
  if (!bytes) {
    // A short name near the end of a mapping: try less.
    bytes = mem.read_bytes(addr, 32);
    if (!bytes)
      return std::nullopt;
  }
  std::string s;
  for (uint8_t c : *bytes) {
    if (c == 0)
      return s;
    s += static_cast<char>(c);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> method_class_name(const proc::RemoteMemory& mem,
                                             const PythonLayout& layout, uint64_t frame,
                                             uint64_t code) {
  const MethodClassLayout& m = layout.method_class;
  if (!m.enabled || frame == 0)
    return std::nullopt;
  // The frame must still run this code (it was sampled a moment ago).
  auto frame_code = value_at<uint64_t>(mem, frame + layout.bpf.frame_code);
  if (!frame_code || *frame_code != code)
    return std::nullopt;

  auto argcount = value_at<int32_t>(mem, code + layout.code_argcount);
  auto varnames = value_at<uint64_t>(mem, code + layout.code_varnames);
  auto name = value_at<uint64_t>(mem, code + layout.bpf.code_name);
  if (!argcount || *argcount < 1 || !varnames || !name)
    return std::nullopt;
  auto first_var = value_at<uint64_t>(mem, *varnames + layout.tuple_items);
  if (!first_var)
    return std::nullopt;
  auto first_name = read_py_string(mem, layout.strings, *first_var);
  if (!first_name || (*first_name != "self" && *first_name != "cls"))
    return std::nullopt;
  const bool is_cls = *first_name == "cls";

  auto first = value_at<uint64_t>(mem, frame + m.frame_localsplus);
  if (!first || *first == 0)
    return std::nullopt;
  uint64_t type = *first;
  if (!is_cls) {
    auto t = value_at<uint64_t>(mem, *first + layout.bpf.code_type);  // ob_type
    if (!t)
      return std::nullopt;
    type = *t;
  }
  auto mro = value_at<uint64_t>(mem, type + m.type_mro);
  if (!mro || *mro == 0)
    return std::nullopt;
  auto mro_len = value_at<int64_t>(mem, *mro + layout.strings.var_size);
  if (!mro_len || *mro_len <= 0 || *mro_len > kMaxMro)
    return std::nullopt;
  auto classes = mem.read_bytes(*mro + layout.tuple_items, static_cast<size_t>(*mro_len) * 8);
  if (!classes)
    return std::nullopt;
  for (int64_t i = 0; i < *mro_len; ++i) {
    uint64_t cls = 0;
    std::memcpy(&cls, classes->data() + i * 8, sizeof cls);
    auto dict = value_at<uint64_t>(mem, cls + m.type_dict);
    if (!dict || *dict == 0)
      continue;
    uint64_t value = dict_value_for(mem, m, *dict, *name);
    if (value == 0)
      continue;
    auto func_code = value_at<uint64_t>(mem, value + m.func_code);
    bool defines = func_code && *func_code == code;
    if (!defines && m.classmethod_callable != KRAIT_OFFSET_NONE) {
      auto callable = value_at<uint64_t>(mem, value + m.classmethod_callable);
      auto wrapped = callable ? value_at<uint64_t>(mem, *callable + m.func_code) : std::nullopt;
      defines = wrapped && *wrapped == code;
    }
    if (!defines)
      continue;
    auto tp_name = value_at<uint64_t>(mem, cls + m.type_name);
    auto text = tp_name ? c_string(mem, *tp_name) : std::nullopt;
    if (!text || text->empty())
      return std::nullopt;
    // Built-in types are "module.Name"; classes defined in Python just "Name".
    auto dot = text->rfind('.');
    return dot == std::string::npos ? *text : text->substr(dot + 1);
  }
  return std::nullopt;
}

}  // namespace krait::python
