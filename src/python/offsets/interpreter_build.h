// The CPython build the DWARF offset generator reads: which file holds the
// interpreter (the input, or the libpython it links against), where its
// DWARF is (the file itself, or a separate debug file), and its version,
// all read from the ELF without running it. Separate from the DWARF type
// lookup (dwarf_generator.cpp): this part knows ELF and the file-system
// conventions of debug files, that part only DWARF. Internal to
// python/offsets.
#pragma once

#include <elfutils/libdw.h>
#include <libelf.h>

#include <memory>
#include <string>

#include "python/offsets/version.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::python::dwarf_gen {

// Owning handles for libelf / libdw objects.
struct ElfDeleter {
  void operator()(Elf* e) const { elf_end(e); }
};

struct DwarfDeleter {
  void operator()(Dwarf* d) const { dwarf_end(d); }
};

using ElfPtr = std::unique_ptr<Elf, ElfDeleter>;
using DwarfPtr = std::unique_ptr<Dwarf, DwarfDeleter>;

// An ELF file open for reading. Members are destroyed in reverse order, so
// the Elf* is released before the descriptor it reads from.
struct ElfFile {
  std::string path;
  UniqueFd fd;
  ElfPtr elf;
};

// Debug information: in the file, or in a separate file found by build-id or
// .gnu_debuglink in the standard places.
struct DebugInfo {
  ElfFile file;  // the file the DWARF is read from (may be the input itself)
  DwarfPtr dwarf;
};

// `path` opened with libelf; an error when it is not an ELF file.
Result<ElfFile> open_elf(const std::string& path);

// The file holding the interpreter: the input itself, or the libpython an
// executable is linked against.
Result<std::string> resolve_interpreter_file(const std::string& input);

// The GNU build-id in hex, "" when there is none.
std::string build_id_hex(Elf* elf);

// The DWARF of `path`: its own, else that of a separate debug file.
Result<DebugInfo> open_debug_info(const std::string& path);

// The CPython version of the build: Py_Version (3.11+), else the one
// PY_VERSION string of the expected major.minor in .rodata.
Result<PyVersion> read_version(const ElfFile& file);

}  // namespace krait::python::dwarf_gen
