// Tests of tests/support: the JSON reader, the child process wrapper, the
// truth parser and the manifest reader, each against hand-written expected
// values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <string>

#include "support/child_process.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/truth.h"

namespace krait::test {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// --- JSON -------------------------------------------------------------------

TEST(Json, ParsesScalars) {
  auto v = parse_json(R"({"a": null, "b": true, "c": false, "d": -17, "e": 2.5e3, "f": "x"})");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_TRUE(v->find("a")->is_null());
  EXPECT_TRUE(v->find("b")->boolean);
  EXPECT_FALSE(v->find("c")->boolean);
  EXPECT_TRUE(v->find("d")->is_int());
  EXPECT_EQ(v->find("d")->integer, -17);
  EXPECT_EQ(v->find("e")->type, JsonValue::Type::kDouble);
  EXPECT_DOUBLE_EQ(v->find("e")->number, 2500.0);
  EXPECT_EQ(v->find("f")->string, "x");
  EXPECT_EQ(v->find("missing"), nullptr);
}

TEST(Json, KeepsLargeIntegersExact) {
  // A pthread_t from a real truth line: above 2^53 / 4, where a double still
  // holds it, and 2^63 - 1, where only int64 does.
  auto v = parse_json("[140602949229440, 9223372036854775807]");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->items[0].integer, 140602949229440);
  EXPECT_EQ(v->items[1].integer, 9223372036854775807);
}

TEST(Json, DecodesEscapes) {
  auto v = parse_json(R"(["a\"b\\c\/d\n\t", "\u00e9", "\ud83d\ude00", "\u0041"])");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->items[0].string, "a\"b\\c/d\n\t");
  EXPECT_EQ(v->items[1].string, "\xc3\xa9");
  EXPECT_EQ(v->items[2].string, "\xf0\x9f\x98\x80");
  EXPECT_EQ(v->items[3].string, "A");
}

TEST(Json, NestsAndKeepsOrder) {
  auto v = parse_json(R"({"z": [1, [2, {"y": []}]], "a": {}})");
  ASSERT_TRUE(v) << v.error().message;
  ASSERT_EQ(v->keys.size(), 2u);
  EXPECT_EQ(v->keys[0], "z");
  EXPECT_EQ(v->keys[1], "a");
  const JsonValue& inner = v->find("z")->items[1];
  EXPECT_EQ(inner.items[0].integer, 2);
  EXPECT_TRUE(inner.items[1].find("y")->is_array());
  EXPECT_TRUE(v->find("a")->is_object());
}

TEST(Json, RejectsMalformedText) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "\"open", "01", "1.", "-", "tru", "[1] x",
                          "{\"a\":1,}", "\"\\ud83d\"", "\"\\q\"", "\"a\nb\""}) {
    EXPECT_FALSE(parse_json(bad)) << "accepted: " << bad;
  }
}

TEST(Json, RejectsTooDeepNesting) {
  std::string deep(kMaxJsonDepth + 2, '[');
  deep += std::string(kMaxJsonDepth + 2, ']');
  auto v = parse_json(deep);
  ASSERT_FALSE(v);
  EXPECT_THAT(v.error().message, HasSubstr("too deep"));
  std::string ok(kMaxJsonDepth, '[');
  ok += std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(parse_json(ok));
}

TEST(Json, TypedAccessNamesTheMember) {
  auto v = parse_json(R"({"n": "7"})");
  ASSERT_TRUE(v);
  auto n = json_int(*v, "n");
  ASSERT_FALSE(n);
  EXPECT_THAT(n.error().message, HasSubstr("\"n\" is string"));
  auto m = json_string(*v, "m");
  ASSERT_FALSE(m);
  EXPECT_THAT(m.error().message, HasSubstr("\"m\" is missing"));
}

// --- ChildProcess -----------------------------------------------------------

ChildProcess must_spawn(std::vector<std::string> argv,
                        std::map<std::string, std::optional<std::string>> env = {}) {
  auto child = ChildProcess::spawn(SpawnOptions{std::move(argv), std::move(env)});
  if (!child) {
    ADD_FAILURE() << child.error().message;
    std::abort();
  }
  return std::move(*child);
}

