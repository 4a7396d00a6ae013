// Source locations and inlined call chains from one ELF file's DWARF
// (.debug_info, .debug_line, ...), read with libdw.
//
// Ownership: a DwarfFile owns a duplicate of the descriptor it was opened
// from, the libelf handle and the libdw handle (RAII, released in reverse
// order). Move-only.
//
// Threading: not thread-safe. libdw 0.188 fills internal caches on lookups,
// so every call on one DwarfFile must be serialised by the caller; different
// DwarfFiles are independent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::symbolize {

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
  // keeps its own). `name` is for error messages. Error when the file has no
  // DWARF debug information or libdw cannot read it.
  static Result<DwarfFile> open(int fd, std::string_view name);

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
