#include "proc/maps.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "util/text.h"
#include "util/unique_fd.h"

namespace krait::proc {
namespace {

constexpr std::string_view kDeletedSuffix = " (deleted)";
// seq_file_path() in the kernel escapes '\n' in paths this way.
constexpr std::string_view kEscapedNewline = "\\012";

// A cursor over one line; each take_* consumes a field or fails.
class LineReader {
 public:
  explicit LineReader(std::string_view line) : rest_(line) {}

  bool take_number(uint64_t& out, int base) {
    auto [ptr, ec] = std::from_chars(rest_.data(), rest_.data() + rest_.size(), out, base);
    if (ec != std::errc() || ptr == rest_.data())
      return false;
    rest_.remove_prefix(static_cast<size_t>(ptr - rest_.data()));
    return true;
  }
  bool at_end() const { return rest_.empty(); }
  bool take_char(char c) {
    if (rest_.empty() || rest_.front() != c)
      return false;
    rest_.remove_prefix(1);
    return true;
  }
  bool take_perms(MapEntry& entry) {
    if (rest_.size() < 4)
      return false;
    auto flag = [](char c, char set) -> std::optional<bool> {
      if (c == set)
        return true;
      if (c == '-')
        return false;
      return std::nullopt;
    };
    auto r = flag(rest_[0], 'r');
    auto w = flag(rest_[1], 'w');
    auto x = flag(rest_[2], 'x');
    if (!r || !w || !x || (rest_[3] != 's' && rest_[3] != 'p'))
      return false;
    entry.read = *r;
    entry.write = *w;
    entry.exec = *x;
    entry.shared = rest_[3] == 's';
    rest_.remove_prefix(4);
    return true;
  }
  // The name column: the kernel pads with spaces before it, and names never
  // start with a space (paths start with '/', pseudo names with '[').
  std::string_view take_rest() {
    size_t first = rest_.find_first_not_of(' ');
    return first == std::string_view::npos ? std::string_view() : rest_.substr(first);
  }

 private:
  std::string_view rest_;
};

std::optional<MapEntry> parse_line(std::string_view line) {
  MapEntry entry;
  LineReader reader(line);
  uint64_t major = 0;
  uint64_t minor = 0;
  if (!reader.take_number(entry.start, 16) || !reader.take_char('-') ||
      !reader.take_number(entry.end, 16) || !reader.take_char(' ') || !reader.take_perms(entry) ||
      !reader.take_char(' ') || !reader.take_number(entry.offset, 16) || !reader.take_char(' ') ||
      !reader.take_number(major, 16) || !reader.take_char(':') || !reader.take_number(minor, 16) ||
      !reader.take_char(' ') || !reader.take_number(entry.inode, 10) ||
      !(reader.at_end() || reader.take_char(' ')))
    return std::nullopt;
  if (entry.end < entry.start || major > UINT32_MAX || minor > UINT32_MAX)
    return std::nullopt;
  entry.dev_major = static_cast<uint32_t>(major);
  entry.dev_minor = static_cast<uint32_t>(minor);
  std::string_view name = reader.take_rest();
  if (name.ends_with(kDeletedSuffix)) {
    entry.deleted = true;
    name.remove_suffix(kDeletedSuffix.size());
  }
  entry.path = std::string(name);
  return entry;
}

uint64_t page_size() {
  static const uint64_t size = [] {
    long s = ::sysconf(_SC_PAGESIZE);
    return s > 0 ? static_cast<uint64_t>(s) : uint64_t{4096};
  }();
  return size;
}

// Turns the text of a memory map into entries as it arrives, in chunks
// that may end inside a line.
class MapsParser {
 public:
  Result<void> feed(std::string_view chunk) {
    bytes_ += chunk.size();
    if (bytes_ > kMaxMapsBytes)
      return make_error(
          "the memory map is larger than {} MiB (the process has more mappings than krait reads)",
          kMaxMapsBytes >> 20);
    while (!chunk.empty()) {
      const size_t newline = chunk.find('\n');
      const std::string_view piece = chunk.substr(0, newline);
      if (partial_.size() + piece.size() > kMaxMapsLineBytes)
        return make_error("line {} of the memory map is longer than {} bytes", line_number_ + 1,
                          kMaxMapsLineBytes);
      if (newline == std::string_view::npos) {
        partial_.append(piece);
        return {};
      }
      if (partial_.empty()) {
        KRAIT_TRY(line(piece));
      } else {
        partial_.append(piece);
        KRAIT_TRY(line(partial_));
        partial_.clear();
      }
      chunk.remove_prefix(newline + 1);
    }
    return {};
  }
  // The entries, once the text has ended (a last line without '\n' counts).
  Result<std::vector<MapEntry>> finish() {
    if (!partial_.empty()) {
      KRAIT_TRY(line(partial_));
      partial_.clear();
    }
    return std::move(entries_);
  }

