// Proves the workloads' truth is what CPython itself sees. Each workload runs
// under every interpreter of the manifest with KRAIT_WORKLOAD_SELFCHECK=1:
// after printing its truth, a helper thread inside it reads the truth
// threads' stacks with sys._current_frames() a hundred times. The observed
// stacks must equal the truth (names, files, lines) in at least 95% of
// observations. Thread ids and names are checked against /proc, the
// interpreter's version and build against the interpreter and its ELF files.
//
// A missing manifest or interpreter fails these tests; it never skips them.
#include <elf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/manifest.h"
#include "support/truth.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr auto kLineTimeout = 60s;
constexpr double kRequiredMatch = 0.95;

// Whether an ELF file has a .symtab section (an unstripped file does).
Result<bool> has_symtab(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return make_error("cannot open {}", path);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(Elf64_Ehdr) || bytes.compare(0, 4, ELFMAG) != 0 ||
      bytes[EI_CLASS] != ELFCLASS64)
    return make_error("{} is not a 64-bit ELF file", path);
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof header);
  for (size_t i = 0; i < header.e_shnum; ++i) {
    size_t offset = header.e_shoff + i * header.e_shentsize;
    if (offset + sizeof(Elf64_Shdr) > bytes.size())
      return make_error("{}: section header {} out of bounds", path, i);
    Elf64_Shdr section;
    std::memcpy(&section, bytes.data() + offset, sizeof section);
    if (section.sh_type == SHT_SYMTAB)
      return true;
  }
  return false;
}

std::vector<std::string> all_lines(ChildProcess& child) {
  std::vector<std::string> lines;
  while (auto line = child.read_line(kLineTimeout))
    lines.push_back(*line);
  return lines;
}

