// parse_maps on real-world lines, and runtime_address against live processes
// that print the addresses of their own symbols.
#include "proc/maps.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "test_support.h"

namespace krait::proc {
namespace {

using test::fixtures;

#define REQUIRE_FIXTURES() ASSERT_EQ(test::missing_fixtures(), "")

// ---------------------------------------------------------------------------
// parse_maps

TEST(ParseMapsTest, RealWorldLines) {
  const std::string text =
      "00400000-0041f000 r--p 00000000 fe:00 247970                             "
      "/usr/bin/python3.11\n"
      "55d1c9a4a000-55d1c9a6b000 rw-p 00000000 00:00 0                          [heap]\n"
      "7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 \n"
      "7f3a8e5d2000-7f3a8e5f8000 r-xp 00028000 103:02 1835123                   "
      "/opt/my app/lib/lib with spaces.so\n"
      "7f3a8e600000-7f3a8e700000 rw-s 00000000 00:01 4096                       "
      "/memfd:jit code (deleted)\n"
      "7f3a8e700000-7f3a8e701000 r--p 00002000 08:11 131                        "
      "/tmp/krait (old)/python3 (deleted)\n"
      "7f3a8e800000-7f3a8e801000 rw-p 00000000 00:00 0                          [anon:glibc: "
      "malloc arena]\n"
      "7ffd4a9c5000-7ffd4a9e6000 rw-p 00000000 00:00 0                          [stack]\n"
      "7ffd4a9f2000-7ffd4a9f4000 r-xp 00000000 00:00 0                          [vdso]\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
  auto maps = parse_maps(text);
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  ASSERT_EQ(maps->size(), 10u);
  const auto& m = *maps;

  EXPECT_EQ(m[0].start, 0x400000u);
  EXPECT_EQ(m[0].end, 0x41f000u);
  EXPECT_TRUE(m[0].read);
  EXPECT_FALSE(m[0].write);
  EXPECT_FALSE(m[0].exec);
  EXPECT_FALSE(m[0].shared);
  EXPECT_EQ(m[0].offset, 0u);
  EXPECT_EQ(m[0].dev_major, 0xfeu);
  EXPECT_EQ(m[0].dev_minor, 0u);
  EXPECT_EQ(m[0].inode, 247970u);
  EXPECT_EQ(m[0].path, "/usr/bin/python3.11");
  EXPECT_FALSE(m[0].deleted);
  EXPECT_TRUE(m[0].is_file());

  EXPECT_EQ(m[1].path, "[heap]");
  EXPECT_TRUE(m[1].write);
  EXPECT_FALSE(m[1].is_file());

  EXPECT_EQ(m[2].start, 0x7f1e2c000000u);
  EXPECT_EQ(m[2].path, "");
  EXPECT_EQ(m[2].inode, 0u);
  EXPECT_FALSE(m[2].is_file());

  EXPECT_EQ(m[3].offset, 0x28000u);
  EXPECT_TRUE(m[3].exec);
  EXPECT_EQ(m[3].dev_major, 0x103u);
  EXPECT_EQ(m[3].dev_minor, 0x2u);
  EXPECT_EQ(m[3].path, "/opt/my app/lib/lib with spaces.so");
  EXPECT_FALSE(m[3].deleted);

  EXPECT_TRUE(m[4].shared);
  EXPECT_EQ(m[4].path, "/memfd:jit code");
  EXPECT_TRUE(m[4].deleted);

  EXPECT_EQ(m[5].path, "/tmp/krait (old)/python3");
  EXPECT_TRUE(m[5].deleted);
  EXPECT_EQ(m[5].offset, 0x2000u);

  EXPECT_EQ(m[6].path, "[anon:glibc: malloc arena]");
  EXPECT_EQ(m[7].path, "[stack]");
  EXPECT_EQ(m[8].path, "[vdso]");

  EXPECT_EQ(m[9].start, 0xffffffffff600000u);
  EXPECT_EQ(m[9].end, 0xffffffffff601000u);
  EXPECT_FALSE(m[9].read);
  EXPECT_TRUE(m[9].exec);
  EXPECT_EQ(m[9].path, "[vsyscall]");
}

TEST(ParseMapsTest, EmptyTextAndMissingTrailingNewline) {
  auto empty = parse_maps("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  auto one = parse_maps("1000-2000 r-xp 00001000 08:01 12 /bin/x");
  ASSERT_TRUE(one.ok()) << one.error().message;
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].path, "/bin/x");
}

TEST(ParseMapsTest, MalformedLinesNameTheLine) {
  for (const char* bad : {
           "garbage\n",
           "1000-2000 r-xp 0 08:01\n",              // no inode
           "1000 r-xp 00000000 08:01 12 /bin/x\n",  // no end
           "1000-2000 rwzp 00000000 08:01 12 /bin/x\n", "1000-2000 r-xq 00000000 08:01 12 /bin/x\n",
           "2000-1000 r-xp 00000000 08:01 12 /bin/x\n",  // end before start
           "1000-2000 r-xp 00000000 0801 12 /bin/x\n", "1000-2000 r-xp 00000000 08:01 x /bin/x\n",
           "1000-2000 r-xp 00000000 08:01 12/bin/x\n",
           "10000000000000000000-2000 r-xp 00000000 08:01 12 /bin/x\n",  // overflows 64 bits
       }) {
    std::string text = std::string("1000-2000 r-xp 00000000 08:01 12 /bin/ok\n") + bad;
    auto maps = parse_maps(text);
    ASSERT_FALSE(maps.ok()) << bad;
    EXPECT_NE(maps.error().message.find("line 2"), std::string::npos) << maps.error().message;
  }
}

// A process chooses how long its map is: the text and each line are capped,
// and the caps are errors that say so.
TEST(ParseMapsTest, TextAndLinesAreCapped) {
  const std::string line = "7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/libx.so\n";
  std::string text;
  while (text.size() <= kMaxMapsBytes)
    text += line;
  auto too_long = parse_maps(text);
  ASSERT_FALSE(too_long.ok()) << "parsed " << text.size() << " bytes";
  EXPECT_NE(too_long.error().message.find("larger than"), std::string::npos)
      << too_long.error().message;
  // Just under the cap is fine, and every line is there.
  text.resize(kMaxMapsBytes / line.size() * line.size());
  auto fits = parse_maps(text);
  ASSERT_TRUE(fits.ok()) << fits.error().message;
  EXPECT_EQ(fits->size(), kMaxMapsBytes / line.size());

  std::string long_path =
      "1000-2000 r-xp 00000000 08:01 12 /" + std::string(kMaxMapsLineBytes, 'x');
  auto long_line = parse_maps("1000-2000 r-xp 00000000 08:01 12 /ok\n" + long_path + "\n");
  ASSERT_FALSE(long_line.ok());
  EXPECT_NE(long_line.error().message.find("line 2"), std::string::npos)
      << long_line.error().message;
}

TEST(ParseMapsTest, OwnMapsMatchWhatTheKernelKnows) {
  auto count_lines = [] {
    std::ifstream in("/proc/self/maps");
    size_t lines = 0;
    for (std::string line; std::getline(in, line);)
      lines += line.empty() ? 0 : 1;
    return lines;
  };
  // The test binary is mapped the same way each time; only anonymous
  // mappings change in between: the allocator's, which under ASan maps a
  // region per size class as they are first used. So the count read_maps
  // sees lies between the kernel's counts just before and just after.
  const size_t before = count_lines();
  auto maps = read_maps(::getpid());
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  const size_t after = count_lines();
  EXPECT_GE(static_cast<double>(maps->size()), static_cast<double>(std::min(before, after)) - 2.0);
  EXPECT_LE(static_cast<double>(maps->size()), static_cast<double>(std::max(before, after)) + 2.0);

  auto code = reinterpret_cast<uint64_t>(&parse_maps);
  int on_stack = 0;
  auto stack = reinterpret_cast<uint64_t>(&on_stack);
  const MapEntry* code_entry = nullptr;
  const MapEntry* stack_entry = nullptr;
  for (const MapEntry& e : *maps) {
    if (code >= e.start && code < e.end)
      code_entry = &e;
    if (stack >= e.start && stack < e.end)
      stack_entry = &e;
  }
  ASSERT_NE(code_entry, nullptr);
  EXPECT_TRUE(code_entry->exec);
  EXPECT_EQ(code_entry->path, test::real_path("/proc/self/exe"));
  struct stat st;
  ASSERT_EQ(::stat("/proc/self/exe", &st), 0);
  EXPECT_EQ(code_entry->inode, st.st_ino);
  ASSERT_NE(stack_entry, nullptr);
  EXPECT_EQ(stack_entry->path, "[stack]");
  EXPECT_TRUE(stack_entry->write);
}

TEST(ReadMapsTest, MissingProcessIsNamed) {
  std::ifstream pid_max_file("/proc/sys/kernel/pid_max");
  long pid_max = 0;
  ASSERT_TRUE(pid_max_file >> pid_max) << "cannot read /proc/sys/kernel/pid_max";
  int pid = static_cast<int>(pid_max + 1);  // above the largest pid the kernel hands out
  auto maps = read_maps(pid);
  ASSERT_FALSE(maps.ok());
  EXPECT_EQ(maps.error().message, "process " + std::to_string(pid) + " does not exist");
  EXPECT_FALSE(read_maps(0).ok());
  EXPECT_FALSE(read_maps(-5).ok());
}

TEST(OpenablePathTest, Formats) {
  MapEntry file{.start = 0x7f00, .end = 0x7f10, .inode = 5, .path = "/usr/lib/x.so"};
  EXPECT_EQ(openable_path(42, file), "/proc/42/root/usr/lib/x.so");
  MapEntry deleted = file;
  deleted.deleted = true;
  EXPECT_EQ(openable_path(42, deleted), "/proc/42/map_files/7f00-7f10");
  MapEntry newline = file;
  newline.path = "/tmp/a\\012b.so";
  EXPECT_EQ(openable_path(42, newline), "/proc/42/map_files/7f00-7f10");
  EXPECT_EQ(openable_path(42, MapEntry{.start = 1, .end = 2, .path = "[heap]"}), "");
  EXPECT_EQ(openable_path(42, MapEntry{.start = 1, .end = 2}), "");
}

// ---------------------------------------------------------------------------
// Live processes

struct Mapped {
  std::vector<MapEntry> maps;  // every mapping of the file, in address order
  std::string error;
};

// The mappings of the file whose path (as the process shows it) satisfies
// `matches`.
template <typename Pred>
Mapped mapped_file(int pid, Pred matches) {
  Mapped out;
  auto maps = read_maps(pid);
  if (!maps.ok()) {
    out.error = maps.error().message;
    return out;
  }
  for (const MapEntry& e : *maps) {
    if (e.is_file() && matches(e.path)) {
      out.maps = maps_of_file(*maps, e);
      return out;
    }
  }
  out.error = "no mapping matched in process " + std::to_string(pid);
  return out;
}

void expect_address(std::span<const MapEntry> maps, const elf::ElfFile& elf,
                    const std::string& symbol, uint64_t want) {
  auto sym = elf.find_symbol(symbol);
  ASSERT_TRUE(sym.has_value()) << symbol << " in " << elf.path();
  auto got = runtime_address(maps, elf, sym->value);
  ASSERT_TRUE(got.ok()) << symbol << ": " << got.error().message;
  EXPECT_EQ(*got, want) << symbol << std::hex << " got 0x" << *got << " want 0x" << want;
}

// runtime_address() gives the same answer from every subset that drops one
// mapping (so it works without the mapping of the symbol's own segment).
void expect_address_without_each_mapping(std::span<const MapEntry> maps, const elf::ElfFile& elf,
                                         const std::string& symbol, uint64_t want) {
  ASSERT_GE(maps.size(), 2u);
  auto sym = elf.find_symbol(symbol);
  ASSERT_TRUE(sym.has_value());
  for (size_t skip = 0; skip < maps.size(); ++skip) {
    std::vector<MapEntry> subset;
    for (size_t i = 0; i < maps.size(); ++i)
      if (i != skip)
        subset.push_back(maps[i]);
    auto got = runtime_address(subset, elf, sym->value);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(*got, want) << symbol << " without mapping " << skip;
  }
  // The executable mapping alone is unambiguous.
  for (const MapEntry& e : maps) {
    if (!e.exec)
      continue;
    auto got = runtime_address(std::span<const MapEntry>(&e, 1), elf, sym->value);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(*got, want) << symbol << " from the executable mapping alone";
  }
}

TEST(RuntimeAddressTest, PieExecutableAndSharedLibrary) {
  REQUIRE_FIXTURES();
  test::Child child = test::Child::spawn({fixtures().pie});
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 6u) << "the fixture did not report its addresses";

