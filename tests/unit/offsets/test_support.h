// Helpers shared by the offsets tests: where the pyenv interpreters and the
// source tree are, running gdb as an independent oracle, and a line diff for
// readable failures. Test-only; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace krait::python::testing {

// The pyenv interpreters every machine of this kind has, under $(pyenv root)/versions.
const std::vector<std::string>& pyenv_versions();
std::string pyenv_root();                                 // $PYENV_ROOT, else $HOME/.pyenv
std::string pyenv_python(const std::string& version);     // .../versions/V/bin/python
std::string pyenv_libpython(const std::string& version);  // .../lib/libpythonX.Y[m].so.1.0, or ""
std::string source_dir();

std::optional<std::string> read_text_file(const std::string& path);
bool write_text_file(const std::string& path, const std::string& text);

struct CommandResult {
  int status = -1;  // exit status, -1 when it could not run
  std::string output;
};
CommandResult run_command(const std::string& command);

// A struct layout as gdb prints it with `ptype /o`. Member names are dotted
// paths through nested struct/union members; offsets are from the start of
// the outer type; `bit` is set for bitfields (bit offset from `offset`).
struct GdbMember {
  uint64_t offset = 0;
  std::optional<uint64_t> bit;
};
struct GdbLayout {
  std::map<std::string, GdbMember> members;
  std::optional<uint64_t> size;
  std::vector<std::string> order;  // leaf member paths in declaration order
  std::string error;               // set when gdb failed or printed no layout
};
GdbLayout gdb_ptype(const std::string& file, const std::string& type);

// offsetof(type, member) for each {type, member path} as gdb evaluates it
// (`print &((type *)0)->member`), in one gdb run; nullopt where gdb fails.
std::vector<std::optional<uint64_t>> gdb_offsetof(
    const std::string& file, const std::vector<std::pair<std::string, std::string>>& members);

// "-expected / +actual" lines for the first differing lines, for messages.
std::string line_diff(const std::string& expected, const std::string& actual);

}  // namespace krait::python::testing
