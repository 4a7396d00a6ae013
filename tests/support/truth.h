// The lines a workload in tests/workloads prints, parsed. Every line is one
// JSON object with a "kind":
//
//  "truth" (first line, once the workload is in its steady state):
//    {"kind": "truth", "workload": "chain", "pid": 4242, "python": "3.11.7",
//     "threads": [{"tid": 4242, "ident": 1403..., "name": "python3.11",
//                  "stack": [{"function": "<module>", "file": "/abs/chain.py",
//                             "line": 210}, ..., {"function": "hot", ...}]}],
//     ...workload-specific members ("depth", "ms", "generated", "tasks")}
//    Stacks are root first. "function" is co_qualname on 3.11+, else co_name;
//    "file" is co_filename; the leaf's "line" is the line of the hot loop.
//    "tid" is the kernel thread id, "ident" threading.get_ident() (the
//    thread's pthread_t), "name" the thread's comm.
//    churn.py adds "generated": its threads' stacks stop at the frame that
//    calls a generated function, whose frames follow the rule:
//    {"function_regex": "^f_([0-9]+)$", "file_regex": "^churn_([0-9]+)\\.py$",
//     "first_line": {"k_times": 7, "plus": 1}, "hot_line": {...},
//     "last_line": {...}, "k_min": 1, "k_max": 500}
//    (name and file encode the same K, line = k_times * K + plus).
//    asyncio_tasks.py adds "tasks": [{"name": "sleeper", "state": "pending",
//     "stack": [...root first...], "awaited_by": ["..."], "waiting_on":
//     "Future"}, ...] (see the workload's docstring).
//
//  "observation" (only with KRAIT_WORKLOAD_SELFCHECK=1): the truth threads'
//    stacks as sys._current_frames() saw them at one moment:
//    {"kind": "observation", "threads": [{"tid": 4242, "stack": [...]}]}
//
//  "selfcheck_end": {"kind": "selfcheck_end", "observations": 100, ...}
//    (churn adds "code_objects" and "address_reuses").
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "support/json.h"
#include "util/result.h"

namespace krait::test {

struct Frame {
  std::string function;
  std::string file;
  int64_t line = 0;

  bool operator==(const Frame&) const = default;
};

// "<module> (/x/chain.py:210) > main (/x/chain.py:205) > ...", for messages.
std::string format_stack(const std::vector<Frame>& stack);

struct ThreadTruth {
  int64_t tid = 0;
  int64_t ident = 0;
  std::string name;
  std::vector<Frame> stack;
};

struct LineRule {
  int64_t k_times = 0;
  int64_t plus = 0;
  int64_t at(int64_t k) const { return k_times * k + plus; }
};

// How churn.py names its generated functions.
struct GeneratedRule {
  std::string function_regex;
  std::string file_regex;
  LineRule first_line;
  LineRule hot_line;
  LineRule last_line;
  int64_t k_min = 0;
  int64_t k_max = 0;

  // True when the frame's function name matches function_regex, i.e. the
  // frame claims to be a generated function.
  bool claims_generated(const Frame& frame) const;
  // The K of a frame that follows the rule: function and file encode the
  // same K within [k_min, k_max] and the line lies in
  // [first_line.at(K), last_line.at(K)]. nullopt for any other frame.
  std::optional<int64_t> k_of(const Frame& frame) const;

  std::regex function_re;
  std::regex file_re;
};

struct Truth {
  std::string workload;
  int64_t pid = 0;
  std::string python;
  std::vector<ThreadTruth> threads;
  std::optional<GeneratedRule> generated;
  JsonValue json;  // the whole line, for workload-specific members

  const ThreadTruth* thread(int64_t tid) const;
};

struct ObservedThread {
  int64_t tid = 0;
  std::vector<Frame> stack;
};

struct Observation {
  std::vector<ObservedThread> threads;
};

// The "kind" of a workload line.
Result<std::string> line_kind(std::string_view line);

Result<Truth> parse_truth(std::string_view line);
Result<Observation> parse_observation(std::string_view line);
Result<JsonValue> parse_selfcheck_end(std::string_view line);
Result<std::vector<Frame>> parse_stack(const JsonValue& array);

// Whether `stack` (root first) is what the truth says `thread` runs: equal
// frames, or for churn the truth's frames followed by exactly one frame that
// follows the generated rule.
bool stack_matches(const Truth& truth, const ThreadTruth& thread, const std::vector<Frame>& stack);

}  // namespace krait::test