 private:
  Result<void> line(std::string_view text) {
    ++line_number_;
    if (text.empty())
      return {};
    auto entry = parse_line(text);
    if (!entry)
      return make_error("line {} of the memory map does not parse: \"{}\"", line_number_,
                        text.substr(0, 200));
    entries_.push_back(std::move(*entry));
    return {};
  }

  std::string partial_;
  std::vector<MapEntry> entries_;
  size_t line_number_ = 0;
  uint64_t bytes_ = 0;
};

// How a file opened from a process is checked and reopened for reading:
// `path_fd` is an O_PATH descriptor (no driver, FIFO or FUSE server has
// seen an open yet). `mapping` is the entry it must be the file of, if any.
Result<OpenedFile> finish_open(UniqueFd path_fd, std::string name, const MapEntry* mapping) {
  auto checked = elf::check_file(path_fd.get(), name);
  if (!checked)
    return checked.error();
  const elf::FileId& id = checked->id;
  if (mapping != nullptr) {
    // btrfs reports a subvolume's device to stat() where the memory map
    // prints the filesystem's; there the inode has to do.
    const bool same_device =
        (id.dev_major == mapping->dev_major && id.dev_minor == mapping->dev_minor) ||
        checked->fs_magic == elf::kBtrfsSuperMagic;
    if (!same_device || id.inode != mapping->inode)
      return make_error(
          "{} is no longer the mapped file (device {:x}:{:x} inode {}, mapped {:x}:{:x} inode {}); "
          "it was replaced or the mapping changed",
          name, id.dev_major, id.dev_minor, id.inode, mapping->dev_major, mapping->dev_minor,
          mapping->inode);
  }
  // Reopening the checked descriptor opens that very inode; no path is
  // looked up again.
  std::string self = fmt::format("/proc/self/fd/{}", path_fd.get());
  UniqueFd fd(::open(self.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid())
    return make_error("cannot open {} for reading: {}", name, std::strerror(errno));
  auto now = elf::file_id_of(fd.get());
  if (!now || now->dev_major != id.dev_major || now->dev_minor != id.dev_minor ||
      now->inode != id.inode)
    return make_error("{} changed while it was opened; retry", name);
  return OpenedFile{.fd = std::move(fd), .id = id, .name = std::move(name)};
}

Result<OpenedFile> open_path_in_root(int root_fd, std::string_view path, std::string name,
                                     const MapEntry* mapping) {
  if (path.empty() || path.front() != '/')
    return make_error("{} is not an absolute path", name);
  open_how how{};
  how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const std::string relative(path);
  long fd = ::syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof how);
  if (fd < 0) {
    if (errno == ENOSYS)
      return make_error("cannot open {}: openat2() is not available (Linux 5.6 or later is needed)",
                        name);
    return make_error("cannot open {}: {}", name, std::strerror(errno));
  }
  return finish_open(UniqueFd(static_cast<int>(fd)), std::move(name), mapping);
}

}  // namespace

bool same_file(const MapEntry& a, const MapEntry& b) {
  return a.dev_major == b.dev_major && a.dev_minor == b.dev_minor && a.inode == b.inode &&
         a.path == b.path;
}

Result<std::vector<MapEntry>> parse_maps(std::string_view text) {
  MapsParser parser;
  KRAIT_TRY(parser.feed(text));
  return parser.finish();
}

Result<std::vector<MapEntry>> read_maps(int pid) {
  if (pid <= 0)
    return make_error("invalid pid {}; pass the id of a running process", pid);
  std::string path = fmt::format("/proc/{}/maps", pid);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ESRCH)
      return make_error("process {} does not exist", pid);
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  }
  MapsParser parser;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      // The process can exit between open() and read().
      if (errno == ESRCH)
        return make_error("process {} does not exist", pid);
      return make_error("cannot read {}: {}", path, std::strerror(errno));
    }
    if (n == 0)
      break;
    if (auto fed = parser.feed(std::string_view(buffer, static_cast<size_t>(n))); !fed)
      return fed.error().context(path);
  }
  return parser.finish().context(path);
}