  const std::string exe_path = test::real_path(fixtures().pie);
  Mapped exe = mapped_file(child.pid(), [&](const std::string& p) { return p == exe_path; });
  ASSERT_EQ(exe.error, "");
  ASSERT_GE(exe.maps.size(), 3u);
  EXPECT_FALSE(exe.maps.front().deleted);
  EXPECT_EQ(openable_path(child.pid(), exe.maps.front()),
            "/proc/" + std::to_string(child.pid()) + "/root" + exe_path);
  auto exe_elf = elf::ElfFile::open(openable_path(child.pid(), exe.maps.front()));
  ASSERT_TRUE(exe_elf.ok()) << exe_elf.error().message;
  ASSERT_TRUE(exe_elf->is_dyn());

  expect_address(exe.maps, *exe_elf, "krait_fixture_global", printed["global"]);
  expect_address(exe.maps, *exe_elf, "krait_fixture_function", printed["function"]);
  expect_address(exe.maps, *exe_elf, "krait_fixture_rodata", printed["rodata"]);
  expect_address(exe.maps, *exe_elf, "krait_fixture_local_counter", printed["local_counter"]);
  expect_address_without_each_mapping(exe.maps, *exe_elf, "krait_fixture_global",
                                      printed["global"]);
  auto bias = load_bias(exe.maps, *exe_elf);
  ASSERT_TRUE(bias.ok()) << bias.error().message;
  EXPECT_NE(*bias, 0u) << "a PIE is relocated";
  EXPECT_EQ(*bias % 4096, 0u);

