// Process images recorded from live interpreters, for the layout tests: the
// code_reader fuzzer's seeds (tests/fuzz/code_reader/corpus, recorded by
// tests/fuzz/make_seeds.py with record_seed.cpp), each the memory krait's
// own reads touched in a process running
//
//   class Base(object):
//       def method(self): <waits>
//   class Derived(Base): pass
//   Derived().method()
//
// with its layout (a built-in table of that version, or the process's own
// _Py_DebugOffsets), the address of the interpreter list, and one sampled
// code object with the sampler's capture of it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "krait/abi.h"
#include "proc/memory.h"
#include "python/interpreter.h"
#include "python/layout.h"
#include "util/result.h"

namespace krait::python {

struct ProcessImage {
  std::string name;  // e.g. "pyenv-3.12.1-table"
  PyVersion version;
  PythonLayout layout;
  uint64_t code_type = 0;
  uint64_t interp_head = 0;
  // The sampled code object: its address, and the instruction position and
  // frame the sample saw.
  uint64_t code = 0;
  uint32_t instr = 0;
  uint64_t frame = 0;
  krait_code_event capture{};  // zero-filled past what was recorded
  proc::FakeMemory memory;
};

Result<ProcessImage> load_image(const std::string& name);

// The seeds the layout tests read: before 3.11 (frame objects, 2.7's bytes
// names, 3.6's and 3.10's thread lists), 3.11 (interpreter frames in a
// _PyCFrame), 3.12 (shim frames), 3.13+ (from _Py_DebugOffsets too).
inline const std::vector<std::string> kImages = {
    "pyenv-2.7.18-table", "pyenv-3.6.15-table", "pyenv-3.10.13-table",
    "pyenv-3.11.7-table", "pyenv-3.12.1-table", "pyenv-3.13.0-table",
    "pyenv-3.13.0-debug", "sid-3.14.10-debug",  "sid-3.15.2-debug",
};

// The first interpreter, and its first thread state.
Result<uint64_t> first_interpreter(const ProcessImage& image);
Result<uint64_t> first_thread(const ProcessImage& image);

}  // namespace krait::python
