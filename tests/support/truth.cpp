#include "support/truth.h"

#include <fmt/format.h>

namespace krait::test {
namespace {

Result<LineRule> parse_line_rule(const JsonValue& rule, std::string_view key) {
  auto object = json_object(rule, key);
  if (!object)
    return object.error();
  auto k_times = json_int(**object, "k_times");
  if (!k_times)
    return make_error("{}: {}", key, k_times.error().message);
  auto plus = json_int(**object, "plus");
  if (!plus)
    return make_error("{}: {}", key, plus.error().message);
  return LineRule{*k_times, *plus};
}

Result<GeneratedRule> parse_rule(const JsonValue& rule) {
  GeneratedRule out;
  auto function_regex = json_string(rule, "function_regex");
  if (!function_regex)
    return function_regex.error();
  auto file_regex = json_string(rule, "file_regex");
  if (!file_regex)
    return file_regex.error();
  out.function_regex = *function_regex;
  out.file_regex = *file_regex;
  auto first = parse_line_rule(rule, "first_line");
  if (!first)
    return first.error();
  auto hot = parse_line_rule(rule, "hot_line");
  if (!hot)
    return hot.error();
  auto last = parse_line_rule(rule, "last_line");
  if (!last)
    return last.error();
  out.first_line = *first;
  out.hot_line = *hot;
  out.last_line = *last;
  auto k_min = json_int(rule, "k_min");
  if (!k_min)
    return k_min.error();
  auto k_max = json_int(rule, "k_max");
  if (!k_max)
    return k_max.error();
  out.k_min = *k_min;
  out.k_max = *k_max;
  try {
    out.function_re = std::regex(out.function_regex);
    out.file_re = std::regex(out.file_regex);
  } catch (const std::regex_error& e) {
    return make_error("generated rule regex: {}", e.what());
  }
  return out;
}

std::optional<int64_t> captured_k(const std::regex& re, const std::string& text) {
  std::smatch match;
  if (!std::regex_search(text, match, re) || match.size() < 2)
    return std::nullopt;
  const std::string digits = match[1].str();
  if (digits.empty() || digits.size() > 15)
    return std::nullopt;
  return std::stoll(digits);
}

Result<JsonValue> parse_kind(std::string_view line, std::string_view want) {
  auto json = parse_json(line);
  if (!json)
    return json.error();
  auto kind = json_string(*json, "kind");
  if (!kind)
    return kind.error();
  if (*kind != want)
    return make_error("expected a \"{}\" line, got \"{}\"", want, *kind);
  return std::move(*json);
}

}  // namespace

std::string format_stack(const std::vector<Frame>& stack) {
  std::string out;
  for (const Frame& f : stack) {
    if (!out.empty())
      out += " > ";
    out += fmt::format("{} ({}:{})", f.function, f.file, f.line);
  }
  return out.empty() ? "(empty)" : out;
}

bool GeneratedRule::claims_generated(const Frame& frame) const {
  return std::regex_search(frame.function, function_re);
}

std::optional<int64_t> GeneratedRule::k_of(const Frame& frame) const {
  auto from_function = captured_k(function_re, frame.function);
  auto from_file = captured_k(file_re, frame.file);
  if (!from_function || !from_file || *from_function != *from_file)
    return std::nullopt;
  int64_t k = *from_function;
  if (k < k_min || k > k_max)
    return std::nullopt;
  if (frame.line < first_line.at(k) || frame.line > last_line.at(k))
    return std::nullopt;
  return k;
}

const ThreadTruth* Truth::thread(int64_t tid) const {
  for (const ThreadTruth& t : threads) {
    if (t.tid == tid)
      return &t;
  }
  return nullptr;
}

Result<std::string> line_kind(std::string_view line) {
  auto json = parse_json(line);
  if (!json)
    return json.error();
  return json_string(*json, "kind");
}

Result<std::vector<Frame>> parse_stack(const JsonValue& array) {
  if (!array.is_array())
    return make_error("a stack must be an array, found {}", json_type_name(array.type));
  std::vector<Frame> out;
  for (const JsonValue& item : array.items) {
    Frame frame;
    auto function = json_string(item, "function");
    if (!function)
      return function.error();
    auto file = json_string(item, "file");
    if (!file)
      return file.error();
    auto line = json_int(item, "line");
    if (!line)
      return line.error();
    out.push_back(Frame{*function, *file, *line});
  }
  return out;
}

Result<Truth> parse_truth(std::string_view line) {
  auto json = parse_kind(line, "truth");
  if (!json)
    return make_error("truth: {}", json.error().message);
  Truth truth;
  truth.json = std::move(*json);
  const JsonValue& root = truth.json;
  auto workload = json_string(root, "workload");
  if (!workload)
    return make_error("truth: {}", workload.error().message);
  truth.workload = *workload;
  auto pid = json_int(root, "pid");
  if (!pid)
    return make_error("truth: {}", pid.error().message);
  truth.pid = *pid;
  auto python = json_string(root, "python");
  if (!python)
    return make_error("truth: {}", python.error().message);
  truth.python = *python;
  auto threads = json_array(root, "threads");
  if (!threads)
    return make_error("truth: {}", threads.error().message);
  for (const JsonValue& item : (*threads)->items) {
    ThreadTruth t;
    auto tid = json_int(item, "tid");
    if (!tid)
      return make_error("truth thread: {}", tid.error().message);
    t.tid = *tid;
    auto ident = json_int(item, "ident");
    if (!ident)
      return make_error("truth thread {}: {}", t.tid, ident.error().message);
    t.ident = *ident;
    auto name = json_string(item, "name");
    if (!name)
      return make_error("truth thread {}: {}", t.tid, name.error().message);
    t.name = *name;
    auto stack_json = json_member(item, "stack");
    if (!stack_json)
      return make_error("truth thread {}: {}", t.tid, stack_json.error().message);
    auto stack = parse_stack(**stack_json);
    if (!stack)
      return make_error("truth thread {}: {}", t.tid, stack.error().message);
    t.stack = std::move(*stack);
    truth.threads.push_back(std::move(t));
  }
  if (const JsonValue* generated = root.find("generated")) {
    auto rule = parse_rule(*generated);
    if (!rule)
      return make_error("truth generated rule: {}", rule.error().message);
    truth.generated = std::move(*rule);
  }
  return truth;
}

Result<Observation> parse_observation(std::string_view line) {
  auto json = parse_kind(line, "observation");
  if (!json)
    return make_error("observation: {}", json.error().message);
  auto threads = json_array(*json, "threads");
  if (!threads)
    return make_error("observation: {}", threads.error().message);
  Observation out;
  for (const JsonValue& item : (*threads)->items) {
    ObservedThread t;
    auto tid = json_int(item, "tid");
    if (!tid)
      return make_error("observation: {}", tid.error().message);
    t.tid = *tid;
    auto stack_json = json_member(item, "stack");
    if (!stack_json)
      return make_error("observation: {}", stack_json.error().message);
    auto stack = parse_stack(**stack_json);
    if (!stack)
      return make_error("observation: {}", stack.error().message);
    t.stack = std::move(*stack);
    out.threads.push_back(std::move(t));
  }
  return out;
}

Result<JsonValue> parse_selfcheck_end(std::string_view line) {
  return parse_kind(line, "selfcheck_end");
}

bool stack_matches(const Truth& truth, const ThreadTruth& thread, const std::vector<Frame>& stack) {
  if (!truth.generated)
    return stack == thread.stack;
  if (stack.size() != thread.stack.size() + 1)
    return false;
  if (!std::equal(thread.stack.begin(), thread.stack.end(), stack.begin()))
    return false;
  return truth.generated->k_of(stack.back()).has_value();
}

}  // namespace krait::test
