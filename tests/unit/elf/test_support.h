// Helpers shared by the elf and proc/maps tests: running tools, binutils
// oracles (readelf/nm output parsed here, independently of libelf), fixture
// locations, temporary files and child processes that report their own
// addresses.
//
// Everything here is single-threaded test code. Failures that make an oracle
// unusable (tool missing, tool failed) are reported through GoogleTest
// assertions in the caller, via the `error` strings returned here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace krait::test {

// Paths of build-time fixtures and tools, from compile definitions.
struct Fixtures {
  std::string pie;          // PIE executable, linked with `lib`, --export-dynamic
  std::string lib;          // shared library (SONAME libkrait_elf_fixture.so.1)
  std::string static_exe;   // static non-PIE executable
  std::string ibt;          // PIE with IBT stubs (.plt.sec): -fcf-protection -z ibtplt
  std::string stripped;     // `pie` after strip --strip-all
  std::string debuglinked;  // `pie` after objcopy --strip-debug --add-gnu-debuglink
  std::string debug_file;   // objcopy --only-keep-debug of `pie`
  std::string readelf;
  std::string nm;
  std::string objdump;
};
const Fixtures& fixtures();

// Returns "" when every fixture and tool exists, else what is missing.
std::string missing_fixtures();

struct CommandResult {
  int exit_code = -1;  // -1 when the command could not run or was killed
  std::string out;     // stdout; stderr is discarded
};
CommandResult run_command(const std::vector<std::string>& argv);

// --- binutils oracles -------------------------------------------------------

struct OracleSymbol {
  std::string name;  // .dynsym: without readelf's @VERSION; .symtab: as stored
  uint64_t value = 0;
  uint64_t size = 0;
  std::string type;  // FUNC, OBJECT, ...
  std::string bind;  // GLOBAL, LOCAL, WEAK, ...
  std::string ndx;   // UND, ABS, or a section number
};
struct OracleSection {
  std::string name;
  std::string type;  // PROGBITS, NOBITS, ...
  uint64_t addr = 0, offset = 0, size = 0;
};
struct OracleSegment {
  std::string type;
  uint64_t offset = 0, vaddr = 0, filesz = 0, memsz = 0, align = 0;
  std::string flags;  // e.g. "RE", "RW", "R"
};
struct Oracle {
  std::string error;                                         // non-empty when a tool failed
  std::map<std::string, std::vector<OracleSymbol>> symbols;  // ".dynsym"/".symtab" -> entries
  std::vector<OracleSection> sections;
  std::vector<OracleSegment> segments;
  std::string build_id;
  std::vector<std::string> needed;
  std::string soname;
  std::string debuglink;
  std::string elf_type;  // "EXEC", "DYN", ...
};
// Runs readelf -sW -SW -lW -nW -dW -hW and --debug-dump=links on `path`.
Oracle readelf_oracle(const std::string& path);

// `nm -P [-D] --defined-only path`: name -> value of defined symbols.
struct NmResult {
  std::string error;
  std::multimap<std::string, uint64_t> values;
};
NmResult nm_defined(const std::string& path, bool dynamic);

// --- files --------------------------------------------------------------------

std::vector<uint8_t> read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool executable);
std::string real_path(const std::string& path);

// --- child processes -------------------------------------------------------------

// A child started with pipes on stdin and stdout. The destructor kills
// (SIGKILL) and reaps it if it is still there.
class Child {
 public:
  // `in_child` runs after fork, before exec; return false to abort (the
  // child then exits 127 and read_line() returns "").
  static Child spawn(const std::vector<std::string>& argv,
                     const std::function<bool()>& in_child = {});
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // Blocks until the child writes a full line (returned without '\n') or
  // closes stdout (returns what it had, possibly "").
  std::string read_line();
  // Closes the child's stdin, then waits for it; returns its exit status, or
  // -1 if it did not exit normally.
  int finish();

 private:
  Child() = default;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;
};

// Parses "key=0x1234 key2=0xabc" as printed by the fixture programs.
std::map<std::string, uint64_t> parse_addresses(const std::string& line);

}  // namespace krait::test
