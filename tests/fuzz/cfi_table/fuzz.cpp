// DWARF call-frame information (unwind/cfi_table.h): indexing a .eh_frame
// or .debug_frame section of a file some process maps, and looking FDEs up.
//
// Input: u8 selector (even: .eh_frame, odd: .debug_frame), u64 file virtual
// address of the section (.eh_frame resolves PC-relative pointers against
// it), then the section's bytes.
// Checks, besides memory safety: every FDE find() returns covers the
// address asked for and lies inside the table's bytes.
#include "fuzz_input.h"
#include "unwind/cfi_table.h"

using namespace krait;
using namespace krait::unwind;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

namespace {

void check(const CfiTable& table, uint64_t pc) {
  const FdeEntry* fde = table.find(pc);
  if (fde == nullptr)
    return;
  KRAIT_FUZZ_CHECK(fde->start <= pc && pc < fde->end);
  KRAIT_FUZZ_CHECK(fde->offset < table.bytes().size());
  // Walk back through the section a little, as the .cold lookup does.
  const FdeEntry* before = fde;
  for (int i = 0; i < 4 && before != nullptr; ++i) {
    before = table.emitted_before(*before);
    if (before != nullptr)
      KRAIT_FUZZ_CHECK(before->offset < fde->offset);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const bool debug_frame = in.take<uint8_t>() & 1;
  const auto vaddr = in.take<uint64_t>();
  const auto bytes = in.rest();
  auto table =
      debug_frame ? CfiTable::from_debug_frame(bytes) : CfiTable::from_eh_frame(bytes, vaddr);
  if (!table)
    return 0;
  KRAIT_FUZZ_CHECK(table->size() > 0);
  // Every FDE's own range, found through a probe at its start: FDEs are
  // not enumerable, so probe from the first one found upwards.
  uint64_t probes = 0;
  for (uint64_t pc : {uint64_t{0}, vaddr, vaddr + 0x1000, ~uint64_t{0}})
    check(*table, pc);
  for (const FdeEntry* fde = table->find(vaddr); fde != nullptr && probes < 256; ++probes) {
    check(*table, fde->start);
    check(*table, fde->end - 1);
    fde = fde->end > fde->start ? table->find(fde->end) : nullptr;
  }
  return 0;
}