  const std::string lib_path = test::real_path(fixtures().lib);
  Mapped lib = mapped_file(child.pid(), [&](const std::string& p) { return p == lib_path; });
  ASSERT_EQ(lib.error, "");
  auto lib_elf = open_mapped_elf(child.pid(), lib.maps.front());
  ASSERT_TRUE(lib_elf.ok()) << lib_elf.error().message;
  EXPECT_EQ(lib_elf->soname(), "libkrait_elf_fixture.so.1");
  expect_address(lib.maps, *lib_elf, "krait_lib_data", printed["lib_data"]);
  expect_address(lib.maps, *lib_elf, "krait_lib_function", printed["lib_function"]);
  expect_address_without_each_mapping(lib.maps, *lib_elf, "krait_lib_data", printed["lib_data"]);

  // Wrong inputs are errors, not wrong answers.
  EXPECT_FALSE(runtime_address({}, *exe_elf, exe_elf->find_symbol("main")->value).ok());
  std::vector<MapEntry> mixed{exe.maps.front(), lib.maps.front()};
  EXPECT_FALSE(runtime_address(mixed, *exe_elf, exe_elf->find_symbol("main")->value).ok());
  uint64_t beyond = 0;
  for (const auto& seg : exe_elf->load_segments())
    beyond = std::max(beyond, seg.vaddr + seg.memsz);
  EXPECT_FALSE(runtime_address(exe.maps, *exe_elf, beyond + 0x10000).ok());

