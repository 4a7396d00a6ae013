// Application names from real command lines, the user's naming rules, the
// labels of a process, and describing a process from a fixture /proc.
#include "daemon/app_name.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <filesystem>

#include "daemon/config.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace krait::test {
namespace {

using daemon::ApplicationNamer;
using daemon::default_application_name;
using daemon::ProcessIdentity;

ProcessIdentity identity(std::vector<std::string> argv, std::string comm = "python3",
                         std::string exe = "/usr/bin/python3.11") {
  return ProcessIdentity{4242, std::move(argv), std::move(comm), std::move(exe)};
}

TEST(AppNameTest, NamesWhatTheInterpreterRuns) {
  struct Case {
    std::vector<std::string> argv;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"python", "app.py"}, "app.py"},
      {{"python3", "-m", "celery", "worker", "-A", "proj"}, "proj"},
      {{"/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"}, "app"},
      {{"python3.12", "-u", "-X", "dev", "-W", "ignore", "/srv/app/manage.py", "runserver"},
       "manage.py"},
      {{"python", "-OO", "-Wd", "-Xfrozen_modules=off", "svc.py"}, "svc.py"},
      {{"python", "-um", "http.server", "8000"}, "http.server"},
      {{"python", "-mcelery", "beat"}, "celery"},
      {{"python", "-I", "-m", "uvicorn", "main:app"}, "uvicorn"},
      {{"python3", "-c", "import time; time.sleep(9)"}, "python3"},
      {{"python3"}, "python3"},
      {{"python3", "-"}, "python3"},
      {{"python3", "-i"}, "python3"},
      {{"python", "pkg/__main__.py"}, "pkg"},
      {{"/root/.pyenv/versions/3.12.1/bin/python", "bench.py", "--n", "3"}, "bench.py"},
      {{"python3.11-dbg", "x.py"}, "x.py"},
      {{"python3.13t", "x.py"}, "x.py"},
      {{"pypy3", "x.py"}, "x.py"},
      {{"python", "--check-hash-based-pycs", "never", "a.py"}, "a.py"},
      {{"python", "-E", "--", "b.py"}, "b.py"},
      {{"python3", "myapp.pyz"}, "myapp.pyz"},
      {{"python3", "/srv/src/"}, "src"},
      {{"/usr/bin/uwsgi", "--ini", "/etc/uwsgi/app.ini"}, "uwsgi"},
      {{"gunicorn: worker [app:app]"}, "app"},
      {{"[celeryd: celery@web-1:MainProcess] -active- (worker -A proj)"}, "proj"},
      {{"/opt/embed/bin/game-server", "--port", "7777"}, "game-server"},
  };
  for (const Case& c : cases)
    EXPECT_EQ(default_application_name(identity(c.argv)), c.expected)
        << fmt::format("{}", fmt::join(c.argv, " "));
  // No argv at all (a zombie, a kernel thread): the comm.
  EXPECT_EQ(default_application_name(identity({}, "python3")), "python3");
  EXPECT_EQ(default_application_name(identity({}, "")), "unknown");
}

TEST(AppNameTest, RecognisesInterpreterNames) {
  for (const char* yes : {"python", "python3", "python3.12", "python2.7", "python3.12d",
                          "python3.13t", "python2.7-dbg", "pythonw", "pypy", "pypy3.10"})
    EXPECT_TRUE(daemon::is_python_interpreter(yes)) << yes;
  for (const char* no : {"python-config", "python3.12-config", "pythonista", "ipython", "uwsgi",
                         "gunicorn", "", "py"})
    EXPECT_FALSE(daemon::is_python_interpreter(no)) << no;
}

TEST(AppNameTest, SplitsCmdlineAtNuls) {
  using V = std::vector<std::string>;
  EXPECT_EQ(daemon::parse_cmdline(std::string("python\0app.py\0", 14)), (V{"python", "app.py"}));
  EXPECT_EQ(daemon::parse_cmdline(std::string("a\0\0b\0", 5)), (V{"a", "", "b"}));
  EXPECT_EQ(daemon::parse_cmdline("gunicorn: master [app]"), (V{"gunicorn: master [app]"}));
  EXPECT_TRUE(daemon::parse_cmdline("").empty());
}

