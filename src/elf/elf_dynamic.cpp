// ElfFile's notes and dynamic section: the build-id (from PT_NOTE, else
// SHT_NOTE sections) and DT_NEEDED / DT_SONAME (from .dynamic, else from
// PT_DYNAMIC in a file without section headers). Separate from
// elf_file.cpp because these read data through offsets and string tables
// the file itself supplies, each with its own bound, while the headers
// there are parsed by libelf.
#include <elf.h>
#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <cstring>

#include "elf/elf_file_state.h"

namespace krait::elf {
namespace {

// A build-id longer than this is not one any linker writes; treat the note as
// garbage rather than hex-encode an arbitrary blob.
constexpr size_t kMaxBuildIdBytes = 1024;
// DT_NEEDED entries and the length of one name: a loader takes names of at
// most PATH_MAX, and no real file needs thousands of libraries. Entries
// that all point at one long string would otherwise multiply it.
constexpr size_t kMaxNeeded = 4096;
constexpr size_t kMaxDynamicNameBytes = 4096;
std::string to_hex(const uint8_t* bytes, size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

std::optional<std::string> build_id_in_notes(Elf_Data* data) {
  if (data == nullptr || data->d_buf == nullptr)
    return std::nullopt;
  const auto* base = static_cast<const uint8_t*>(data->d_buf);
  size_t offset = 0;
  while (offset < data->d_size) {
    GElf_Nhdr note;
    size_t name_offset = 0;
    size_t desc_offset = 0;
    // gelf_getnote bounds-checks name and descriptor against d_size and
    // returns 0 at the end or on a malformed note; progress is >= 12 bytes.
    size_t next = gelf_getnote(data, offset, &note, &name_offset, &desc_offset);
    if (next == 0 || next <= offset)
      break;
    if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
        std::memcmp(base + name_offset, "GNU", 4) == 0 && note.n_descsz > 0 &&
        note.n_descsz <= kMaxBuildIdBytes)
      return to_hex(base + desc_offset, note.n_descsz);
    offset = next;
  }
  return std::nullopt;
}

}  // namespace

void ElfFile::State::read_build_id_and_dynamic(const std::vector<GElf_Phdr>& notes,
                                               const std::optional<GElf_Phdr>& dynamic) {
  Elf* e = elf.get();
  // Program headers survive every kind of stripping, so they come first.
  for (const GElf_Phdr& note : notes) {
    Elf_Type type = note.p_align == 8 ? ELF_T_NHDR8 : ELF_T_NHDR;
    // libelf allocates p_filesz bytes for the chunk, and keeps them.
    if (note.p_filesz > kMaxNoteBytes || note.p_offset > file_size ||
        note.p_filesz > file_size - note.p_offset || !charge(note.p_filesz))
      continue;
    if (auto id = build_id_in_notes(
            elf_getdata_rawchunk(e, static_cast<int64_t>(note.p_offset), note.p_filesz, type))) {
      build_id = std::move(*id);
      break;
    }
  }
  if (build_id.empty()) {
    for (const SectionInfo& info : sections) {
      if (info.section.type != SHT_NOTE)
        continue;
      if (auto id = build_id_in_notes(section_data(info, true, kMaxNoteBytes))) {
        build_id = std::move(*id);
        break;
      }
    }
  }
  // PT_DYNAMIC is only trusted without section headers: a separate debug
  // file keeps the program headers but not the bytes they point at.
  if (!read_dynamic_section() && dynamic && sections.empty())
    read_dynamic_segment(*dynamic);
}

bool ElfFile::State::read_dynamic_section() {
  Elf* e = elf.get();
  for (const SectionInfo& info : sections) {
    if (info.section.type != SHT_DYNAMIC)
      continue;
    Elf_Data* data = section_data(info, true);
    size_t entry_size = gelf_fsize(e, ELF_T_DYN, 1, EV_CURRENT);
    if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
      return false;
    if (!strings_ready(info.link))
      return true;
    size_t count = data->d_size / entry_size;
    for (size_t i = 0; i < count; ++i) {
      GElf_Dyn dyn;
      if (gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL)
        break;
      if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_SONAME)
        continue;
      if (dyn.d_tag == DT_NEEDED && needed.size() >= kMaxNeeded)
        continue;
      const char* name = elf_strptr(e, info.link, dyn.d_un.d_val);
      if (name == nullptr || ::strnlen(name, kMaxDynamicNameBytes) == kMaxDynamicNameBytes)
        continue;
      if (dyn.d_tag == DT_NEEDED)
        needed.emplace_back(name);
      else
        soname = name;
    }
    return true;
  }
  return false;
}