  EXPECT_EQ(child.finish(), 0);
}

TEST(RuntimeAddressTest, StaticExecutableHasNoBias) {
  REQUIRE_FIXTURES();
  test::Child child = test::Child::spawn({fixtures().static_exe});
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 4u) << "the fixture did not report its addresses";
  const std::string exe_path = test::real_path(fixtures().static_exe);
  Mapped exe = mapped_file(child.pid(), [&](const std::string& p) { return p == exe_path; });
  ASSERT_EQ(exe.error, "");
  auto elf = open_mapped_elf(child.pid(), exe.maps.front());
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  EXPECT_FALSE(elf->is_dyn());
  auto bias = load_bias(exe.maps, *elf);
  ASSERT_TRUE(bias.ok()) << bias.error().message;
  EXPECT_EQ(*bias, 0u);
  EXPECT_EQ(elf->find_symbol("krait_fixture_global")->value, printed["global"]);
  expect_address(exe.maps, *elf, "krait_fixture_global", printed["global"]);
  expect_address(exe.maps, *elf, "krait_fixture_function", printed["function"]);
  expect_address(exe.maps, *elf, "krait_fixture_local_counter", printed["local_counter"]);
  EXPECT_EQ(child.finish(), 0);
}

TEST(RuntimeAddressTest, DeletedExecutableOpensThroughMapFiles) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string copy = dir.file("deleted_fixture");
  test::write_bytes(copy, test::read_bytes(fixtures().pie), true);
  test::Child child = test::Child::spawn({copy});
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 6u) << "the copied fixture did not report its addresses";
  ASSERT_EQ(::unlink(copy.c_str()), 0);

  const std::string copy_path = test::real_path(dir.path()) + "/deleted_fixture";
  Mapped exe = mapped_file(child.pid(), [&](const std::string& p) { return p == copy_path; });
  ASSERT_EQ(exe.error, "");
  for (const MapEntry& e : exe.maps)
    EXPECT_TRUE(e.deleted) << e.path;
  const MapEntry& first = exe.maps.front();
  std::string path = openable_path(child.pid(), first);
  char expected[128];
  std::snprintf(expected, sizeof expected, "/proc/%d/map_files/%lx-%lx", child.pid(),
                static_cast<unsigned long>(first.start), static_cast<unsigned long>(first.end));
  EXPECT_EQ(path, expected);
  auto elf = elf::ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  expect_address(exe.maps, *elf, "krait_fixture_global", printed["global"]);
  auto via_helper = open_mapped_elf(child.pid(), first);
  ASSERT_TRUE(via_helper.ok()) << via_helper.error().message;
  EXPECT_EQ(via_helper->build_id(), elf->build_id());
  EXPECT_EQ(child.finish(), 0);
}

