// ELF files a process maps (elf/elf_file.h) and the interpreter analysis on
// top of them (python/interpreter.h analyze_image): headers, symbols,
// sections, build-id, DT_NEEDED, PLT stubs, reads at virtual addresses, and
// the name the file is mapped under (which carries the Python version).
//
// Input: u16 length, the mapped path (as /proc/PID/maps would show it),
// then the file's bytes; the bytes are served from a memfd.
#include <algorithm>
#include <memory>

#include "elf/elf_file.h"
#include "fuzz_input.h"
#include "memfd_file.h"
#include "python/interpreter.h"

using namespace krait;

namespace {

constexpr std::string_view kSymbols[] = {"_PyRuntime",
                                         "PyCode_Type",
                                         "Py_Version",
                                         "interp_head",
                                         "_PyThreadState_Current",
                                         "main",
                                         "PyInterpreterState_Head",
                                         "_start",
                                         "krait_elf_fixture_function"};
constexpr std::string_view kSections[] = {
    ".rodata", ".eh_frame",          ".debug_frame", ".PyRuntime", ".gnu_debuglink",
    ".text",   ".note.gnu.build-id", ".dynamic",     ".plt",       ".got"};

uint64_t touch(std::span<const uint8_t> bytes) {
  uint64_t sum = 0;
  for (uint8_t b : bytes)
    sum += b;
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemfdFile file;
  fuzz::FuzzInput in(data, size);
  const std::string mapped_path = in.take_string16();
  file.set(in.rest());

  auto opened = elf::ElfFile::open(file.path());
  if (!opened)
    return 0;
  auto elf = std::make_shared<const elf::ElfFile>(std::move(*opened));
  volatile uint64_t sink = 0;

  (void)elf->is_dyn();
  sink = sink + elf->build_id().size() + elf->soname().size() + elf->has_symtab();
  for (const auto& needed : elf->needed())
    sink = sink + needed.size();
  if (auto link = elf->debuglink())
    sink = sink + link->size();

  for (std::string_view name : kSymbols) {
    if (auto symbol = elf->find_symbol(name)) {
      if (const elf::Symbol* f = elf->function_at(symbol->value))
        sink = sink + f->name.size();
      (void)elf->read_vaddr(symbol->value, std::min<uint64_t>(symbol->size, 64));
    }
  }
  for (std::string_view name : kSections) {
    (void)elf->find_section(name);
    if (auto bytes = elf->section_bytes(name))
      sink = sink + touch(*bytes);
  }

  const auto& segments = elf->load_segments();
  for (size_t i = 0; i < segments.size() && i < 16; ++i) {
    const elf::LoadSegment& s = segments[i];
    if (auto bytes = elf->read_vaddr(s.vaddr, std::min<uint64_t>(s.filesz, 256)))
      sink = sink + touch(*bytes);
    if (s.filesz >= 8)
      (void)elf->read_vaddr(s.vaddr + s.filesz - 8, 8);
    (void)elf->read_vaddr(s.vaddr + s.filesz, 1);
    // Functions over the segment, 32 probes.
    const uint64_t step = std::max<uint64_t>(s.memsz / 32, 1);
    for (uint64_t k = 0; k < 32; ++k)
      if (const elf::Symbol* f = elf->function_at(s.vaddr + k * step))
        sink = sink + f->name.size();
  }

  // Every stub slot of the PLT sections (bounded), and their edges.
  for (std::string_view name : {".plt", ".plt.sec", ".plt.got"}) {
    auto section = elf->find_section(name);
    if (!section)
      continue;
    const uint64_t span = std::min<uint64_t>(section->size, 4096);
    for (uint64_t off = 0; off < span; off += 4)
      if (auto target = elf->plt_target(section->addr + off))
        sink = sink + target->size();
    (void)elf->plt_target(section->addr + section->size);
    (void)elf->plt_target(section->addr - 1);
  }

  (void)python::analyze_image(elf, mapped_path);
  return 0;
}