TEST(AppNameTest, ARegexRuleOverridesTheDefault) {
  auto namer = ApplicationNamer::create(R"(--service[= ](\S+))", "");
  ASSERT_TRUE(namer.ok()) << namer.error().message;
  EXPECT_EQ(namer->name(identity({"python", "run.py", "--service=billing"}), {}), "billing");
  EXPECT_EQ(namer->name(identity({"python", "run.py", "--service", "auth"}), {}), "auth");
  EXPECT_EQ(namer->name(identity({"python", "run.py"}), {}), "run.py");  // no match
  auto whole = ApplicationNamer::create(R"(worker-\d+)", "");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->name(identity({"python", "q.py", "worker-12"}), {}), "worker-12");
}

// Application servers, with the argv and comm their processes show in
// /proc (read from the real servers: uWSGI 2.0.21, gunicorn 20.1 and
// Celery 5.2 of Debian 12): every process of a server is named after the
// application it serves, the master the same as its workers.
TEST(AppNameTest, NamesAnApplicationServerAfterItsApplication) {
  struct Case {
    std::vector<std::string> argv;
    std::string comm;
    std::string expected;
  };
  const std::vector<Case> cases = {
      // uWSGI's master and workers keep its argv.
      {{"uwsgi", "--plugin", "python3", "--master", "--processes", "2", "--http-socket",
        "127.0.0.1:18533", "--wsgi-file", "/srv/krait/tests/workloads/wsgi_app.py",
        "--disable-logging"},
       "uwsgi",
       "wsgi_app.py"},
      {{"/usr/bin/uwsgi", "--master", "--module", "shop.wsgi:application"}, "uwsgi", "shop.wsgi"},
      {{"uwsgi", "-w", "shop.wsgi"}, "uwsgi", "shop.wsgi"},
      {{"uwsgi_python311", "--http", ":80", "--wsgi-file=app.py"}, "uwsgi_python311", "app.py"},
      {{"/usr/bin/uwsgi", "--ini", "/etc/uwsgi/app.ini"}, "uwsgi", "uwsgi"},
      // --auto-procname: the argv is gone.
      {{"uWSGI master"}, "uwsgi", "uWSGI"},
      {{"uWSGI worker 1"}, "uwsgi", "uWSGI"},
      // gunicorn's master and workers (a console script; comm is gunicorn).
      {{"/usr/bin/python3", "/usr/bin/gunicorn", "-w", "2", "-k", "gthread", "--threads", "2", "-b",
        "127.0.0.1:18431", "wsgi_app:application"},
       "gunicorn",
       "wsgi_app"},
      {{"/usr/bin/python3", "/usr/bin/gunicorn", "--workers", "2", "--bind", "127.0.0.1:40000",
        "--chdir", "/srv/app", "--timeout", "120", "--worker-class", "gevent",
        "wsgi_app:application"},
       "gunicorn",
       "wsgi_app"},
      {{"/venv/bin/python", "/venv/bin/gunicorn", "pkg.wsgi:application", "--preload", "-w4"},
       "gunicorn",
       "pkg.wsgi"},
      {{"python3", "-m", "gunicorn", "--bind=:8000", "--reload", "app:create_app()"},
       "python3",
       "app"},
      {{"/usr/bin/python3", "/usr/bin/gunicorn", "-n", "shop", "app:app"}, "gunicorn", "shop"},
      {{"/usr/bin/python3", "/usr/bin/gunicorn", "-c", "conf.py"}, "gunicorn", "gunicorn"},
      // gunicorn with setproctitle installed: "[proc_name]", the app spec
      // unless -n names it.
      {{"gunicorn: master [wsgi_app:application]"}, "gunicorn", "wsgi_app"},
      {{"gunicorn: worker [wsgi_app:application]"}, "gunicorn", "wsgi_app"},
      {{"gunicorn: worker [shop]"}, "gunicorn", "shop"},
      {{"gunicorn: worker [app"}, "gunicorn", "gunicorn"},
      // Celery's worker and its prefork pool children keep its argv.
      {{"/usr/bin/python3.11", "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
        "--concurrency", "2", "--loglevel", "WARNING", "--without-heartbeat", "--without-mingle",
        "--without-gossip", "-O", "fair"},
       "python3.11",
       "celery_app"},
      {{"python3", "-m", "celery", "worker", "-A", "proj"}, "python3", "proj"},
      {{"/usr/bin/python3", "/usr/local/bin/celery", "--app=proj.celery:app", "worker"},
       "celery",
       "proj.celery"},
      {{"/usr/bin/python3", "/usr/local/bin/celery", "-Aproj", "beat"}, "celery", "proj"},
      {{"python3", "-m", "celery", "worker"}, "python3", "celery"},
      {{"python3", "-m", "celery", "worker", "-A"}, "python3", "celery"},
      // Celery with setproctitle: the worker's title carries its argv, a
      // pool child's only the host.
      {{"[celeryd: celery@web-1:MainProcess] -active- (-A proj worker -l INFO)"},
       "python3",
       "proj"},
      {{"[celeryd: celery@web-1:ForkPoolWorker-1]"}, "python3", "celeryd"},
  };
  for (const Case& c : cases)
    EXPECT_EQ(default_application_name(identity(c.argv, c.comm)), c.expected)
        << fmt::format("{}", fmt::join(c.argv, " "));
}