// A container: the child has its own mount namespace whose root is `dir`.
// Its maps show paths inside the container; /proc/PID/root reaches them.
TEST(RuntimeAddressTest, ContainerProcessOpensThroughProcRoot) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_EQ(::mkdir(dir.file("bin").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir.file("old").c_str(), 0755), 0);
  test::write_bytes(dir.file("bin/fixture"), test::read_bytes(fixtures().static_exe), true);
  const std::string root = dir.path();
  const std::string old_root = dir.file("old");
  test::Child child = test::Child::spawn({"/bin/fixture"}, [&] {
    return ::unshare(CLONE_NEWNS) == 0 &&
           ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
           ::mount(root.c_str(), root.c_str(), nullptr, MS_BIND, nullptr) == 0 &&
           ::syscall(SYS_pivot_root, root.c_str(), old_root.c_str()) == 0 && ::chdir("/") == 0 &&
           ::umount2("/old", MNT_DETACH) == 0;
  });
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 4u)
      << "the fixture did not start in a new mount namespace (needs root / CAP_SYS_ADMIN)";
  Mapped exe =
      mapped_file(child.pid(), [](const std::string& p) { return p.ends_with("/bin/fixture"); });
  ASSERT_EQ(exe.error, "");
  EXPECT_EQ(exe.maps.front().path, "/bin/fixture") << "the kernel shows the container's path";
  std::string path = openable_path(child.pid(), exe.maps.front());
  EXPECT_EQ(path, "/proc/" + std::to_string(child.pid()) + "/root/bin/fixture");
  auto elf = elf::ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  expect_address(exe.maps, *elf, "krait_fixture_global", printed["global"]);
  EXPECT_EQ(child.finish(), 0);
}