void ElfFile::State::read_dynamic_segment(const GElf_Phdr& dynamic) {
  // Without section headers the string table is found through DT_STRTAB, a
  // virtual address that has to be translated to a file offset.
  Elf* e = elf.get();
  if (dynamic.p_filesz > kMaxSectionBytes || dynamic.p_offset > file_size ||
      dynamic.p_filesz > file_size - dynamic.p_offset || !charge(dynamic.p_filesz))
    return;
  Elf_Data* data =
      elf_getdata_rawchunk(e, static_cast<int64_t>(dynamic.p_offset), dynamic.p_filesz, ELF_T_DYN);
  size_t entry_size = gelf_fsize(e, ELF_T_DYN, 1, EV_CURRENT);
  if (data == nullptr || data->d_buf == nullptr || entry_size == 0)
    return;
  std::optional<uint64_t> strtab_vaddr;
  uint64_t strtab_size = 0;
  std::vector<uint64_t> needed_offsets;
  std::optional<uint64_t> soname_offset;
  size_t count = data->d_size / entry_size;
  for (size_t i = 0; i < count; ++i) {
    GElf_Dyn dyn;
    if (gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL)
      break;
    if (dyn.d_tag == DT_STRTAB)
      strtab_vaddr = dyn.d_un.d_ptr;
    else if (dyn.d_tag == DT_STRSZ)
      strtab_size = dyn.d_un.d_val;
    else if (dyn.d_tag == DT_NEEDED && needed_offsets.size() < kMaxNeeded)
      needed_offsets.push_back(dyn.d_un.d_val);
    else if (dyn.d_tag == DT_SONAME)
      soname_offset = dyn.d_un.d_val;
  }
  if (!strtab_vaddr || strtab_size == 0)
    return;
  std::optional<uint64_t> strtab_offset;
  for (const LoadSegment& load : loads) {
    uint64_t delta = *strtab_vaddr - load.vaddr;
    if (*strtab_vaddr >= load.vaddr && delta < load.filesz && strtab_size <= load.filesz - delta) {
      strtab_offset = load.offset + delta;
      break;
    }
  }
  if (!strtab_offset || *strtab_offset > file_size || strtab_size > file_size - *strtab_offset ||
      strtab_size > kMaxSectionBytes || !charge(strtab_size))
    return;
  Elf_Data* strings =
      elf_getdata_rawchunk(e, static_cast<int64_t>(*strtab_offset), strtab_size, ELF_T_BYTE);
  if (strings == nullptr || strings->d_buf == nullptr)
    return;
  const auto* base = static_cast<const char*>(strings->d_buf);
  auto string_at = [&](uint64_t offset) -> std::optional<std::string> {
    if (offset >= strings->d_size)
      return std::nullopt;
    const void* nul = std::memchr(
        base + offset, '\0', std::min<uint64_t>(strings->d_size - offset, kMaxDynamicNameBytes));
    if (nul == nullptr)
      return std::nullopt;
    return std::string(base + offset, static_cast<const char*>(nul));
  };
  for (uint64_t offset : needed_offsets)
    if (auto name = string_at(offset))
      needed.push_back(std::move(*name));
  if (soname_offset)
    if (auto name = string_at(*soname_offset))
      soname = std::move(*name);
}

}  // namespace krait::elf
