#include "unwind/module_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace krait::unwind {
namespace {

std::atomic<uint64_t> next_serial{1};

std::string file_identity(int fd, const elf::ElfFile& elf) {
  if (!elf.build_id().empty())
    return "build-id:" + elf.build_id();
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return fmt::format("path:{}", elf.path());
  uint64_t mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull +
                      static_cast<uint64_t>(st.st_mtim.tv_nsec);
  return fmt::format("file:{}:{}:{}:{}:{}", major(st.st_dev), minor(st.st_dev), st.st_ino,
                     st.st_size, mtime_ns);
}

bool same_inode(int fd, const std::string& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

std::optional<uint32_t> debuglink_crc(const elf::ElfFile& elf) {
  auto bytes = elf.section_bytes(".gnu_debuglink");
  if (!bytes)
    return std::nullopt;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(bytes->data(), 0, bytes->size()));
  if (nul == nullptr)
    return std::nullopt;
  size_t at = (static_cast<size_t>(nul - bytes->data()) + 1 + 3) & ~size_t{3};
  if (at + 4 > bytes->size())
    return std::nullopt;
  uint32_t crc = 0;
  std::memcpy(&crc, bytes->data() + at, sizeof crc);
  return crc;
}

std::optional<uint32_t> file_crc(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid())
    return std::nullopt;
  uLong crc = crc32(0, nullptr, 0);
  std::vector<uint8_t> buffer(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return std::nullopt;
    if (n == 0)
      break;
    crc = crc32(crc, buffer.data(), static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join(std::string_view dir, std::string_view name) {
  if (dir.empty())
    return std::string(name);
  if (dir.back() == '/')
    return fmt::format("{}{}", dir, name);
  return fmt::format("{}/{}", dir, name);
}

}  // namespace

std::optional<std::string> find_debug_file(const elf::ElfFile& elf, const DebugLinkDirs& dirs,
                                           const ModuleFileOptions& options) {
  const std::string& build_id = elf.build_id();
  auto accept = [&](const std::string& candidate, bool by_build_id) -> bool {
    if (!is_regular_file(candidate) || candidate == elf.path())
      return false;
    auto debug = elf::ElfFile::open(candidate);
    if (!debug)
      return false;
    if (!build_id.empty())
      return debug->build_id() == build_id;
    if (by_build_id)
      return false;
    auto expected = debuglink_crc(elf);
    auto actual = file_crc(candidate);
    return expected && actual && *expected == *actual;
  };

  if (build_id.size() > 2) {
    for (const std::string& root : options.debug_roots) {
      std::string candidate =
          fmt::format("{}/.build-id/{}/{}.debug", root, build_id.substr(0, 2), build_id.substr(2));
      if (accept(candidate, true))
        return candidate;
    }
  }
  auto link = elf.debuglink();
  if (!link || link->empty() || link->find('/') != std::string::npos)
    return std::nullopt;
  std::vector<std::string> candidates;
  if (!dirs.dir.empty()) {
    candidates.push_back(join(dirs.dir, *link));
    candidates.push_back(join(join(dirs.dir, ".debug"), *link));
  }
  if (!dirs.namespace_dir.empty())
    for (const std::string& root : options.debug_roots)
      candidates.push_back(join(root + dirs.namespace_dir, *link));
  for (const std::string& candidate : candidates)
    if (accept(candidate, false))
      return candidate;
  return std::nullopt;
}

ModuleFile::ModuleFile(Key, elf::ElfFile elf, UniqueFd fd, std::string identity)
    : serial_(next_serial.fetch_add(1, std::memory_order_relaxed)),
      elf_(std::move(elf)),
      fd_(std::move(fd)),
      identity_(std::move(identity)) {}

ModuleFile::~ModuleFile() = default;

Result<std::shared_ptr<const ModuleFile>> ModuleFile::create(elf::ElfFile elf, UniqueFd fd,
                                                             const DebugLinkDirs& dirs,
                                                             const ModuleFileOptions& options) {
  if (!fd.valid())
    return make_error("no open descriptor for {}; open the file before creating its ModuleFile",
                      elf.path());
  std::string identity = file_identity(fd.get(), elf);
  // make_shared cannot reach the private constructor.
  auto file = std::make_shared<ModuleFile>(Key{}, std::move(elf), std::move(fd), identity);
  if (auto debug_path = find_debug_file(file->elf_, dirs, options)) {
    auto debug_elf = elf::ElfFile::open(*debug_path);
    UniqueFd debug_fd(::open(debug_path->c_str(), O_RDONLY | O_CLOEXEC));
    if (debug_elf && debug_fd.valid())
      file->debug_ = std::make_unique<DebugFile>(
          DebugFile{.elf = std::move(*debug_elf), .fd = std::move(debug_fd)});
  }
  return std::shared_ptr<const ModuleFile>(std::move(file));
}

Result<std::shared_ptr<const ModuleFile>> ModuleFile::open(const std::string& path,
                                                           const ModuleFileOptions& options) {
  auto elf = elf::ElfFile::open(path);
  if (!elf)
    return elf.error();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid())
    return make_error("cannot open {}: {}", path, std::strerror(errno));
  if (!same_inode(fd.get(), path))
    return make_error("{} changed while it was opened; retry", path);
  std::string dir;
  if (auto slash = path.rfind('/'); slash != std::string::npos)
    dir = path.substr(0, slash);
  return create(std::move(*elf), std::move(fd), DebugLinkDirs{.dir = dir, .namespace_dir = dir},
                options);
}

Result<std::shared_ptr<const ModuleFile>> ModuleFile::from_image(std::span<const uint8_t> image,
                                                                 std::string name,
                                                                 const ModuleFileOptions& options) {
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid())
    return make_error("memfd_create for {} failed: {}", name, std::strerror(errno));
  size_t done = 0;
  while (done < image.size()) {
    ssize_t n = ::write(fd.get(), image.data() + done, image.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return make_error("writing {} into a memfd failed: {}", name, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  auto elf = elf::ElfFile::open(fmt::format("/proc/self/fd/{}", fd.get()));
  if (!elf)
    return elf.error().context(name);
  return create(std::move(*elf), std::move(fd), DebugLinkDirs{}, options);
}

void ModuleFile::index_tables() const {
  // .eh_frame is what the compiler emits for unwinding; .debug_frame only
  // matters for code built without it (-fno-asynchronous-unwind-tables).
  if (auto section = elf_.find_section(".eh_frame")) {
    if (auto bytes = elf_.section_bytes(".eh_frame")) {
      if (auto table = CfiTable::from_eh_frame(*bytes, section->addr)) {
        eh_frame_bytes_ = *bytes;
        eh_frame_vaddr_ = section->addr;
        tables_.eh_frame.emplace(std::move(*table));
      }
    }
  }
  for (const elf::ElfFile* source : {&elf_, debug_elf()}) {
    if (source == nullptr || tables_.debug_frame)
      continue;
    auto bytes = source->section_bytes(".debug_frame");
    if (!bytes)
      continue;
    // Debug files often compress their sections (SHF_COMPRESSED, which the
    // section list does not carry): a real .debug_frame never starts with a
    // length of 1 or 2, which are ELFCOMPRESS_ZLIB / ELFCOMPRESS_ZSTD.
    std::vector<uint8_t> inflated;
    std::span<const uint8_t> data = *bytes;
    if (data.size() >= 24) {
      uint32_t type = 0;
      uint64_t size = 0;
      std::memcpy(&type, data.data(), sizeof type);
      std::memcpy(&size, data.data() + 8, sizeof size);
      if (type == 1 && size > 0 && size < (uint64_t{1} << 31)) {
        inflated.resize(size);
        uLongf out_size = static_cast<uLongf>(size);
        if (uncompress(inflated.data(), &out_size, data.data() + 24,
                       static_cast<uLong>(data.size() - 24)) != Z_OK ||
            out_size != size)
          continue;
        data = inflated;
      } else if (type == 1 || type == 2) {
        continue;
      }
    }
    if (auto table = CfiTable::from_debug_frame(data))
      tables_.debug_frame.emplace(std::move(*table));
  }
}

FdeRef ModuleFile::find_fde(uint64_t file_pc) const {
  std::call_once(tables_once_, [this] { index_tables(); });
  for (const std::optional<CfiTable>* table : {&tables_.eh_frame, &tables_.debug_frame})
    if (*table)
      if (const FdeEntry* fde = (*table)->find(file_pc))
        return FdeRef{.table = &**table, .fde = fde};
  return FdeRef{};
}

bool ModuleFile::has_unwind_info() const {
  std::call_once(tables_once_, [this] { index_tables(); });
  return tables_.eh_frame || tables_.debug_frame;
}

bool ModuleFile::read_image(uint64_t vaddr, void* out, size_t len) const {
  std::call_once(tables_once_, [this] { index_tables(); });
  auto* dest = static_cast<uint8_t*>(out);
  if (vaddr >= eh_frame_vaddr_ && vaddr - eh_frame_vaddr_ < eh_frame_bytes_.size()) {
    size_t at = vaddr - eh_frame_vaddr_;
    size_t n = std::min(len, eh_frame_bytes_.size() - at);
    std::memcpy(dest, eh_frame_bytes_.data() + at, n);
    // An aligned word can straddle the end of .eh_frame; its tail comes
    // from the file, or is zero where nothing is mapped.
    if (n < len && !read_image(vaddr + n, dest + n, len - n))
      std::memset(dest + n, 0, len - n);
    return true;
  }
  for (const elf::LoadSegment& segment : elf_.load_segments()) {
    uint64_t span = std::max(segment.filesz, segment.memsz);
    if (vaddr < segment.vaddr || vaddr - segment.vaddr >= span)
      continue;
    uint64_t delta = vaddr - segment.vaddr;
    std::memset(dest, 0, len);
    if (delta >= segment.filesz)
      return true;  // zero-filled tail
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, segment.filesz - delta));
    n = static_cast<size_t>(std::min<uint64_t>(n, span - delta));
    ssize_t got = ::pread(fd_.get(), dest, n, static_cast<off_t>(segment.offset + delta));
    return got == static_cast<ssize_t>(n);
  }
  return false;
}

}  // namespace krait::unwind