std::vector<MapEntry> maps_of_file(std::span<const MapEntry> maps, const MapEntry& like) {
  std::vector<MapEntry> out;
  if (!like.is_file())
    return out;
  for (const MapEntry& entry : maps)
    if (same_file(entry, like))
      out.push_back(entry);
  return out;
}

Result<uint64_t> load_bias(std::span<const MapEntry> file_maps, const elf::ElfFile& elf) {
  if (file_maps.empty())
    return make_error("no mappings of {} given; pass the process's mappings of that file",
                      elf.path());
  for (const MapEntry& entry : file_maps) {
    if (!entry.is_file())
      return make_error("mapping {:x}-{:x} is not a file mapping; pass only mappings of {}",
                        entry.start, entry.end, elf.path());
    if (!same_file(entry, file_maps.front()))
      return make_error("mappings of {} and {} were mixed; pass the mappings of one file",
                        file_maps.front().path, entry.path);
  }
  if (!elf.is_dyn())
    return uint64_t{0};

  // Every mapping votes for the bias its offset implies. A mapping that
  // starts exactly at a segment's page-aligned offset is strong evidence;
  // one whose offset falls inside a segment (a segment split by mprotect,
  // e.g. RELRO) is weak, and with segments sharing a file page a mapping can
  // fit two segments. The executable bit breaks such ties.
  const uint64_t page = page_size();
  struct Vote {
    uint64_t bias;
    int weight;
    size_t order;  // of the first vote for this bias: ties go to the earliest
  };
  std::vector<Vote> votes;
  auto vote = [&votes, page](uint64_t bias, int weight) {
    if (bias % page == 0)
      votes.push_back(Vote{bias, weight, votes.size()});
  };
  for (const MapEntry& entry : file_maps) {
    for (const elf::LoadSegment& segment : elf.load_segments()) {
      uint64_t segment_page_offset = segment.offset & ~(page - 1);
      int exec_match = entry.exec == ((segment.flags & PF_X) != 0) ? 1 : 0;
      if (entry.offset == segment_page_offset) {
        vote(entry.start - (segment.vaddr & ~(page - 1)), 2 + exec_match);
      } else if (entry.offset > segment_page_offset &&
                 entry.offset - segment.offset < segment.filesz) {
        vote(entry.start - (segment.vaddr + (entry.offset - segment.offset)), 1 + exec_match);
      }
    }
  }
  // Tallied by sorting, not by a search per vote: a process can map one
  // file tens of thousands of times, each mapping with its own bias.
  std::sort(votes.begin(), votes.end(), [](const Vote& a, const Vote& b) {
    return a.bias != b.bias ? a.bias < b.bias : a.order < b.order;
  });
  std::optional<Vote> best;
  for (size_t i = 0; i < votes.size();) {
    Vote total{votes[i].bias, 0, votes[i].order};
    for (; i < votes.size() && votes[i].bias == total.bias; ++i)
      total.weight += votes[i].weight;
    if (!best || total.weight > best->weight ||
        (total.weight == best->weight && total.order < best->order))
      best = total;
  }
  if (!best)
    return make_error(
        "the mappings of {} do not match the PT_LOAD segments of {}; the file on disk is not the "
        "one the process mapped",
        file_maps.front().path, elf.path());
  return best->bias;
}

