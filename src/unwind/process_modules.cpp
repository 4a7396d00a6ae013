#include "unwind/process_modules.h"

#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include <fmt/format.h>

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

ProcessModules ProcessModules::from_maps(int pid, std::span<const proc::MapEntry> all_maps,
                                         ModuleCache& cache) {
  ProcessModules out;
  out.pid_ = pid;
  std::span<const proc::MapEntry> maps =
      all_maps.first(std::min(all_maps.size(), kMaxMappingsPerProcess));
  auto problem = [&out](const proc::MapEntry& entry, std::string reason) {
    out.problems_.push_back(ModuleProblem{
        .start = entry.start, .end = entry.end, .path = entry.path, .reason = std::move(reason)});
  };
  if (maps.size() < all_maps.size())
    out.problems_.push_back(ModuleProblem{
        .start = all_maps[maps.size()].start,
        .end = all_maps.back().end,
        .path = "",
        .reason = fmt::format("the process has {} mappings; the {} past the first {} were skipped",
                              all_maps.size(), all_maps.size() - maps.size(), maps.size())});

  // Every mapping of one file is needed for its bias (see proc::load_bias),
  // so file mappings are grouped once, by sorting their indexes.
  std::vector<uint32_t> files;
  for (size_t i = 0; i < maps.size(); ++i) {
    const proc::MapEntry& entry = maps[i];
    if (entry.path == "[vdso]") {
      if (!entry.exec || entry.end <= entry.start)
        continue;
      auto file = cache.get(pid, entry);
      if (!file) {
        problem(entry, file.error().message);
        continue;
      }
      auto bias = vdso_bias(entry, **file);
      if (!bias) {
        problem(entry, bias.error().message);
        continue;
      }
      out.modules_.push_back(Module{.start = entry.start,
                                    .end = entry.end,
                                    .bias = *bias,
                                    .file = *file,
                                    .path = entry.path});
    } else if (entry.is_file()) {
      files.push_back(static_cast<uint32_t>(i));
    }
    // Anything else is anonymous code (JIT) or [vsyscall]: nothing to read.
  }
  auto file_order = [&maps](uint32_t a, uint32_t b) {
    const proc::MapEntry& x = maps[a];
    const proc::MapEntry& y = maps[b];
    return std::tie(x.dev_major, x.dev_minor, x.inode, x.path, a) <
           std::tie(y.dev_major, y.dev_minor, y.inode, y.path, b);
  };
  std::sort(files.begin(), files.end(), file_order);

  std::vector<proc::MapEntry> group;
  for (size_t begin = 0; begin < files.size();) {
    size_t end = begin + 1;
    while (end < files.size() && proc::same_file(maps[files[begin]], maps[files[end]]))
      ++end;
    const proc::MapEntry* first_exec = nullptr;
    for (size_t i = begin; i < end && first_exec == nullptr; ++i) {
      const proc::MapEntry& entry = maps[files[i]];
      if (entry.exec && entry.end > entry.start)
        first_exec = &entry;
    }
    if (first_exec != nullptr) {
      auto each_exec = [&](auto&& f) {
        for (size_t i = begin; i < end; ++i) {
          const proc::MapEntry& entry = maps[files[i]];
          if (entry.exec && entry.end > entry.start)
            f(entry);
        }
      };
      auto file = cache.get(pid, *first_exec);
      if (!file) {
        each_exec([&](const proc::MapEntry& entry) { problem(entry, file.error().message); });
      } else {
        group.clear();
        for (size_t i = begin; i < end; ++i)
          group.push_back(maps[files[i]]);
        auto bias = proc::load_bias(group, (*file)->elf());
        each_exec([&](const proc::MapEntry& entry) {
          if (!bias) {
            problem(entry, bias.error().message);
            return;
          }
          out.modules_.push_back(Module{.start = entry.start,
                                        .end = entry.end,
                                        .bias = *bias,
                                        .file = *file,
                                        .path = entry.path});
        });
      }
    }
    begin = end;
  }
  std::sort(out.modules_.begin(), out.modules_.end(),
            [](const Module& a, const Module& b) { return a.start < b.start; });
  std::stable_sort(
      out.problems_.begin(), out.problems_.end(),
      [](const ModuleProblem& a, const ModuleProblem& b) { return a.start < b.start; });
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
