// A process's memory map (/proc/PID/maps) and the arithmetic that places a
// file's virtual addresses in it.
//
// All functions are pure or read /proc once; none keep state, so all are safe
// to call from any thread.
//
// Everything here reads what a profiled process chose: its memory map (up to
// kMaxMapsBytes of text) and the files it maps. Those files are opened in
// one way only, open_mapped_file(), which every caller uses (directly or
// through open_mapped_elf()); see its contract. Nothing reopens a file by
// path afterwards.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "elf/elf_file.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::proc {

// The most text read from one /proc/PID/maps: about 160,000 mappings, more
// than twice the kernel's default vm.max_map_count of 65,530.
inline constexpr uint64_t kMaxMapsBytes = uint64_t{16} << 20;
// The longest line accepted: a path of PATH_MAX bytes, each newline in it
// printed as four characters, and the fields before it.
inline constexpr size_t kMaxMapsLineBytes = size_t{20} << 10;

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
// contain spaces. Error names the 1-based line that does not parse, and
// refuses text longer than kMaxMapsBytes or a line longer than
// kMaxMapsLineBytes. Linear in the text; allocates one MapEntry per line.
Result<std::vector<MapEntry>> parse_maps(std::string_view text);

// Reads and parses /proc/PID/maps as it streams in (the text is never held
// whole). When the process is gone the error says "process PID does not
// exist". A zombie has an empty map. Error when the text exceeds
// kMaxMapsBytes.
Result<std::vector<MapEntry>> read_maps(int pid);

// The entries of `maps` that map the same file as `like` (same device, inode
// and path), in order. Empty when `like` is not a file mapping. O(n): to
// group every file of a process, sort once instead (see
// unwind::ProcessModules).
std::vector<MapEntry> maps_of_file(std::span<const MapEntry> maps, const MapEntry& like);

// Whether two entries map the same file (device, inode and path).
bool same_file(const MapEntry& a, const MapEntry& b);

// The load bias of `elf` in a process: the value added to a file virtual
// address to get the process address. `file_maps` are mappings of that file
// only (see maps_of_file), at least one. The loader places all segments at
// one bias, so each mapping votes for the bias its file offset implies and
// the best-supported bias wins; the mapping of the segment that holds the
// address is not needed. Pass all mappings of the file: one mapping alone
// can be ambiguous when small segments share a file page (the RELRO page of
// a tiny library fits its read-only data segment too). 0 for ET_EXEC files.
// Error when the entries mix files or none is consistent with the file's
// PT_LOAD segments (wrong ElfFile for these mappings). O(n log n) in the
// mappings (times the file's PT_LOAD segments).
Result<uint64_t> load_bias(std::span<const MapEntry> file_maps, const elf::ElfFile& elf);

// Where `vaddr` of `elf` lives in the process: vaddr + load_bias(). Works for
// PIE executables, shared objects and non-PIE executables. Error when vaddr
// is in no PT_LOAD segment (including its .bss part) or load_bias() fails.
Result<uint64_t> runtime_address(std::span<const MapEntry> file_maps, const elf::ElfFile& elf,
                                 uint64_t vaddr);

// A path naming the file of `entry` as the process sees it, for messages
// and tools: /proc/PID/root<path>, or /proc/PID/map_files/<start>-<end>
// (lowercase hex, no 0x) when the file is deleted or its path contains an
// escaped newline. "" for entries that are not file mappings (see
// MapEntry::is_file). krait itself opens mapped files only with
// open_mapped_file(), never through this path.
std::string openable_path(int pid, const MapEntry& entry);

// A file of a profiled process, opened and checked.
struct OpenedFile {
  UniqueFd fd;       // O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY
  elf::FileId id;    // from the descriptor (statx), not from a path
  std::string name;  // the route it was opened through, for messages only
};

// Opens the file that `entry` of process `pid` maps. The one way krait
// opens a file a process maps (the process chooses its files and can swap
// a path for a FIFO, a link or another file at any time):
//   1. /proc/PID/map_files/<start>-<end>: a kernel link to exactly the
//      mapped file, which the process cannot redirect. Needs CAP_SYS_ADMIN
//      or CAP_CHECKPOINT_RESTORE (root and krait's systemd unit have them).
//   2. Else (the link is refused, not absent) the path inside the process's
//      root: openat2() from an O_PATH descriptor of /proc/PID/root with
//      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS and O_NOFOLLOW, so that no
//      link leads outside its root or through /proc. Deleted files and
//      paths with an escaped newline have no such path. Some kernels show
//      the underlying layer's device and inode in /proc/PID/maps for a file
//      on overlayfs (containers) while the path shows the overlay's: this
//      route then refuses the file, and map_files serves it.
// Either route first opens with O_PATH (which reaches no driver, FIFO or
// FUSE server) and checks that descriptor with elf::check_file(): a
// regular file of at most elf::kMaxFileBytes, not on FUSE; and that it has
// the device (major:minor) and inode of the mapping (on btrfs, whose stat()
// reports a subvolume's device, the inode alone). Only then is it opened for
// reading, through the checked descriptor itself (/proc/self/fd), with
// O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY. The caller reads only
// through the returned descriptor.
// pid 0: the path as written, in this process's mount namespace (maps saved
// from a process that has exited), with the same checks.
// Errors name the file, the route and why ("is no longer the mapped file",
// "is on a FUSE filesystem", "is ... bytes, larger than ...").
Result<OpenedFile> open_mapped_file(int pid, const MapEntry& entry);

// open_mapped_file(), then an ElfFile over that descriptor.
Result<elf::ElfFile> open_mapped_elf(int pid, const MapEntry& entry);

// An O_PATH descriptor of the root directory of process `pid` (through
// /proc/PID/root), or of this process's root for pid 0: the anchor for
// open_in_root().
Result<UniqueFd> open_root(int pid);

// Opens `path` (absolute, as the process whose root `root_fd` is names it)
// the careful way open_mapped_file() opens a path: openat2() with
// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS and O_NOFOLLOW, O_PATH first,
// elf::check_file(), then reopened read-only and non-blocking through the
// checked descriptor. For files a process chose that are not mappings
// (a .gnu_debuglink target beside a mapped file). `name` is for messages.
Result<OpenedFile> open_in_root(int root_fd, std::string_view path, std::string name);

}  // namespace krait::proc
