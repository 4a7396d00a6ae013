#include "module_test_support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "elf/elf_file.h"
#include "fixture_support.h"

namespace krait::unwind::module_test {

Result<std::string> run_tool(const std::vector<std::string>& argv) {
  auto run = unwind_fixtures::run_program(argv);
  if (!run)
    return run.error();
  if (run->exit_code != 0)
    return make_error("{} failed: {}", argv[0], run->err);
  return run->out;
}

std::vector<proc::MapEntry> with_file_replaced(std::vector<proc::MapEntry> maps,
                                               const std::string& old_path,
                                               const std::string& new_path) {
  struct stat st {};
  EXPECT_EQ(::stat(new_path.c_str(), &st), 0) << new_path;
  for (proc::MapEntry& entry : maps) {
    if (entry.path != old_path)
      continue;
    entry.path = new_path;
    entry.inode = st.st_ino;
    entry.dev_major = major(st.st_dev);
    entry.dev_minor = minor(st.st_dev);
  }
  return maps;
}

const Module* module_of(const ProcessModules& modules, const std::string& path) {
  for (const Module& m : modules.modules())
    if (m.path == path)
      return &m;
  return nullptr;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::string make_impostor(const std::string& lib, const std::string& dir) {
  std::vector<uint8_t> bytes = file_bytes(lib);
  const std::string from = kLibFunction;
  const std::string to = kImpostorFunction;
  EXPECT_EQ(from.size(), to.size());
  size_t renamed = 0;
  for (auto it = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
       it != bytes.end(); it = std::search(it, bytes.end(), from.begin(), from.end())) {
    std::copy(to.begin(), to.end(), it);
    ++renamed;
  }
  EXPECT_GE(renamed, 2u) << "the name is in .dynstr and .strtab";
  auto elf = elf::ElfFile::open(lib);
  EXPECT_TRUE(elf.ok());
  auto eh_frame = elf->find_section(".eh_frame");
  EXPECT_TRUE(eh_frame.has_value());
  if (eh_frame)
    std::fill_n(bytes.begin() + static_cast<long>(eh_frame->offset), eh_frame->size, 0);
  std::string path = dir + "/libimpostor.so";
  write_file(path, bytes);
  return path;
}

Mapping::Mapping(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  void* at = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (at != MAP_FAILED)
    address_ = at;
}

Mapping::~Mapping() {
  if (address_ != nullptr)
    ::munmap(address_, 4096);
}

std::optional<proc::MapEntry> Mapping::entry() const {
  auto maps = proc::read_maps(::getpid());
  if (!maps.ok())
    return std::nullopt;
  for (const proc::MapEntry& e : *maps)
    if (e.start == reinterpret_cast<uint64_t>(address_))
      return e;
  return std::nullopt;
}

}  // namespace krait::unwind::module_test