// Any user controls argv; std::regex recursed once per character and
// overflowed the stack on `python` followed by 50,000 digits.
const std::string kLongInterpreter = "python" + std::string(50'000, '7');
const std::string kLongArgument(128 * 1024, 'a');

TEST(AppNameTest, DefaultNamingSurvivesHugeArguments) {
  EXPECT_TRUE(daemon::is_python_interpreter(kLongInterpreter));
  EXPECT_TRUE(daemon::is_python_interpreter("python3" + std::string(100'000, 'd') + "-dbg"));
  std::string dotted = "python3";
  while (dotted.size() < 128 * 1024)
    dotted += ".1";
  EXPECT_TRUE(daemon::is_python_interpreter(dotted));
  EXPECT_FALSE(daemon::is_python_interpreter(dotted + "."));
  EXPECT_FALSE(daemon::is_python_interpreter(kLongInterpreter + "x"));
  EXPECT_FALSE(daemon::is_python_interpreter(kLongArgument));
  EXPECT_EQ(default_application_name(identity({kLongInterpreter, "app.py"})), "app.py");
  EXPECT_EQ(default_application_name(identity({kLongInterpreter})), kLongInterpreter);
  EXPECT_EQ(default_application_name(identity({"python3", "-m", kLongArgument})), kLongArgument);
  EXPECT_EQ(default_application_name(identity({"/usr/bin/" + kLongArgument, "x"})), kLongArgument);
  // The servers' rules: one pass over the arguments, no backtracking.
  EXPECT_EQ(default_application_name(identity({"python3", "/usr/bin/gunicorn", kLongArgument})),
            kLongArgument);
  std::vector<std::string> many_options = {"python3", "/usr/bin/gunicorn"};
  for (int i = 0; i < 20'000; ++i)
    many_options.push_back(i % 2 == 0 ? "--reload" : "-w");
  EXPECT_EQ(default_application_name(identity(many_options)), "gunicorn");
  EXPECT_EQ(default_application_name(identity({"gunicorn: worker [" + kLongArgument})), "gunicorn");
  EXPECT_EQ(default_application_name(identity({"gunicorn: worker [" + kLongArgument + "]"})),
            kLongArgument);
  EXPECT_EQ(
      default_application_name(identity({"[celeryd: x] (" + std::string(100'000, ' ') + "-A)"})),
      "celeryd");
  EXPECT_EQ(default_application_name(identity({"uwsgi", "--module=" + kLongArgument + ":app"})),
            kLongArgument);
}

TEST(AppNameTest, RegexRulesSurviveHugeArguments) {
  auto versioned = ApplicationNamer::create("(python[0-9.]*)", "");
  ASSERT_TRUE(versioned.ok()) << versioned.error().message;
  EXPECT_EQ(versioned->name(identity({kLongInterpreter, "app.py"}), {}), kLongInterpreter);
  EXPECT_EQ(versioned->name(identity({"/usr/bin/python3.12", "app.py"}), {}), "python3.12");
  EXPECT_EQ(versioned->name(identity({"ruby", kLongArgument}), {}), "ruby");  // no match
  auto everything = ApplicationNamer::create("(.*)", "");
  ASSERT_TRUE(everything.ok()) << everything.error().message;
  EXPECT_EQ(everything->name(identity({kLongInterpreter, "app.py"}), {}),
            kLongInterpreter + " app.py");
  EXPECT_EQ(everything->name(identity({"python", "app.py", kLongArgument}), {}),
            "python app.py " + kLongArgument);
  auto service = ApplicationNamer::create(R"(--service=(\S+))", "");
  ASSERT_TRUE(service.ok()) << service.error().message;
  EXPECT_EQ(service->name(identity({"python", "app.py", kLongArgument}), {}), "app.py");
  EXPECT_EQ(service->name(identity({"python", "app.py", "--service=" + kLongArgument}), {}),
            kLongArgument);
}

// Command lines are bytes; '.' matches any of them, as std::regex did.
TEST(AppNameTest, RegexRulesMatchBytesThatAreNotUtf8) {
  auto everything = ApplicationNamer::create("(.*)", "");
  ASSERT_TRUE(everything.ok()) << everything.error().message;
  EXPECT_EQ(everything->name(identity({"python", "app\xff\xfe.py"}), {}), "python app\xff\xfe.py");
  auto literal = ApplicationNamer::create("--app=(caf\xc3\xa9-[a-z]+)", "");
  ASSERT_TRUE(literal.ok()) << literal.error().message;
  EXPECT_EQ(literal->name(identity({"python", "a.py", "--app=caf\xc3\xa9-bar"}), {}),
            "caf\xc3\xa9-bar");
}

TEST(AppNameTest, AGroupThatTakesNoPartKeepsTheDefault) {
  auto namer = ApplicationNamer::create(R"(--name=(\w+)|--anonymous)", "");
  ASSERT_TRUE(namer.ok()) << namer.error().message;
  EXPECT_EQ(namer->name(identity({"python", "app.py", "--name=billing"}), {}), "billing");
  EXPECT_EQ(namer->name(identity({"python", "app.py", "--anonymous"}), {}), "app.py");
}

TEST(AppNameTest, ATemplateUsesTheNameAndLabels) {
  const profile::Labels labels = {{"container_id", "abc123"}, {"env", "prod"}};
  auto namer = ApplicationNamer::create("", "{app}-{env}");
  ASSERT_TRUE(namer.ok()) << namer.error().message;
  EXPECT_EQ(namer->name(identity({"python", "app.py"}), labels), "app.py-prod");
  auto missing = ApplicationNamer::create("", "{app}@{pod_uid}");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->name(identity({"python", "app.py"}), labels), "app.py@");
  auto both = ApplicationNamer::create(R"(-A (\w+))", "{app}.{env}");
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->name(identity({"celery", "-A", "proj", "worker"}), labels), "proj.prod");
  auto empty = ApplicationNamer::create("", "{pod_uid}");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->name(identity({"python", "app.py"}), labels), "app.py");
}

TEST(AppNameTest, RefusesBrokenRules) {
  EXPECT_FALSE(ApplicationNamer::create("(unclosed", "").ok());
  // RE2 syntax: no backreferences, no lookaround. The error is one line
  // naming the key and the pattern.
  for (const char* bad : {"(unclosed", R"((a)\1)", "app(?=\\.py)", "(?<!x)y", "a{2,1}"}) {
    auto namer = ApplicationNamer::create(bad, "");
    ASSERT_FALSE(namer.ok()) << bad;
    const std::string& message = namer.error().message;
    EXPECT_TRUE(message.starts_with("application.name_regex: regex '" + std::string(bad) +
                                    "' does not compile: "))
        << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  for (const char* bad : {"{app", "app}", "{}", "{a-b}", "x{app}}"}) {
    auto namer = ApplicationNamer::create("", bad);
    ASSERT_FALSE(namer.ok()) << bad;
    EXPECT_NE(namer.error().message.find(bad), std::string::npos) << namer.error().message;
  }
}

TEST(AppNameTest, LabelsAProcess) {
  proc::ContainerInfo container;
  container.runtime = "containerd";
  container.container_id = std::string(64, 'a');
  container.pod_uid = "2c7d8a7e-2b1f-4c6a-9b1e-8d5f4c3b2a19";
  auto labels = daemon::process_labels(identity({"python", "app.py"}), "3.12.1", container,
                                       {4242, 7}, "node-3");
  EXPECT_EQ(labels, (profile::Labels{{"pid", "4242"},
                                     {"process_name", "python3"},
                                     {"hostname", "node-3"},
                                     {"python_version", "3.12.1"},
                                     {"container_id", std::string(64, 'a')},
                                     {"container_runtime", "containerd"},
                                     {"pod_uid", "2c7d8a7e-2b1f-4c6a-9b1e-8d5f4c3b2a19"},
                                     {"container_pid", "7"}}));
  for (const auto& [name, value] : labels) {
    const auto& builtin = daemon::builtin_label_names();
    EXPECT_NE(std::find(builtin.begin(), builtin.end(), name), builtin.end()) << name;
  }
  // On the host: no container labels, no container_pid.
  labels = daemon::process_labels(identity({"python", "app.py"}), "", {}, {4242}, "node-3");
  EXPECT_EQ(labels, (profile::Labels{
                        {"pid", "4242"}, {"process_name", "python3"}, {"hostname", "node-3"}}));
}

TEST(AppNameTest, ReadsTheLiveProcess) {
  auto self = daemon::read_process_identity(::getpid());
  ASSERT_TRUE(self.ok()) << self.error().message;
  EXPECT_EQ(self->pid, ::getpid());
  ASSERT_FALSE(self->argv.empty());
  EXPECT_EQ(std::filesystem::path(self->argv[0]).filename(), "daemon_labels_test");
  EXPECT_EQ(self->exe, std::filesystem::read_symlink("/proc/self/exe").string());
  char comm[17] = {};
  ASSERT_EQ(::prctl(PR_GET_NAME, comm), 0);
  EXPECT_EQ(self->comm, comm);
}

// A process can make /proc/PID/cmdline as long as it likes
// (PR_SET_MM_ARG_START/END); only its start is read.
TEST(AppNameTest, ReadsOnlyTheStartOfAHugeCmdline) {
  TempDir root;
  const std::string dir = root.file("79");
  std::filesystem::create_directories(dir);
  const std::string huge(10 << 20, 'z');
  write_text_file(dir + "/cmdline", std::string("python3\0app.py\0", 15) + huge + '\0');
  write_text_file(dir + "/comm", "python3\n");
  auto identity = daemon::read_process_identity(79, root.path());
  ASSERT_TRUE(identity.ok()) << identity.error().message;
  ASSERT_EQ(identity->argv.size(), 3u);
  EXPECT_EQ(identity->argv[0], "python3");
  EXPECT_EQ(identity->argv[1], "app.py");
  EXPECT_EQ(identity->argv[2], huge.substr(0, daemon::kCmdlineMaxBytes - 15));
  EXPECT_EQ(identity->comm, "python3");
  EXPECT_EQ(default_application_name(*identity), "app.py");
}

TEST(AppNameTest, DescribesAProcessFromAProcTree) {
  TempDir root;
  const std::string dir = root.file("77");
  std::filesystem::create_directories(dir);
  write_text_file(dir + "/cmdline",
                  std::string("/usr/bin/python3\0/usr/local/bin/gunicorn\0app:app\0", 48));
  write_text_file(dir + "/comm", "gunicorn\n");
  write_text_file(
      dir + "/cgroup",
      "0::/kubepods.slice/kubepods-besteffort.slice/"
      "kubepods-besteffort-pod2c7d8a7e_2b1f_4c6a_9b1e_8d5f4c3b2a19.slice/cri-containerd-" +
          std::string(64, 'b') + ".scope\n");
  write_text_file(dir + "/status", "Name:\tgunicorn\nNSpid:\t77\t1\n");
  std::filesystem::create_symlink("/usr/bin/python3.11", dir + "/exe");

  daemon::DaemonConfig config;
  config.labels = {{"env", "prod"}, {"team", "payments"}};
  config.app_name_template = "{app}-{team}";
  auto describer = daemon::ProcessDescriber::create(config, "node-9", root.path());
  ASSERT_TRUE(describer.ok()) << describer.error().message;
  auto description = describer->describe(77, "3.11.2");
  ASSERT_TRUE(description.ok()) << description.error().message;
  EXPECT_EQ(description->application, "app-payments");
  EXPECT_EQ(description->labels,
            (profile::Labels{{"container_id", std::string(64, 'b')},
                             {"container_pid", "1"},
                             {"container_runtime", "containerd"},
                             {"env", "prod"},
                             {"hostname", "node-9"},
                             {"pid", "77"},
                             {"pod_uid", "2c7d8a7e-2b1f-4c6a-9b1e-8d5f4c3b2a19"},
                             {"process_name", "gunicorn"},
                             {"python_version", "3.11.2"},
                             {"team", "payments"}}));
  auto gone = describer->describe(78, "");
  EXPECT_FALSE(gone.ok());
}

}  // namespace
}  // namespace krait::test
