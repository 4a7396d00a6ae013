// A process's memory map (/proc/PID/maps) and the arithmetic that places a
// file's virtual addresses in it.
//
// All functions are pure or read /proc once; none keep state, so all are safe
// to call from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "elf/elf_file.h"
#include "util/result.h"

namespace krait::proc {

// One line of /proc/PID/maps.
struct MapEntry {
  uint64_t start = 0, end = 0, offset = 0;  // [start, end) in the process; offset in the file
  bool read = false, write = false, exec = false, shared = false;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;  // 0 for anonymous and pseudo mappings
  // As the kernel printed it: "" for anonymous memory, "[heap]", "[stack]",
  // "[vdso]", "[vsyscall]", ... for pseudo mappings, else the file's path as
  // seen in the process's mount namespace, without a trailing " (deleted)".
  // The kernel writes a newline inside a path as the four characters "\012"
  // and escapes nothing else, so such a path is kept as printed.
  std::string path;
  // The kernel appended " (deleted)": the file was unlinked (or is a memfd).
  // A file really named "x (deleted)" is indistinguishable and reads the same.
  bool deleted = false;

  // A mapping of a file (inode != 0 and an absolute path), as opposed to
  // anonymous memory or a [pseudo] mapping.
  bool is_file() const { return inode != 0 && !path.empty() && path.front() == '/'; }
};

// Parses the text of /proc/PID/maps. Empty lines are ignored. Paths may
// contain spaces. Error names the 1-based line that does not parse.
Result<std::vector<MapEntry>> parse_maps(std::string_view text);

// Reads and parses /proc/PID/maps. When the process is gone the error says
// "process PID does not exist". A zombie has an empty map.
Result<std::vector<MapEntry>> read_maps(int pid);

// The entries of `maps` that map the same file as `like` (same device, inode
// and path), in order. Empty when `like` is not a file mapping.
std::vector<MapEntry> maps_of_file(std::span<const MapEntry> maps, const MapEntry& like);

// The load bias of `elf` in a process: the value added to a file virtual
// address to get the process address. `file_maps` are mappings of that file
// only (see maps_of_file), at least one. The loader places all segments at
// one bias, so each mapping votes for the bias its file offset implies and
// the best-supported bias wins; the mapping of the segment that holds the
// address is not needed. Pass all mappings of the file: one mapping alone
// can be ambiguous when small segments share a file page (the RELRO page of
// a tiny library fits its read-only data segment too). 0 for ET_EXEC files.
// Error when the entries mix files or none is consistent with the file's
// PT_LOAD segments (wrong ElfFile for these mappings).
Result<uint64_t> load_bias(std::span<const MapEntry> file_maps, const elf::ElfFile& elf);

// Where `vaddr` of `elf` lives in the process: vaddr + load_bias(). Works for
// PIE executables, shared objects and non-PIE executables. Error when vaddr
// is in no PT_LOAD segment (including its .bss part) or load_bias() fails.
Result<uint64_t> runtime_address(std::span<const MapEntry> file_maps, const elf::ElfFile& elf,
                                 uint64_t vaddr);

// A path that opens the file of `entry` as the process sees it:
// /proc/PID/root<path>, so files inside containers resolve in the process's
// mount namespace; or /proc/PID/map_files/<start>-<end> (lowercase hex, no
// 0x) when the file is deleted or its path contains an escaped newline.
// Opening a map_files path needs CAP_SYS_ADMIN. Returns "" for entries that
// are not file mappings (see MapEntry::is_file).
std::string openable_path(int pid, const MapEntry& entry);

// Opens the file of `entry` as an ElfFile: through openable_path() when the
// file found there has the mapping's inode, else through
// /proc/PID/map_files/<start>-<end>, which is always the mapped file (a
// process chrooted inside our mount namespace shows paths relative to our
// root, so /proc/PID/root<path> names another file or none). Error when
// neither opens (map_files needs CAP_SYS_ADMIN) or the file is not ELF.
Result<elf::ElfFile> open_mapped_elf(int pid, const MapEntry& entry);

}  // namespace krait::proc
