// The merge rule of native and Python stacks (merge_native.h).
#include "engine/merge_native.h"

namespace krait::engine {

bool is_eval_function(std::string_view name) {
  if (auto dot = name.find('.'); dot != std::string_view::npos)
    name = name.substr(0, dot);
  return name == "_PyEval_EvalFrameDefault" || name == "PyEval_EvalFrameEx";
}

bool is_greenlet_base(std::string_view module_path, std::string_view function) {
  const size_t slash = module_path.rfind('/');
  const std::string_view file =
      slash == std::string_view::npos ? module_path : module_path.substr(slash + 1);
  if (!file.starts_with("_greenlet"))
    return false;
  if (auto paren = function.find('('); paren != std::string_view::npos)
    function = function.substr(0, paren);
  // greenlet 1 (C) names it g_initialstub; only a module with its symbol
  // table keeps that local name.
  return function == "greenlet::UserGreenlet::g_initialstub" || function == "g_initialstub";
}

MergeResult merge_stacks(std::span<const NativeRole> native, std::span<const PythonRole> python,
                         bool native_complete, bool python_truncated, bool python_process) {
  MergeResult out;
  // A greenlet's stack ends at the first bootstrap from the leaf: frames
  // rootward of it belong to whatever ran before on that stack. What the
  // unwinder made of them (root or not) does not matter then.
  size_t end = native.size();
  for (size_t i = 0; i < native.size(); ++i) {
    if (native[i].greenlet_base) {
      end = i + 1;
      out.greenlet = true;
      native_complete = true;
      break;
    }
  }

  size_t next = 0;  // first Python frame not yet placed
  size_t extra_eval = 0;
  for (size_t i = 0; i < end; ++i) {
    if (native[i].eval && next < python.size()) {
      // One group: the frames up to and including the next entry frame.
      size_t group_end = next;
      while (group_end < python.size() && !python[group_end].entry)
        ++group_end;
      group_end = group_end < python.size() ? group_end + 1 : group_end;
      for (; next < group_end; ++next)
        out.steps.push_back({true, next});
      continue;
    }
    if (native[i].eval && python_process && !python_truncated)
      ++extra_eval;
    out.steps.push_back({false, i});
  }
  if (next < python.size()) {
    // Older Python frames whose eval calls the native stack did not reach.
    for (; next < python.size(); ++next)
      out.steps.push_back({true, next});
    out.verdict = native_complete ? MergeVerdict::kMismatch : MergeVerdict::kIncomplete;
    return out;
  }
  if (extra_eval > 0 && !python.empty())
    out.verdict = MergeVerdict::kMismatch;
  else if (!native_complete)
    out.verdict = MergeVerdict::kIncomplete;
  return out;
}

}  // namespace krait::engine