// A chroot inside our mount namespace: maps show our path, which
// /proc/PID/root does not reach; open_mapped_elf() still finds the file.
TEST(RuntimeAddressTest, ChrootedProcessOpensThroughMapFiles) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_EQ(::mkdir(dir.file("bin").c_str(), 0755), 0);
  test::write_bytes(dir.file("bin/fixture"), test::read_bytes(fixtures().static_exe), true);
  const std::string root = dir.path();
  test::Child child = test::Child::spawn(
      {"/bin/fixture"}, [&] { return ::chroot(root.c_str()) == 0 && ::chdir("/") == 0; });
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 4u) << "the fixture did not start chrooted (needs CAP_SYS_CHROOT)";
  const std::string host_path = test::real_path(root) + "/bin/fixture";
  Mapped exe = mapped_file(child.pid(), [&](const std::string& p) { return p == host_path; });
  ASSERT_EQ(exe.error, "");
  auto elf = open_mapped_elf(child.pid(), exe.maps.front());
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  expect_address(exe.maps, *elf, "krait_fixture_global", printed["global"]);
  EXPECT_EQ(child.finish(), 0);
}

// ---------------------------------------------------------------------------
// Opening mapped files

// A page of `path` mapped into this process; unmapped on destruction.
class Mapping {
 public:
  explicit Mapping(const std::string& path, size_t length = 4096) : length_(length) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return;
    void* at = ::mmap(nullptr, length, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (at != MAP_FAILED)
      address_ = at;
  }
  ~Mapping() {
    if (address_ != nullptr)
      ::munmap(address_, length_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint64_t start() const { return reinterpret_cast<uint64_t>(address_); }
  bool ok() const { return address_ != nullptr; }

 private:
  void* address_ = nullptr;
  size_t length_;
};

// This process's map entry for `mapping`.
std::optional<MapEntry> own_entry(const Mapping& mapping) {
  auto maps = read_maps(::getpid());
  if (!maps.ok())
    return std::nullopt;
  for (const MapEntry& e : *maps)
    if (e.start == mapping.start())
      return e;
  return std::nullopt;
}

// The map of a process with thousands of mappings of a file whose path is
// near PATH_MAX is longer than kMaxMapsBytes: read_maps() says so rather
// than reading it all.
TEST(ReadMapsTest, MapLongerThanTheCapIsAnError) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  std::string path = dir.path();
  while (path.size() < 3700) {
    path += "/" + std::string(250, 'd');
    ASSERT_EQ(::mkdir(path.c_str(), 0755), 0) << path;
  }
  path += "/lib";
  test::write_bytes(path, test::read_bytes(fixtures().lib), false);
  const size_t line = path.size() + 80;
  const size_t count = kMaxMapsBytes / line + 200;
  std::vector<std::unique_ptr<Mapping>> mappings;
  for (size_t i = 0; i < count; ++i) {
    mappings.push_back(std::make_unique<Mapping>(path));
    ASSERT_TRUE(mappings.back()->ok()) << "mapping " << i;
  }
  auto maps = read_maps(::getpid());
  ASSERT_FALSE(maps.ok()) << "read " << maps->size() << " entries";
  EXPECT_NE(maps.error().message.find("larger than"), std::string::npos) << maps.error().message;
  mappings.clear();
  EXPECT_TRUE(read_maps(::getpid()).ok());
}

// A mapped library whose path now names a FIFO: the mapped file is opened
// (through map_files), and the FIFO never is; with only the path to go by
// (pid 0) a clean error. Each call runs on its own thread, so that a call
// that blocks fails the test instead of hanging it.
TEST(OpenMappedFileTest, PathSwappedForAFifo) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string lib = test::real_path(dir.path()) + "/libswapped.so";
  test::write_bytes(lib, test::read_bytes(fixtures().lib), false);
  Mapping mapping(lib);
  ASSERT_TRUE(mapping.ok());
  auto entry = own_entry(mapping);
  ASSERT_TRUE(entry.has_value());
  ASSERT_EQ(entry->path, lib);
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::rename(fifo.c_str(), lib.c_str()), 0);

  auto in_thread = [](int pid, MapEntry e) {
    return std::async(std::launch::async, [pid, e] { return open_mapped_elf(pid, e); });
  };
  auto live = in_thread(::getpid(), *entry);
  auto by_path = in_thread(0, *entry);
  bool blocked = false;
  for (auto* call : {&live, &by_path}) {
    if (call->wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
      blocked = true;
      // Give the blocked open a writer, so that it returns and the test ends.
      int writer = ::open(lib.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (writer >= 0)
        ::close(writer);
    }
  }
  ASSERT_FALSE(blocked) << "opening a mapping whose path is a FIFO blocked";
  auto elf = live.get();
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  EXPECT_EQ(elf->build_id(), elf::ElfFile::open(fixtures().lib)->build_id());
  auto refused = by_path.get();
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("not a regular file"), std::string::npos)
      << refused.error().message;
}

