#include "support/workloads.h"

#include <utility>

namespace krait::test {

std::string workload_path(std::string_view script) {
  return std::string(KRAIT_WORKLOADS_DIR) + "/" + std::string(script);
}

SpawnOptions interpreter_options(const Interpreter& interpreter,
                                 const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& extra_env) {
  SpawnOptions options;
  options.argv = {interpreter.executable};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env["PYTHONHOME"] = std::nullopt;
  options.env["PYTHONPATH"] = std::nullopt;
  for (const auto& [key, value] : interpreter.env)
    options.env[key] = value;
  for (const auto& [key, value] : extra_env)
    options.env[key] = value;
  return options;
}

SpawnOptions workload_options(const Interpreter& interpreter, std::string_view script,
                              const std::vector<std::string>& args,
                              const std::map<std::string, std::string>& extra_env) {
  std::vector<std::string> full = {workload_path(script)};
  full.insert(full.end(), args.begin(), args.end());
  return interpreter_options(interpreter, full, extra_env);
}

Result<RunningWorkload> start_workload(const Interpreter& interpreter, std::string_view script,
                                       const std::vector<std::string>& args,
                                       const std::map<std::string, std::string>& extra_env,
                                       std::chrono::milliseconds truth_timeout) {
  auto child = ChildProcess::spawn(workload_options(interpreter, script, args, extra_env));
  if (!child)
    return make_error("{} {}: {}", interpreter.name, script, child.error().message);
  auto line = child->read_line(truth_timeout);
  if (!line)
    return make_error("{} {}: no truth: {}", interpreter.name, script, line.error().message);
  auto truth = parse_truth(*line);
  if (!truth)
    return make_error("{} {}: {} in line: {}", interpreter.name, script, truth.error().message,
                      *line);
  if (truth->pid != child->pid())
    return make_error("{} {}: truth names pid {}, the child is {}", interpreter.name, script,
                      truth->pid, child->pid());
  return RunningWorkload{std::move(*child), std::move(*truth)};
}

Result<void> read_lines_until(ChildProcess& child, double until, std::vector<JsonValue>& seen,
                              std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (!seen.empty()) {
      const JsonValue* t = seen.back().find("t");
      if (t && t->is_number() && t->number >= until)
        return {};
    }
    if (std::chrono::steady_clock::now() > deadline)
      return make_error("no line of the workload stamped after {:.3f}", until);
    auto line = child.read_line(timeout);
    if (!line)
      return line.error();
    auto json = parse_json(*line);
    if (!json)
      return json.error().context(*line);
    seen.push_back(std::move(*json));
  }
}

const JsonValue& line_before(const std::vector<JsonValue>& lines, double t) {
  const JsonValue* best = &lines.front();
  for (const JsonValue& l : lines) {
    const JsonValue* at = l.find("t");
    if (at && at->is_number() && at->number <= t)
      best = &l;
  }
  return *best;
}

const JsonValue& line_after(const std::vector<JsonValue>& lines, double t) {
  for (const JsonValue& l : lines) {
    const JsonValue* at = l.find("t");
    if (at && at->is_number() && at->number >= t)
      return l;
  }
  return lines.back();
}

}  // namespace krait::test