bool process_exists(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

TEST(ChildProcess, ReadsLinesThenReportsEndWithStderr) {
  ChildProcess child = must_spawn({"/bin/sh", "-c", "echo one; echo two; echo oops >&2; exit 3"});
  auto one = child.read_line(10s);
  ASSERT_TRUE(one) << one.error().message;
  EXPECT_EQ(*one, "one");
  auto two = child.read_line(10s);
  ASSERT_TRUE(two) << two.error().message;
  EXPECT_EQ(*two, "two");
  auto end = child.read_line(10s);
  ASSERT_FALSE(end);
  EXPECT_THAT(end.error().message, HasSubstr("oops"));
  auto status = child.wait(10s);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_TRUE(status->exited);
  EXPECT_EQ(status->code, 3);
  EXPECT_FALSE(status->success());
}

TEST(ChildProcess, AppliesEnvironmentChanges) {
  ::setenv("KRAIT_TEST_REMOVE_ME", "1", 1);
  ChildProcess child =
      must_spawn({"/usr/bin/env"}, {{"KRAIT_TEST_SET", "yes"}, {"KRAIT_TEST_REMOVE_ME", {}}});
  std::vector<std::string> lines;
  while (auto line = child.read_line(10s))
    lines.push_back(*line);
  EXPECT_THAT(lines, ::testing::Contains("KRAIT_TEST_SET=yes"));
  EXPECT_THAT(lines, ::testing::Not(::testing::Contains(HasSubstr("KRAIT_TEST_REMOVE_ME"))));
  // Inherited variables survive.
  EXPECT_THAT(lines, ::testing::Contains(HasSubstr("PATH=")));
  ::unsetenv("KRAIT_TEST_REMOVE_ME");
}

TEST(ChildProcess, DestructorKillsAndReaps) {
  pid_t pid = 0;
  {
    ChildProcess child = must_spawn({"/bin/sh", "-c", "echo ready; exec sleep 1000"});
    auto ready = child.read_line(10s);
    ASSERT_TRUE(ready) << ready.error().message;
    pid = child.pid();
    ASSERT_TRUE(process_exists(pid));
  }
  // Reaped, so not even a zombie is left.
  EXPECT_FALSE(process_exists(pid));
}

TEST(ChildProcess, SignalAndWaitReportTheSignal) {
  ChildProcess child = must_spawn({"/bin/sh", "-c", "echo ready; exec sleep 1000"});
  ASSERT_TRUE(child.read_line(10s));
  auto still = child.wait(50ms);
  ASSERT_FALSE(still);
  EXPECT_THAT(still.error().message, HasSubstr("still running"));
  ASSERT_TRUE(child.signal(SIGTERM));
  auto status = child.wait(10s);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_FALSE(status->exited);
  EXPECT_EQ(status->signal, SIGTERM);
  EXPECT_FALSE(child.signal(SIGTERM));
}

TEST(ChildProcess, ReadLineTimesOut) {
  ChildProcess child = must_spawn({"/bin/sh", "-c", "echo ready; exec sleep 1000"});
  ASSERT_TRUE(child.read_line(10s));
  auto none = child.read_line(100ms);
  ASSERT_FALSE(none);
  EXPECT_THAT(none.error().message, HasSubstr("no line"));
  EXPECT_FALSE(child.kill().exited);
}

TEST(ChildProcess, ReportsExecFailure) {
  auto child = ChildProcess::spawn(SpawnOptions{{"/nonexistent/krait-test"}, {}});
  ASSERT_FALSE(child);
  EXPECT_THAT(child.error().message, HasSubstr("cannot execute /nonexistent/krait-test"));
}

TEST(ChildProcess, LongLinesArriveWhole) {
  // Larger than one pipe buffer (64 KiB) and than one read chunk.
  ChildProcess child = must_spawn({"/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo"});
  auto line = child.read_line(10s);
  ASSERT_TRUE(line) << line.error().message;
  EXPECT_EQ(line->size(), 200000u);
  EXPECT_EQ(line->find_first_not_of('x'), std::string::npos);
}

// --- truth ------------------------------------------------------------------

constexpr const char* kChurnTruth =
    R"({"kind": "truth", "workload": "churn", "pid": 11, "python": "3.12.1",)"
    R"( "generated": {"function_regex": "^f_([0-9]+)$", "file_regex": "^churn_([0-9]+)\\.py$",)"
    R"( "first_line": {"k_times": 7, "plus": 1}, "hot_line": {"k_times": 7, "plus": 3},)"
    R"( "last_line": {"k_times": 7, "plus": 4}, "k_min": 1, "k_max": 500},)"
    R"( "threads": [{"tid": 11, "ident": 140000000000001, "name": "python3.12", "stack":)"
    R"( [{"function": "<module>", "file": "/w/churn.py", "line": 290},)"
    R"(  {"function": "churn_loop", "file": "/w/churn.py", "line": 251}]}]})";

TEST(Truth, ParsesThreadsAndRule) {
  auto truth = parse_truth(kChurnTruth);
  ASSERT_TRUE(truth) << truth.error().message;
  EXPECT_EQ(truth->workload, "churn");
  EXPECT_EQ(truth->pid, 11);
  EXPECT_EQ(truth->python, "3.12.1");
  ASSERT_EQ(truth->threads.size(), 1u);
  const ThreadTruth& t = truth->threads[0];
  EXPECT_EQ(t.tid, 11);
  EXPECT_EQ(t.ident, 140000000000001);
  EXPECT_EQ(t.name, "python3.12");
  ASSERT_EQ(t.stack.size(), 2u);
  EXPECT_EQ(t.stack[1], (Frame{"churn_loop", "/w/churn.py", 251}));
  ASSERT_TRUE(truth->generated);
  EXPECT_EQ(truth->thread(11), &truth->threads[0]);
  EXPECT_EQ(truth->thread(12), nullptr);
}

TEST(Truth, GeneratedRuleChecksNameFileAndLineAgree) {
  auto truth = parse_truth(kChurnTruth);
  ASSERT_TRUE(truth) << truth.error().message;
  const GeneratedRule& rule = *truth->generated;
  EXPECT_EQ(rule.k_of({"f_12", "churn_12.py", 87}), 12);                // 7*12+3, the hot line
  EXPECT_EQ(rule.k_of({"f_12", "churn_12.py", 85}), 12);                // 7*12+1, the def line
  EXPECT_EQ(rule.k_of({"f_12", "churn_12.py", 89}), std::nullopt);      // past the end
  EXPECT_EQ(rule.k_of({"f_12", "churn_13.py", 87}), std::nullopt);      // stale file
  EXPECT_EQ(rule.k_of({"f_13", "churn_12.py", 87}), std::nullopt);      // stale name
  EXPECT_EQ(rule.k_of({"f_501", "churn_501.py", 3510}), std::nullopt);  // out of range
  EXPECT_TRUE(rule.claims_generated({"f_13", "x", 0}));
  EXPECT_FALSE(rule.claims_generated({"churn_loop", "x", 0}));

  const ThreadTruth& t = truth->threads[0];
  std::vector<Frame> good = t.stack;
  good.push_back({"f_3", "churn_3.py", 24});
  EXPECT_TRUE(stack_matches(*truth, t, good));
  std::vector<Frame> bad = t.stack;
  bad.push_back({"f_3", "churn_4.py", 24});
  EXPECT_FALSE(stack_matches(*truth, t, bad));
  EXPECT_FALSE(stack_matches(*truth, t, t.stack));  // no generated leaf
}

TEST(Truth, PlainStacksMatchOnlyWhenEqual) {
  auto truth = parse_truth(
      R"({"kind": "truth", "workload": "chain", "pid": 5, "python": "2.7.18", "threads":)"
      R"( [{"tid": 5, "ident": 7, "name": "python2.7", "stack": [{"function": "hot",)"
      R"( "file": "/w/chain.py", "line": 180}]}]})");
  ASSERT_TRUE(truth) << truth.error().message;
  const ThreadTruth& t = truth->threads[0];
  EXPECT_TRUE(stack_matches(*truth, t, {{"hot", "/w/chain.py", 180}}));
  EXPECT_FALSE(stack_matches(*truth, t, {{"hot", "/w/chain.py", 181}}));
  EXPECT_FALSE(stack_matches(*truth, t, {}));
}

TEST(Truth, ParsesObservationsAndRejectsOtherKinds) {
  auto obs = parse_observation(
      R"({"kind": "observation", "threads": [{"tid": 9, "stack": [{"function": "a",)"
      R"( "file": "f", "line": 1}]}, {"tid": 10, "stack": []}]})");
  ASSERT_TRUE(obs) << obs.error().message;
  ASSERT_EQ(obs->threads.size(), 2u);
  EXPECT_EQ(obs->threads[0].tid, 9);
  EXPECT_EQ(obs->threads[0].stack, (std::vector<Frame>{{"a", "f", 1}}));
  EXPECT_TRUE(obs->threads[1].stack.empty());
  EXPECT_FALSE(parse_truth(R"({"kind": "observation", "threads": []})"));
  auto kind = line_kind(R"({"kind": "selfcheck_end", "observations": 3})");
  ASSERT_TRUE(kind);
  EXPECT_EQ(*kind, "selfcheck_end");
}

TEST(Truth, MissingMembersAreNamed) {
  auto truth = parse_truth(R"({"kind": "truth", "workload": "x", "python": "3.9.18",)"
                           R"( "threads": []})");
  ASSERT_FALSE(truth);
  EXPECT_THAT(truth.error().message, HasSubstr("\"pid\" is missing"));
}

// --- manifest ---------------------------------------------------------------

class ManifestFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/krait-manifest-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/interpreters.json";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  void write(const std::string& text) { std::ofstream(path_) << text; }

  std::string dir_;
  std::string path_;
};

