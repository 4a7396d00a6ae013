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

#include "proc/maps.h"

namespace krait::unwind {
namespace {

std::atomic<uint64_t> next_serial{1};

std::string file_identity(const elf::ElfFile& elf) {
  const elf::FileId& id = elf.file_id();
  return fmt::format("file:{}:{}:{}:{}:{}/{}", id.dev_major, id.dev_minor, id.inode, id.size,
                     id.mtime_ns, elf.build_id().empty() ? "-" : elf.build_id());
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

// The CRC-32 of the whole file behind `elf`, read through its own
// descriptor (the candidate is not opened a second time).
std::optional<uint32_t> file_crc(const elf::ElfFile& elf) {
  const uint64_t size = elf.file_id().size;
  if (size > kMaxCrcFileBytes)
    return std::nullopt;
  uLong crc = crc32(0, nullptr, 0);
  std::vector<uint8_t> buffer(1 << 16);
  uint64_t done = 0;
  while (done < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - done));
    ssize_t n = ::pread(elf.fd(), buffer.data(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return std::nullopt;  // error, or the file shrank
    crc = crc32(crc, buffer.data(), static_cast<uInt>(n));
    done += static_cast<uint64_t>(n);
  }
  return static_cast<uint32_t>(crc);
}

std::string join(std::string_view dir, std::string_view name) {
  if (dir.empty())
    return std::string(name);
  if (dir.back() == '/')
    return fmt::format("{}{}", dir, name);
  return fmt::format("{}/{}", dir, name);
}

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos)
    return "";
  return slash == 0 ? std::string("/") : path.substr(0, slash);
}

}  // namespace

std::optional<elf::ElfFile> find_debug_file(const elf::ElfFile& elf, const DebugLinkDirs& dirs,
                                            const ModuleFileOptions& options) {
  const std::string& build_id = elf.build_id();
  auto accept = [&](const elf::ElfFile& debug, bool by_build_id) -> bool {
    if (debug.file_id() == elf.file_id())
      return false;  // the file itself
    if (!build_id.empty())
      return debug.build_id() == build_id;
    if (by_build_id)
      return false;
    auto expected = debuglink_crc(elf);
    auto actual = file_crc(debug);
    return expected && actual && *expected == *actual;
  };
  // The operator's trees: links are followed (.build-id entries are links).
  auto try_trusted = [&](const std::string& path, bool by_build_id) -> std::optional<elf::ElfFile> {
    auto debug = elf::ElfFile::open(path);
    if (debug && accept(*debug, by_build_id))
      return std::move(*debug);
    return std::nullopt;
  };

  if (build_id.size() > 2) {
    for (const std::string& root : options.debug_roots) {
      std::string candidate =
          fmt::format("{}/.build-id/{}/{}.debug", root, build_id.substr(0, 2), build_id.substr(2));
      if (auto debug = try_trusted(candidate, true))
        return debug;
    }
  }
  auto link = elf.debuglink();
  if (!link || link->empty() || link->find('/') != std::string::npos || *link == "." ||
      *link == ".." || dirs.dir.empty() || dirs.dir.front() != '/')
    return std::nullopt;
  if (dirs.search_beside) {
    // Beside the file, where whoever owns its directory chooses what lies:
    // resolved inside the mapping process's root, no link followed at the end.
    UniqueFd own_root;
    int root_fd = dirs.root_fd;
    if (root_fd < 0) {
      auto root = proc::open_root(0);
      if (root)
        own_root = std::move(*root);
      root_fd = own_root.get();
    }
    if (root_fd >= 0) {
      for (const std::string& candidate :
           {join(dirs.dir, *link), join(join(dirs.dir, ".debug"), *link)}) {
        auto opened = proc::open_in_root(root_fd, candidate, candidate);
        if (!opened)
          continue;
        auto debug = elf::ElfFile::from_fd(std::move(opened->fd), std::move(opened->name));
        if (debug && accept(*debug, false))
          return std::move(*debug);
      }
    }
  }
  for (const std::string& root : options.debug_roots)
    if (auto debug = try_trusted(join(root + dirs.dir, *link), false))
      return debug;
  return std::nullopt;
}

ModuleFile::ModuleFile(Key, elf::ElfFile elf, std::string identity)
    : serial_(next_serial.fetch_add(1, std::memory_order_relaxed)),
      elf_(std::move(elf)),
      identity_(std::move(identity)) {}

ModuleFile::~ModuleFile() = default;

Result<std::shared_ptr<const ModuleFile>> ModuleFile::create(elf::ElfFile elf,
                                                             const DebugLinkDirs& dirs,
                                                             const ModuleFileOptions& options) {
  std::string identity = file_identity(elf);
  // make_shared cannot reach the private constructor.
  auto file = std::make_shared<ModuleFile>(Key{}, std::move(elf), identity);
  if (auto debug = find_debug_file(file->elf_, dirs, options))
    file->debug_.emplace(std::move(*debug));
  if (options.index_eagerly) {
    std::call_once(file->tables_once_, [&file] { file->index_tables(); });
    file->elf_.index_now();
    if (file->debug_)
      file->debug_->index_now();
  }
  return std::shared_ptr<const ModuleFile>(std::move(file));
}

Result<std::shared_ptr<const ModuleFile>> ModuleFile::open(const std::string& path,
                                                           const ModuleFileOptions& options) {
  auto elf = elf::ElfFile::open(path);
  if (!elf)
    return elf.error();
  std::string absolute = path;
  if (!absolute.empty() && absolute.front() != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) != nullptr)
      absolute = join(cwd, path);
  }
  return create(std::move(*elf), DebugLinkDirs{.root_fd = -1, .dir = parent_dir(absolute)},
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
  auto elf = elf::ElfFile::from_fd(std::move(fd), name);
  if (!elf)
    return elf.error().context(name);
  return create(std::move(*elf), DebugLinkDirs{.search_beside = false}, options);
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
      // The size is the file's claim: checked against a fixed cap and what
      // the compressed bytes can possibly inflate to, before allocating.
      const uint64_t compressed = data.size() - 24;
      if (type == 1 && size > 0 && size <= kMaxDebugFrameBytes &&
          size / kMaxCompressionRatio <= compressed) {
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
    ssize_t got = ::pread(elf_.fd(), dest, n, static_cast<off_t>(segment.offset + delta));
    return got == static_cast<ssize_t>(n);
  }
  return false;
}

}  // namespace krait::unwind
