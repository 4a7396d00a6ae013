// Process selection: names, command-line regexes, cgroups, container ids,
// and exclusions that win.
#include "daemon/process_filter.h"

#include <gtest/gtest.h>

namespace krait::test {
namespace {

using daemon::ProcessFilter;
using daemon::ProcessIdentity;
using daemon::ProcessSelection;

const ProcessIdentity kCelery{
    10, {"python3", "-m", "celery", "worker"}, "python3", "/usr/bin/python3.11"};
const ProcessIdentity kGunicorn{11,
                                {"/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"},
                                "gunicorn",
                                "/usr/bin/python3.11"};
const ProcessIdentity kScript{
    12, {"python", "batch.py", "--nightly"}, "python", "/usr/bin/python3.11"};

proc::ContainerInfo in_container(std::string id, std::string cgroup) {
  proc::ContainerInfo info;
  info.container_id = std::move(id);
  info.cgroup_path = std::move(cgroup);
  return info;
}

ProcessFilter make(const ProcessSelection& selection) {
  auto filter = ProcessFilter::create(selection);
  EXPECT_TRUE(filter.ok()) << (filter.ok() ? "" : filter.error().message);
  return std::move(*filter);
}

TEST(ProcessFilterTest, SelectsEverythingByDefault) {
  const ProcessFilter filter = make({});
  EXPECT_TRUE(filter.selects_all());
  EXPECT_TRUE(filter.matches(kCelery, {}));
  EXPECT_TRUE(filter.matches(kScript, in_container("abcd", "/docker/abcd")));
}

TEST(ProcessFilterTest, SelectsByNameCommExecutableOrApplication) {
  const ProcessFilter by_app = make({.names = {"celery"}});
  EXPECT_FALSE(by_app.selects_all());
  EXPECT_TRUE(by_app.matches(kCelery, {}));  // comm is python3; the application is celery
  EXPECT_FALSE(by_app.matches(kGunicorn, {}));
  const ProcessFilter by_comm = make({.names = {"gunicorn"}});
  EXPECT_TRUE(by_comm.matches(kGunicorn, {}));
  // A server named after its application is still selected by the
  // server's name.
  const ProcessIdentity celery_app{
      13, {"python3", "-m", "celery", "-A", "proj", "worker"}, "python3", "/usr/bin/python3.11"};
  EXPECT_TRUE(by_app.matches(celery_app, {}));
  EXPECT_TRUE(make({.names = {"proj"}}).matches(celery_app, {}));
  const ProcessIdentity uwsgi{14, {"uwsgi", "--wsgi-file", "shop.py"}, "uwsgi", ""};
  EXPECT_TRUE(make({.names = {"shop.py"}}).matches(uwsgi, {}));
  EXPECT_TRUE(make({.names = {"uwsgi"}}).matches(uwsgi, {}));
  const ProcessFilter by_exe = make({.names = {"python3.11"}});
  EXPECT_TRUE(by_exe.matches(kScript, {}));
}

TEST(ProcessFilterTest, SelectsByCommandLineRegex) {
  const ProcessFilter filter = make({.cmdline_regex = {R"(--nightly\b)", "^nomatch$"}});
  EXPECT_TRUE(filter.matches(kScript, {}));
  EXPECT_FALSE(filter.matches(kCelery, {}));
}

TEST(ProcessFilterTest, SelectsByCgroupSubtree) {
  const ProcessFilter filter = make({.cgroups = {"/system.slice/app.service/"}});
  EXPECT_TRUE(filter.matches(kScript, in_container("", "/system.slice/app.service")));
  EXPECT_TRUE(filter.matches(kScript, in_container("", "/system.slice/app.service/worker")));
  EXPECT_FALSE(filter.matches(kScript, in_container("", "/system.slice/app.service2")));
  EXPECT_FALSE(filter.matches(kScript, {}));
}

TEST(ProcessFilterTest, SelectsByContainerIdPrefix) {
  const std::string id = "4c5e7e4a7d3b" + std::string(52, '0');
  const ProcessFilter filter = make({.container_ids = {"4C5E7E4A"}});
  EXPECT_TRUE(filter.matches(kScript, in_container(id, "/docker/" + id)));
  EXPECT_FALSE(filter.matches(kScript, in_container(std::string(64, 'f'), "/")));
  EXPECT_FALSE(filter.matches(kScript, {}));
}

TEST(ProcessFilterTest, ExclusionsWin) {
  const ProcessFilter filter = make({.names = {"celery", "gunicorn"},
                                     .exclude_names = {"gunicorn"},
                                     .exclude_cmdline_regex = {"beat"}});
  EXPECT_TRUE(filter.matches(kCelery, {}));
  EXPECT_FALSE(filter.matches(kGunicorn, {}));
  ProcessIdentity beat = kCelery;
  beat.argv.back() = "beat";
  EXPECT_FALSE(filter.matches(beat, {}));
  const ProcessFilter exclude_only = make({.exclude_names = {"python"}});
  EXPECT_TRUE(exclude_only.selects_all());
  EXPECT_FALSE(exclude_only.matches(kScript, {}));
  EXPECT_TRUE(exclude_only.matches(kCelery, {}));
}

// Command lines are chosen by any user: std::regex recursed once per
// character and overflowed the stack on these.
TEST(ProcessFilterTest, RegexesSurviveHugeCommandLines) {
  const ProcessIdentity digits{
      13, {"python" + std::string(50'000, '7'), "app.py"}, "python", "/usr/bin/python3.11"};
  const ProcessIdentity long_argument{
      14, {"python", "app.py", std::string(128 * 1024, 'a')}, "python", "/usr/bin/python3.11"};
  EXPECT_TRUE(make({.cmdline_regex = {R"(^python[0-9]+ app\.py$)"}}).matches(digits, {}));
  EXPECT_FALSE(make({.cmdline_regex = {R"(^python[0-9]+ other\.py$)"}}).matches(digits, {}));
  EXPECT_TRUE(make({.cmdline_regex = {"(a|b)+$"}}).matches(long_argument, {}));
  EXPECT_FALSE(make({.cmdline_regex = {"(a|b)+c"}}).matches(long_argument, {}));
  EXPECT_FALSE(make({.cmdline_regex = {"(a|b)+c"}}).matches(digits, {}));
  // Exclusions run over every process, even with no include criterion.
  const ProcessFilter exclude = make({.exclude_cmdline_regex = {R"(python7+\s)", "a{1000}$"}});
  EXPECT_FALSE(exclude.matches(digits, {}));
  EXPECT_FALSE(exclude.matches(long_argument, {}));
  EXPECT_TRUE(exclude.matches(kCelery, {}));
  const ProcessFilter keep = make({.exclude_cmdline_regex = {"(.*)x$", "^(7+)+$"}});
  EXPECT_TRUE(keep.matches(digits, {}));
  EXPECT_TRUE(keep.matches(long_argument, {}));
}

TEST(ProcessFilterTest, NamesTheKeyOfABrokenRegex) {
  auto filter = ProcessFilter::create({.exclude_cmdline_regex = {"[unclosed"}});
  ASSERT_FALSE(filter.ok());
  EXPECT_NE(filter.error().message.find("processes.exclude_cmdline_regex"), std::string::npos)
      << filter.error().message;
  // RE2 has no lookaround and no backreferences.
  auto lookahead = ProcessFilter::create({.cmdline_regex = {"gunicorn(?! master)"}});
  ASSERT_FALSE(lookahead.ok());
  EXPECT_TRUE(lookahead.error().message.starts_with(
      "processes.cmdline_regex: regex 'gunicorn(?! master)' does not compile: "))
      << lookahead.error().message;
}

}  // namespace
}  // namespace krait::test
