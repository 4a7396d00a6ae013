// Native unwinding (unwind/unwinder.h) of a fuzzed sample: registers and a
// copied stack chosen by the input, over real modules mapped at fixed
// addresses: the unwinding fixture (tests/unit/unwind/fixtures, built into
// modules/ by make_seeds.py) with its shared library, as the kernel loaded
// them under `setarch -R` when the seeds were captured (modules/layout.txt).
// The CFI libunwind interprets comes from the mapped files, so a hostile
// library chooses it: selector 2 fuzzes the fixture's .eh_frame as well.
//
// Input: u8 selector (0: the fixture with .eh_frame, 1: the one with
// .debug_frame only, 2: the .eh_frame fixture with the start of its
// .eh_frame replaced; other values modulo 3); for selector 2 only, u16 n and
// n bytes written over the start of .eh_frame (at most its size); then
// 17 x u64 registers (ip sp bp bx r12 r13 r14 r15 ax cx dx si di r8 r9 r10
// r11), u64 address of the first stack byte, then the stack bytes. The stack
// address is folded below 2^47, as the kernel's sp always is (the unwinder
// presents converted .debug_frame tables at a non-canonical address no
// stack can overlap). Seeds are the fixture's own captures.
// Checks, besides memory safety: the walk ends with at most max_frames pcs
// and one return-address flag per pc.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include "fuzz_input.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "unwind/unwinder.h"
#include "util/unique_fd.h"

using namespace krait;
using namespace krait::unwind;

namespace {

constexpr size_t kMaxFrames = 256;

struct World {
  ModuleCache cache;
  ProcessModules with_eh_frame;
  ProcessModules with_debug_frame;
  // Selector 2: the .eh_frame fixture's bytes and where its .eh_frame is,
  // its base, and the other mappings of the eh set (the library).
  std::vector<uint8_t> eh_image;
  uint64_t eh_frame_offset = 0, eh_frame_size = 0, eh_base = 0;
  std::vector<proc::MapEntry> eh_others;
};
World* world = nullptr;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "unwinder harness: %s\n", what.c_str());
  std::abort();
}

// The mappings the loader makes of a file at `base`: one per PT_LOAD.
std::vector<proc::MapEntry> mappings_of(const elf::ElfFile& elf, const std::string& path,
                                        const struct stat& st, uint64_t base) {
  std::vector<proc::MapEntry> out;
  for (const auto& s : elf.load_segments()) {
    proc::MapEntry e;
    e.start = base + (s.vaddr & ~uint64_t{0xfff});
    e.end = base + ((s.vaddr + s.memsz + 0xfff) & ~uint64_t{0xfff});
    e.offset = s.offset & ~uint64_t{0xfff};
    e.read = s.flags & 4;
    e.write = s.flags & 2;
    e.exec = s.flags & 1;
    e.dev_major = major(st.st_dev);
    e.dev_minor = minor(st.st_dev);
    e.inode = st.st_ino;
    e.path = path;
    out.push_back(e);
  }
  return out;
}

std::vector<proc::MapEntry> mappings_of(const std::string& path, uint64_t base) {
  auto elf = elf::ElfFile::open(path);
  if (!elf)
    die(elf.error().message);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    die("cannot stat " + path);
  return mappings_of(*elf, path, st, base);
}

