// What a user sees when something is wrong, and `krait info`.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

size_t lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(Cli, MissingPidIsAOneLineErrorAndAFailure) {
  require_root();
  auto r = run_krait({"record", "-p", "999999", "-d", "1"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("no process with pid 999999"), std::string::npos) << r->stderr_text;
}

TEST(Cli, NonPythonPidIsRefusedByName) {
  require_root();
  SpawnOptions sleeper;
  sleeper.argv = {"/bin/sleep", "60"};
  auto child = ChildProcess::spawn(sleeper);
  ASSERT_TRUE(child.ok()) << child.error().message;
  auto r = run_krait({"record", "-p", std::to_string(child->pid()), "-d", "1"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("is not a Python process"), std::string::npos) << r->stderr_text;
  EXPECT_NE(r->stderr_text.find("sleep"), std::string::npos) << r->stderr_text;
}

TEST(Cli, WithoutCapabilitiesTheErrorNamesThem) {
  require_root();
  // Root without any capability, as in a locked-down container.
  auto r = run_krait(
      {"record", "-d", "1"}, 60s,
      {"/usr/bin/setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->status.success());
  EXPECT_EQ(lines(r->stderr_text), 1u) << r->stderr_text;
  for (const char* cap : {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"})
    EXPECT_NE(r->stderr_text.find(cap), std::string::npos) << r->stderr_text;
}

TEST(Cli, InfoJsonListsARunningInterpreter) {
  require_root();
  auto interps = load_manifest();
  ASSERT_FALSE(interps.empty());
  auto w = start_workload(interps.front(), "chain.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto r = run_krait({"info", "--json", "-p", std::to_string(w->truth.pid)});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->status.success()) << r->stderr_text;
  auto json = parse_json(r->stdout_text);
  ASSERT_TRUE(json.ok()) << json.error().message << "\n" << r->stdout_text;
  const JsonValue* procs = json->find("processes");
  ASSERT_TRUE(procs && procs->is_array());
  ASSERT_EQ(procs->items.size(), 1u);
  const JsonValue& p = procs->items[0];
  EXPECT_EQ(p.find("pid")->integer, w->truth.pid);
  EXPECT_EQ(p.find("status")->string, "profilable") << p.find("reason")->string;
  EXPECT_EQ(p.find("python_version")->string, w->truth.python);
  EXPECT_TRUE(json->find("capabilities")->find("can_record")->boolean);
}

}  // namespace
}  // namespace krait::test
