// Native unwinding (unwind/unwinder.h) of a fuzzed sample: registers and a
// copied stack chosen by the input, over real modules mapped at fixed
// addresses: the unwinding fixture (tests/unit/unwind/fixtures, built into
// modules/ by make_seeds.py) with its shared library, as the kernel loaded
// them under `setarch -R` when the seeds were captured (modules/layout.txt).
//
// Input: u8 selector (even: the fixture with .eh_frame, odd: the one with
// .debug_frame only), 17 x u64 registers (ip sp bp bx r12 r13 r14 r15 ax cx
// dx si di r8 r9 r10 r11), u64 address of the first stack byte, then the
// stack bytes. Seeds are the fixture's own captures.
// Checks, besides memory safety: the walk ends with at most max_frames pcs
// and one return-address flag per pc.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "fuzz_input.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "unwind/unwinder.h"

using namespace krait;
using namespace krait::unwind;

namespace {

constexpr size_t kMaxFrames = 256;

struct World {
  ModuleCache cache;
  ProcessModules with_eh_frame;
  ProcessModules with_debug_frame;
};
World* world = nullptr;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "unwinder harness: %s\n", what.c_str());
  std::abort();
}

// The mappings the loader makes of `path` at `base`: one per PT_LOAD.
std::vector<proc::MapEntry> mappings_of(const std::string& path, uint64_t base) {
  auto elf = elf::ElfFile::open(path);
  if (!elf)
    die(elf.error().message);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    die("cannot stat " + path);
  std::vector<proc::MapEntry> out;
  for (const auto& s : elf->load_segments()) {
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
    auto maps = mappings_of(dir + file, std::stoull(base, nullptr, 16));
    auto& to = set == "eh" ? eh : debug;
    to.insert(to.end(), maps.begin(), maps.end());
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

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  load_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const bool debug_frame = in.take<uint8_t>() & 1;
  StackSnapshot snapshot;
  snapshot.regs = in.take<Registers>();
  snapshot.stack_start = in.take<uint64_t>();
  snapshot.stack = in.rest();

  // A fresh unwinder per input, so a crash does not depend on the inputs
  // before it (libunwind caches per address space).
  auto unwinder = Unwinder::create();
  if (!unwinder)
    die(unwinder.error().message);
  const ProcessModules& modules = debug_frame ? world->with_debug_frame : world->with_eh_frame;
  UnwindResult result = unwinder->unwind(snapshot, modules, kMaxFrames);
  KRAIT_FUZZ_CHECK(!result.pcs.empty() && result.pcs.size() <= kMaxFrames);
  KRAIT_FUZZ_CHECK(result.return_address.size() == result.pcs.size());
  KRAIT_FUZZ_CHECK(result.pcs[0] == snapshot.regs.ip);
  (void)to_string(result.stop);
  return 0;
}
