// /proc/PID/maps text (proc/maps.h): parse_maps, then the arithmetic that
// places a file in the parsed maps (maps_of_file, load_bias,
// runtime_address, openable_path) against a real ELF file, this harness's
// own executable.
//
// Input: the maps text, as a process's /proc/PID/maps would read.
#include <unistd.h>

#include "fuzz_input.h"
#include "proc/maps.h"

using namespace krait;

namespace {
const elf::ElfFile* self_elf = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  static auto elf = elf::ElfFile::open("/proc/self/exe");
  if (!elf) {
    std::fprintf(stderr, "cannot open /proc/self/exe: %s\n", elf.error().message.c_str());
    std::abort();
  }
  self_elf = &*elf;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  auto maps = proc::parse_maps(in.rest_text());
  if (!maps)
    return 0;
  // Each entry once as the "like" of maps_of_file, bounded for long maps.
  size_t checked = 0;
  for (const proc::MapEntry& e : *maps) {
    if (checked++ == 64)
      break;
    (void)e.is_file();
    (void)proc::openable_path(1, e);
    auto same = proc::maps_of_file(*maps, e);
    if (!e.is_file()) {
      KRAIT_FUZZ_CHECK(same.empty());
      continue;
    }
    KRAIT_FUZZ_CHECK(!same.empty());
    (void)proc::load_bias(same, *self_elf);
    for (const auto& segment : self_elf->load_segments())
      (void)proc::runtime_address(same, *self_elf, segment.vaddr);
  }
  return 0;
}
