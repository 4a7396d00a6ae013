// Native stack unwinding of a sample from a copy of its user stack, with
// DWARF CFI (.eh_frame / .debug_frame).
//
// Two walkers give the same result. The usual one applies each frame's CFI
// row itself (frame_rule.h), cached by (file, address) so that processes
// running the same library share the work; it makes no system call. A walk
// that meets a row it cannot apply (a DWARF expression, a signal frame, a
// register it needs but could not read) is redone from the leaf through
// libunwind's remote API, whose every step blocks and unblocks signals
// around its cache (two rt_sigprocmask calls) and allocates from a
// signal-blocking pool on a cache miss.
//
// The target process is never touched: libunwind reads registers from the
// sample, stack words from the copied bytes, and unwind tables and other
// code/data from the mapped files (ModuleFile). Interpreters and most
// distribution libraries are built without frame pointers, so CFI is the
// only reliable way up the stack.
//
// Limits: the stack copy bounds how far the walk goes (a frame whose return
// address lies past the copy ends with kStackTruncated); max_frames bounds
// the walk's length; every unwind() call does a bounded number of memory
// reads, so garbage input (random stack bytes, registers pointing nowhere,
// malformed unwind tables) ends in bounded time with a stop reason. Code
// without unwind information ends the walk (kNoUnwindInfo); frame pointers
// are not guessed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "krait/abi.h"
#include "unwind/process_modules.h"
#include "util/lru_cache.h"
#include "util/result.h"

namespace krait::unwind {

// x86_64 user registers at the sample: the ones DWARF CFI can refer to.
// The registers of krait_user_regs (abi.h), from the same list, zeroed.
struct Registers {
#define KRAIT_REGISTER_FIELD(name) uint64_t name = 0;
  KRAIT_USER_REGS(KRAIT_REGISTER_FIELD)
#undef KRAIT_REGISTER_FIELD

  static Registers from(const krait_user_regs& sampled) {
    Registers out;
#define KRAIT_REGISTER_COPY(name) out.name = sampled.name;
    KRAIT_USER_REGS(KRAIT_REGISTER_COPY)
#undef KRAIT_REGISTER_COPY
    return out;
  }
};

struct StackSnapshot {
  Registers regs;
  uint64_t stack_start = 0;        // user address of stack[0] (at or below the sampled rsp)
  std::span<const uint8_t> stack;  // bytes copied from [stack_start, stack_start + size)
};

enum class UnwindStop : uint8_t {
  kRoot,            // the outermost frame (_start, clone, clone3: CFI marks the end)
  kMaxFrames,       // max_frames reached
  kStackTruncated,  // the next frame's data lies past the copied stack
  kNoModule,        // a pc in no executable file mapping (JIT code, garbage)
  kNoUnwindInfo,    // a pc in a file without CFI for it
  kBadFrame,        // CFI produced an impossible frame (stack not growing, unreadable data)
};
std::string_view to_string(UnwindStop stop);

struct UnwindResult {
  // Leaf first. pcs[0] is regs.ip; the others are the callers' return
  // addresses (or, above a signal frame, the interrupted instruction).
  std::vector<uint64_t> pcs;
  // return_address[i]: pcs[i] is a return address, i.e. the instruction
  // after a call. Name such a frame by lookup_pc(i) = pcs[i] - 1, so that a
  // call that ends a function (noreturn callees, tail of a .cold part) is
  // attributed to the calling function and its line.
  std::vector<bool> return_address;
  UnwindStop stop = UnwindStop::kRoot;

  uint64_t lookup_pc(size_t i) const { return return_address[i] ? pcs[i] - 1 : pcs[i]; }
};

// Counters over the life of one Unwinder.
struct UnwinderStats {
  uint64_t unwinds = 0;
  uint64_t frames = 0;
  uint64_t cache_flushes = 0;  // libunwind's per-address cache was dropped (address reuse)
  // Walks redone through libunwind (see above), and the steps it took.
  uint64_t libunwind_walks = 0;
  uint64_t libunwind_steps = 0;
  // Rows looked up by the own walker, by (file, address): hits and misses
  // (each miss evaluates the CFI program once).
  uint64_t rule_hits = 0;
  uint64_t rule_misses = 0;
  // The record of which file filled libunwind's cache at each address
  // (cache_owners.h): bounded, flushed with libunwind's cache when full.
  CacheStats owner_cache;
};

struct UnwinderOptions {
  // false: every walk goes through libunwind (tests compare the two).
  bool own_walker = true;
};

// Ownership: owns one libunwind address space and its per-address cache of
// decoded CFI, and the own walker's cache of CFI rows (a fixed table of
// 4,096 rows, about 200 KiB, whatever the processes map). Threading: not thread-safe; use one
// Unwinder per thread. The ProcessModules and ModuleFiles it reads are shared and may be used by
// other threads concurrently.
class Unwinder {
 public:
  // Error only when libunwind cannot create an address space (out of memory).
  static Result<Unwinder> create(UnwinderOptions options = {});

  Unwinder(Unwinder&&) noexcept;
  Unwinder& operator=(Unwinder&&) noexcept;
  Unwinder(const Unwinder&) = delete;
  Unwinder& operator=(const Unwinder&) = delete;
  ~Unwinder();

  // Walks the stack of `snapshot` in the process described by `modules`.
  // max_frames >= 1 counts pcs[0].
  UnwindResult unwind(const StackSnapshot& snapshot, const ProcessModules& modules,
                      size_t max_frames);
  // The same, reusing `out`'s buffers (no allocation once they are large
  // enough).
  void unwind(const StackSnapshot& snapshot, const ProcessModules& modules, size_t max_frames,
              UnwindResult& out);

  const UnwinderStats& stats() const;

 private:
  struct State;
  explicit Unwinder(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace krait::unwind
