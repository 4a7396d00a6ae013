#include "engine/stack_builder.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace krait::engine {
namespace {

// Distinct frames an interval's profiles may hold, in bytes of names: the
// processes decide how many distinct frames there are (code objects and
// names without end), so past this every new frame is one reason frame.
constexpr size_t kMaxFrameBytes = size_t{256} << 20;
constexpr std::string_view kFrameTableFull = "[krait: too many distinct frames in this interval]";

size_t frame_bytes(const profile::Frame& f) {
  return sizeof(profile::Frame) + f.function.size() + f.system_name.size() + f.file.size() + 32;
}

template <typename Entry>
size_t native_entry_bytes(const Entry& entry) {
  return sizeof(Entry) + entry.frames.size() * sizeof(profile::FrameId);
}

// Threads off the CPU at once whose blocks are tracked: past it the oldest
// go (their end was lost, or their thread is long gone).
constexpr size_t kMaxOpenBlocks = 65536;

// Time off the CPU from `from` to `to`, for `weight` switches.
uint64_t blocked_ns(uint64_t from, uint64_t to, uint16_t weight) {
  if (to <= from)
    return 0;
  const uint64_t d = to - from;
  return d > UINT64_MAX / weight ? UINT64_MAX : d * weight;
}

std::string basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<std::unique_ptr<StackBuilder>> StackBuilder::create(BuilderOptions options) {
  auto unwinder = unwind::Unwinder::create();
  if (!unwinder)
    return unwinder.error();
  return std::make_unique<StackBuilder>(Key{}, options, std::move(*unwinder));
}

const symbolize::KernelSymbols* StackBuilder::kernel_symbols() {
  if (!kernel_tried_ && options_.native && options_.kernel) {
    kernel_tried_ = true;
    auto kernel = symbolize::KernelSymbols::load();
    if (kernel) {
      kernel_ = std::move(*kernel);
      kernel_loaded_ = true;
    } else {
      // Kernel frames then show addresses only; the run goes on.
      spdlog::warn("kernel symbols unavailable: {}", kernel.error().message);
    }
  }
  return kernel_loaded_ ? &kernel_ : nullptr;
}

StackBuilder::StackBuilder(Key, BuilderOptions options, unwind::Unwinder unwinder)
    : options_(options), unwinder_(std::move(unwinder)) {}

StackBuilder::SeriesState& StackBuilder::state_for(const SeriesRef& series) {
  auto it = series_.find(series.get());
  if (it != series_.end())
    return *it->second;
  auto st = std::make_unique<SeriesState>(options_.max_native_entries);
  st->series = series;
  return *series_.emplace(series.get(), std::move(st)).first->second;
}

std::vector<SeriesProfile> StackBuilder::take_profiles(int64_t end_ktime_ns) {
  const auto end = static_cast<uint64_t>(end_ktime_ns);
  for (auto& [tid, block] : open_) {
    state_for(block.series)
        .profile.add_sample(block.stack, block.labels, 0,
                            blocked_ns(block.charged_ns, end, block.weight));
    block.charged_ns = std::max(block.charged_ns, end);
  }
  std::vector<SeriesProfile> out;
  std::map<const Series*, const profile::Profile*> old;
  for (auto& [key, st] : series_) {
    if (st->profile.total_count() == 0 && st->profile.total_off_cpu_ns() == 0) {
      old[key] = &st->profile;
      continue;
    }
    out.push_back({st->series, std::move(st->profile), interval_start_ns_, end_ktime_ns});
  }
  for (const SeriesProfile& p : out)
    old[p.series.get()] = &p.profile;
  // The counts of the caches that go outlive them, for the summary.
  for (const auto& [key, st] : series_) {
    CacheStats native = st->native.stats();
    native.entries = 0;
    native.bytes = 0;
    retired_native_frames_ += native;
  }
  // New profiles mean new ids: every cache of ids goes with the old ones,
  // and the open blocks take theirs along. The empty profiles skipped above
  // live in series_ until it is cleared, so carry over first.
  std::map<const Series*, std::unique_ptr<SeriesState>> ended;
  ended.swap(series_);
  frame_bytes_ = 0;
  for (auto& [tid, block] : open_)
    carry_over(block, *old.at(block.series.get()));
  ended.clear();
  refresh_cache_stats();
  interval_start_ns_ = end_ktime_ns;
  return out;
}

void StackBuilder::carry_over(OpenBlock& block, const profile::Profile& old) {
  SeriesState& st = state_for(block.series);
  for (profile::FrameId& id : block.stack) {
    profile::Frame frame = old.frames()[id];
    if (frame.mapping != 0)
      frame.mapping = st.profile.intern_mapping(old.mappings()[frame.mapping - 1]);
    id = intern(st, frame);
  }
  block.labels = st.profile.intern_labels(old.label_sets()[block.labels]);
}

void StackBuilder::open_block(SeriesState& st, const SampleJob& job, profile::LabelSetId labels) {
  ++stats_.off_cpu_samples;
  auto early = early_ends_.find(job.tid);
  if (early != early_ends_.end() && early->second.start_ns == job.block_start_ns) {
    // Its end came first: the sample was held for its names.
    st.profile.add_sample(stack_, labels, 0,
                          blocked_ns(job.block_start_ns, early->second.end_ns, job.weight));
    early_ends_.erase(early);
    return;
  }
  auto it = open_.find(job.tid);
  if (it != open_.end()) {
    ++stats_.blocks_without_end;  // the thread left the CPU again: that end was lost
  } else if (open_.size() >= kMaxOpenBlocks) {
    ++stats_.blocks_without_end;
    open_.erase(open_.begin());
  }
  open_[job.tid] =
      OpenBlock{job.series, stack_, labels, job.block_start_ns, job.block_start_ns, job.weight};
}

void StackBuilder::end_block(const SampleJob& job) {
  auto it = open_.find(job.tid);
  if (it == open_.end() || it->second.start_ns != job.block_start_ns) {
    // The sample is still on its way (held for its names), or was lost.
    if (early_ends_.size() >= kMaxOpenBlocks) {
      stats_.ends_without_block += early_ends_.size();
      early_ends_.clear();
    }
    // An end already waiting for this thread lost its sample.
    const bool replaced =
        !early_ends_
             .insert_or_assign(job.tid, EarlyEnd{job.block_start_ns, job.ktime_ns, job.weight})
             .second;
    if (replaced)
      ++stats_.ends_without_block;
    return;
  }
  OpenBlock& block = it->second;
  state_for(block.series)
      .profile.add_sample(block.stack, block.labels, 0,
                          blocked_ns(block.charged_ns, job.ktime_ns, block.weight));
  open_.erase(it);
}

profile::FrameId StackBuilder::frame_id(SeriesState& st, const FrameRef& frame) {
  auto it = st.frames.find(frame.get());
  if (it != st.frames.end())
    return it->second.second;
  if (frame_bytes_ > kMaxFrameBytes)
    return synthetic(st, std::string(kFrameTableFull));
  profile::FrameId id = intern(st, *frame);
  st.frames.emplace(frame.get(), std::make_pair(frame, id));
  return id;
}

profile::FrameId StackBuilder::intern(SeriesState& st, const profile::Frame& frame) {
  if (frame_bytes_ > kMaxFrameBytes) {
    ++stats_.reasons[std::string(kFrameTableFull.substr(1, kFrameTableFull.size() - 2))];
    return synthetic(st, std::string(kFrameTableFull));
  }
  const size_t before = st.profile.frames().size();
  profile::FrameId id = st.profile.intern_frame(frame);
  if (st.profile.frames().size() != before)
    frame_bytes_ += frame_bytes(frame);
  return id;
}

profile::FrameId StackBuilder::synthetic(SeriesState& st, const std::string& name) {
  auto it = st.synthetic.find(name);
  if (it != st.synthetic.end())
    return it->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kSynthetic;
  f.function = name;
  profile::FrameId id = st.profile.intern_frame(f);
  st.synthetic.emplace(name, id);
  return id;
}

profile::LabelSetId StackBuilder::labels_id(SeriesState& st, const LabelsRef& labels) {
  auto it = st.labels.find(labels.get());
  if (it != st.labels.end())
    return it->second.second;
  profile::LabelSetId id = st.profile.intern_labels(*labels);
  st.labels.emplace(labels.get(), std::make_pair(labels, id));
  return id;
}

void StackBuilder::reason(SeriesState& st, std::vector<profile::FrameId>& out,
                          const std::string& text) {
  ++stats_.reasons[text];
  out.push_back(synthetic(st, "[" + text + "]"));
}

const StackBuilder::NativeEntry& StackBuilder::native_entry(SeriesState& st,
                                                            const unwind::ProcessModules& modules,
                                                            uint64_t pc) {
  const unwind::Module* module = modules.find(pc);
  const uint64_t serial = module ? module->file->serial() : 0;
  const uint64_t vaddr = module ? module->file_address(pc) : pc;
  NativeKey key{serial, vaddr, pc};
  if (const NativeEntry* cached = st.native.find(key))
    return *cached;

  NativeEntry entry;
  if (!module) {
    profile::Frame f;
    f.kind = profile::FrameKind::kNative;
    f.function = fmt::format("[unknown {:#x}]", pc);
    f.address = pc;
    entry.frames.push_back(intern(st, f));
    const size_t bytes = native_entry_bytes(entry);
    return st.native.insert(key, std::move(entry), bytes);
  }
  std::string mapping_key = fmt::format("{}/{:x}", module->path, module->start);
  uint32_t mapping;
  if (auto m = st.mappings.find(mapping_key); m != st.mappings.end()) {
    mapping = m->second;
  } else {
    profile::Mapping map;
    map.file = module->path;
    map.build_id = module->file->build_id();
    map.start = module->start;
    map.limit = module->end;
    map.offset = module->start - module->bias;
    mapping = st.profile.intern_mapping(map);
    st.mappings.emplace(std::move(mapping_key), mapping);
  }
  auto frames = symbolizer_.lookup(*module->file, vaddr);
  for (const auto& nf : *frames) {
    profile::Frame f;
    f.kind = profile::FrameKind::kNative;
    f.function = nf.function.empty() ? fmt::format("[{}+{:#x}]", basename(module->path), vaddr)
                                     : nf.function;
    f.system_name = nf.system_name == nf.function ? "" : nf.system_name;
    f.file = nf.file;
    f.line = nf.line;
    f.address = pc;
    f.mapping = mapping;
    entry.frames.push_back(intern(st, f));
  }
  entry.eval = !frames->empty() && is_eval_function(frames->back().function);
  for (const auto& nf : *frames)
    entry.greenlet_base |= is_greenlet_base(module->path, nf.function);
  const size_t bytes = native_entry_bytes(entry);
  return st.native.insert(key, std::move(entry), bytes);
}

profile::FrameId StackBuilder::kernel_frame(SeriesState& st, uint64_t ip) {
  if (auto it = st.kernel.find(ip); it != st.kernel.end())
    return it->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kKernel;
  f.address = ip;
  std::optional<symbolize::KernelSymbol> sym;
  if (const symbolize::KernelSymbols* kernel = kernel_symbols())
    sym = kernel->find(ip);
  if (sym) {
    f.function = sym->name;
    if (!sym->module.empty())
      f.file = fmt::format("[{}]", sym->module);
  } else {
    f.function = fmt::format("[kernel {:#x}]", ip);
  }
  if (!st.mappings.count("[kernel.kallsyms]")) {
    profile::Mapping map;
    map.file = "[kernel.kallsyms]";
    st.mappings["[kernel.kallsyms]"] = st.profile.intern_mapping(map);
  }
  f.mapping = st.mappings["[kernel.kallsyms]"];
  profile::FrameId id = intern(st, f);
  st.kernel.emplace(ip, id);
  return id;
}

void StackBuilder::merge_native(SeriesState& st, const SampleJob& job,
                                const unwind::ProcessModules& modules,
                                std::vector<profile::FrameId>& out) {
  unwind::StackSnapshot snap;
  const krait_user_regs& r = job.regs;
  snap.regs = unwind::Registers::from(r);
  snap.stack_start =
      (job.native_flags & KRAIT_NATIVE_RED_ZONE) ? r.sp - KRAIT_RED_ZONE_BYTES : r.sp;
  snap.stack = job.user_stack;
  unwinder_.unwind(snap, modules, options_.max_native_frames, unwound_);
  UnwindStats& us = stats_.unwinding[job.process_key];
  ++us.unwinds;
  const bool complete = unwound_.stop == unwind::UnwindStop::kRoot;
  if (complete)
    ++us.reached_root;
  else
    ++us.stops[std::string(unwind::to_string(unwound_.stop))];

  // The entries are copied out: looking up the next address may evict one.
  native_roles_.clear();
  native_spans_.clear();
  native_frames_.clear();
  for (size_t i = 0; i < unwound_.pcs.size(); ++i) {
    const NativeEntry& e = native_entry(st, modules, unwound_.lookup_pc(i));
    native_roles_.push_back({e.eval, e.greenlet_base});
    native_spans_.emplace_back(native_frames_.size(), e.frames.size());
    native_frames_.insert(native_frames_.end(), e.frames.begin(), e.frames.end());
  }
  python_roles_.clear();
  for (const PythonFrameRef& p : job.python)
    python_roles_.push_back({p.entry});
  const MergeResult merged = merge_stacks(native_roles_, python_roles_, complete,
                                          job.python_truncated, job.python_process);
  for (const MergeStep& step : merged.steps) {
    if (step.python) {
      out.push_back(frame_id(st, job.python[step.index].frame));
      continue;
    }
    const auto [first, count] = native_spans_[step.index];
    out.insert(out.end(), native_frames_.begin() + static_cast<ptrdiff_t>(first),
               native_frames_.begin() + static_cast<ptrdiff_t>(first + count));
  }
  // The greenlet's run function: its Python chain's root frame, when the
  // walk reached it.
  if (merged.greenlet && !job.python.empty() && !job.python_truncated && job.python_reasons.empty())
    greenlet_root_ = job.python.back().frame;
  switch (merged.verdict) {
    case MergeVerdict::kExact:
      break;
    case MergeVerdict::kMismatch:
      reason(st, out, "native and Python stacks do not match");
      break;
    case MergeVerdict::kIncomplete:
      reason(st, out, fmt::format("native stack incomplete: {}", unwind::to_string(unwound_.stop)));
      break;
  }
}

profile::LabelSetId StackBuilder::greenlet_labels_id(SeriesState& st, const LabelsRef& labels,
                                                     const FrameRef& root) {
  const auto key = std::make_pair(labels.get(), root.get());
  if (auto it = st.greenlet_labels.find(key); it != st.greenlet_labels.end())
    return it->second.id;
  profile::Labels with = *labels;
  with.emplace_back("greenlet", root->function);
  const profile::LabelSetId id = st.profile.intern_labels(std::move(with));
  st.greenlet_labels.emplace(key, GreenletLabels{labels, root, id});
  return id;
}

void StackBuilder::add(const SampleJob& job) {
  if (job.interval_end) {
    auto profiles = take_profiles(static_cast<int64_t>(job.ktime_ns));
    if (sink_)
      sink_(std::move(profiles));
    return;
  }
  if (job.block_end) {
    end_block(job);
    return;
  }
  ++stats_.samples;
  SeriesState& st = state_for(job.series);
  stack_.clear();
  greenlet_root_.reset();
  if (job.native) {
    for (uint64_t ip : job.kernel_ips)
      stack_.push_back(kernel_frame(st, ip));
    std::shared_ptr<const unwind::ProcessModules> modules =
        job.modules ? job.modules->get() : nullptr;
    if ((job.native_flags & KRAIT_NATIVE_CAPTURED) && modules) {
      merge_native(st, job, *modules, stack_);
    } else {
      for (const auto& p : job.python)
        stack_.push_back(frame_id(st, p.frame));
      if (!(job.native_flags & KRAIT_NATIVE_NO_USER))
        reason(st, stack_, "user stack not captured");
    }
    refresh_cache_stats();
  } else {
    for (const auto& p : job.python)
      stack_.push_back(frame_id(st, p.frame));
  }
  for (const auto& r : job.python_reasons)
    stack_.push_back(frame_id(st, r));
  if (stack_.empty())
    stack_.push_back(synthetic(st, "[no frames]"));
  const profile::LabelSetId labels = greenlet_root_
                                         ? greenlet_labels_id(st, job.labels, greenlet_root_)
                                         : labels_id(st, job.labels);
  if (job.off_cpu) {
    open_block(st, job, labels);
    return;
  }
  st.profile.add_sample(stack_, labels);
}

void StackBuilder::refresh_cache_stats() {
  CacheStats native = retired_native_frames_;
  for (const auto& [key, st] : series_)
    native += st->native.stats();
  stats_.native_frames = native;
  stats_.symbols = symbolizer_.stats().address_cache;
  stats_.unwind_owners = unwinder_.stats().owner_cache;
}

BuilderThread::BuilderThread(StackBuilder& builder, JobQueue& queue)
    : builder_(builder), queue_(queue), thread_([this] {
        while (auto job = queue_.pop())
          builder_.add(*job);
      }) {}

BuilderThread::~BuilderThread() {
  finish();
}

void BuilderThread::finish() {
  queue_.close();
  if (thread_.joinable())
    thread_.join();
}

}  // namespace krait::engine
