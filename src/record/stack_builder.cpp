#include "record/stack_builder.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>

namespace krait::record {
namespace {

constexpr size_t kMaxNativeCache = 1'000'000;

// The interpreter's eval loop, whose C frames the Python frames replace.
// GCC splits rarely taken paths into "<name>.cold" parts of the same call.
bool is_eval_function(std::string_view name) {
  if (auto dot = name.find('.'); dot != std::string_view::npos)
    name = name.substr(0, dot);
  return name == "_PyEval_EvalFrameDefault" || name == "PyEval_EvalFrameEx";
}

std::string basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<std::unique_ptr<StackBuilder>> StackBuilder::create(profile::Profile& profile,
                                                           BuilderOptions options) {
  auto unwinder = unwind::Unwinder::create();
  if (!unwinder)
    return unwinder.error();
  std::unique_ptr<StackBuilder> b(new StackBuilder(profile, options, std::move(*unwinder)));
  if (options.native && options.kernel) {
    auto kernel = symbolize::KernelSymbols::load();
    if (kernel) {
      b->kernel_ = std::move(*kernel);
      b->kernel_loaded_ = true;
    } else {
      // Kernel frames then show addresses only; the run goes on.
      spdlog::warn("kernel symbols unavailable: {}", kernel.error().message);
    }
  }
  return b;
}

StackBuilder::StackBuilder(profile::Profile& profile, BuilderOptions options,
                           unwind::Unwinder unwinder)
    : profile_(profile), options_(options), unwinder_(std::move(unwinder)) {}

profile::FrameId StackBuilder::frame_id(const FrameRef& frame) {
  auto it = frames_.find(frame.get());
  if (it != frames_.end())
    return it->second.second;
  profile::FrameId id = profile_.intern_frame(*frame);
  frames_.emplace(frame.get(), std::make_pair(frame, id));
  return id;
}

profile::FrameId StackBuilder::synthetic(const std::string& name) {
  auto it = synthetic_.find(name);
  if (it != synthetic_.end())
    return it->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kSynthetic;
  f.function = name;
  profile::FrameId id = profile_.intern_frame(f);
  synthetic_.emplace(name, id);
  return id;
}

profile::LabelSetId StackBuilder::labels_id(const LabelsRef& labels) {
  auto it = labels_.find(labels.get());
  if (it != labels_.end())
    return it->second.second;
  profile::LabelSetId id = profile_.intern_labels(*labels);
  labels_.emplace(labels.get(), std::make_pair(labels, id));
  return id;
}

void StackBuilder::reason(std::vector<profile::FrameId>& out, const std::string& text) {
  ++stats_.reasons[text];
  out.push_back(synthetic("[" + text + "]"));
}

const StackBuilder::NativeEntry& StackBuilder::native_entry(const unwind::ProcessModules& modules,
                                                            uint64_t pc) {
  const unwind::Module* module = modules.find(pc);
  const uint64_t serial = module ? module->file->serial() : 0;
  const uint64_t vaddr = module ? module->file_address(pc) : pc;
  NativeKey key{serial, vaddr, pc};
  if (auto it = native_.find(key); it != native_.end())
    return it->second;
  if (native_.size() >= kMaxNativeCache)
    native_.clear();

  NativeEntry entry;
  if (!module) {
    profile::Frame f;
    f.kind = profile::FrameKind::kNative;
    f.function = fmt::format("[unknown {:#x}]", pc);
    f.address = pc;
    entry.frames.push_back(profile_.intern_frame(f));
    return native_.emplace(key, std::move(entry)).first->second;
  }
  std::string mapping_key = fmt::format("{}/{:x}", module->path, module->start);
  uint32_t mapping;
  if (auto m = mappings_.find(mapping_key); m != mappings_.end()) {
    mapping = m->second;
  } else {
    profile::Mapping map;
    map.file = module->path;
    map.build_id = module->file->build_id();
    map.start = module->start;
    map.limit = module->end;
    map.offset = module->start - module->bias;
    mapping = profile_.intern_mapping(map);
    mappings_.emplace(std::move(mapping_key), mapping);
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
    entry.frames.push_back(profile_.intern_frame(f));
  }
  entry.eval = !frames->empty() && is_eval_function(frames->back().function);
  return native_.emplace(key, std::move(entry)).first->second;
}

profile::FrameId StackBuilder::kernel_frame(uint64_t ip) {
  if (auto it = kernel_frames_.find(ip); it != kernel_frames_.end())
    return it->second;
  profile::Frame f;
  f.kind = profile::FrameKind::kKernel;
  f.address = ip;
  const symbolize::KernelSymbol* sym = kernel_loaded_ ? kernel_.find(ip) : nullptr;
  if (sym) {
    f.function = sym->name;
    if (!sym->module.empty())
      f.file = "[" + sym->module + "]";
  } else {
    f.function = fmt::format("[kernel {:#x}]", ip);
  }
  if (!mappings_.count("[kernel.kallsyms]")) {
    profile::Mapping map;
    map.file = "[kernel.kallsyms]";
    mappings_["[kernel.kallsyms]"] = profile_.intern_mapping(map);
  }
  f.mapping = mappings_["[kernel.kallsyms]"];
  profile::FrameId id = profile_.intern_frame(f);
  kernel_frames_.emplace(ip, id);
  return id;
}

void StackBuilder::merge_native(const SampleJob& job, std::vector<profile::FrameId>& out) {
  unwind::StackSnapshot snap;
  const krait_user_regs& r = job.regs;
  snap.regs = {r.ip, r.sp, r.bp, r.bx, r.r12, r.r13, r.r14, r.r15, r.ax,
               r.cx, r.dx, r.si, r.di, r.r8,  r.r9,  r.r10, r.r11};
  snap.stack_start = r.sp;
  snap.stack = job.user_stack;
  unwinder_.unwind(snap, *job.modules, options_.max_native_frames, unwound_);
  UnwindStats& us = stats_.unwinding[job.process_key];
  ++us.unwinds;
  const bool complete = unwound_.stop == unwind::UnwindStop::kRoot;
  if (complete)
    ++us.reached_root;
  else
    ++us.stops[std::string(unwind::to_string(unwound_.stop))];

  // Python frames in groups, one per C call of the eval loop, leaf first.
  size_t next = 0;  // first Python frame not yet placed
  auto next_group_end = [&]() {
    size_t end = next;
    while (end < job.python.size() && !job.python[end].entry)
      ++end;
    return end < job.python.size() ? end + 1 : end;
  };
  size_t extra_eval = 0;
  for (size_t i = 0; i < unwound_.pcs.size(); ++i) {
    const NativeEntry& e = native_entry(*job.modules, unwound_.lookup_pc(i));
    if (e.eval && next < job.python.size()) {
      for (size_t end = next_group_end(); next < end; ++next)
        out.push_back(frame_id(job.python[next].frame));
      continue;
    }
    if (e.eval && job.python_process && !job.python_truncated)
      ++extra_eval;
    out.insert(out.end(), e.frames.begin(), e.frames.end());
  }
  if (next < job.python.size()) {
    // Older Python frames whose eval calls the native stack did not reach.
    for (; next < job.python.size(); ++next)
      out.push_back(frame_id(job.python[next].frame));
    reason(out, complete
                    ? "native and Python stacks do not match"
                    : fmt::format("native stack incomplete: {}", unwind::to_string(unwound_.stop)));
    return;
  }
  if (extra_eval > 0 && !job.python.empty()) {
    reason(out, "native and Python stacks do not match");
    return;
  }
  if (!complete)
    reason(out, fmt::format("native stack incomplete: {}", unwind::to_string(unwound_.stop)));
}

void StackBuilder::add(const SampleJob& job) {
  ++stats_.samples;
  stack_.clear();
  if (job.native) {
    for (uint64_t ip : job.kernel_ips)
      stack_.push_back(kernel_frame(ip));
    if ((job.native_flags & KRAIT_NATIVE_CAPTURED) && job.modules) {
      merge_native(job, stack_);
    } else {
      for (const auto& p : job.python)
        stack_.push_back(frame_id(p.frame));
      if (!(job.native_flags & KRAIT_NATIVE_NO_USER))
        reason(stack_, "user stack not captured");
    }
  } else {
    for (const auto& p : job.python)
      stack_.push_back(frame_id(p.frame));
  }
  for (const auto& r : job.python_reasons)
    stack_.push_back(frame_id(r));
  if (stack_.empty())
    stack_.push_back(synthetic("[no frames]"));
  profile_.add_sample(stack_, labels_id(job.labels));
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

}  // namespace krait::record