// The device is checked as well as the inode: a mapping entry whose inode
// matches the file but whose device does not is another file.
TEST(OpenMappedFileTest, DeviceAndInodeMustMatch) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string lib = test::real_path(dir.path()) + "/libdevice.so";
  test::write_bytes(lib, test::read_bytes(fixtures().lib), false);
  Mapping mapping(lib);
  ASSERT_TRUE(mapping.ok());
  auto entry = own_entry(mapping);
  ASSERT_TRUE(entry.has_value());
  auto right = open_mapped_file(::getpid(), *entry);
  ASSERT_TRUE(right.ok()) << right.error().message;
  EXPECT_EQ(right->id.inode, entry->inode);
  EXPECT_EQ(right->id.dev_major, entry->dev_major);
  EXPECT_EQ(right->id.dev_minor, entry->dev_minor);

  MapEntry other_device = *entry;
  other_device.dev_minor ^= 0x55;
  for (int pid : {static_cast<int>(::getpid()), 0}) {
    auto wrong = open_mapped_elf(pid, other_device);
    ASSERT_FALSE(wrong.ok()) << "pid " << pid << ": a file of another device was accepted";
    EXPECT_NE(wrong.error().message.find("no longer the mapped file"), std::string::npos)
        << wrong.error().message;
  }
}

