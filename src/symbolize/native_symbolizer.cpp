#include "symbolize/native_symbolizer.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "symbolize/demangle.h"
#include "symbolize/dwarf_file.h"

namespace krait::symbolize {
namespace {

// GNU ld writes symbol versions into .symtab names ("memcpy@@GLIBC_2.14");
// the version is not part of the function's name.
std::string unversioned(const std::string& name) {
  size_t at = name.find('@');
  return at == std::string::npos || at == 0 ? name : name.substr(0, at);
}

// The function that the code at `vaddr`, which no symbol covers, was split
// off from: stripped builds keep the symbols of exported functions but not
// the local ones of their cold parts ("f.cold"), and PGO builds of CPython
// put most of the eval loop in _PyEval_EvalFrameDefault.cold. GCC emits the
// cold part's FDE right after its function's, and linkers place
// .text.unlikely before .text, so a part is recognized by an FDE that
// follows in the section the FDE of a named function (a symbol spanning
// exactly that FDE) yet lies below it in memory. A static function that
// follows an exported one lies above it and is not mistaken for its part.
// Both must lie in .text, where the linker merges .text.unlikely: the
// linker's own FDE for .plt follows crt1's for _start, and a PLT stub is
// no part of _start.
const elf::Symbol* split_from(const unwind::ModuleFile& file, const elf::ElfFile& symbols,
                              uint64_t vaddr) {
  unwind::FdeRef part = file.find_fde(vaddr);
  if (!part)
    return nullptr;
  const unwind::FdeEntry* parent = part.table->emitted_before(*part.fde);
  if (parent == nullptr || parent->start <= part.fde->end)
    return nullptr;
  const std::optional<elf::Section> text = file.elf().find_section(".text");
  auto in_text = [&](uint64_t start, uint64_t end) {
    return text && start >= text->addr && end <= text->addr + text->size;
  };
  if (!in_text(part.fde->start, part.fde->end) || !in_text(parent->start, parent->end))
    return nullptr;
  const elf::Symbol* symbol = symbols.function_at(parent->start);
  if (symbol == nullptr || symbol->value != parent->start ||
      symbol->value + symbol->size != parent->end)
    return nullptr;
  return symbol;
}

}  // namespace

struct NativeSymbolizer::FileState {
  // `held`: the symbolizer's count of cached addresses over all files,
  // which this file's entries leave when it is closed.
  FileState(size_t max_addresses, std::atomic<uint64_t>& held)
      : addresses(max_addresses, std::numeric_limits<size_t>::max()), held_addresses(held) {}
  FileState(const FileState&) = delete;
  FileState& operator=(const FileState&) = delete;
  ~FileState() { held_addresses.fetch_sub(addresses.size(), std::memory_order_relaxed); }

