#include "unwind/unwinder.h"

#include <libunwind.h>

#include <array>
#include <cstring>

#include "unwind/cache_owners.h"
#include "unwind/frame_rule.h"

// Exported by libunwind but not declared in its public headers (linux perf
// declares it the same way): it decodes one FDE given a search table.
extern "C" int UNW_OBJ(dwarf_search_unwind_table)(unw_addr_space_t as, unw_word_t ip,
                                                  unw_dyn_info_t* di, unw_proc_info_t* pi,
                                                  int need_unwind_info, void* arg);

namespace krait::unwind {
namespace {

// Addresses no x86_64 user process can map (non-canonical): libunwind is
// shown a one-entry FDE search table at the first, and converted
// .debug_frame bytes at the second.
constexpr uint64_t kScratchTableAddress = 0x4000'0000'0000'0000;
constexpr uint64_t kSyntheticCfiBase = 0x5000'0000'0000'0000;
// Memory reads allowed per unwind() call. A cached step costs a handful; a
// cold one a few hundred; garbage CFI (e.g. a DWARF expression that loops)
// is cut off here.
constexpr uint64_t kMaxReadsPerUnwind = 1 << 20;
// A failed read this far above the copied stack still counts as "past the
// copy" (the stack of a thread is at most this large in practice).
constexpr uint64_t kMaxStackSpan = uint64_t{1} << 30;
// libunwind caches decoded CFI per process address; see claim_cache().
constexpr size_t kLibunwindCacheEntries = 4096;
constexpr size_t kMaxTrackedAddresses = 1 << 16;
// Slots of the own walker's row cache (direct-mapped, so a lookup is one
// probe and nothing is allocated per sample). An interpreter's hot stacks
// touch a few hundred distinct return addresses.
constexpr size_t kRuleCacheSlots = 4096;
static_assert((kRuleCacheSlots & (kRuleCacheSlots - 1)) == 0);

struct AddressSpaceDeleter {
  void operator()(unw_addr_space* as) const { unw_destroy_addr_space(as); }
};
using AddressSpace = std::unique_ptr<unw_addr_space, AddressSpaceDeleter>;

// Per-unwind() state the accessors read.
struct Context {
  const StackSnapshot* snapshot = nullptr;
  const ProcessModules* modules = nullptr;
  const Module* module = nullptr;  // of the frame being stepped
  const CfiTable* table = nullptr;
  uint64_t table_base = 0;  // where libunwind sees table->bytes()
  uint64_t reads_left = kMaxReadsPerUnwind;
  bool read_past_stack = false;
  bool lookup_failed = false;
};

uint64_t table_base(const Module& module, const CfiTable& table) {
  // .eh_frame is read where the loader mapped it, so its PC-relative
  // pointers resolve; converted .debug_frame exists only here.
  return table.source() == CfiTable::Source::kEhFrame ? module.bias + table.vaddr()
                                                      : kSyntheticCfiBase;
}

// Copies the part of the 8-byte word at `addr` that overlaps `bytes` (seen
// at `base`), zeroing the rest: libunwind reads aligned words and uses only
// the bytes it asked for.
bool copy_overlap(uint64_t addr, uint64_t base, std::span<const uint8_t> bytes, unw_word_t* val) {
  if (addr >= base + bytes.size() || addr + sizeof(unw_word_t) <= base)
    return false;
  uint8_t word[sizeof(unw_word_t)] = {};
  for (size_t i = 0; i < sizeof word; ++i) {
    uint64_t a = addr + i;
    if (a >= base && a - base < bytes.size())
      word[i] = bytes[a - base];
  }
  std::memcpy(val, word, sizeof word);
  return true;
}

int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t* pi, int need_unwind_info,
                   void* arg) {
  auto& ctx = *static_cast<Context*>(arg);
  const Module* module = ctx.module != nullptr && ip >= ctx.module->start && ip < ctx.module->end
                             ? ctx.module
                             : ctx.modules->find(ip);
  FdeRef ref = module != nullptr ? module->file->find_fde(module->file_address(ip)) : FdeRef{};
  if (!ref) {
    ctx.lookup_failed = true;
    return -UNW_ENOINFO;
  }
  uint64_t base = table_base(*module, *ref.table);
  ctx.module = module;
  ctx.table = ref.table;
  ctx.table_base = base;
  // Our own index found the FDE; libunwind gets a one-entry table (all
  // zeros: start offset 0 from start_ip, FDE at offset 0 from segbase) and
  // decodes the FDE itself.
  unw_dyn_info_t di{};
  di.format = UNW_INFO_FORMAT_IP_OFFSET;
  di.start_ip = ref.fde->start + module->bias;
  di.end_ip = ref.fde->end + module->bias;
  di.load_offset = ref.fde->absolute ? module->bias : 0;
  di.u.rti.segbase = base + ref.fde->offset;
  di.u.rti.table_len = 1;  // in words: one 8-byte entry
  di.u.rti.table_data = kScratchTableAddress;
  int ret = UNW_OBJ(dwarf_search_unwind_table)(as, ip, &di, pi, need_unwind_info, arg);
  if (ret < 0)
    ctx.lookup_failed = true;
  return ret;
}

void put_unwind_info(unw_addr_space_t, unw_proc_info_t*, void*) {
  // libunwind frees the DWARF info it allocated for us itself.
}

int get_dyn_info_list_addr(unw_addr_space_t, unw_word_t*, void*) {
  return -UNW_ENOINFO;  // no JIT registration in a copied stack
}

int access_mem(unw_addr_space_t, unw_word_t addr, unw_word_t* val, int write, void* arg) {
  auto& ctx = *static_cast<Context*>(arg);
  if (write != 0)
    return -UNW_EINVAL;
  if (ctx.reads_left == 0)
    return -UNW_EINVAL;
  --ctx.reads_left;
  const StackSnapshot& snapshot = *ctx.snapshot;
  const uint64_t size = snapshot.stack.size();
  if (addr >= snapshot.stack_start) {
    uint64_t offset = addr - snapshot.stack_start;
    if (offset < size && size - offset >= sizeof(unw_word_t)) {
      std::memcpy(val, snapshot.stack.data() + offset, sizeof(unw_word_t));
      return 0;
    }
  }
  if (ctx.table != nullptr && copy_overlap(addr, ctx.table_base, ctx.table->bytes(), val))
    return 0;
  if (addr == kScratchTableAddress) {
    *val = 0;
    return 0;
  }
  // Anything else (personality pointers, code bytes) comes from the files.
  if (ctx.module != nullptr &&
      ctx.module->file->read_image(ctx.module->file_address(addr), val, sizeof(unw_word_t)))
    return 0;
  for (const Module& module : ctx.modules->modules())
    if (&module != ctx.module &&
        module.file->read_image(module.file_address(addr), val, sizeof(unw_word_t)))
      return 0;
  // Past the end of the copy (even partly): the stack goes on, uncopied.
  if (addr >= snapshot.stack_start && addr - snapshot.stack_start < kMaxStackSpan &&
      addr - snapshot.stack_start + sizeof(unw_word_t) > size)
    ctx.read_past_stack = true;
  return -UNW_EINVAL;
}

// Indexed by libunwind's x86_64 register numbers (the DWARF numbering).
constexpr std::array<uint64_t Registers::*, 17> kRegisterByNumber = {
    &Registers::ax,  &Registers::dx,  &Registers::cx,  &Registers::bx,  &Registers::si,
    &Registers::di,  &Registers::bp,  &Registers::sp,  &Registers::r8,  &Registers::r9,
    &Registers::r10, &Registers::r11, &Registers::r12, &Registers::r13, &Registers::r14,
    &Registers::r15, &Registers::ip};
static_assert(UNW_X86_64_RAX == 0 && UNW_X86_64_RDX == 1 && UNW_X86_64_RCX == 2 &&
              UNW_X86_64_RBX == 3 && UNW_X86_64_RSI == 4 && UNW_X86_64_RDI == 5 &&
              UNW_X86_64_RBP == 6 && UNW_X86_64_RSP == 7 && UNW_X86_64_R8 == 8 &&
              UNW_X86_64_R15 == 15 && UNW_X86_64_RIP == 16);

int access_reg(unw_addr_space_t, unw_regnum_t reg, unw_word_t* val, int write, void* arg) {
  if (write != 0)
    return -UNW_EREADONLYREG;
  if (reg < 0 || static_cast<size_t>(reg) >= kRegisterByNumber.size())
    return -UNW_EBADREG;
  *val = static_cast<Context*>(arg)->snapshot->regs.*kRegisterByNumber[static_cast<size_t>(reg)];
  return 0;
}

int access_fpreg(unw_addr_space_t, unw_regnum_t, unw_fpreg_t*, int, void*) {
  return -UNW_EBADREG;
}

int resume(unw_addr_space_t, unw_cursor_t*, void*) {
  return -UNW_EINVAL;
}

int get_proc_name(unw_addr_space_t, unw_word_t, char*, size_t, unw_word_t*, void*) {
  return -UNW_ENOINFO;  // naming is the symbolizer's job
}

unw_accessors_t accessors() {
  unw_accessors_t a{};
  a.find_proc_info = find_proc_info;
  a.put_unwind_info = put_unwind_info;
  a.get_dyn_info_list_addr = get_dyn_info_list_addr;
  a.access_mem = access_mem;
  a.access_reg = access_reg;
  a.access_fpreg = access_fpreg;
  a.resume = resume;
  a.get_proc_name = get_proc_name;
  return a;
}

}  // namespace

