// Source locations and inlined call chains from one ELF file's DWARF
// (.debug_info, .debug_line, ...), read with libdw.
//
// Inputs are untrusted (the DWARF of a file a process maps, or of a debug
// file found for it). libdw reads every debug section whole when it opens
// a file, and inflates compressed ones to the size their header claims, so
// open() checks those sizes first: no debug section of more than
// kMaxDwarfSectionBytes (compressed or not; a compressed one may not claim
// more than 1032 times its size, zlib's limit), and no more than
// kMaxDwarfBytes in all. libdw also opens, by itself and with a blocking
// open(), the file a .gnu_debugaltlink section names (dwz's shared debug
// file) and the .dwo files of split units: open() looks for the altlink
// file itself, only under the operator's debug roots (by its build-id, or
// by its name when that lies in a root), opens it the careful way
// (elf::ElfFile::open: non-blocking, regular, size-capped, build-id
// checked) and hands it to libdw; a file whose altlink file is not found
// there is refused. Split units (skeletons) are never followed: only
// dwarf_next_unit(), dwarf_cu_info() and dwarf_get_units() with a subdie
// open .dwo files, and scopes_at() uses none of them.
//
// Ownership: a DwarfFile owns a duplicate of the descriptor it was opened
// from, the libelf handle and the libdw handle, and those of the altlink
// file (RAII, released in reverse order). Move-only.
//
// Threading: not thread-safe. libdw 0.188 fills internal caches on lookups,
// so every call on one DwarfFile must be serialised by the caller; different
// DwarfFiles are independent.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::symbolize {

// Limits on the DWARF read from one file (see above).
inline constexpr uint64_t kMaxDwarfSectionBytes = uint64_t{256} << 20;
inline constexpr uint64_t kMaxDwarfBytes = uint64_t{1} << 30;

// One level of the call chain at an address.
struct DwarfScope {
  std::string name;          // DW_AT_name (through abstract origins / specifications)
  std::string linkage_name;  // DW_AT_linkage_name (mangled), or ""
  // Source file of the position inside this scope, or "": a relative path
  // is joined to the unit's DW_AT_comp_dir, as addr2line prints it.
  std::string file;
  int line = 0;          // 0 when unknown
  bool inlined = false;  // DW_TAG_inlined_subroutine
};

class DwarfFile {
 public:
  // Reads the DWARF of the ELF file open as `fd` (duplicated, so the caller
  // keeps its own). `name` is for error messages. `debug_roots` are where
  // an altlink file may be found (see above). Error when the file has no
  // DWARF debug information, libdw cannot read it, a limit is exceeded, or
  // its altlink file is not found under the roots.
  static Result<DwarfFile> open(int fd, std::string_view name,
                                std::span<const std::string> debug_roots = {});

  DwarfFile(DwarfFile&&) noexcept;
  DwarfFile& operator=(DwarfFile&&) noexcept;
  DwarfFile(const DwarfFile&) = delete;
  DwarfFile& operator=(const DwarfFile&) = delete;
  ~DwarfFile();

  // The chain at file virtual address `vaddr`, innermost first: inlined
  // subroutines, then the subprogram that contains them, each with the
  // position inside it (the innermost from the line table, the others from
  // the call site of the scope below). Empty when no compile unit covers
  // `vaddr`. When a unit covers it but no subprogram does, one entry with an
  // empty name and the line-table position.
  std::vector<DwarfScope> scopes_at(uint64_t vaddr);

 private:
  struct State;
  explicit DwarfFile(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace krait::symbolize