Result<uint64_t> runtime_address(std::span<const MapEntry> file_maps, const elf::ElfFile& elf,
                                 uint64_t vaddr) {
  bool in_segment = false;
  for (const elf::LoadSegment& segment : elf.load_segments())
    if (vaddr >= segment.vaddr && vaddr - segment.vaddr < std::max(segment.memsz, segment.filesz))
      in_segment = true;
  if (!in_segment)
    return make_error("address {:#x} is in no PT_LOAD segment of {}, so it is never loaded", vaddr,
                      elf.path());
  auto bias = load_bias(file_maps, elf);
  if (!bias)
    return bias.error();
  return vaddr + *bias;
}

std::string openable_path(int pid, const MapEntry& entry) {
  if (!entry.is_file())
    return "";
  if (entry.deleted || entry.path.find(kEscapedNewline) != std::string::npos)
    return fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, entry.start, entry.end);
  return fmt::format("/proc/{}/root{}", pid, entry.path);
}

Result<UniqueFd> open_root(int pid) {
  if (pid < 0)
    return make_error("invalid pid {}", pid);
  std::string path = pid == 0 ? std::string("/") : fmt::format("/proc/{}/root", pid);
  UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ESRCH)
      return make_error("process {} does not exist", pid);
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  }
  return fd;
}

Result<OpenedFile> open_in_root(int root_fd, std::string_view path, std::string name) {
  return open_path_in_root(root_fd, path, std::move(name), nullptr);
}

Result<OpenedFile> open_mapped_file(int pid, const MapEntry& entry) {
  if (!entry.is_file())
    return make_error("mapping {:x}-{:x} of process {} is not a file mapping", entry.start,
                      entry.end, pid);
  if (pid < 0)
    return make_error("invalid pid {}; pass the id of a running process", pid);
  const bool has_path = !entry.deleted && entry.path.find(kEscapedNewline) == std::string::npos;
  std::string map_files_problem;
  if (pid > 0) {
    std::string map_files =
        fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, entry.start, entry.end);
    // O_PATH follows the kernel's link to the mapped file without opening
    // it: check_file() sees it before any driver, FIFO or FUSE server does.
    UniqueFd fd(::open(map_files.c_str(), O_PATH | O_CLOEXEC));
    if (fd.valid())
      return finish_open(std::move(fd), std::move(map_files), &entry);
    if (errno == ENOENT)
      return make_error(
          "mapping {:x}-{:x} ({}) of process {} is gone (the process exited or "
          "unmapped it)",
          entry.start, entry.end, entry.path, pid);
    map_files_problem = fmt::format("{}: {} (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)",
                                    map_files, std::strerror(errno));
    if (!has_path)
      return make_error("cannot open {} of process {}, which has no path to it: {}", entry.path,
                        pid, map_files_problem);
  } else if (!has_path) {
    return make_error("{} was deleted; it can only be opened through a live process", entry.path);
  }
  auto root = open_root(pid);
  if (!root)
    return root.error();
  std::string name = pid == 0 ? entry.path : fmt::format("/proc/{}/root{}", pid, entry.path);
  auto opened = open_path_in_root(root->get(), entry.path, std::move(name), &entry);
  if (!opened && !map_files_problem.empty())
    return make_error("{}; and {}", map_files_problem, opened.error().message);
  return opened;
}

Result<elf::ElfFile> open_mapped_elf(int pid, const MapEntry& entry) {
  auto opened = open_mapped_file(pid, entry);
  if (!opened)
    return opened.error();
  return elf::ElfFile::from_fd(std::move(opened->fd), std::move(opened->name));
}

}  // namespace krait::proc
