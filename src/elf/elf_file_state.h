// ElfFile's private state, shared by the files that implement ElfFile:
// elf_file.cpp (opening, headers, sections, the dynamic section) and
// elf_symbols.cpp (symbol tables, function lookup, PLT stubs). Not part of
// the elf/ interface: include it only from those files.
#pragma once

#include <gelf.h>
#include <libelf.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "elf/elf_file.h"
#include "util/unique_fd.h"

namespace krait::elf {

struct ElfDeleter {
  void operator()(Elf* elf) const { elf_end(elf); }
};
using ElfHandle = std::unique_ptr<Elf, ElfDeleter>;

inline std::string libelf_error() {
  const char* message = elf_errmsg(-1);
  return message != nullptr ? message : "unknown libelf error";
}

struct SectionInfo {
  Section section;
  size_t index = 0;  // for elf_getscn
  uint32_t link = 0;
};

struct ElfFile::State {
  std::string path;
  UniqueFd fd;
  ElfHandle elf;  // declared after fd: destroyed before the fd is closed
  FileId file_id;
  uint64_t file_size = 0;
  bool is_dyn = false;
  std::vector<LoadSegment> loads;
  std::vector<SectionInfo> sections;
  std::string build_id;
  std::vector<std::string> needed;
  std::string soname;
  bool has_symtab = false;
  std::optional<std::string> debuglink;

  // libelf keeps per-handle caches that it fills on demand, so every libelf
  // call after open() is serialised.
  std::mutex elf_mutex;
  // Bytes read into memory or indexed so far (kMaxBytesPerFile), and which
  // sections were read (libelf keeps a section's data once read, so each is
  // charged once). Guarded by elf_mutex, except during open().
  std::atomic<uint64_t> charged{0};
  std::vector<bool> section_read;  // parallel to `sections`

  std::once_flag symbols_once;
  std::vector<Symbol> dynsym;  // each sorted by (name, bind preference, table order)
  std::vector<Symbol> symtab;

  std::once_flag functions_once;
  std::vector<const Symbol*> functions;  // sorted by address, one per address

  std::once_flag got_once;
  std::unordered_map<uint64_t, std::string> got_slots;  // GOT address -> the symbol it binds

  const SectionInfo* section(std::string_view name) const {
    for (const SectionInfo& info : sections)
      if (info.section.name == name)
        return &info;
    return nullptr;
  }
  const SectionInfo* section_at(size_t index) const {
    if (index >= 1 && index - 1 < sections.size() && sections[index - 1].index == index)
      return &sections[index - 1];
    for (const SectionInfo& info : sections)
      if (info.index == index)
        return &info;
    return nullptr;
  }
  // Counts `bytes` against kMaxBytesPerFile; false (nothing counted) when
  // they do not fit.
  bool charge(uint64_t bytes) {
    uint64_t used = charged.load(std::memory_order_relaxed);
    do {
      if (bytes > kMaxBytesPerFile || used > kMaxBytesPerFile - bytes)
        return false;
    } while (!charged.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    return true;
  }
  // Why the contents of `info` may not be read into memory, or "" when they
  // may (and are then charged): every section read goes through here,
  // before libelf allocates.
  std::string admit_section(const SectionInfo& info, uint64_t limit);
  // The contents of `info` (raw bytes, or converted to the host's layout
  // with `converted`), admitted by admit_section() first; nullptr when
  // refused or unreadable. Call with elf_mutex held (or during open()).
  Elf_Data* section_data(const SectionInfo& info, bool converted,
                         uint64_t limit = kMaxSectionBytes);
  // Loads the string table `index` so that elf_strptr() on it reads nothing
  // more; false when it is refused.
  bool strings_ready(size_t index);
  // Opening: the ELF header, program headers, section headers, then the
  // build-id, the dynamic section and .gnu_debuglink, in this order.
  Result<void> read_headers();
  Result<void> check_elf_header();
  Result<void> read_program_headers(std::vector<GElf_Phdr>& notes,
                                    std::optional<GElf_Phdr>& dynamic);
  void read_section_headers();
  void read_debuglink();
  void read_build_id_and_dynamic(const std::vector<GElf_Phdr>& notes,
                                 const std::optional<GElf_Phdr>& dynamic);
  bool read_dynamic_section();
  void read_dynamic_segment(const GElf_Phdr& dynamic);
  void read_symbols(const SectionInfo& info, std::vector<Symbol>& out);
  void index_symbols();
  void index_functions();
  void index_got_slots();
};

}  // namespace krait::elf
