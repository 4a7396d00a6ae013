#include "python/code_reader.h"

#include <algorithm>
#include <cstring>

#include "krait/abi.h"

namespace krait::python {
namespace {

template <typename T>
T load(const std::vector<uint8_t>& block, uint32_t off) {
  T v{};
  if (off != KRAIT_OFFSET_NONE && off + sizeof(T) <= block.size())
    std::memcpy(&v, block.data() + off, sizeof v);
  return v;
}

void append_utf8(std::string& out, uint32_t cp) {
  // Lone surrogates are legal in a Python str but not in UTF-8 (protobuf
  // strings, JSON): they and values past U+10FFFF become U+FFFD.
  if ((cp >= 0xd800 && cp <= 0xdfff) || cp >= 0x110000)
    cp = 0xfffd;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x110000) {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += "\xef\xbf\xbd";  // U+FFFD
  }
}

// A freed object's memory keeps its old contents except that the allocator
// writes its free-list link into the first word, where ob_refcnt lives: a
// pointer (bits 32-47 set) or 0. Live reference counts, immortal ones
// included, keep those bits clear (3.14 keeps flags only in bits 48-63).
bool looks_alive(const std::vector<uint8_t>& head) {
  const uint64_t refcnt = load<uint64_t>(head, 0);
  return (refcnt & 0x0000'ffff'0000'0000ull) == 0 && (refcnt & 0xffff'ffffull) != 0;
}

}  // namespace

Result<std::vector<uint8_t>> read_py_bytes(const proc::RemoteMemory& memory,
                                           const StringLayout& layout, uint64_t address,
                                           size_t max_bytes) {
  auto size = memory.read_value<int64_t>(address + layout.var_size);
  if (!size)
    return size.error();
  if (*size < 0 || static_cast<uint64_t>(*size) > max_bytes)
    return make_error("bytes object at {:#x} has an implausible size {}", address, *size);
  return memory.read_bytes(address + layout.bytes_data, static_cast<size_t>(*size));
}

Result<std::string> read_py_string(const proc::RemoteMemory& memory, const StringLayout& layout,
                                   uint64_t address) {
  if (address == 0)
    return make_error("NULL string");
  if (layout.py2_bytes) {
    auto bytes = read_py_bytes(memory, layout, address, kMaxStringChars);
    if (!bytes)
      return bytes.error();
    return std::string(bytes->begin(), bytes->end());
  }
  auto length = memory.read_value<int64_t>(address + layout.unicode_length);
  auto state = memory.read_value<uint32_t>(address + layout.unicode_state);
  if (!length)
    return length.error();
  if (!state)
    return state.error();
  if (*length < 0)
    return make_error("str at {:#x} has a negative length", address);
  const uint32_t kind = (*state >> layout.kind_bit) & ((1u << layout.kind_bits) - 1);
  const bool compact = (*state >> layout.compact_bit) & 1;
  const bool ascii = (*state >> layout.ascii_bit) & 1;
  if (kind != 1 && kind != 2 && kind != 4)
    return make_error("str at {:#x} has an invalid kind {}", address, kind);
  if (!compact)
    return make_error("str at {:#x} is not a compact string", address);
  if (ascii && kind != 1)
    return make_error("str at {:#x} claims ASCII with kind {}", address, kind);

  const bool cut = static_cast<uint64_t>(*length) > kMaxStringChars;
  const size_t chars = cut ? kMaxStringChars : static_cast<size_t>(*length);
  const uint64_t data = address + (ascii ? layout.ascii_size : layout.compact_size);
  auto raw = memory.read_bytes(data, chars * kind);
  if (!raw)
    return raw.error();
  std::string out;
  out.reserve(chars);
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp = 0;
    std::memcpy(&cp, raw->data() + i * kind, kind);  // little-endian x86_64
    if (ascii && cp >= 0x80)
      return make_error("str at {:#x} is not valid ASCII", address);
    append_utf8(out, cp);
  }
  if (cut)
    out += "...";
  return out;
}

