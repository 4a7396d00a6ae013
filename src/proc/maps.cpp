#include "proc/maps.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
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

bool same_file(const MapEntry& a, const MapEntry& b) {
  return a.dev_major == b.dev_major && a.dev_minor == b.dev_minor && a.inode == b.inode &&
         a.path == b.path;
}

}  // namespace

Result<std::vector<MapEntry>> parse_maps(std::string_view text) {
  std::vector<MapEntry> entries;
  size_t line_number = 0;
  while (!text.empty()) {
    std::string_view line = take_line(text);
    ++line_number;
    if (line.empty())
      continue;
    auto entry = parse_line(line);
    if (!entry)
      return make_error("line {} of the memory map does not parse: \"{}\"", line_number,
                        line.substr(0, 200));
    entries.push_back(std::move(*entry));
  }
  return entries;
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
  std::string text;
  char buffer[16384];
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
    text.append(buffer, static_cast<size_t>(n));
  }
  return parse_maps(text).context(path);
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
  };
  std::vector<Vote> votes;
  auto vote = [&votes, page](uint64_t bias, int weight) {
    if (bias % page != 0)
      return;
    for (Vote& v : votes) {
      if (v.bias == bias) {
        v.weight += weight;
        return;
      }
    }
    votes.push_back(Vote{bias, weight});
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
  const Vote* best = nullptr;
  for (const Vote& v : votes)
    if (best == nullptr || v.weight > best->weight)
      best = &v;
  if (best == nullptr)
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

Result<elf::ElfFile> open_mapped_elf(int pid, const MapEntry& entry) {
  if (!entry.is_file())
    return make_error("mapping {:x}-{:x} of process {} is not a file mapping", entry.start,
                      entry.end, pid);
  std::string path = openable_path(pid, entry);
  std::string map_files = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, entry.start, entry.end);
  std::string by_path_problem;
  if (path != map_files) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      by_path_problem = fmt::format("{}: {}", path, std::strerror(errno));
    else if (st.st_ino != entry.inode)
      by_path_problem = fmt::format("{} is not the mapped file (inode {}, mapped {})", path,
                                    st.st_ino, entry.inode);
    else
      return elf::ElfFile::open(path);
  }
  auto elf = elf::ElfFile::open(map_files);
  if (elf.ok() || by_path_problem.empty())
    return elf;
  return make_error("cannot open {} of process {}: {}; and {} (map_files needs CAP_SYS_ADMIN)",
                    entry.path, pid, by_path_problem, elf.error().message);
}

}  // namespace krait::proc
