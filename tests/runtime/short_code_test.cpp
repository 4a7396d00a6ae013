// Code objects that die right after they run keep their lines: module bodies
// freed when their import ends, and exec'd functions dropped after one call
// (tests/workloads/short_code.py names every such file with its hot line).
// Their line tables are longer than the sampler's inline copy, so the lines
// must come from what the sampler captured at first sight.
#include <gtest/gtest.h>
#include <signal.h>

#include <fmt/format.h>

#include <cstdio>
#include <map>

#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

// Of the samples in generated code, the share whose generated frame has its
// exact function, file and line.
constexpr double kExactLines = 0.99;
// Enough samples to judge a 1% bar: ~300 are due (300 ms of CPU at 999 Hz).
constexpr int64_t kMinSamples = 100;

// The interpreters whose module bodies and code objects differ in what the
// capture must hold: lnotab (3.8), the location table of 3.11 (a shared
// build and Debian's static one), 3.12, 3.13 and sid's 3.14 and 3.15.
std::vector<std::string> short_code_interpreters() {
  auto m = read_manifest(manifest_path());
  if (!m || m->empty())
    return {"manifest_missing"};
  std::vector<std::string> names;
  for (const auto& i : *m) {
    const auto [major, minor] = i.major_minor();
    if (major != 3)
      continue;
    const bool pyenv = i.origin == "pyenv" && (minor == 8 || (minor >= 11 && minor <= 13));
    const bool debian = i.origin.starts_with("debian-") && i.origin != "debian-sid" && minor == 11;
    const bool sid = i.origin == "debian-sid" && minor >= 14;
    if (pyenv || debian || sid)
      names.push_back(i.name);
  }
  return names;
}

struct Verdict {
  int64_t samples = 0;  // samples with a generated frame, or an unknown one
  int64_t exact = 0;
  // Samples in the cheap statements before the hot line (or in the exec'd
  // code that defines the function): a line there is right or wrong without
  // the truth saying which, so they are left out (and must stay few).
  int64_t filler = 0;
  std::map<std::string, int64_t> wrong;  // "function file:line" -> samples
};

Verdict judge(const std::vector<ProfileSample>& mine, const Truth& truth) {
  Verdict v;
  const JsonValue* hot = truth.json.find("hot_lines");
  const JsonValue* functions = truth.json.find("functions");
  const JsonValue* module_lines = truth.json.find("module_lines");  // exec mode only
  if (!hot || !functions || !hot->is_object() || !functions->is_object()) {
    ADD_FAILURE() << "the truth has no hot_lines or functions";
    return v;
  }
  for (const auto& s : mine) {
    bool generated = false, exact = false, filler = false;
    std::string first_wrong;
    for (const auto& f : s.stack) {
      const JsonValue* line = hot->find(f.file);
      const JsonValue* function = functions->find(f.file);
      if (f.function.starts_with("[unknown") || f.function.starts_with("[code object")) {
        generated = true;
        first_wrong = f.function;
        continue;
      }
      if (!line || !function)
        continue;
      generated = true;
      if (f.function == function->string && f.line == line->integer)
        exact = true;
      else if (f.function == function->string && f.line > 0 && f.line < line->integer)
        filler = true;
      else if (const JsonValue* outer = module_lines ? module_lines->find(f.file) : nullptr;
               outer && f.function == "<module>" && f.line > 0 && f.line <= outer->integer)
        filler = true;  // the exec'd module code defining the function
      else if (first_wrong.empty())
        first_wrong = fmt::format("{} {}:{} (truth: {} line {})", f.function, f.file, f.line,
                                  function->string, line->integer);
    }
    if (!generated)
      continue;
    if (filler && first_wrong.empty()) {
      v.filler += s.count;
      continue;
    }
    v.samples += s.count;
    if (exact && first_wrong.empty())
      v.exact += s.count;
    else
      v.wrong[first_wrong.empty() ? format_stack(s.stack) : first_wrong] += s.count;
  }
  return v;
}

std::string describe(const Verdict& v) {
  std::string out = fmt::format("{} of {} samples exact; others:", v.exact, v.samples);
  int shown = 0;
  for (const auto& [what, n] : v.wrong) {
    if (++shown > 12)
      break;
    out += fmt::format("\n  {} x {}", n, what);
  }
  return out;
}

class ShortCode : public InterpreterTest {
 protected:
  // Records every Python process at 999 Hz while the workload runs to its
  // end, and judges the samples of its process.
  void run_and_judge(const std::vector<std::string>& args) {
    TempDir dir;
    auto rec = Recording::start({"-r", "999", "--stacks", "python"}, dir);
    ASSERT_TRUE(rec.ok()) << rec.error().message;
    auto w = start_workload(interp_, "short_code.py", args);
    ASSERT_TRUE(w.ok()) << w.error().message;
    auto exited = w->child.wait(60s);
    ASSERT_TRUE(exited.ok()) << exited.error().message;
    ASSERT_TRUE(exited->success()) << exited->describe();
    auto r = rec->stop(SIGINT);
    ASSERT_TRUE(r.ok()) << r.error().message;

    const Verdict v = judge(samples_of_pid(r->samples, w->truth.pid), w->truth);
    std::printf("[ stats    ] %s %s: %lld of %lld samples in short-lived code exact (%.1f%%)\n",
                interp_.name.c_str(), args.at(0).c_str(), static_cast<long long>(v.exact),
                static_cast<long long>(v.samples),
                100.0 * static_cast<double>(v.exact) /
                    static_cast<double>(std::max<int64_t>(1, v.samples)));
    EXPECT_GE(v.samples, kMinSamples) << "too few samples in generated code to judge";
    EXPECT_LE(v.filler * 20, v.samples) << v.filler << " samples before the hot lines";
    EXPECT_GE(static_cast<double>(v.exact), kExactLines * static_cast<double>(v.samples))
        << describe(v);
  }
};

TEST_P(ShortCode, ModuleBodiesOfAnImportedPackageKeepTheirLines) {
  TempDir package_dir;
  run_and_judge({"imports", "--dir", package_dir.path(), "--modules", "50", "--ms", "300"});
}

TEST_P(ShortCode, ExecdFunctionsKeepTheirLines) {
  run_and_judge({"exec", "--functions", "150", "--ms", "300"});
}

INSTANTIATE_TEST_SUITE_P(Interpreters, ShortCode, ::testing::ValuesIn(short_code_interpreters()),
                         interpreter_test_name);

}  // namespace
}  // namespace krait::test
