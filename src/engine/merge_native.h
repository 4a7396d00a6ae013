// The rule that merges one sample's native and Python stacks, apart from
// unwinding and naming (StackBuilder does those): which native frames stay,
// where each Python frame goes, and whether the two stacks agree. Pure
// functions over what the builder knows of each native frame, so the rule
// is tested on made-up stacks (tests/unit/engine/merge_rule_test.cpp).
//
// The rule, leaf first: every native frame of the eval loop is replaced by
// the Python frames of one C call of it (up to and including the next frame
// marked as an entry). A greenlet's C stack ends at its bootstrap frame
// (greenlet's g_initialstub, see is_greenlet_base): past it lie the frames
// of whatever ran on that stack before the greenlet, never its own Python
// frames, so the native stack is cut there and counts as complete.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

namespace krait::engine {

// What the merge needs of one native frame (one return address, with its
// inlined frames), computed once per address.
struct NativeRole {
  bool eval = false;           // a C call of the interpreter's eval loop
  bool greenlet_base = false;  // the bottom of a greenlet's own C stack
};

// What the merge needs of one Python frame.
struct PythonRole {
  // The oldest frame of one C call of the eval loop (SampleJob's entry mark).
  bool entry = false;
};

// The interpreter's eval loop, whose C frames the Python frames replace.
// GCC splits rarely taken paths into "<name>.cold" parts of the same call.
bool is_eval_function(std::string_view name);

// True for greenlet's bootstrap frame, UserGreenlet::g_initialstub (greenlet
// 2 and 3; its symbol is exported, so even Debian's stripped module names
// it), the frame under which a greenlet's C stack starts, in greenlet's own
// extension module (`module_path`'s file name starts with "_greenlet").
// `function` is the demangled name, with or without its parameters.
bool is_greenlet_base(std::string_view module_path, std::string_view function);

struct MergeStep {
  bool python = false;  // a Python frame, else a native one
  size_t index = 0;     // into the Python frames or the native roles
};

enum class MergeVerdict {
  kExact,       // every Python frame replaced an eval frame of its own
  kMismatch,    // the two stacks disagree
  kIncomplete,  // the native stack ended before its root (the unwinder's reason)
};

struct MergeResult {
  std::vector<MergeStep> steps;  // leaf first
  MergeVerdict verdict = MergeVerdict::kExact;
  // The native stack was cut at a greenlet's bootstrap: the sample ran in a
  // greenlet other than its thread's main one.
  bool greenlet = false;
};

// Merges `native` (leaf first) with the Python frames `python` (leaf
// first). `native_complete`: the unwind reached the
// thread's root. `python_truncated`: the Python walk stopped at the depth
// limit, which explains eval frames left over. `python_process`: the
// process runs Python (eval frames without Python frames are otherwise
// not a mismatch).
MergeResult merge_stacks(std::span<const NativeRole> native, std::span<const PythonRole> python,
                         bool native_complete, bool python_truncated, bool python_process);

}  // namespace krait::engine
