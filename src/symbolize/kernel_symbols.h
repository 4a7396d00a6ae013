// Kernel addresses to names, from /proc/kallsyms (the core kernel and
// loaded modules, "[module]" names included).
//
// Of symbols sharing an address one is kept: a global one before a local
// one, the native x86_64 name before __ia32_/__pfx_ aliases, fewer leading
// underscores, then the first in file order.
//
// Only text symbols (types t/T and weak w/W) are indexed: a kernel stack
// holds code addresses. As for user stacks, name a return address (every
// frame but the first) by address - 1. A symbol is taken to end where the next one starts;
// the last symbol of the core kernel or of a module ends at most
// kMaxLastSymbolSize after its start, so an address past every symbol is
// not pinned on the last one.
//
// Reading /proc/kallsyms needs root (or kernel.kptr_restrict=0): otherwise
// every address is zero and load() fails saying so.
//
// Ownership: a KernelSymbols owns its table. Immutable after load/parse:
// safe to share between threads. Move-only. Memory: names are stored back to
// back in one buffer and each symbol takes 24 bytes besides (~5 MiB for the
// ~120k text symbols of a distribution kernel; one std::string per name
// took three times that).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::symbolize {

// Views into the KernelSymbols it came from: valid while that lives.
struct KernelSymbol {
  std::string_view name;
  std::string_view module;  // "" for the core kernel, else the module ("ext4", "bpf")
  uint64_t address = 0;
};

class KernelSymbols {
 public:
  static constexpr uint64_t kMaxLastSymbolSize = 1 << 20;

  KernelSymbols() = default;
  KernelSymbols(KernelSymbols&&) noexcept = default;
  KernelSymbols& operator=(KernelSymbols&&) noexcept = default;
  KernelSymbols(const KernelSymbols&) = delete;
  KernelSymbols& operator=(const KernelSymbols&) = delete;

  static Result<KernelSymbols> load(const std::string& path = "/proc/kallsyms");
  // Parses kallsyms text: "<hex address> <type> <name>[\t[<module>]]" per
  // line. Malformed lines are an error naming the line.
  static Result<KernelSymbols> parse(std::string_view text);

  // The text symbol containing `address`, or nullopt. O(log n).
  std::optional<KernelSymbol> find(uint64_t address) const;
  // Distinct addresses indexed.
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t address = 0;
    uint32_t name_offset = 0;  // in names_
    uint16_t name_size = 0;
    uint16_t module = 0;  // index in modules_; 0 is the core kernel
  };

  std::string names_;
  std::vector<std::string> modules_;
  std::vector<Entry> entries_;  // sorted by address
  std::vector<uint64_t> ends_;  // ends_[i]: first address past entries_[i]
};

}  // namespace krait::symbolize