std::string comm_of(int64_t pid, int64_t tid) {
  auto text = read_file(fmt::format("/proc/{}/task/{}/comm", pid, tid));
  if (!text)
    return "<" + text.error().message + ">";
  std::string out = *text;
  if (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

char thread_state(int64_t pid, int64_t tid) {
  auto text = read_file(fmt::format("/proc/{}/task/{}/stat", pid, tid));
  if (!text)
    return '?';
  // The state follows the comm, which is in parentheses and may hold spaces.
  size_t close = text->rfind(')');
  return close == std::string::npos || close + 2 >= text->size() ? '?' : (*text)[close + 2];
}

TEST(InterpreterManifest, DescribesEachInterpreterTruly) {
  std::vector<Interpreter> interpreters = load_manifest();
  ASSERT_FALSE(interpreters.empty());
  for (const Interpreter& interpreter : interpreters) {
    SCOPED_TRACE(interpreter.name);
    // The version and the mapped files come from a running interpreter, by
    // other means than the manifest writer used (platform, /proc/self/maps).
    auto child = ChildProcess::spawn(
        interpreter_options(interpreter, {"-c",
                                          "import platform, sys; print(platform.python_version()); "
                                          "sys.stdout.write(open('/proc/self/maps').read())"}));
    ASSERT_TRUE(child) << child.error().message;
    std::vector<std::string> lines = all_lines(*child);
    auto status = child->wait(kLineTimeout);
    ASSERT_TRUE(status) << status.error().message;
    ASSERT_TRUE(status->success()) << status->describe() << ": " << child->stderr_text();
    ASSERT_FALSE(lines.empty());
    EXPECT_EQ(lines[0], interpreter.version);
    EXPECT_THAT(interpreter.name, ::testing::EndsWith("-" + interpreter.version));

    std::string libpython;
    for (const std::string& line : lines) {
      size_t at = line.find("/libpython");
      if (at != std::string::npos)
        libpython = line.substr(line.find('/'));
    }
    EXPECT_EQ(interpreter.build, libpython.empty() ? "static" : "shared");
    auto symtab = has_symtab(libpython.empty() ? interpreter.executable : libpython);
    ASSERT_TRUE(symtab) << symtab.error().message;
    EXPECT_EQ(interpreter.stripped, !*symtab);
  }
}

TEST(WorkloadSources, ShareOneCommonBlock) {
  // Each workload is one self-contained file; the block they share must not
  // drift apart, or their truths would differ in subtle ways.
  std::string reference;
  for (const char* script : {"chain.py", "threads.py", "churn.py", "short.py", "embedded_lane.py",
                             "gil.py", "methods.py", "cext.py", "kernel_read.py", "native_libs.py",
                             "dump_threads.py", "asyncio_tasks.py", "greenlets.py"}) {
    SCOPED_TRACE(script);
    auto text = read_file(workload_path(script));
    ASSERT_TRUE(text) << text.error().message;
    size_t begin = text->find("# --- common");
    size_t end = text->find("# --- end common");
    ASSERT_NE(begin, std::string::npos);
    ASSERT_NE(end, std::string::npos);
    std::string block = text->substr(begin, end - begin);
    if (reference.empty())
      reference = block;
    EXPECT_EQ(block, reference) << "the common block differs from chain.py's";
  }
}

struct WorkloadCase {
  std::string label;
  std::string script;
  std::vector<std::string> args;
  size_t threads;
  // Observations per run: each one of threads.py compares eight stacks and
  // waits for the GIL behind eight busy threads, so it needs fewer.
  int observations = 100;
};

std::ostream& operator<<(std::ostream& out, const WorkloadCase& c) {
  return out << c.label;
}

// The leaf function names the workloads promise, written down independently
// of their code.
std::set<std::string> expected_leaves(const WorkloadCase& c, const Interpreter& interpreter) {
  if (c.script == "chain.py" || c.script == "short.py")
    return {"hot"};
  if (c.script == "churn.py")
    return {"churn_loop"};
  if (interpreter.has_qualname())
    return {"spin_alpha", "spin_bravo",   "Charlie.spin_charlie", "outer_delta.<locals>.spin_delta",
            "spin_echo",  "spin_foxtrot", "Golf.spin_golf",       "spin_hotel"};
  // Before qualname, the method's class comes from its first argument
  // (frame_name() in the common block, like krait): a static method has none.
  return {"spin_alpha", "spin_bravo", "Charlie.spin_charlie",
          "spin_delta", "spin_echo",  "spin_foxtrot",
          "spin_golf",  "spin_hotel"};
}

class WorkloadSelfcheck : public ::testing::TestWithParam<WorkloadCase> {
 protected:
  void check(const Interpreter& interpreter);
};

void WorkloadSelfcheck::check(const Interpreter& interpreter) {
  const WorkloadCase& c = GetParam();
  auto run = start_workload(interpreter, c.script, c.args,
                            {{"KRAIT_WORKLOAD_SELFCHECK", "1"},
                             {"KRAIT_WORKLOAD_SELFCHECK_COUNT", std::to_string(c.observations)}});
  ASSERT_TRUE(run) << run.error().message;
  ChildProcess& child = run->child;
  const Truth& truth = run->truth;
  const std::string path = workload_path(c.script);

  EXPECT_EQ(truth.python, interpreter.version);
  EXPECT_EQ(truth.workload, c.script.substr(0, c.script.size() - 3));
  ASSERT_EQ(truth.threads.size(), c.threads);

  std::set<std::string> leaves;
  std::set<std::string> names;
  for (const ThreadTruth& t : truth.threads) {
    SCOPED_TRACE(fmt::format("tid {}", t.tid));
    EXPECT_EQ(t.name, comm_of(truth.pid, t.tid));
    names.insert(t.name);
    ASSERT_FALSE(t.stack.empty());
    leaves.insert(t.stack.back().function);
    EXPECT_EQ(t.stack.back().file, path);
    if (c.script != "threads.py") {
      EXPECT_EQ(t.stack.front(), (Frame{"<module>", path, t.stack.front().line}));
      EXPECT_EQ(t.tid, truth.pid) << "the workload runs on its main thread";
    }
  }
  EXPECT_EQ(leaves, expected_leaves(c, interpreter));
  if (c.script == "threads.py") {
    EXPECT_EQ(names, (std::set<std::string>{"wk-0", "wk-1", "wk-2", "wk-3", "wk-4", "wk-5", "wk-6",
                                            "wk-7"}));
  }
  if (c.script == "chain.py") {
    int64_t depth = std::stoll(c.args.at(1));
    // <module>, main, worker, `depth` recurse frames, hot.
    EXPECT_EQ(truth.threads[0].stack.size(), static_cast<size_t>(depth + 4));
  }

  size_t matched = 0;
  size_t compared = 0;
  size_t observations = 0;
  size_t generated_frames = 0;
  std::string first_miss;
  JsonValue end;
  while (true) {
    auto line = child.read_line(kLineTimeout);
    ASSERT_TRUE(line) << line.error().message;
    auto kind = line_kind(*line);
    ASSERT_TRUE(kind) << kind.error().message << " in: " << *line;
    if (*kind == "selfcheck_end") {
      auto parsed = parse_selfcheck_end(*line);
      ASSERT_TRUE(parsed) << parsed.error().message;
      end = std::move(*parsed);
      break;
    }
    ASSERT_EQ(*kind, "observation") << *line;
    auto observation = parse_observation(*line);
    ASSERT_TRUE(observation) << observation.error().message;
    ++observations;
    ASSERT_EQ(observation->threads.size(), truth.threads.size());
    for (const ObservedThread& seen : observation->threads) {
      const ThreadTruth* t = truth.thread(seen.tid);
      ASSERT_NE(t, nullptr) << "observed a thread the truth does not list: " << seen.tid;
      ++compared;
      if (stack_matches(truth, *t, seen.stack))
        ++matched;
      else if (first_miss.empty())
        first_miss = fmt::format("tid {}\n  observed {}\n  truth    {}", seen.tid,
                                 format_stack(seen.stack), format_stack(t->stack));
      // Whatever else a churn sample shows, a generated frame must never
      // contradict itself.
      if (truth.generated && !seen.stack.empty() &&
          truth.generated->claims_generated(seen.stack.back())) {
        ++generated_frames;
        EXPECT_TRUE(truth.generated->k_of(seen.stack.back()).has_value())
            << "inconsistent generated frame: " << format_stack({seen.stack.back()});
      }
    }
  }

  auto announced = json_int(end, "observations");
  ASSERT_TRUE(announced) << announced.error().message;
  EXPECT_EQ(observations, static_cast<size_t>(*announced));
  EXPECT_EQ(observations, static_cast<size_t>(c.observations));
  ASSERT_GT(observations, 0u);
  EXPECT_EQ(compared, observations * c.threads);
  EXPECT_GE(static_cast<double>(matched), kRequiredMatch * static_cast<double>(compared))
      << matched << " of " << compared
      << " observed stacks equal the truth; first miss: " << first_miss;

  if (truth.generated) {
    EXPECT_GT(generated_frames, 0u);
    auto made = json_int(end, "code_objects");
    auto reused = json_int(end, "address_reuses");
    ASSERT_TRUE(made) << made.error().message;
    ASSERT_TRUE(reused) << reused.error().message;
    EXPECT_GE(*made, 20);
    // The point of churn: freed code objects' addresses come back for other
    // functions. How often depends on the allocator: 2.7's pymalloc hands
    // a freed code object's block to whatever object of its size class is
    // allocated next (9 to 25 in 100 here), later versions nearly always.
    EXPECT_GE(*reused * 20, *made) << *reused << " address reuses among " << *made;
    std::printf("[ stats    ] churn: %lld address reuses among %lld code objects\n",
                static_cast<long long>(*reused), static_cast<long long>(*made));
  }

  if (c.script == "threads.py") {
    // By now the main thread has long been parked; it must not be running.
    EXPECT_EQ(thread_state(truth.pid, truth.pid), 'S') << "the main thread should be parked";
  }

  if (c.script == "short.py") {
    auto status = child.wait(kLineTimeout);
    ASSERT_TRUE(status) << status.error().message;
    EXPECT_TRUE(status->success()) << status->describe() << ": " << child.stderr_text();
  } else {
    EXPECT_FALSE(child.reaped()) << "the workload ended early: " << child.stderr_text();
    child.kill();
  }
}

TEST_P(WorkloadSelfcheck, ObservedStacksEqualTruth) {
  std::vector<Interpreter> interpreters = load_manifest();
  ASSERT_FALSE(interpreters.empty());
  for (const Interpreter& interpreter : interpreters) {
    SCOPED_TRACE(interpreter.name);
    check(interpreter);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Workloads, WorkloadSelfcheck,
    ::testing::Values(WorkloadCase{"chain", "chain.py", {"--depth", "20"}, 1},
                      WorkloadCase{"chain_deep", "chain.py", {"--depth", "300"}, 1},
                      WorkloadCase{"threads", "threads.py", {}, 8, 30},
                      WorkloadCase{"churn", "churn.py", {}, 1},
                      WorkloadCase{"short", "short.py", {"--ms", "3000"}, 1}),
    [](const ::testing::TestParamInfo<WorkloadCase>& info) { return info.param.label; });

// The workloads' own exits: --seconds and --ms end them with status 0 after
// their truth, without anyone killing them.
TEST(WorkloadExit, EndsOnItsOwnWithStatusZero) {
  std::vector<Interpreter> interpreters = load_manifest();
  ASSERT_FALSE(interpreters.empty());
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"chain.py", {"--depth", "5", "--seconds", "0.5"}},
      {"threads.py", {"--seconds", "0.5"}},
      {"churn.py", {"--seconds", "0.5", "--iterations", "100000"}},
      {"short.py", {"--ms", "200"}},
  };
  for (const Interpreter& interpreter : interpreters) {
    SCOPED_TRACE(interpreter.name);
    std::vector<RunningWorkload> running;
    for (const auto& [script, args] : runs) {
      auto run = start_workload(interpreter, script, args);
      ASSERT_TRUE(run) << run.error().message;
      running.push_back(std::move(*run));
    }
    for (size_t i = 0; i < running.size(); ++i) {
      SCOPED_TRACE(runs[i].first);
      auto status = running[i].child.wait(kLineTimeout);
      ASSERT_TRUE(status) << status.error().message;
      EXPECT_TRUE(status->success())
          << status->describe() << ": " << running[i].child.stderr_text();
    }
  }
}

TEST(WorkloadExit, BadArgumentsFail) {
  std::vector<Interpreter> interpreters = load_manifest();
  ASSERT_FALSE(interpreters.empty());
  const Interpreter& interpreter = interpreters.front();
  auto child = ChildProcess::spawn(workload_options(interpreter, "chain.py", {"--depth", "-1"}));
  ASSERT_TRUE(child) << child.error().message;
  auto status = child->wait(kLineTimeout);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_TRUE(status->exited);
  EXPECT_EQ(status->code, 2);
  EXPECT_THAT(child->stderr_text(), HasSubstr("--depth must be >= 0"));
}

}  // namespace
}  // namespace krait::test
