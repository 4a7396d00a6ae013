// DwarfFile on DWARF a process chose: a .gnu_debugaltlink (dwz's shared
// debug file) naming a FIFO, a real altlink file under the debug roots, and
// a debug section claiming more than the file holds.
//
// The altlink fixtures are assembled here (cc -shared -nostdlib): a
// function whose DWARF name is a DW_FORM_GNU_strp_alt, i.e. a string in the
// file .gnu_debugaltlink names, which libdw looks for on its own the first
// time that name is read. The heap is measured with mallinfo2(), so this
// file is not built under AddressSanitizer.
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <string>
#include <vector>

#include "elf/elf_file.h"
#include "fixture_support.h"
#include "symbolize/dwarf_file.h"
#include "symbolize/native_symbolizer.h"
#include "unwind/module_file.h"

namespace krait::symbolize {
namespace {

using unwind_fixtures::TempDir;

constexpr const char* kAltBuildId = "112233445566778899aabbccddeeff0102030405";
constexpr const char* kAltBuildIdBytes =
    "0x11,0x22,0x33,0x44,0x55,0x66,0x77,0x88,0x99,0xaa,0xbb,0xcc,0xdd,0xee,0xff,0x01,0x02,0x03,"
    "0x04,0x05";

Result<std::string> assemble(const std::string& dir, const std::string& name,
                             const std::string& source, const std::vector<std::string>& flags) {
  const std::string s = dir + "/" + name + ".s";
  const std::string out = dir + "/" + name;
  std::ofstream(s) << source;
  std::vector<std::string> argv = {"/usr/bin/cc", "-shared", "-nostdlib", "-o", out, s};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto run = unwind_fixtures::run_program(argv);
  if (!run)
    return run.error();
  if (run->exit_code != 0)
    return make_error("cc failed: {}", run->err);
  return out;
}

// A library with one function, krait_alt_function, whose DWARF name lies in
// the altlink file `altlink` (build-id kAltBuildId) at offset 0.
Result<std::string> alt_library(const std::string& dir, const std::string& altlink) {
  const std::string source = R"(
	.text
	.globl krait_alt_function
	.type krait_alt_function, @function
krait_alt_function:
	nop
	nop
	ret
	.size krait_alt_function, .-krait_alt_function
.Lend:
	.section .debug_abbrev,"",@progbits
	.uleb128 1
	.uleb128 0x11
	.byte 1
	.uleb128 0x11
	.uleb128 0x01
	.uleb128 0x12
	.uleb128 0x01
	.byte 0, 0
	.uleb128 2
	.uleb128 0x2e
	.byte 0
	.uleb128 0x03
	.uleb128 0x1f21
	.uleb128 0x11
	.uleb128 0x01
	.uleb128 0x12
	.uleb128 0x01
	.byte 0, 0
	.byte 0
	.section .debug_info,"",@progbits
	.long .Linfo_end - .Linfo_start
.Linfo_start:
	.value 4
	.long 0
	.byte 8
	.uleb128 1
	.quad krait_alt_function
	.quad .Lend
	.uleb128 2
	.long 0
	.quad krait_alt_function
	.quad .Lend
	.byte 0
.Linfo_end:
	.section .gnu_debugaltlink,"",@progbits
	.asciz ")" + altlink +
                             R"("
	.byte )" + kAltBuildIdBytes +
                             "\n";
  return assemble(dir, "libalt.so", source, {});
}

// The shared debug file itself: build-id kAltBuildId (in a note section of
// its own name: the linker drops .note.gnu.build-id with --build-id=none),
// and at offset 0 of its .debug_str the name krait_alt_dwarf_name.
Result<std::string> alt_file(const std::string& dir) {
  const std::string source = R"(
	.section .note.alt,"a",@note
	.long 4
	.long 20
	.long 3
	.asciz "GNU"
	.byte )" + std::string(kAltBuildIdBytes) +
                             R"(
	.section .debug_str,"MS",@progbits,1
	.asciz "krait_alt_dwarf_name"
	.section .debug_abbrev,"",@progbits
	.uleb128 1
	.uleb128 0x11
	.byte 0
	.byte 0, 0
	.byte 0
	.section .debug_info,"",@progbits
	.long .Linfo_end - .Linfo_start
.Linfo_start:
	.value 4
	.long 0
	.byte 8
	.uleb128 1
.Linfo_end:
)";
  return assemble(dir, "common.debug", source, {"-Wl,--build-id=none"});
}

// libdw opened the file .gnu_debugaltlink names by itself, with a blocking
// open(): naming a FIFO stopped symbolization for good. The altlink file is
// now looked for under the debug roots only, and a file whose altlink file
// is not there is named from its symbols.
TEST(DwarfFileTest, AltlinkNamingAFifoIsNeverOpened) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  const std::string fifo = dir->path() + "/common.debug.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto lib = alt_library(dir->path(), fifo);
  ASSERT_TRUE(lib.ok()) << lib.error().message;
  auto file = unwind::ModuleFile::open(*lib, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto function = (*file)->elf().find_symbol("krait_alt_function");
  ASSERT_TRUE(function.has_value());

  NativeSymbolizer symbolizer(NativeSymbolizerOptions{.debug_roots = {}});
  auto call = std::async(std::launch::async,
                         [&] { return symbolizer.symbolize(**file, function->value + 1); });
  bool blocked = call.wait_for(std::chrono::seconds(60)) != std::future_status::ready;
  if (blocked) {
    // Give the blocked open a writer, so that it returns and the test ends.
    int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (writer >= 0)
      ::close(writer);
  }
  NativeFrames frames = call.get();
  ASSERT_FALSE(blocked) << "symbolizing blocked opening the altlink FIFO";
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].function, "krait_alt_function");
}