  std::mutex mutex;  // guards everything below
  bool dwarf_tried = false;
  std::optional<DwarfFile> dwarf;
  LruCache<uint64_t, std::shared_ptr<const NativeFrames>> addresses;
  uint64_t last_use = 0;
  std::atomic<uint64_t>& held_addresses;
};

struct NativeSymbolizer::Shared {
  NativeSymbolizerOptions options;
  // The address caches of every file, summed (LruCache counts per file,
  // and files come and go). Declared before the maps: a closing file
  // subtracts its entries from `addresses_held`.
  std::atomic<uint64_t> address_misses{0}, address_evictions{0}, addresses_held{0};
  mutable std::mutex mutex;  // guards the maps and the clock
  std::unordered_map<std::string, std::shared_ptr<FileState>> by_identity;
  // ModuleFile::serial() -> state: the hot path skips hashing identities.
  std::unordered_map<uint64_t, std::shared_ptr<FileState>> by_serial;
  uint64_t clock = 0;
  std::atomic<uint64_t> lookups{0}, hits{0}, opened{0}, evicted{0};
};

NativeSymbolizer::NativeSymbolizer(NativeSymbolizerOptions options)
    : shared_(std::make_unique<Shared>()) {
  shared_->options = options;
  shared_->options.max_files = std::max<size_t>(1, options.max_files);
  shared_->options.max_addresses_per_file = std::max<size_t>(1, options.max_addresses_per_file);
}

NativeSymbolizer::~NativeSymbolizer() = default;

std::shared_ptr<NativeSymbolizer::FileState> NativeSymbolizer::file_state(
    const unwind::ModuleFile& file) {
  Shared& s = *shared_;
  std::lock_guard lock(s.mutex);
  uint64_t now = ++s.clock;
  if (auto it = s.by_serial.find(file.serial()); it != s.by_serial.end()) {
    it->second->last_use = now;
    return it->second;
  }
  auto [it, inserted] = s.by_identity.try_emplace(file.identity());
  if (inserted) {
    it->second = std::make_shared<FileState>(s.options.max_addresses_per_file, s.addresses_held);
    ++s.opened;
    if (s.by_identity.size() > s.options.max_files) {
      // Close the least recently used file; callers still holding its
      // state finish their lookup on it.
      auto victim = s.by_identity.end();
      for (auto candidate = s.by_identity.begin(); candidate != s.by_identity.end(); ++candidate)
        if (candidate != it && (victim == s.by_identity.end() ||
                                candidate->second->last_use < victim->second->last_use))
          victim = candidate;
      if (victim != s.by_identity.end()) {
        for (auto serial = s.by_serial.begin(); serial != s.by_serial.end();)
          serial = serial->second == victim->second ? s.by_serial.erase(serial) : std::next(serial);
        s.by_identity.erase(victim);
        ++s.evicted;
      }
    }
  }
  // Serials of files long gone would accumulate; they are only a shortcut.
  if (s.by_serial.size() > 4 * s.options.max_files)
    s.by_serial.clear();
  s.by_serial.emplace(file.serial(), it->second);
  it->second->last_use = now;
  return it->second;
}

NativeFrames NativeSymbolizer::resolve(FileState& state, const unwind::ModuleFile& file,
                                       uint64_t vaddr) {
  if (!state.dwarf_tried) {
    state.dwarf_tried = true;
    int fd = file.debug_fd() >= 0 ? file.debug_fd() : file.fd();
    // A debug file without DWARF (or a file without any) still has symbols.
    const std::vector<std::string>& roots = shared_->options.debug_roots;
    if (auto dwarf = DwarfFile::open(fd, file.path(), roots))
      state.dwarf.emplace(std::move(*dwarf));
    else if (file.debug_fd() >= 0)
      if (auto own = DwarfFile::open(file.fd(), file.path(), roots))
        state.dwarf.emplace(std::move(*own));
  }

  const elf::Symbol* symbol = nullptr;
  if (file.elf().has_symtab())
    symbol = file.elf().function_at(vaddr);
  if (symbol == nullptr && file.debug_elf() != nullptr)
    symbol = file.debug_elf()->function_at(vaddr);
  if (symbol == nullptr && !file.elf().has_symtab())
    symbol = file.elf().function_at(vaddr);  // .dynsym
  std::string symbol_name = symbol != nullptr ? unversioned(symbol->name) : std::string();
  if (symbol == nullptr) {
    if (auto target = file.elf().plt_target(vaddr)) {
      // As perf and gdb name a stub: the call it makes, "read@plt".
      NativeFrame stub{.function = demangle(*target) + "@plt", .system_name = *target + "@plt"};
      return NativeFrames{std::move(stub)};
    }
    if (const elf::Symbol* parent = split_from(file, file.elf(), vaddr))
      symbol_name = unversioned(parent->name) + ".cold";
  }

  NativeFrames out;
  if (state.dwarf) {
    std::vector<DwarfScope> scopes = state.dwarf->scopes_at(vaddr);
    for (DwarfScope& scope : scopes) {
      NativeFrame frame{
          .file = std::move(scope.file), .line = scope.line, .inlined = scope.inlined};
      bool outermost = !scope.inlined;
      if (!scope.linkage_name.empty()) {
        frame.function = demangle(scope.linkage_name);
        frame.system_name = std::move(scope.linkage_name);
      } else if (outermost && is_mangled(symbol_name)) {
        frame.function = demangle(symbol_name);
        frame.system_name = symbol_name;
      } else if (!scope.name.empty()) {
        frame.function = scope.name;
        frame.system_name = outermost && !symbol_name.empty() ? symbol_name : scope.name;
      } else if (outermost && !symbol_name.empty()) {
        frame.function = demangle(symbol_name);
        frame.system_name = symbol_name;
      }
      out.push_back(std::move(frame));
    }
  }
  if (out.empty()) {
    NativeFrame frame;
    if (!symbol_name.empty()) {
      frame.function = demangle(symbol_name);
      frame.system_name = symbol_name;
    }
    out.push_back(std::move(frame));
  }
  return out;
}

std::shared_ptr<const NativeFrames> NativeSymbolizer::lookup(const unwind::ModuleFile& file,
                                                             uint64_t file_vaddr) {
  Shared& s = *shared_;
  s.lookups.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<FileState> state = file_state(file);
  std::lock_guard lock(state->mutex);
  if (const auto* cached = state->addresses.find(file_vaddr)) {
    s.hits.fetch_add(1, std::memory_order_relaxed);
    return *cached;
  }
  s.address_misses.fetch_add(1, std::memory_order_relaxed);
  auto frames = std::make_shared<const NativeFrames>(resolve(*state, file, file_vaddr));
  const uint64_t evictions_before = state->addresses.stats().evictions;
  const size_t size_before = state->addresses.size();
  state->addresses.insert(file_vaddr, frames, sizeof(uint64_t) + sizeof(NativeFrames));
  s.address_evictions.fetch_add(state->addresses.stats().evictions - evictions_before,
                                std::memory_order_relaxed);
  s.addresses_held.fetch_add(state->addresses.size() - size_before, std::memory_order_relaxed);
  return frames;
}

NativeFrames NativeSymbolizer::symbolize(const unwind::ModuleFile& file, uint64_t file_vaddr) {
  return *lookup(file, file_vaddr);
}

size_t NativeSymbolizer::file_count() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->by_identity.size();
}

NativeSymbolizerStats NativeSymbolizer::stats() const {
  const Shared& s = *shared_;
  return NativeSymbolizerStats{.lookups = s.lookups.load(),
                               .address_cache_hits = s.hits.load(),
                               .files_opened = s.opened.load(),
                               .files_evicted = s.evicted.load(),
                               .address_cache = CacheStats{.hits = s.hits.load(),
                                                           .misses = s.address_misses.load(),
                                                           .evictions = s.address_evictions.load(),
                                                           .entries = s.addresses_held.load()}};
}

}  // namespace krait::symbolize