namespace {

// Whether `size` bytes at `offset` lie inside a buffer of `total` bytes.
bool fits(size_t total, size_t offset, size_t size) {
  return offset <= total && size <= total - offset;
}

// A string object's raw bytes as the sampler copied them: decode what is
// there, cutting (and marking) a string the copy did not hold whole.
// `complete` says whether it was whole.
Result<std::string> decode_captured(const StringLayout& layout, std::span<const uint8_t> raw,
                                    bool& complete) {
  // Served at a made-up address: only the bytes matter, not where they were.
  constexpr uint64_t kAt = 0x1000;
  complete = true;
  std::vector<uint8_t> bytes(raw.begin(), raw.end());
  if (!layout.py2_bytes) {
    // The layout may come from the process itself (_Py_DebugOffsets): every
    // offset is checked against the copy before it is used.
    if (!fits(bytes.size(), layout.unicode_length, sizeof(int64_t)) ||
        !fits(bytes.size(), layout.unicode_state, sizeof(uint32_t)))
      return make_error("no string captured");
    int64_t length = 0;
    uint32_t state = 0;
    std::memcpy(&length, bytes.data() + layout.unicode_length, sizeof length);
    std::memcpy(&state, bytes.data() + layout.unicode_state, sizeof state);
    const bool ascii = (state >> layout.ascii_bit) & 1;
    const uint32_t kind = (state >> layout.kind_bit) & ((1u << layout.kind_bits) - 1);
    const size_t header = ascii ? layout.ascii_size : layout.compact_size;
    if (length <= 0 || (kind != 1 && kind != 2 && kind != 4) || bytes.size() <= header)
      return make_error("no string captured");
    const size_t room = (bytes.size() - header) / kind;
    if (static_cast<uint64_t>(length) > room) {
      // Decode what the copy holds and mark the cut.
      complete = false;
      const int64_t shorter = static_cast<int64_t>(room);
      std::memcpy(bytes.data() + layout.unicode_length, &shorter, sizeof shorter);
      proc::FakeMemory mem;
      mem.add(kAt, std::move(bytes));
      auto s = read_py_string(mem, layout, kAt);
      if (!s)
        return s.error();
      return *s + "...";
    }
  } else if (fits(bytes.size(), layout.var_size, sizeof(int64_t))) {
    int64_t size = 0;
    std::memcpy(&size, bytes.data() + layout.var_size, sizeof size);
    complete = size >= 0 && fits(bytes.size(), layout.bytes_data, static_cast<uint64_t>(size));
  }
  proc::FakeMemory mem;
  mem.add(kAt, std::move(bytes));
  auto s = read_py_string(mem, layout, kAt);
  if (s && s->ends_with("..."))
    complete = false;  // longer than kMaxStringChars
  return s;
}

}  // namespace

std::vector<LineRange> lines_from_captured_table(const PythonLayout& python,
                                                 std::span<const uint8_t> raw, int32_t firstlineno,
                                                 uint32_t& upto) {
  const StringLayout& s = python.strings;
  upto = 0;
  if (raw.size() <= s.bytes_data || !fits(raw.size(), s.var_size, sizeof(int64_t)))
    return {};
  int64_t size = 0;
  std::memcpy(&size, raw.data() + s.var_size, sizeof size);
  if (size <= 0 || static_cast<uint64_t>(size) > kMaxLineTableBytes)
    return {};
  const size_t avail = raw.size() - s.bytes_data;
  const bool cut = static_cast<size_t>(size) > avail;
  std::span<const uint8_t> table(raw.data() + s.bytes_data, cut ? avail : size);
  const LineTableFormat format = python.line_format;
  uint32_t code_size = 0;
  if (format == LineTableFormat::kLocations311) {
    // Entries start with a byte whose top bit is set: drop a cut last one.
    if (cut) {
      size_t end = table.size();
      while (end > 0 && !(table[end - 1] & 0x80))
        --end;
      table = table.first(end > 0 ? end - 1 : 0);
    }
  } else {
    if (cut)
      table = table.first(table.size() & ~size_t{1});  // whole pairs only
    if (format == LineTableFormat::kLnotabSigned || format == LineTableFormat::kLnotabUnsigned) {
      // lnotab's last line runs to the end of the code; of a cut table that
      // end is unknown, so the last line stops where its entry starts.
      uint32_t covered = 0;
      for (size_t i = 0; i < table.size(); i += 2)
        covered += table[i];
      code_size = cut ? covered : UINT32_MAX / 2;
      if (code_size == 0)
        return {};
    }
  }
  auto lines = decode_line_table(format, table, firstlineno, code_size);
  if (!lines)
    return {};
  // A cut table answers up to where its last whole entry ends; past that
  // a later entry may differ.
  upto = !cut ? UINT32_MAX : lines->empty() ? 0 : lines->back().end;
  return std::move(*lines);
}