// open_in_root() resolves inside the given root: absolute links and ".."
// stay in it, a link as the last component is refused, and so is anything
// not a regular file.
TEST(OpenMappedFileTest, OpenInRootStaysInTheRoot) {
  REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string root_path = test::real_path(dir.path());
  test::write_bytes(root_path + "/inside", test::read_bytes(fixtures().lib), false);
  ASSERT_EQ(::symlink("/", (root_path + "/to_root").c_str()), 0);
  ASSERT_EQ(::symlink("/inside", (root_path + "/last_link").c_str()), 0);
  ASSERT_EQ(::mkfifo((root_path + "/fifo").c_str(), 0600), 0);
  UniqueFd root(::open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root.valid());

  auto inside = open_in_root(root.get(), "/to_root/to_root/inside", "inside");
  ASSERT_TRUE(inside.ok()) << inside.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((root_path + "/inside").c_str(), &st), 0);
  EXPECT_EQ(inside->id.inode, st.st_ino);

  // /etc/hostname of this machine is outside the root.
  for (const char* outside : {"/../../../../etc/hostname", "/to_root/../etc/hostname"}) {
    auto escaped = open_in_root(root.get(), outside, outside);
    EXPECT_FALSE(escaped.ok()) << outside << " reached outside the root";
  }
  auto link = open_in_root(root.get(), "/last_link", "last_link");
  ASSERT_FALSE(link.ok());
  EXPECT_NE(link.error().message.find("not a regular file"), std::string::npos)
      << link.error().message;
  auto fifo = open_in_root(root.get(), "/fifo", "fifo");
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.error().message.find("not a regular file"), std::string::npos)
      << fifo.error().message;
  EXPECT_FALSE(open_in_root(root.get(), "relative", "relative").ok());
}

// ---------------------------------------------------------------------------
// Real interpreters: the process reports where _PyRuntime is via ctypes.

constexpr const char* kReportRuntime =
    "import ctypes, sys\n"
    "a = lambda n: ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, n))\n"
    "print('runtime=%#x version=%#x' % (a('_PyRuntime'), a('Py_Version')), flush=True)\n"
    "sys.stdin.read()\n";

void check_python(const std::string& python, const std::string& mapped_suffix) {
  ASSERT_EQ(::access(python.c_str(), X_OK), 0) << "test interpreter missing: " << python;
  test::Child child = test::Child::spawn({python, "-c", kReportRuntime});
  ASSERT_GT(child.pid(), 0);
  auto printed = test::parse_addresses(child.read_line());
  ASSERT_EQ(printed.size(), 2u) << python << " did not report _PyRuntime";
  Mapped file =
      mapped_file(child.pid(), [&](const std::string& p) { return p.ends_with(mapped_suffix); });
  ASSERT_EQ(file.error, "") << mapped_suffix;
  auto elf = open_mapped_elf(child.pid(), file.maps.front());
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  expect_address(file.maps, *elf, "_PyRuntime", printed["runtime"]);
  expect_address(file.maps, *elf, "Py_Version", printed["version"]);
  expect_address_without_each_mapping(file.maps, *elf, "_PyRuntime", printed["runtime"]);
  // Large segments share at most one file page with a neighbour, so each
  // mapping alone is unambiguous here (unlike in the tiny fixtures). The
  // RELRO mapping of libpython also fits the end of the read-only segment
  // before it; it must still give the right answer.
  auto runtime = elf->find_symbol("_PyRuntime");
  for (const MapEntry& e : file.maps) {
    auto got = runtime_address(std::span<const MapEntry>(&e, 1), *elf, runtime->value);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(*got, printed["runtime"])
        << "from the mapping at offset " << std::hex << e.offset << " alone";
  }
  EXPECT_EQ(child.finish(), 0);
}

TEST(RuntimeAddressTest, DebianStaticPython) {
  check_python("/usr/bin/python3.11", "/python3.11");
}

TEST(RuntimeAddressTest, PyenvSharedLibpython) {
  const char* root = std::getenv("PYENV_ROOT");
  const char* home = std::getenv("HOME");
  std::string pyenv = root != nullptr ? std::string(root)
                                      : std::string(home != nullptr ? home : "/root") + "/.pyenv";
  check_python(pyenv + "/versions/3.12.1/bin/python3.12", "/libpython3.12.so.1.0");
}

}  // namespace
}  // namespace krait::proc