std::string_view to_string(UnwindStop stop) {
  switch (stop) {
    case UnwindStop::kRoot:
      return "root";
    case UnwindStop::kMaxFrames:
      return "max-frames";
    case UnwindStop::kStackTruncated:
      return "stack-truncated";
    case UnwindStop::kNoModule:
      return "no-module";
    case UnwindStop::kNoUnwindInfo:
      return "no-unwind-info";
    case UnwindStop::kBadFrame:
      return "bad-frame";
  }
  return "unknown";
}

// A cached CFI row: the rule, or that there is none (libunwind's case).
struct RuleSlot {
  uint64_t serial = 0;  // ModuleFile::serial(); 0: empty (serials start at 1)
  uint64_t file_pc = 0;
  bool exact = false;
  bool has_rule = false;
  FrameRule rule;
};

// What reading a word for the own walker gave.
enum class WordRead : uint8_t {
  kOk,
  kPastCopy,   // above the copy, where the stack goes on uncopied
  kElsewhere,  // nowhere krait can read: only libunwind can say what follows
};

// Reads like libunwind's access_mem above (the stack copy, then the frame's
// CFI bytes, then the mapped files), so both walkers see the same words.
WordRead read_word(Context& ctx, uint64_t addr, uint64_t& value) {
  ctx.read_past_stack = false;
  unw_word_t word = 0;
  if (access_mem(nullptr, addr, &word, 0, &ctx) == 0) {
    value = word;
    return WordRead::kOk;
  }
  return ctx.read_past_stack ? WordRead::kPastCopy : WordRead::kElsewhere;
}