TEST_F(ManifestFile, ReadsEntries) {
  write(R"({"interpreters": [{"name": "sid-3.14.10", "version": "3.14.10",)"
        R"( "executable": "/bin/sh", "env": {"PYTHONHOME": "/p/usr"}, "build": "static",)"
        R"( "stripped": true, "origin": "debian-sid"}]})");
  auto m = read_manifest(path_);
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_EQ(m->size(), 1u);
  const Interpreter& i = (*m)[0];
  EXPECT_EQ(i.name, "sid-3.14.10");
  EXPECT_EQ(i.major_minor(), (std::pair{3, 14}));
  EXPECT_TRUE(i.has_qualname());
  EXPECT_EQ(i.env.at("PYTHONHOME"), "/p/usr");
  EXPECT_EQ(i.build, "static");
  EXPECT_TRUE(i.stripped);
  EXPECT_EQ(i.origin, "debian-sid");
}

TEST_F(ManifestFile, ReportsWhatIsWrong) {
  auto missing = read_manifest(dir_ + "/absent.json");
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message, HasSubstr("cannot open " + dir_ + "/absent.json"));

  write(R"({"interpreters": []})");
  auto empty = read_manifest(path_);
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty.error().message, HasSubstr("lists no interpreters"));

  write(R"({"interpreters": [{"name": "pyenv-3.9.18", "version": "3.9.18",)"
        R"( "executable": "/nonexistent/python3.9", "env": {}, "build": "shared",)"
        R"( "stripped": false, "origin": "pyenv"}]})");
  auto gone = read_manifest(path_);
  ASSERT_FALSE(gone);
  EXPECT_THAT(gone.error().message, HasSubstr("/nonexistent/python3.9 is missing"));

  write(R"({"interpreters": [{"name": "pyenv-3.9.18", "version": "3.9.18",)"
        R"( "executable": "/bin/sh", "env": {}, "stripped": false, "origin": "pyenv"}]})");
  auto no_build = read_manifest(path_);
  ASSERT_FALSE(no_build);
  EXPECT_THAT(no_build.error().message, HasSubstr("pyenv-3.9.18"));
  EXPECT_THAT(no_build.error().message, HasSubstr("\"build\" is missing"));
}

TEST_F(ManifestFile, PathFollowsTheCacheVariable) {
  const char* old = std::getenv("KRAIT_PYTHON_CACHE");
  std::string saved = old ? old : "";
  ::setenv("KRAIT_PYTHON_CACHE", dir_.c_str(), 1);
  EXPECT_EQ(manifest_path(), path_);
  ::unsetenv("KRAIT_PYTHON_CACHE");
  EXPECT_EQ(manifest_path(), "/var/cache/krait/pythons/interpreters.json");
  if (old)
    ::setenv("KRAIT_PYTHON_CACHE", saved.c_str(), 1);
}

}  // namespace
}  // namespace krait::test
