// Mirrors krait_walk_frames in bpf/python_walk.bpf.h step for step (one
// block read per frame and per code object, the same shim and tag rules),
// so a user-space walk gives the records the sampler would have sent.
#include "python/frame_walk.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <unordered_set>

namespace krait::python {
namespace {

// A field of a block read at an offset the layout gave; build_layout keeps
// every offset inside its read size, this keeps a bad one harmless anyway.
template <typename T, size_t N>
T load(const std::array<uint8_t, N>& block, size_t size, uint16_t offset) {
  T value{};
  if (offset == KRAIT_OFFSET_NONE || size_t{offset} + sizeof(T) > std::min(size, N))
    return value;
  std::memcpy(&value, block.data() + offset, sizeof(T));
  return value;
}

struct Field {
  uint16_t offset;
  uint8_t size;
  bool required;
};

// Reads a struct as one block, as the sampler does. Where the block is not
// readable whole (a struct at the end of a mapping, or a recorded image
// holding only the fields that were read), the fields are read one by one;
// false when a required one is unreadable. Fields not read stay zero.
template <size_t N>
bool read_struct(BudgetedReader& reader, uint64_t address, std::array<uint8_t, N>& block,
                 size_t size, std::initializer_list<Field> fields) {
  if (reader.read(address, std::span(block.data(), size)))
    return true;
  block.fill(0);
  for (const Field& f : fields) {
    if (f.offset == KRAIT_OFFSET_NONE || size_t{f.offset} + f.size > size)
      continue;
    if (!reader.read(address + f.offset, std::span(block.data() + f.offset, f.size)) && f.required)
      return false;
  }
  return true;
}

}  // namespace

FrameChain walk_frame_chain(BudgetedReader& reader, const PythonLayout& layout, uint64_t tstate,
                            uint64_t code_type, size_t max_frames, const FrameCheck& check) {
  const krait_py_layout& b = layout.bpf;
  FrameChain out;
  auto first = reader.value<uint64_t>(tstate + b.tstate_frame);
  if (!first) {
    out.status = KRAIT_PY_READ_FAULT_STATE;
    out.reason = first.error().context("thread state").message;
    return out;
  }
  uint64_t f = *first;
  if (f && b.cframe_frame != KRAIT_OFFSET_NONE) {
    auto current = reader.value<uint64_t>(f + b.cframe_frame);
    if (!current) {
      out.status = KRAIT_PY_READ_FAULT_FRAME;
      out.reason = current.error().context("_PyCFrame").message;
      return out;
    }
    f = *current;
  }
  return walk_frames_from(reader, layout, f, code_type, max_frames, check);
}

FrameChain walk_frames_from(BudgetedReader& reader, const PythonLayout& layout, uint64_t f,
                            uint64_t code_type, size_t max_frames, const FrameCheck& check) {
  const krait_py_layout& b = layout.bpf;
  FrameChain out;
  auto stop = [&out](uint32_t status, std::string reason) {
    out.status = status;
    out.reason = std::move(reason);
    return std::move(out);
  };
  const size_t frame_size = std::min<size_t>(b.frame_read_size, KRAIT_FRAME_READ_CAP);
  const size_t code_size = std::min<size_t>(b.code_read_size, KRAIT_CODE_READ_CAP);
  std::array<uint8_t, KRAIT_FRAME_READ_CAP> frame{};
  std::array<uint8_t, KRAIT_CODE_READ_CAP> code{};
  auto mark_entry = [&out] {
    if (!out.frames.empty())
      out.frames.back().record.instr |= KRAIT_FRAME_ENTRY;
  };
  std::unordered_set<uint64_t> visited;
  for (size_t depth = 0; f != 0; ++depth) {
    if (depth >= max_frames) {
      out.truncated = true;
      break;
    }
    if (!visited.insert(f).second)
      return stop(KRAIT_PY_READ_FAULT_FRAME,
                  fmt::format("the frame chain is cyclic (frame {:#x} again)", f));
    if (!read_struct(reader, f, frame, frame_size,
                     {{b.frame_back, 8, true},
                      {b.frame_code, 8, true},
                      {b.frame_owner, 1, false},
                      {b.frame_instr,
                       static_cast<uint8_t>(b.instr_kind == KRAIT_INSTR_LASTI ? 4 : 8), false},
                      {b.frame_is_entry, 1, false}}))
      return stop(KRAIT_PY_READ_FAULT_FRAME, fmt::format("frame at {:#x} is unreadable", f));
    const uint64_t back = load<uint64_t>(frame, frame_size, b.frame_back);
    const uint64_t code_addr =
        load<uint64_t>(frame, frame_size, b.frame_code) & ~static_cast<uint64_t>(b.code_tag_mask);
    if (b.frame_owner_shim != KRAIT_OWNER_NONE &&
        load<uint8_t>(frame, frame_size, b.frame_owner) == b.frame_owner_shim) {
      mark_entry();
      f = back;
      continue;
    }
    const bool code_read = read_struct(reader, code_addr, code, code_size,
                                       {{b.code_type, 8, true},
                                        {b.code_name, 8, true},
                                        {b.code_filename, 8, true},
                                        {b.code_linetable, 8, false},
                                        {b.code_firstlineno, 4, false}});
    if (!code_read || load<uint64_t>(code, code_size, b.code_type) != code_type) {
      if (b.skip_non_code) {
        // 3.13+: the shim's executable is None, not a code object.
        mark_entry();
        f = back;
        continue;
      }
      return stop(code_read ? KRAIT_PY_BAD_CODE_OBJECT : KRAIT_PY_READ_FAULT_CODE,
                  fmt::format("frame at {:#x} does not point to a code object", f));
    }
    uint32_t instr = 0;
    const uint64_t raw = load<uint64_t>(frame, frame_size, b.frame_instr);
    if (b.instr_kind == KRAIT_INSTR_LASTI) {
      const auto lasti = static_cast<int32_t>(raw);
      instr = lasti < 0 ? 0 : static_cast<uint32_t>(lasti);
    } else {
      const uint64_t base = code_addr + b.code_adaptive;
      instr = raw > base ? static_cast<uint32_t>(raw - base) : 0;
    }
    const bool entry = b.frame_is_entry != KRAIT_OFFSET_NONE &&
                       load<uint8_t>(frame, frame_size, b.frame_is_entry) != 0;
    WalkedFrame w;
    w.frame = f;
    w.name = load<uint64_t>(code, code_size, b.code_name);
    w.file = load<uint64_t>(code, code_size, b.code_filename);
    const uint64_t linetable = load<uint64_t>(code, code_size, b.code_linetable);
    const uint32_t firstlineno = load<uint32_t>(code, code_size, b.code_firstlineno);
    w.record.code = code_addr;
    w.record.token = krait_code_token(w.file, w.name, linetable, firstlineno);
    w.record.instr = (instr & KRAIT_FRAME_INSTR_MASK) | (entry ? KRAIT_FRAME_ENTRY : 0);
    if (check && !check(w))
      return out;
    out.frames.push_back(w);
    f = back;
  }
  return out;
}

}  // namespace krait::python