struct Unwinder::State {
  UnwinderOptions options;
  unw_accessors_t callbacks = accessors();
  AddressSpace as;
  // libunwind caches decoded CFI by process address alone; see
  // cache_owners.h.
  CacheOwners owners{kMaxTrackedAddresses};
  std::vector<RuleSlot> rules = std::vector<RuleSlot>(kRuleCacheSlots);
  UnwinderStats stats;

  void claim_cache(uint64_t ip, const Module& module) {
    if (!owners.claim(ip, CacheOwner{module.file->serial(), module.bias}))
      return;
    unw_flush_cache(as.get(), 0, 0);
    ++stats.cache_flushes;
  }

  const FrameRule* rule_for(const Module& module, uint64_t file_pc, bool exact, const FdeRef& ref) {
    const uint64_t serial = module.file->serial();
    const uint64_t hash = (file_pc ^ (serial * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
    RuleSlot& slot = rules[hash >> 52 & (kRuleCacheSlots - 1)];
    if (slot.serial == serial && slot.file_pc == file_pc && slot.exact == exact) {
      ++stats.rule_hits;
    } else {
      ++stats.rule_misses;
      std::optional<FrameRule> rule = frame_rule(*ref.table, *ref.fde, file_pc, exact);
      slot.serial = serial;
      slot.file_pc = file_pc;
      slot.exact = exact;
      slot.has_rule = rule.has_value();
      if (rule)
        slot.rule = *rule;
    }
    return slot.has_rule ? &slot.rule : nullptr;
  }

  bool own_walk(const StackSnapshot& snapshot, const ProcessModules& modules, size_t max_frames,
                UnwindResult& out);
  void libunwind_walk(const StackSnapshot& snapshot, const ProcessModules& modules,
                      size_t max_frames, UnwindResult& out);
};

// Walks with cached FrameRules. False when a frame needs libunwind; `out`
// then holds a partial walk the caller discards.
bool Unwinder::State::own_walk(const StackSnapshot& snapshot, const ProcessModules& modules,
                               size_t max_frames, UnwindResult& out) {
  // The DWARF registers 0-15 of the frame being stepped, as libunwind would
  // see them: read, not readable because the copy ends first, or unknown
  // (undefined, or saved outside the stack).
  enum class Known : uint8_t { kYes, kPastCopy, kNo };
  std::array<uint64_t, 16> regs{};
  std::array<Known, 16> known{};
  for (size_t i = 0; i < regs.size(); ++i)
    regs[i] = snapshot.regs.*kRegisterByNumber[i];
  uint64_t ip = snapshot.regs.ip;
  uint64_t sp = snapshot.regs.sp;
  Context ctx;
  ctx.snapshot = &snapshot;
  ctx.modules = &modules;
  bool exact = true;
  for (;;) {
    if (out.pcs.size() >= max_frames) {
      out.stop = UnwindStop::kMaxFrames;
      return true;
    }
    const uint64_t lookup = exact ? ip : ip - 1;
    const Module* module = modules.find(lookup);
    if (module == nullptr) {
      out.stop = UnwindStop::kNoModule;
      return true;
    }
    const uint64_t file_pc = module->file_address(lookup);
    FdeRef ref = module->file->find_fde(file_pc);
    if (!ref) {
      out.stop = UnwindStop::kNoUnwindInfo;
      return true;
    }
    const FrameRule* rule = rule_for(*module, file_pc, exact, ref);
    if (rule == nullptr)
      return false;
    ctx.module = module;
    ctx.table = ref.table;
    ctx.table_base = table_base(*module, *ref.table);
    // libunwind reads a register when a rule needs it: one it could not
    // read then fails the step, as "truncated" when the read was past the
    // copy.
    auto need = [&](size_t reg) -> std::optional<bool> {
      if (known[reg] == Known::kYes)
        return true;
      if (known[reg] == Known::kPastCopy) {
        out.stop = UnwindStop::kStackTruncated;
        return false;
      }
      return std::nullopt;
    };
    uint64_t cfa = sp;
    if (rule->cfa_register != 7) {
      auto have = need(rule->cfa_register);
      if (!have)
        return false;
      if (!*have)
        return true;
      cfa = regs[rule->cfa_register];
    }
    cfa += static_cast<uint64_t>(static_cast<int64_t>(rule->cfa_offset));
    const int32_t ra = rule->saved[FrameRule::kReturnAddress];
    if (ra == FrameRule::kUndefined) {
      out.stop = UnwindStop::kRoot;
      return true;
    }
    uint64_t next_ip = 0;
    switch (read_word(ctx, cfa + static_cast<uint64_t>(static_cast<int64_t>(ra)), next_ip)) {
      case WordRead::kOk:
        break;
      case WordRead::kPastCopy:
        out.stop = UnwindStop::kStackTruncated;
        return true;
      case WordRead::kElsewhere:
        return false;
    }
    // libunwind's order: an unchanged frame is bad before an undefined
    // %rbp ends the walk.
    if (next_ip == ip && cfa == sp) {
      out.stop = UnwindStop::kBadFrame;
      return true;
    }
    if (rule->saved[FrameRule::kFramePointer] == FrameRule::kUndefined || next_ip == 0) {
      out.stop = UnwindStop::kRoot;
      return true;
    }
    if (cfa <= sp) {
      out.stop = UnwindStop::kBadFrame;
      return true;
    }
    for (size_t i = 0; i < FrameRule::kReturnAddress; ++i) {
      const size_t reg = FrameRule::kRegisters[i];
      const int32_t saved = rule->saved[i];
      if (saved == FrameRule::kSame)
        continue;
      if (saved == FrameRule::kUndefined) {
        known[reg] = Known::kNo;
        continue;
      }
      // libunwind reads saved registers when they are needed; reading
      // them now sees the same bytes (nothing here writes), except that it
      // would check the CFI bytes of the frame being stepped then.
      switch (read_word(ctx, cfa + static_cast<uint64_t>(static_cast<int64_t>(saved)), regs[reg])) {
        case WordRead::kOk:
          known[reg] = Known::kYes;
          break;
        case WordRead::kPastCopy:
          known[reg] = Known::kPastCopy;
          break;
        case WordRead::kElsewhere:
          known[reg] = Known::kNo;
          break;
      }
    }
    out.pcs.push_back(next_ip);
    out.return_address.push_back(true);
    ip = next_ip;
    sp = cfa;
    regs[7] = cfa;
    exact = false;
  }
}

Result<Unwinder> Unwinder::create(UnwinderOptions options) {
  auto state = std::make_unique<State>();
  state->options = options;
  state->as.reset(unw_create_addr_space(&state->callbacks, 0));
  if (!state->as)
    return make_error("libunwind could not create an address space (out of memory)");
  // Without a cache every step re-parses its CIE and FDE.
  if (unw_set_caching_policy(state->as.get(), UNW_CACHE_GLOBAL) != 0)
    return make_error("libunwind refused to enable its cache");
  // Larger than the default (128): interpreter stacks cycle through more
  // distinct return addresses than that. Builds with a per-thread cache
  // refuse, which is harmless.
  (void)unw_set_cache_size(state->as.get(), kLibunwindCacheEntries, 0);
  return Unwinder(std::move(state));
}

Unwinder::Unwinder(std::unique_ptr<State> state) : state_(std::move(state)) {}
Unwinder::Unwinder(Unwinder&&) noexcept = default;
Unwinder& Unwinder::operator=(Unwinder&&) noexcept = default;
Unwinder::~Unwinder() = default;

const UnwinderStats& Unwinder::stats() const {
  state_->stats.owner_cache = state_->owners.stats();
  return state_->stats;
}

UnwindResult Unwinder::unwind(const StackSnapshot& snapshot, const ProcessModules& modules,
                              size_t max_frames) {
  UnwindResult out;
  unwind(snapshot, modules, max_frames, out);
  return out;
}

void Unwinder::unwind(const StackSnapshot& snapshot, const ProcessModules& modules,
                      size_t max_frames, UnwindResult& out) {
  State& s = *state_;
  ++s.stats.unwinds;
  auto start = [&] {
    out.pcs.clear();
    out.return_address.clear();
    out.pcs.push_back(snapshot.regs.ip);
    out.return_address.push_back(false);
    out.stop = UnwindStop::kRoot;
  };
  start();
  if (!s.options.own_walker || !s.own_walk(snapshot, modules, max_frames, out)) {
    ++s.stats.libunwind_walks;
    start();
    s.libunwind_walk(snapshot, modules, max_frames, out);
  }
  s.stats.frames += out.pcs.size();
}

// The walk through libunwind, `out` holding the leaf.
void Unwinder::State::libunwind_walk(const StackSnapshot& snapshot, const ProcessModules& modules,
                                     size_t max_frames, UnwindResult& out) {
  State& s = *this;
  uint64_t ip = snapshot.regs.ip;
  uint64_t sp = snapshot.regs.sp;

  Context ctx;
  ctx.snapshot = &snapshot;
  ctx.modules = &modules;
  unw_cursor_t cursor;
  if (unw_init_remote(&cursor, s.as.get(), &ctx) < 0) {
    out.stop = UnwindStop::kBadFrame;
    return;
  }
  // The sampled instruction and one interrupted by a signal are looked up
  // as they are; return addresses one byte back, inside the call.
  bool exact = true;
  for (;;) {
    if (out.pcs.size() >= max_frames) {
      out.stop = UnwindStop::kMaxFrames;
      break;
    }
    uint64_t lookup = exact ? ip : ip - 1;
    const Module* module = modules.find(lookup);
    if (module == nullptr) {
      out.stop = UnwindStop::kNoModule;
      break;
    }
    FdeRef ref = module->file->find_fde(module->file_address(lookup));
    if (!ref) {
      out.stop = UnwindStop::kNoUnwindInfo;
      break;
    }
    ctx.module = module;
    ctx.table = ref.table;
    ctx.table_base = table_base(*module, *ref.table);
    ctx.lookup_failed = false;
    s.claim_cache(ip, *module);

    ++s.stats.libunwind_steps;
    int ret = unw_step(&cursor);
    if (ret == 0) {
      out.stop = UnwindStop::kRoot;
      break;
    }
    // A failed lookup inside the step means libunwind fell back to guessing
    // from %rbp; its guess is not trusted.
    if (ret < 0 || ctx.lookup_failed) {
      out.stop = ctx.read_past_stack ? UnwindStop::kStackTruncated : UnwindStop::kBadFrame;
      break;
    }
    unw_word_t next_ip = 0, next_sp = 0;
    if (unw_get_reg(&cursor, UNW_REG_IP, &next_ip) < 0 ||
        unw_get_reg(&cursor, UNW_REG_SP, &next_sp) < 0) {
      out.stop = UnwindStop::kBadFrame;
      break;
    }
    if (next_ip == 0) {
      out.stop = UnwindStop::kRoot;
      break;
    }
    // Callers live higher on the stack; only a signal frame may switch
    // stacks (sigaltstack).
    bool signal = ref.fde->signal_frame;
    if (!signal && next_sp <= sp) {
      out.stop = UnwindStop::kBadFrame;
      break;
    }
    out.pcs.push_back(next_ip);
    out.return_address.push_back(!signal);
    ip = next_ip;
    sp = next_sp;
    exact = signal;
  }
}

}  // namespace krait::unwind
