// Attaching to one Python process: choose the offsets, prove them against
// the live process, and produce the krait_proc_info the sampler walks with.
//
// Offsets, in order of trust: a table the user passed (--offsets), then for
// 3.13+ the process's own _Py_DebugOffsets (cross-checked against a built-in
// table of the same version, which loses on disagreement), then the built-in
// table of the exact version, then the nearest built-in table of the same
// minor version. Whatever the source, the layout is validated against the
// live process before any sample of it is walked; a process whose layout
// fails is refused with the reason, never profiled with guessed offsets.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "krait/abi.h"
#include "proc/memory.h"
#include "python/interpreter.h"
#include "python/layout.h"
#include "python/offsets/offset_table.h"

namespace krait::python {

struct AttachOptions {
  std::vector<OffsetTable> user_tables;  // --offsets FILE
  bool builtin_tables = true;            // tests switch the built-ins off to simulate a new release
};

enum class AttachStatus : uint8_t {
  kAttached,   // profile it
  kNotYet,     // interpreter not initialised (or not mapped) yet: try again soon
  kNotPython,  // nothing to profile
  kGone,       // the process exited
  kRefused,    // Python, but krait cannot profile it: reason says why
};

struct Attachment {
  AttachStatus status = AttachStatus::kNotPython;
  std::string reason;
  // Known when the process is Python (kAttached, kRefused, often kNotYet).
  std::optional<PyVersion> version;
  std::string image_path;
  bool shared_library = false;
  bool stripped = false;
  // kRefused because the live process did not match a layout (rather than
  // because there is none): possibly read in the middle of a change.
  bool validation_failed = false;
  // kAttached only.
  std::string offsets_source;
  std::optional<PythonLayout> layout;
  // The table the layout was built from: fields the layout leaves out
  // (generator and set objects, for the asyncio reader) are looked up here.
  std::optional<OffsetTable> table;
  krait_proc_info info{};  // generation is the caller's to set
};

Attachment attach_process(pid_t pid, ImageCache& images, const AttachOptions& options);

// Checks `layout` against the live process: the interpreter and thread
// lists, thread ids, and every frame's code object and strings. kNotYet when
// the interpreter has no threads yet. Exposed for tests.
struct Validation {
  AttachStatus status = AttachStatus::kAttached;  // kAttached = valid
  std::string reason;
};
Validation validate_layout(const proc::RemoteMemory& memory, pid_t pid, const PythonLayout& layout,
                           uint64_t interp_head_addr, uint64_t code_type_addr);

// The frame walk of validate_layout for one thread state: its Python
// frames the way the sampler follows them (shim frames skipped, tag bits
// cleared, at most 64), each frame's function name, leaf first. Refused with
// the reason where a frame does not check out (functions then holds the
// frames before it). Exposed for tests.
struct FrameWalk {
  Validation validation;
  std::vector<std::string> functions;
};
FrameWalk walk_frames(const proc::RemoteMemory& memory, const PythonLayout& layout, uint64_t tstate,
                      uint64_t code_type_addr);

}  // namespace krait::python
