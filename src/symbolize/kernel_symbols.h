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
// safe to share between threads. Move-only (the table is large: ~200k
// symbols).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::symbolize {

struct KernelSymbol {
  std::string name;
  std::string module;  // "" for the core kernel, else the module ("ext4", "bpf")
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

  // The text symbol containing `address`, or nullptr. O(log n).
  const KernelSymbol* find(uint64_t address) const;
  // Distinct addresses indexed.
  size_t size() const { return symbols_.size(); }

 private:
  std::vector<KernelSymbol> symbols_;  // sorted by address
  std::vector<uint64_t> ends_;         // ends_[i]: first address past symbols_[i]
};

}  // namespace krait::symbolize
