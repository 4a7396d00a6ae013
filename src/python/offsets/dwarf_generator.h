// generate_offset_table(): builds an OffsetTable for one CPython build from
// its DWARF debug information (libdw), without running the interpreter.
//
// Input: a python executable or a libpython shared object. An executable that
// is linked against libpython (DT_NEEDED libpython*) is followed to that
// library, found through the executable's RUNPATH/RPATH ($ORIGIN expanded),
// then <dir of executable>/../lib. Debug information is taken from the file
// itself, else from /usr/lib/debug/.build-id/xx/yyyy.debug. A file without
// DWARF is an error that says so; nothing is guessed.
//
// The version comes from the ELF, never from executing it: the Py_Version
// symbol (3.11+), else the PY_VERSION string in .rodata, identified by the
// major.minor of the libpython soname or file name (it must be the only
// string of that shape, or the version is reported as ambiguous).
//
// Fields: the canonical names listed in offsets/README.md. Each is looked up
// through its known DWARF spellings (typedef or struct tag, renamed members,
// anonymous struct/union members); a field the DWARF does not have is left
// out. Synchronous and self-contained: opens the files, reads, closes them;
// safe to call from several threads at once.
#pragma once

#include <string>
#include <vector>

#include "python/offsets/offset_table.h"
#include "util/result.h"

namespace krait::python {

Result<OffsetTable> generate_offset_table(const std::string& python_binary_or_libpython);

// Every canonical name the generator knows how to look up, in its table
// order (for documentation and tests).
std::vector<std::string> dwarf_canonical_fields();

}  // namespace krait::python