// modules/layout.txt: "<set> <file> <base>" per line; set is eh or debug.
void load_world() {
  world = new World;
  const std::string dir = std::string(KRAIT_FUZZ_DIR) + "/modules/";
  std::ifstream layout(dir + "layout.txt");
  if (!layout)
    die("cannot read " + dir + "layout.txt");
  std::vector<proc::MapEntry> eh, debug;
  std::string line;
  while (std::getline(layout, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream fields(line);
    std::string set, file, base;
    fields >> set >> file >> base;
    const uint64_t at = std::stoull(base, nullptr, 16);
    auto maps = mappings_of(dir + file, at);
    auto& to = set == "eh" ? eh : debug;
    to.insert(to.end(), maps.begin(), maps.end());
    if (set != "eh")
      continue;
    if (file.find("fixture_c_eh") == std::string::npos) {
      world->eh_others.insert(world->eh_others.end(), maps.begin(), maps.end());
      continue;
    }
    std::ifstream image(dir + file, std::ios::binary);
    world->eh_image.assign(std::istreambuf_iterator<char>(image), {});
    auto elf = elf::ElfFile::open(dir + file);
    auto section = elf ? elf->find_section(".eh_frame") : std::nullopt;
    if (!section || section->offset + section->size > world->eh_image.size())
      die("no .eh_frame in " + dir + file);
    world->eh_frame_offset = section->offset;
    world->eh_frame_size = section->size;
    world->eh_base = at;
  }
  auto by_start = [](const proc::MapEntry& a, const proc::MapEntry& b) {
    return a.start < b.start;
  };
  std::sort(eh.begin(), eh.end(), by_start);
  std::sort(debug.begin(), debug.end(), by_start);
  world->with_eh_frame = ProcessModules::from_maps(0, eh, world->cache);
  world->with_debug_frame = ProcessModules::from_maps(0, debug, world->cache);
  for (const auto* m : {&world->with_eh_frame, &world->with_debug_frame}) {
    if (!m->problems().empty())
      die(m->problems().front().path + ": " + m->problems().front().reason);
    if (m->modules().empty())
      die("no modules in " + dir + "layout.txt");
  }
}

// Selector 2: the .eh_frame fixture with `patch` over the start of its
// .eh_frame, written to a fresh regular file (module files are opened by
// path with O_NOFOLLOW, as a process's mapped files are, and each input gets
// its own cache), mapped where the original is, beside the library. The
// file is removed when the input is done.
struct PatchedModules {
  std::string path;
  ModuleCache cache;
  ProcessModules modules;
  ~PatchedModules() {
    if (!path.empty())
      ::unlink(path.c_str());
  }
};

std::unique_ptr<PatchedModules> patched_modules(std::span<const uint8_t> patch) {
  auto out = std::make_unique<PatchedModules>();
  std::string name = "/dev/shm/krait-fuzz-module-XXXXXX";
  UniqueFd fd(::mkstemp(name.data()));
  if (!fd.valid())
    die("mkstemp in /dev/shm failed");
  out->path = name;
  std::vector<uint8_t> image = world->eh_image;
  std::copy_n(patch.begin(), std::min<size_t>(patch.size(), world->eh_frame_size),
              image.begin() + static_cast<ptrdiff_t>(world->eh_frame_offset));
  if (::pwrite(fd.get(), image.data(), image.size(), 0) != static_cast<ssize_t>(image.size()))
    die("writing the patched module failed");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    die("fstat failed");
  auto elf = elf::ElfFile::open(out->path);
  if (!elf)
    die(elf.error().message);
  auto maps = mappings_of(*elf, out->path, st, world->eh_base);
  maps.insert(maps.end(), world->eh_others.begin(), world->eh_others.end());
  std::sort(maps.begin(), maps.end(),
            [](const proc::MapEntry& a, const proc::MapEntry& b) { return a.start < b.start; });
  out->modules = ProcessModules::from_maps(0, maps, out->cache);
  // The patch touches .eh_frame only: the file itself must load, or
  // selector 2 would test nothing.
  for (const auto& p : out->modules.problems())
    if (p.path == out->path)
      die("the patched module did not load: " + p.reason);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  load_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const unsigned selector = in.take<uint8_t>() % 3;
  std::unique_ptr<PatchedModules> patched;
  if (selector == 2)
    patched = patched_modules(in.take_bytes(in.take<uint16_t>()));
  StackSnapshot snapshot;
  snapshot.regs = in.take<Registers>();
  snapshot.stack_start = in.take<uint64_t>() & ((uint64_t{1} << 47) - 1);
  snapshot.stack = in.rest();

  // A fresh unwinder per input, so a crash does not depend on the inputs
  // before it (libunwind caches per address space).
  auto unwinder = Unwinder::create();
  if (!unwinder)
    die(unwinder.error().message);
  const ProcessModules& modules = selector == 2   ? patched->modules
                                  : selector == 1 ? world->with_debug_frame
                                                  : world->with_eh_frame;
  UnwindResult result = unwinder->unwind(snapshot, modules, kMaxFrames);
  KRAIT_FUZZ_CHECK(!result.pcs.empty() && result.pcs.size() <= kMaxFrames);
  KRAIT_FUZZ_CHECK(result.return_address.size() == result.pcs.size());
  KRAIT_FUZZ_CHECK(result.pcs[0] == snapshot.regs.ip);
  (void)to_string(result.stop);
  return 0;
}
