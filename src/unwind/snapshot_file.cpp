#include "unwind/snapshot_file.h"

#include <cstring>
#include <fstream>
#include <vector>

namespace krait::unwind {
namespace {

constexpr char kMagic[8] = {'K', 'R', 'A', 'I', 'T', 'S', 'N', 'P'};
constexpr uint32_t kVersion = 1;

// In the file, the registers follow krait_user_regs's order.
std::vector<uint64_t*> register_fields(Registers& r) {
  std::vector<uint64_t*> out;
#define KRAIT_REGISTER_ADDRESS(name) out.push_back(&r.name);
  KRAIT_USER_REGS(KRAIT_REGISTER_ADDRESS)
#undef KRAIT_REGISTER_ADDRESS
  return out;
}

}  // namespace

Result<SnapshotFile> read_snapshot_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error("cannot open snapshot file {}", path);
  auto read = [&in](void* out, size_t len) {
    in.read(static_cast<char*>(out), static_cast<std::streamsize>(len));
    return static_cast<bool>(in);
  };
  char magic[8];
  uint32_t header[2];
  if (!read(magic, sizeof magic) || std::memcmp(magic, kMagic, sizeof magic) != 0)
    return make_error("{} is not a krait snapshot file (bad magic)", path);
  if (!read(header, sizeof header) || header[0] != kVersion)
    return make_error("{} has snapshot format version {}, expected {}", path, header[0], kVersion);
  SnapshotFile file;
  for (uint64_t* field : register_fields(file.regs))
    if (!read(field, sizeof *field))
      return make_error("{} ends inside its registers; the file is truncated", path);
  uint64_t stack_size = 0;
  if (!read(&file.stack_start, sizeof file.stack_start) || !read(&stack_size, sizeof stack_size))
    return make_error("{} ends before its stack; the file is truncated", path);
  if (stack_size > kMaxSnapshotStackBytes)
    return make_error("{} claims a stack of {} bytes; the file is corrupt", path, stack_size);
  file.stack.resize(stack_size);
  if (!read(file.stack.data(), stack_size))
    return make_error("{} ends inside its stack; the file is truncated", path);
  uint64_t maps_size = 0;
  if (!read(&maps_size, sizeof maps_size))
    return make_error("{} ends before its maps; the file is truncated", path);
  if (maps_size > kMaxSnapshotMapsBytes)
    return make_error("{} claims maps of {} bytes; the file is corrupt", path, maps_size);
  file.maps_text.resize(maps_size);
  if (!read(file.maps_text.data(), maps_size))
    return make_error("{} ends inside its maps; the file is truncated", path);
  return file;
}

Result<void> write_snapshot_file(const std::string& path, const SnapshotFile& file) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    return make_error("cannot create snapshot file {}", path);
  auto write = [&out](const void* data, size_t len) {
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(len));
  };
  uint32_t header[2] = {kVersion, 0};
  write(kMagic, sizeof kMagic);
  write(header, sizeof header);
  Registers regs = file.regs;
  for (uint64_t* field : register_fields(regs))
    write(field, sizeof *field);
  uint64_t stack_size = file.stack.size();
  uint64_t maps_size = file.maps_text.size();
  write(&file.stack_start, sizeof file.stack_start);
  write(&stack_size, sizeof stack_size);
  write(file.stack.data(), file.stack.size());
  write(&maps_size, sizeof maps_size);
  write(file.maps_text.data(), file.maps_text.size());
  out.flush();
  if (!out)
    return make_error("writing snapshot file {} failed (disk full?)", path);
  return {};
}

}  // namespace krait::unwind
