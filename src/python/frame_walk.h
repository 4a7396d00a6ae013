// The user-space walk of one thread's Python frames, the way the sampler's
// BPF walk (bpf/python_walk.bpf.h) follows them: from the thread state's
// current frame (through _PyCFrame on 3.11 and 3.12) towards the root,
// shim frames skipped and marked on the frame they enter, tag bits cleared,
// each frame given as the (code, token, instr) record the sampler sends.
// Layout validation (attach.cpp) and `krait dump` both walk with it.
//
// Limits: reads go through a BudgetedReader, so a hostile process (cyclic
// or endless chains, garbage pointers) costs at most the caller's budget;
// the walk stops at max_frames (shim frames count, as in the sampler) and
// at the first frame seen twice.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "krait/abi.h"
#include "proc/memory.h"
#include "python/layout.h"
#include "util/result.h"

namespace krait::python {

// Remote reads with a budget: a walk that would need more reads than any
// real process does ends with an error naming the budget.
class BudgetedReader {
 public:
  BudgetedReader(const proc::RemoteMemory& memory, int budget)
      : memory_(memory), budget_(budget), left_(budget) {}
  template <typename T>
  Result<T> value(uint64_t address) {
    if (!take())
      return spent();
    return memory_.read_value<T>(address);
  }
  Result<void> read(uint64_t address, std::span<uint8_t> out) {
    if (!take())
      return spent();
    return memory_.read(address, out);
  }
  bool exhausted() const { return left_ <= 0; }
  const proc::RemoteMemory& memory() const { return memory_; }

 private:
  bool take() {
    if (left_ <= 0)
      return false;
    --left_;
    return true;
  }
  Error spent() const { return make_error("read budget ({} reads) used up", budget_); }

  const proc::RemoteMemory& memory_;
  int budget_;
  int left_;
};

// One frame of a code object, as walked.
struct WalkedFrame {
  krait_py_frame record{};  // what the sampler would send; KRAIT_FRAME_ENTRY set as it would
  uint64_t frame = 0;       // the frame's address (names a method's class before 3.11)
  uint64_t name = 0;        // the code object's name and file string objects
  uint64_t file = 0;
};

struct FrameChain {
  std::vector<WalkedFrame> frames;  // leaf first
  // KRAIT_PY_OK, or where the walk stopped: KRAIT_PY_READ_FAULT_STATE /
  // _FRAME / _CODE, KRAIT_PY_BAD_CODE_OBJECT; a cyclic chain is
  // KRAIT_PY_READ_FAULT_FRAME. `reason` says it in words.
  uint32_t status = KRAIT_PY_OK;
  std::string reason;
  bool truncated = false;  // more frames than max_frames
};

// Called for each code frame before it is added; returning false ends the
// walk there (status stays KRAIT_PY_OK: the caller knows why it stopped).
using FrameCheck = std::function<bool(const WalkedFrame&)>;

FrameChain walk_frame_chain(BudgetedReader& reader, const PythonLayout& layout, uint64_t tstate,
                            uint64_t code_type, size_t max_frames,
                            const FrameCheck& check = nullptr);

// The same walk from the frame at `frame` (a frame object before 3.11, an
// interpreter frame from 3.11: a suspended coroutine's own frame, for one).
FrameChain walk_frames_from(BudgetedReader& reader, const PythonLayout& layout, uint64_t frame,
                            uint64_t code_type, size_t max_frames,
                            const FrameCheck& check = nullptr);

}  // namespace krait::python
