// Offsets that must prove themselves: a release without its own table, a
// wrong table, no table. krait either profiles with a layout that passed
// validation against the live process, or refuses the process with the
// reason; it never emits a frame read with offsets that failed.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

Interpreter pick(const std::string& origin, const std::string& version_prefix) {
  for (const auto& i : load_manifest())
    if (i.origin == origin && i.version.rfind(version_prefix, 0) == 0)
      return i;
  ADD_FAILURE() << "no " << origin << " Python " << version_prefix << " in " << manifest_path();
  return {};
}

std::string builtin_table_text(const std::string& version) {
  std::ifstream in(std::string(KRAIT_SOURCE_DIR) + "/offsets/tables/cpython-" + version + ".txt");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `text` with its version line replaced and `edits` (field -> value) applied.
std::string edited_table(std::string text, const std::string& version,
                         const std::map<std::string, int>& edits = {}) {
  text = std::regex_replace(text, std::regex("(^|\n)version = [^\n]*"), "$1version = " + version);
  for (const auto& [field, value] : edits) {
    std::regex line("(^|\n)" + std::regex_replace(field, std::regex(R"([.()])"), R"(\$&)") +
                    " = [0-9]+");
    EXPECT_TRUE(std::regex_search(text, line)) << field << " not in the table";
    text = std::regex_replace(text, line, "$1" + field + " = " + std::to_string(value));
  }
  return text;
}

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

struct Outcome {
  RecordingResult result;
  std::vector<ProfileSample> mine;
  const JsonValue* process = nullptr;
};

// Records the workload's process for 2 s with only the given offsets.
Outcome record_with(const RunningWorkload& w, const std::vector<std::string>& offsets_args,
                    const TempDir& dir) {
  Outcome o;
  std::vector<std::string> args{"-p", std::to_string(w.truth.pid), "-d", "2",
                                "--no-builtin-offsets"};
  args.insert(args.end(), offsets_args.begin(), offsets_args.end());
  auto rec = Recording::start(args, dir);
  EXPECT_TRUE(rec.ok()) << rec.error().message;
  if (!rec.ok())
    return o;
  auto r = rec->wait_any_status(60s);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok())
    return o;
  o.result = std::move(*r);
  o.mine = samples_of_pid(o.result.samples, w.truth.pid);
  o.process = stats_process(o.result.stats, w.truth.pid);
  return o;
}

TEST(Offsets, ReleaseWithoutItsOwnTableUsesTheNearestOnlyAfterValidation) {
  require_root();
  // pyenv 3.12.1, with its table presented as 3.12.0's: the nearest of the
  // same minor, which validation accepts because the layout is right.
  const Interpreter interp = pick("pyenv", "3.12.1");
  auto w = start_workload(interp, "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  const auto table = write(dir, "near.txt", edited_table(builtin_table_text("3.12.1"), "3.12.0"));
  Outcome o = record_with(*w, {"--offsets", table}, dir);
  ASSERT_NE(o.process, nullptr) << o.result.stderr_text;
  EXPECT_TRUE(o.result.status.success()) << o.result.stderr_text;
  EXPECT_TRUE(o.process->find("profiled")->boolean) << o.process->find("reason")->string;
  EXPECT_NE(o.process->find("offsets")->string.find("nearest to 3.12.1"), std::string::npos)
      << o.process->find("offsets")->string;
  const auto& expected = w->truth.threads.at(0).stack;
  EXPECT_GE(count_exact(o.mine, expected), 0.95 * total(o.mine))
      << describe_mismatches(o.mine, expected);
  EXPECT_GE(total(o.mine), 100);
}

TEST(Offsets, DebianStrippedBuildValidatesTheNearestTable) {
  require_root();
  // Debian's 3.11.2 really has no table of its own; pyenv's 3.11.7 fits it.
  const Interpreter interp = pick("debian-bookworm", "3.11.");
  auto w = start_workload(interp, "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  const auto table = write(dir, "t.txt", builtin_table_text("3.11.7"));
  Outcome o = record_with(*w, {"--offsets", table}, dir);
  ASSERT_NE(o.process, nullptr) << o.result.stderr_text;
  EXPECT_TRUE(o.result.status.success()) << o.result.stderr_text;
  EXPECT_TRUE(o.process->find("profiled")->boolean) << o.process->find("reason")->string;
  const auto& expected = w->truth.threads.at(0).stack;
  EXPECT_GE(count_exact(o.mine, expected), 0.95 * total(o.mine))
      << describe_mismatches(o.mine, expected);
}

// The process is refused with a reason and nothing read with the bad
// layout reaches the profile.
void expect_refused(const Outcome& o, const std::string& reason_part) {
  ASSERT_NE(o.process, nullptr) << o.result.stderr_text;
  EXPECT_FALSE(o.process->find("profiled")->boolean);
  const std::string reason = o.process->find("reason")->string;
  EXPECT_NE(reason.find(reason_part), std::string::npos) << reason;
  EXPECT_TRUE(o.mine.empty()) << o.mine.size() << " stacks of a refused process in the profile";
  EXPECT_GT(o.process->find("samples")->integer, 0) << "its samples are still counted";
  EXPECT_NE(o.result.stderr_text.find("not profiled"), std::string::npos) << o.result.stderr_text;
  // Nothing it was asked to profile could be: the run says so by failing.
  EXPECT_FALSE(o.result.status.success());
}

TEST(Offsets, NearestTableThatFailsValidationIsRefused) {
  require_root();
  // 3.11's layout presented as the nearest 3.12 table: wrong frame model.
  const Interpreter interp = pick("pyenv", "3.12.1");
  auto w = start_workload(interp, "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  const auto table = write(dir, "wrong.txt", edited_table(builtin_table_text("3.11.7"), "3.12.0"));
  expect_refused(record_with(*w, {"--offsets", table}, dir), "failed validation");
}

TEST(Offsets, DeliberatelyWrongTableIsRefused) {
  require_root();
  // The right version, with the frame's code pointer moved to another field.
  const Interpreter interp = pick("pyenv", "3.10");
  auto w = start_workload(interp, "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  const auto table =
      write(dir, "wrong.txt",
            edited_table(builtin_table_text("3.10.13"), "3.10.13", {{"PyFrameObject.f_code", 40}}));
  expect_refused(record_with(*w, {"--offsets", table}, dir), "failed validation");
}

TEST(Offsets, NoTableAtAllIsRefusedWithWhatToDo) {
  require_root();
  const Interpreter interp = pick("pyenv", "3.9");
  auto w = start_workload(interp, "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  TempDir dir;
  expect_refused(record_with(*w, {}, dir), "krait offsets generate");
}

TEST(Offsets, GenerateWritesTheTableOfABuildWithDebugInfo) {
  // The generator behind offsets/ is the user's tool for custom builds: its
  // output for a pyenv build equals the checked-in table.
  const Interpreter interp = pick("pyenv", "3.8");
  TempDir dir;
  auto r = run_krait({"offsets", "generate", interp.executable, "-o", dir.file("t.txt")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->status.success()) << r->stderr_text;
  std::ifstream in(dir.file("t.txt"));
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), builtin_table_text(interp.version));
}

TEST(Offsets, GenerateOnAStrippedBinaryFailsWithOneLine) {
  auto r = run_krait({"offsets", "generate", "/usr/bin/python3.11"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_NE(r->stderr_text.find("no DWARF"), std::string::npos) << r->stderr_text;
  EXPECT_EQ(std::count(r->stderr_text.begin(), r->stderr_text.end(), '\n'), 1) << r->stderr_text;
}

}  // namespace
}  // namespace krait::test
