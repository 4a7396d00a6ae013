// DWARF of a file some process maps (symbolize/dwarf_file.h): compile
// units, line tables and inlined call chains read with libdw, and the
// scopes at addresses in it.
//
// Input: u8 count n (at most 16), n x u64 file virtual addresses to look up,
// then the ELF file's bytes (served from a memfd). Beside those addresses,
// 64 probes spread over .text are looked up too.
#include <algorithm>

#include "elf/elf_file.h"
#include "fuzz_input.h"
#include "memfd_file.h"
#include "symbolize/dwarf_file.h"

using namespace krait;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemfdFile file;
  fuzz::FuzzInput in(data, size);
  std::vector<uint64_t> addresses;
  const size_t n = std::min<size_t>(in.take<uint8_t>(), 16);
  for (size_t i = 0; i < n; ++i)
    addresses.push_back(in.take<uint64_t>());
  file.set(in.rest());

  if (auto elf = elf::ElfFile::open(file.path())) {
    if (auto text = elf->find_section(".text")) {
      const uint64_t step = std::max<uint64_t>(text->size / 64, 1);
      for (uint64_t k = 0; k < 64; ++k)
        addresses.push_back(text->addr + k * step);
    }
  }
  auto dwarf = symbolize::DwarfFile::open(file.fd(), "fuzz");
  if (!dwarf)
    return 0;
  volatile size_t sink = 0;
  for (uint64_t address : addresses) {
    for (const auto& scope : dwarf->scopes_at(address))
      sink = sink + scope.name.size() + scope.file.size() + scope.linkage_name.size();
  }
  return 0;
}