// The altlink file under a debug root (found by its build-id) is used: the
// name comes from its .debug_str.
TEST(DwarfFileTest, AltlinkFileUnderTheDebugRootsIsUsed) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto lib = alt_library(dir->path(), "/nonexistent/common.debug");
  ASSERT_TRUE(lib.ok()) << lib.error().message;
  auto common = alt_file(dir->path());
  ASSERT_TRUE(common.ok()) << common.error().message;
  ASSERT_EQ(elf::ElfFile::open(*common)->build_id(), kAltBuildId);
  const std::string root = dir->path() + "/debug";
  const std::string id = kAltBuildId;
  std::filesystem::create_directories(root + "/.build-id/" + id.substr(0, 2));
  std::filesystem::rename(*common,
                          root + "/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug");

  auto file = unwind::ModuleFile::open(*lib, unwind::ModuleFileOptions{.debug_roots = {}});
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto function = (*file)->elf().find_symbol("krait_alt_function");
  ASSERT_TRUE(function.has_value());
  NativeSymbolizer with_root(NativeSymbolizerOptions{.debug_roots = {root}});
  NativeFrames frames = with_root.symbolize(**file, function->value + 1);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].function, "krait_alt_dwarf_name");
  NativeSymbolizer without(NativeSymbolizerOptions{.debug_roots = {}});
  EXPECT_EQ(without.symbolize(**file, function->value + 1).back().function, "krait_alt_function");
}

uint64_t heap_in_use() {
  struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

// The fixture library with its .debug_info moved into a 300 MiB hole at
// the end of a sparse copy: libdw read it whole when opening the file.
TEST(DwarfFileTest, DebugSectionLargerThanTheLimitIsRefused) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  std::ifstream in(paths.lib, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  Elf64_Ehdr ehdr{};
  std::memcpy(&ehdr, bytes.data(), sizeof ehdr);
  Elf64_Shdr names{};
  std::memcpy(&names, bytes.data() + ehdr.e_shoff + ehdr.e_shstrndx * sizeof(Elf64_Shdr),
              sizeof names);
  size_t header = 0;
  for (size_t i = 1; i < ehdr.e_shnum; ++i) {
    Elf64_Shdr shdr{};
    std::memcpy(&shdr, bytes.data() + ehdr.e_shoff + i * sizeof shdr, sizeof shdr);
    if (std::strcmp(reinterpret_cast<const char*>(bytes.data() + names.sh_offset + shdr.sh_name),
                    ".debug_info") == 0)
      header = ehdr.e_shoff + i * sizeof shdr;
  }
  ASSERT_NE(header, 0u) << "the fixture library has no .debug_info";
  const uint64_t hole = (bytes.size() + 4095) & ~uint64_t{4095};
  const uint64_t claimed = uint64_t{300} << 20;
  std::memcpy(bytes.data() + header + offsetof(Elf64_Shdr, sh_offset), &hole, 8);
  std::memcpy(bytes.data() + header + offsetof(Elf64_Shdr, sh_size), &claimed, 8);
  const std::string path = dir->path() + "/libsparse.so";
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(hole + claimed)), 0);

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const uint64_t before = heap_in_use();
  auto dwarf = DwarfFile::open(fd, path);
  const uint64_t now = heap_in_use();
  const uint64_t grown = now > before ? now - before : 0;
  ::close(fd);
  EXPECT_FALSE(dwarf.ok()) << "a 300 MiB .debug_info was read";
  if (!dwarf.ok()) {
    EXPECT_NE(dwarf.error().message.find("more than"), std::string::npos) << dwarf.error().message;
  }
  EXPECT_LT(grown, uint64_t{16} << 20) << "the heap grew by " << grown << " bytes";
}

// libdw returns DW_FORM_strp names as pointers into .debug_str, which
// callers strlen: a library whose .debug_str ends inside a string made
// krait read past the section (found by the dwarf_file harness). Such a
// file's DWARF is not read.
TEST(DwarfFileTest, StringSectionWithoutItsLastNulIsRefused) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  const std::string source = R"(
	.text
	.globl krait_strp_function
	.type krait_strp_function, @function
krait_strp_function:
	nop
	ret
	.size krait_strp_function, .-krait_strp_function
.Lend:
	.section .debug_str,"",@progbits
	.ascii "krait_name_without_its_nul"
	.section .debug_abbrev,"",@progbits
	.uleb128 1
	.uleb128 0x11
	.byte 1
	.uleb128 0x11
	.uleb128 0x01
	.uleb128 0x12
	.uleb128 0x01
	.byte 0, 0
	.uleb128 2
	.uleb128 0x2e
	.byte 0
	.uleb128 0x03
	.uleb128 0x0e
	.uleb128 0x11
	.uleb128 0x01
	.uleb128 0x12
	.uleb128 0x01
	.byte 0, 0
	.byte 0
	.section .debug_info,"",@progbits
	.long .Linfo_end - .Linfo_start
.Linfo_start:
	.value 4
	.long 0
	.byte 8
	.uleb128 1
	.quad krait_strp_function
	.quad .Lend
	.uleb128 2
	.long 0
	.quad krait_strp_function
	.quad .Lend
	.byte 0
.Linfo_end:
)";
  auto lib = assemble(dir->path(), "libstrp.so", source, {});
  ASSERT_TRUE(lib.ok()) << lib.error().message;
  int fd = ::open(lib->c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto dwarf = DwarfFile::open(fd, *lib);
  ::close(fd);
  ASSERT_FALSE(dwarf.ok()) << "a .debug_str without its last NUL was used";
  EXPECT_NE(dwarf.error().message.find("does not end with a NUL"), std::string::npos)
      << dwarf.error().message;
}

}  // namespace
}  // namespace krait::symbolize
