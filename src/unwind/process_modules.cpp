#include "unwind/process_modules.h"

#include <unistd.h>

#include <algorithm>

namespace krait::unwind {
namespace {

uint64_t page_size() {
  static const uint64_t size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// The vDSO is mapped from its first byte (the ELF header), so its bias is
// the mapping's start minus the page of its first segment.
Result<uint64_t> vdso_bias(const proc::MapEntry& entry, const ModuleFile& file) {
  const auto& loads = file.elf().load_segments();
  if (loads.empty())
    return make_error("the vDSO image has no PT_LOAD segment");
  return entry.start - (loads.front().vaddr & ~(page_size() - 1));
}

}  // namespace

Result<ProcessModules> ProcessModules::load(int pid, ModuleCache& cache) {
  auto maps = proc::read_maps(pid);
  if (!maps)
    return maps.error();
  return from_maps(pid, *maps, cache);
}

ProcessModules ProcessModules::from_maps(int pid, std::span<const proc::MapEntry> maps,
                                         ModuleCache& cache) {
  ProcessModules out;
  out.pid_ = pid;
  for (const proc::MapEntry& entry : maps) {
    if (!entry.exec || entry.end <= entry.start)
      continue;
    bool vdso = entry.path == "[vdso]";
    if (!vdso && !entry.is_file())
      continue;  // anonymous code (JIT) or [vsyscall]: nothing to read
    auto problem = [&](std::string reason) {
      out.problems_.push_back(ModuleProblem{
          .start = entry.start, .end = entry.end, .path = entry.path, .reason = std::move(reason)});
    };
    auto file = cache.get(pid, entry);
    if (!file) {
      problem(file.error().message);
      continue;
    }
    Result<uint64_t> bias = vdso ? vdso_bias(entry, **file)
                                 : proc::load_bias(proc::maps_of_file(maps, entry), (*file)->elf());
    if (!bias) {
      problem(bias.error().message);
      continue;
    }
    out.modules_.push_back(Module{
        .start = entry.start, .end = entry.end, .bias = *bias, .file = *file, .path = entry.path});
  }
  std::sort(out.modules_.begin(), out.modules_.end(),
            [](const Module& a, const Module& b) { return a.start < b.start; });
  return out;
}

const Module* ProcessModules::find(uint64_t address) const {
  auto it = std::upper_bound(modules_.begin(), modules_.end(), address,
                             [](uint64_t a, const Module& m) { return a < m.start; });
  if (it == modules_.begin())
    return nullptr;
  --it;
  return address < it->end ? &*it : nullptr;
}

}  // namespace krait::unwind
