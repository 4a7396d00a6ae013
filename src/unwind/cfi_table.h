// The DWARF call-frame information (CFI) of one ELF file, indexed by address,
// in the byte format libunwind's remote API reads.
//
// Two sources are understood:
// - .eh_frame: kept as is (a span into the ElfFile's copy of the section),
//   since libunwind reads it at the process addresses where it is mapped.
// - .debug_frame: not mapped by the loader, so libunwind cannot read it in a
//   remote address space. Its CIEs and FDEs are rewritten into .eh_frame
//   format (CIE id 0, CIE pointers relative, no augmentation so FDE
//   addresses stay 8-byte absolute file addresses) into a buffer owned by
//   the table; the unwinder presents that buffer at a synthetic address.
//
// Every FDE is indexed by the file virtual addresses it covers, so a lookup
// is a binary search with no libunwind involvement. Inputs are untrusted:
// malformed entries are skipped, and so are entries whose instructions name
// a register libunwind keeps no slot for (it would index past its state);
// the scan stops at the first entry whose length runs past the section, and
// nothing is read outside the bytes given.
// Memory is bounded by the section (at most elf::kMaxSectionBytes when it
// comes from an ElfFile) plus 32 bytes per indexed FDE: indexing stops after
// 4,194,304 FDEs or 262,144 distinct CIEs (see the .cpp).
//
// Ownership: a CfiTable built from .eh_frame borrows the bytes (they belong
// to an elf::ElfFile that must outlive it); one built from .debug_frame owns
// its converted copy. Immutable after construction, so safe to share between
// threads. Move-only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "util/result.h"

namespace krait::unwind {

// One FDE: it covers file virtual addresses [start, end).
struct FdeEntry {
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t offset = 0;        // of the FDE's length field in CfiTable::bytes()
  bool signal_frame = false;  // its CIE has the 'S' augmentation (a signal trampoline)
  // The FDE stores absolute file addresses (not PC-relative ones), which
  // the loader does not relocate: libunwind must add the load bias.
  bool absolute = false;
};

class CfiTable {
 public:
  enum class Source : uint8_t { kEhFrame, kDebugFrame };

  // Indexes the .eh_frame section `bytes`, which is loaded at file virtual
  // address `vaddr` (PC-relative pointers are resolved against it). Error
  // when not a single FDE could be read.
  static Result<CfiTable> from_eh_frame(std::span<const uint8_t> bytes, uint64_t vaddr);

  // Converts and indexes a .debug_frame section (32- or 64-bit DWARF, CIE
  // versions 1, 3 and 4 with 8-byte addresses; CIEs with an augmentation
  // are skipped). Error when not a single FDE could be converted.
  static Result<CfiTable> from_debug_frame(std::span<const uint8_t> bytes);

  CfiTable(CfiTable&&) noexcept = default;
  CfiTable& operator=(CfiTable&&) noexcept = default;
  CfiTable(const CfiTable&) = delete;
  CfiTable& operator=(const CfiTable&) = delete;

  Source source() const { return source_; }
  // .eh_frame-format bytes that FdeEntry::offset refers to.
  std::span<const uint8_t> bytes() const { return bytes_; }
  // The file virtual address of bytes()[0] (.eh_frame); 0 for .debug_frame,
  // whose converted bytes are not part of the file's image.
  uint64_t vaddr() const { return vaddr_; }
  // The FDE covering file address `file_pc`, or nullptr. Where FDEs
  // overlap, the one starting last wins.
  const FdeEntry* find(uint64_t file_pc) const;
  // The FDE that precedes `fde` (one of this table's) in the section, or
  // nullptr. Compilers emit a function's FDEs together, so this is how the
  // part GCC splits off a function ("f.cold", whose symbol a stripped file
  // lacks) finds its function.
  const FdeEntry* emitted_before(const FdeEntry& fde) const;
  size_t size() const { return entries_.size(); }

 private:
  CfiTable() = default;
  void index_entries();
  Source source_ = Source::kEhFrame;
  std::vector<uint8_t> owned_;  // converted .debug_frame
  std::span<const uint8_t> bytes_;
  uint64_t vaddr_ = 0;
  std::vector<FdeEntry> entries_;    // sorted by start
  std::vector<uint32_t> by_offset_;  // indexes of entries_, in section order
};

}  // namespace krait::unwind