Result<CapturedCode> code_info_from_capture(const PythonLayout& python,
                                            const krait_code_event& event) {
  const StringLayout& layout = python.strings;
  bool name_complete = false, file_complete = false;
  auto name = decode_captured(layout, event.name, name_complete);
  if (!name)
    return name.error().context("captured function name");
  auto file = decode_captured(layout, event.file, file_complete);
  if (!file)
    return file.error().context("captured file name");
  CapturedCode out;
  out.info.name = std::move(*name);
  out.info.filename = std::move(*file);
  out.info.firstlineno = static_cast<int32_t>(event.firstlineno);
  out.names_complete = name_complete && file_complete;
  out.info.lines =
      lines_from_captured_table(python, event.linetable, out.info.firstlineno, out.lines_upto);
  return out;
}

int32_t CodeInfo::line_at(const PythonLayout& layout, uint32_t instr) const {
  return line_for_offset(lines, instr * layout.instr_scale);
}

Result<CodeInfo> read_code_object(const proc::RemoteMemory& memory, const PythonLayout& layout,
                                  uint64_t code_type, uint64_t address, uint32_t token) {
  const krait_py_layout& b = layout.bpf;
  auto head = memory.read_bytes(address, b.code_read_size);
  if (!head)
    return head.error();
  if (load<uint64_t>(*head, b.code_type) != code_type)
    return make_error("object at {:#x} is no longer a code object", address);
  const uint64_t filename = load<uint64_t>(*head, b.code_filename);
  const uint64_t name = load<uint64_t>(*head, b.code_name);
  const uint64_t linetable = load<uint64_t>(*head, b.code_linetable);
  const uint32_t firstlineno = load<uint32_t>(*head, b.code_firstlineno);
  if (krait_code_token(filename, name, linetable, firstlineno) != token)
    return make_error("code object at {:#x} was replaced since it was sampled", address);
  // Same fields but freed: its strings may already hold other objects.
  if (!looks_alive(*head))
    return make_error("code object at {:#x} was freed since it was sampled", address);

  CodeInfo info;
  info.firstlineno = static_cast<int32_t>(firstlineno);
  auto n = read_py_string(memory, layout.strings, name);
  if (!n)
    return n.error().context("function name");
  auto f = read_py_string(memory, layout.strings, filename);
  if (!f)
    return f.error().context("file name");
  info.name = std::move(*n);
  info.filename = std::move(*f);
  auto table = read_py_bytes(memory, layout.strings, linetable, kMaxLineTableBytes);
  if (!table)
    return table.error().context("line table");
  // The size only bounds lnotab's last entry, where any bound past the last
  // sampled offset is equivalent; newer tables describe their own extent.
  const bool lnotab = layout.line_format == LineTableFormat::kLnotabUnsigned ||
                      layout.line_format == LineTableFormat::kLnotabSigned;
  auto lines =
      decode_line_table(layout.line_format, *table, info.firstlineno, lnotab ? UINT32_MAX / 2 : 0);
  if (!lines)
    return lines.error().context("line table");
  info.lines = std::move(*lines);
  // While the code object lives, so do the objects it references: it must
  // still be alive and unchanged after they were read.
  auto again = memory.read_bytes(address, b.code_read_size);
  if (!again)
    return again.error();
  if (!looks_alive(*again) ||
      !std::equal(head->begin() + 8, head->end(), again->begin() + 8, again->end()))
    return make_error("code object at {:#x} was freed while it was being read", address);
  return info;
}

}  // namespace krait::python
