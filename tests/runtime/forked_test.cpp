// Forked workers (issue 14): processes whose Python thread states were
// copied by fork. uWSGI loads the application in its master and forks the
// workers from C, so no after-fork hook of CPython runs and each worker's
// thread state keeps the master's thread id; multiprocessing forks with
// os.fork (fork, and forkserver's server), or starts a new interpreter
// (spawn). Each request of tests/workloads/wsgi_app.py and each child of
// tests/workloads/mp_children.py reports its own pid, thread and stack; a
// system-wide recording must profile every worker and child (none refused)
// and give >= 95% of each one's Python samples exactly that stack, on the
// thread that reported it. os.fork (3.11, 3.12) corrects the thread id in
// the child itself; uWSGI's workers are the case krait has to work out
// (python/forked.h), and `krait dump` of a worker must place its states.
// The same judge covers gunicorn's sync, gthread and gevent workers (os.fork
// after gunicorn started) and Celery's prefork pool children (billiard's
// fork; tasks of tests/workloads/celery_app.py through a filesystem broker).
// Under a live `krait daemon`, uWSGI's and gunicorn's workers must each be
// delivered under their application's name.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/app_name.h"
#include "runtime/daemon_harness.h"
#include "runtime/krait_harness.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"
#include "util/text.h"
#include "util/unique_fd.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

constexpr double kExactFraction = 0.95;
constexpr const char* kUwsgi = "/usr/bin/uwsgi";
constexpr const char* kGunicorn = "/usr/bin/gunicorn";
constexpr const char* kDebianPython = "/usr/bin/python3.11";
constexpr int kWorkers = 2;
// Each request burns this much CPU in the handler; each worker serves at
// least kRequestsPerWorker of them (~1.2 s of CPU, ~120 samples at 99 Hz).
// Long requests: the few samples of each request's own framing (parsing
// the query, encoding the answer) have other stacks.
constexpr int kRequestMs = 100;
constexpr int kRequestsPerWorker = 12;
constexpr int kClients = 4;
constexpr int64_t kMinSamples = 50;

// A port no one listens on now: bound to port 0 and released, for the
// server to bind right after.
Result<int> free_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return make_error("socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return make_error("bind 127.0.0.1:0: {}", std::strerror(errno));
  return static_cast<int>(ntohs(addr.sin_port));
}

// One HTTP/1.0 GET over loopback; the body of a 200 answer.
Result<std::string> http_get(int port, const std::string& target) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return make_error("socket: {}", std::strerror(errno));
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return make_error("connect 127.0.0.1:{}: {}", port, std::strerror(errno));
  const std::string request = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return make_error("send: {}", std::strerror(errno));
  std::string reply;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n < 0)
      return make_error("recv: {}", std::strerror(errno));
    if (n == 0)
      break;
    reply.append(buffer, static_cast<size_t>(n));
    if (reply.size() > (1u << 20))
      return make_error("a reply of more than 1 MiB");
  }
  if (!reply.starts_with("HTTP/1.1 200") && !reply.starts_with("HTTP/1.0 200"))
    return make_error("not a 200 answer: {}", reply.substr(0, reply.find('\r')));
  const size_t body = reply.find("\r\n\r\n");
  if (body == std::string::npos)
    return make_error("a reply without a body");
  return reply.substr(body + 4);
}

// The pids of the children of `pid` (its main thread's), from /proc.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  auto text = read_file(fmt::format("/proc/{}/task/{}/children", pid, pid));
  if (!text)
    return out;
  std::string_view rest = *text;
  while (!rest.empty()) {
    const size_t space = rest.find(' ');
    if (auto child = parse_unsigned<uint32_t>(rest.substr(0, space)))
      out.push_back(static_cast<pid_t>(*child));
    rest.remove_prefix(space == std::string_view::npos ? rest.size() : space + 1);
  }
  return out;
}

// A server's master and its kWorkers forked workers (uWSGI, gunicorn).
// Destroying it kills the workers first (they would outlive a killed
// master), then the master, whatever the test did.
class ForkingServer {
 public:
  // `argv` gets the port to listen on, 127.0.0.1 only.
  static Result<ForkingServer> start(const std::function<std::vector<std::string>(int)>& argv,
                                     const std::map<std::string, std::string>& env) {
    auto port = free_port();
    if (!port)
      return port.error();
    SpawnOptions o;
    o.argv = argv(*port);
    for (const auto& [name, value] : env)
      o.env[name] = value;
    auto child = ChildProcess::spawn(o);
    if (!child)
      return child.error();
    ForkingServer server(std::move(*child), *port);
    // Ready once both workers exist and one answers; waiting on the
    // master's exit paces the attempts and notices a server that failed.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    std::string last;
    for (;;) {
      if (server.workers().size() == kWorkers) {
        auto body = http_get(*port, "/burn?ms=1");
        if (body)
          return server;
        last = body.error().message;
      }
      if (std::chrono::steady_clock::now() > deadline)
        return make_error("{} not ready in 60 s ({}): {}", o.argv[0], last,
                          server.master_.stderr_text());
      auto exited = server.master_.wait(20ms);
      if (exited)
        return make_error("{} ended ({}) before it was ready: {}", o.argv[0], exited->describe(),
                          server.master_.stderr_text());
    }
  }

  ForkingServer(ForkingServer&&) = default;
  ForkingServer& operator=(ForkingServer&&) = delete;
  ~ForkingServer() {
    if (master_.pid() <= 0 || master_.reaped())
      return;
    for (pid_t worker : children_of(master_.pid()))
      ::kill(worker, SIGKILL);
    master_.kill();
  }

  pid_t master() const { return master_.pid(); }
  int port() const { return port_; }
  std::vector<pid_t> workers() const { return children_of(master_.pid()); }
  const std::string& stderr_text() { return master_.stderr_text(); }

 private:
  ForkingServer(ChildProcess master, int port) : master_(std::move(master)), port_(port) {}
  ChildProcess master_;
  int port_ = 0;
};

// What is wrong with `krait dump -p WORKER --json` of an idle worker, ""
// when nothing: every thread state but `stale` ones (inherited from master
// threads that did not fork) must be placed on a thread, the one the
// forking thread left on the worker's main thread (its tid is the worker's
// pid).
std::string judge_dump(pid_t worker, int stale) {
  auto r = run_krait({"dump", "-p", std::to_string(worker), "--json"});
  if (!r)
    return r.error().message;
  if (!r->status.success())
    return r->status.describe() + ": " + r->stderr_text;
  auto json = parse_json(r->stdout_text);
  auto processes = json ? json_array(*json, "processes") : Result<const JsonValue*>(json.error());
  if (!processes)
    return processes.error().message;
  std::string wrong, unplaced;
  int unplaced_count = 0;
  bool main_is_python = false;
  for (const JsonValue& p : (*processes)->items) {
    auto threads = json_array(p, "threads");
    if (!threads)
      return threads.error().message;
    for (const JsonValue& t : (*threads)->items) {
      const JsonValue* tid = t.find("tid");
      const JsonValue* python = t.find("python");
      if (!python || !python->is_bool() || !python->boolean)
        continue;
      if (!tid || !tid->is_int()) {
        const JsonValue* error = t.find("error");
        ++unplaced_count;
        unplaced += fmt::format("a thread state on no thread ({}); ",
                                error && error->is_string() ? error->string : "no error");
      } else if (tid->integer == worker) {
        main_is_python = true;
      }
    }
  }
  if (!main_is_python)
    wrong += "the main thread has no thread state; ";
  if (unplaced_count != stale)
    wrong +=
        fmt::format("{} thread states on no thread, want {}: {}", unplaced_count, stale, unplaced);
  return wrong;
}

// What one request reported.
struct Served {
  int64_t pid = 0;
  int64_t tid = 0;
  std::vector<Frame> stack;
};

Result<Served> parse_served(const std::string& body) {
  auto json = parse_json(body);
  if (!json)
    return json.error().context("request body");
  auto pid = json_int(*json, "pid");
  auto tid = json_int(*json, "tid");
  auto stack = json_array(*json, "stack");
  if (!pid || !tid || !stack)
    return make_error("a request body without pid, tid and stack: {}", body);
  auto frames = parse_stack(**stack);
  if (!frames)
    return frames.error();
  Served s{*pid, *tid, std::move(*frames)};
  return s;
}

// kClients threads sending requests until every worker served
// kRequestsPerWorker of them (or a minute passes, or a request fails).
struct Load {
  std::vector<Served> served;
  std::string error;
};

Load drive(int port, const std::vector<pid_t>& workers, int request_ms) {
  Load load;
  std::mutex mu;
  std::condition_variable changed;
  bool stop = false;
  auto enough = [&] {
    std::map<int64_t, int> per_worker;
    for (const Served& s : load.served)
      ++per_worker[s.pid];
    for (pid_t w : workers)
      if (per_worker[w] < kRequestsPerWorker)
        return false;
    return true;
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&] {
      for (;;) {
        {
          std::lock_guard lock(mu);
          if (stop)
            return;
        }
        auto body = http_get(port, fmt::format("/burn?ms={}", request_ms));
        auto served = body ? parse_served(*body) : Result<Served>(body.error());
        std::lock_guard lock(mu);
        if (served)
          load.served.push_back(std::move(*served));
        else if (load.error.empty())
          load.error = served.error().message;
        changed.notify_all();
      }
    });
  {
    std::unique_lock lock(mu);
    changed.wait_for(lock, 60s, [&] { return !load.error.empty() || enough(); });
    if (load.error.empty() && !enough())
      load.error = "the workers did not serve enough requests in 60 s";
    stop = true;
  }
  for (auto& c : clients)
    c.join();
  return load;
}

// Whether `pid` was profiled; the reason it was not, for messages.
std::string refusal(const RecordingResult& r, int64_t pid) {
  const JsonValue* p = stats_process(r.stats, pid);
  if (!p)
    return "not in --stats-json";
  const JsonValue* profiled = p->find("profiled");
  if (profiled && profiled->is_bool() && profiled->boolean)
    return "";
  const JsonValue* reason = p->find("reason");
  return "not profiled: " + (reason && reason->is_string() ? reason->string : "(no reason)");
}

// The samples of `pid` with Python frames.
std::vector<ProfileSample> python_samples_of(const RecordingResult& r, int64_t pid) {
  std::vector<ProfileSample> out;
  for (const ProfileSample& s : samples_of_pid(r.samples, pid))
    if (!s.stack.empty())
      out.push_back(s);
  return out;
}

// Samples of `samples` whose stack is one of `stacks` and whose thread is
// one of `tids` (the thread that reported that stack).
int64_t count_exact_of(const std::vector<ProfileSample>& samples,
                       const std::map<int64_t, std::vector<std::vector<Frame>>>& stacks_by_tid) {
  int64_t exact = 0;
  for (const ProfileSample& s : samples) {
    auto it = stacks_by_tid.find(s.tid());
    if (it != stacks_by_tid.end() &&
        std::find(it->second.begin(), it->second.end(), s.stack) != it->second.end())
      exact += s.count;
  }
  return exact;
}

// What is wrong with the daemon's application name of the live process
// `pid` (its real argv and comm), "" when it is `expected`.
std::string judge_app_name(pid_t pid, const std::string& expected) {
  auto identity = daemon::read_process_identity(pid);
  if (!identity)
    return identity.error().message;
  const std::string name = daemon::default_application_name(*identity);
  if (name == expected)
    return "";
  return fmt::format("named '{}', want '{}' (argv: {})", name, expected,
                     fmt::join(identity->argv, " "));
}

// Records the whole system while the test's clients load `server`, then
// judges each worker: profiled, and >= 95% of its Python samples on the
// stack a request reported, on the thread that served it. `stale` is the
// number of thread states a worker inherited from master threads that did
// not fork (judge_dump). Each request burns `request_ms` of CPU. The
// master and the workers are named `app` by the daemon.
void check_workers(const std::string& label, ForkingServer& server,
                   const std::vector<std::string>& record_args, int stale, const std::string& app,
                   int request_ms = kRequestMs) {
  const std::vector<pid_t> workers = server.workers();
  ASSERT_EQ(workers.size(), static_cast<size_t>(kWorkers));
  EXPECT_EQ(judge_app_name(server.master(), app), "") << "master";
  for (pid_t worker : workers)
    EXPECT_EQ(judge_app_name(worker, app), "") << "worker " << worker;

  TempDir dir;
  auto rec = Recording::start(record_args, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  const Load load = drive(server.port(), workers, request_ms);
  auto r = rec->stop();
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(load.error.empty()) << load.error << "\n" << server.stderr_text();

  for (pid_t worker : workers) {
    SCOPED_TRACE(fmt::format("worker {}", worker));
    EXPECT_EQ(judge_dump(worker, stale), "");
    std::map<int64_t, std::vector<std::vector<Frame>>> stacks_by_tid;
    for (const Served& s : load.served)
      if (s.pid == worker) {
        auto& stacks = stacks_by_tid[s.tid];
        if (std::find(stacks.begin(), stacks.end(), s.stack) == stacks.end())
          stacks.push_back(s.stack);
      }
    ASSERT_FALSE(stacks_by_tid.empty()) << "the worker served no request";
    EXPECT_EQ(refusal(*r, worker), "") << r->stderr_text;
    const auto mine = python_samples_of(*r, worker);
    const auto& expected = *stacks_by_tid.begin()->second.begin();
    ASSERT_GE(total(mine), kMinSamples)
        << "expected ~" << kRequestsPerWorker * request_ms / 1000.0 << " s of CPU in the handler; "
        << refusal(*r, worker) << "\n"
        << r->stderr_text;
    const int64_t exact = count_exact_of(mine, stacks_by_tid);
    EXPECT_GE(exact, kExactFraction * total(mine)) << describe_mismatches(mine, expected);
    std::cout << fmt::format(
        "[ stats    ] {} worker {}: {} of {} Python samples exact "
        "({:.1f}%), {} threads served\n",
        label, worker, exact, total(mine),
        100.0 * static_cast<double>(exact) / static_cast<double>(std::max<int64_t>(1, total(mine))),
        stacks_by_tid.size());
  }
}

struct UwsgiVariant {
  std::string name;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  int stale_states = 0;  // thread states of master threads that did not fork
};

void PrintTo(const UwsgiVariant& v, std::ostream* os) {
  *os << v.name;
}

class ForkedUwsgi : public ::testing::TestWithParam<UwsgiVariant> {};

TEST_P(ForkedUwsgi, EveryWorkerIsProfiledWithTheHandlersExactStack) {
  require_root();
  ASSERT_TRUE(std::filesystem::exists(kUwsgi))
      << kUwsgi << " is missing: run scripts/setup --tests";
  auto server = ForkingServer::start(
      [&](int port) {
        std::vector<std::string> argv = {kUwsgi,          "--plugin",
                                         "python3",       "--master",
                                         "--processes",   std::to_string(kWorkers),
                                         "--http-socket", fmt::format("127.0.0.1:{}", port),
                                         "--wsgi-file",   workload_path("wsgi_app.py"),
                                         "--need-app",    "--disable-logging",
                                         "--die-on-term"};
        argv.insert(argv.end(), GetParam().args.begin(), GetParam().args.end());
        return argv;
      },
      GetParam().env);
  ASSERT_TRUE(server.ok()) << server.error().message;
  check_workers("uwsgi " + GetParam().name, *server, {}, GetParam().stale_states, "wsgi_app.py");
}

INSTANTIATE_TEST_SUITE_P(
    Variants, ForkedUwsgi,
    ::testing::Values(UwsgiVariant{"threads", {"--threads", "2"}},
                      UwsgiVariant{"lazy_apps", {"--threads", "2", "--lazy-apps"}},
                      UwsgiVariant{"enable_threads", {"--enable-threads"}},
                      // The master runs a second Python thread when it forks:
                      // each worker inherits a state no thread of its own runs,
                      // and its request threads may reuse that thread's stack.
                      UwsgiVariant{
                          "master_thread", {"--threads", "2"}, {{"WSGI_APP_BACKGROUND", "1"}}, 1}),
    [](const ::testing::TestParamInfo<UwsgiVariant>& info) { return info.param.name; });

// gunicorn (Debian's, on /usr/bin/python3.11) forks its workers with
// os.fork after importing itself, each worker importing the application:
// sync workers serve on their main thread, gthread workers on a pool of
// threads, gevent workers on greenlets of their main thread.
// gunicorn parses HTTP in Python: each request spends more Python around
// the handler than uWSGI's (gevent's bookkeeping more still), each sample
// there on a stack of its own. With 100 ms requests 95.2-100% (gevent
// 92.5-99.3%) of the samples were exact; longer requests keep that framing
// out of the 5%.
constexpr int kGunicornRequestMs = 250;

struct GunicornVariant {
  std::string name;
  std::vector<std::string> args;
  std::vector<std::string> record_args;
  int request_ms = kGunicornRequestMs;
};

void PrintTo(const GunicornVariant& v, std::ostream* os) {
  *os << v.name;
}

class ForkedGunicorn : public ::testing::TestWithParam<GunicornVariant> {};

TEST_P(ForkedGunicorn, EveryWorkerIsProfiledWithTheHandlersExactStack) {
  require_root();
  ASSERT_TRUE(std::filesystem::exists(kGunicorn))
      << kGunicorn << " is missing: run scripts/setup --tests";
  const std::string app_dir = std::filesystem::path(workload_path("wsgi_app.py")).parent_path();
  auto server = ForkingServer::start(
      [&](int port) {
        std::vector<std::string> argv = {kGunicorn,
                                         "--workers",
                                         std::to_string(kWorkers),
                                         "--bind",
                                         fmt::format("127.0.0.1:{}", port),
                                         "--chdir",
                                         app_dir,
                                         "--timeout",
                                         "120"};
        argv.insert(argv.end(), GetParam().args.begin(), GetParam().args.end());
        argv.push_back("wsgi_app:application");
        return argv;
      },
      {});
  ASSERT_TRUE(server.ok()) << server.error().message;
  check_workers("gunicorn " + GetParam().name, *server, GetParam().record_args, 0, "wsgi_app",
                GetParam().request_ms);
}

INSTANTIATE_TEST_SUITE_P(
    WorkerClasses, ForkedGunicorn,
    ::testing::Values(
        GunicornVariant{"sync", {"--worker-class", "sync"}, {}},
        GunicornVariant{"gthread", {"--worker-class", "gthread", "--threads", "2"}, {}},
        // A gevent worker serves each request on a greenlet of
        // its main thread, in mixed and in Python-only stacks.
        GunicornVariant{"gevent", {"--worker-class", "gevent"}, {}},
        GunicornVariant{
            "gevent_python_stacks", {"--worker-class", "gevent"}, {"--stacks", "python"}}),
    [](const ::testing::TestParamInfo<GunicornVariant>& info) { return info.param.name; });

// Through a live daemon: every process of a server, its master and each
// worker, is delivered under the application's name, not the server's.
struct DaemonServer {
  std::string name;
  std::string app;
  std::function<std::vector<std::string>(const StagedWorkloads&, int port)> argv;
};

void PrintTo(const DaemonServer& s, std::ostream* os) {
  *os << s.name;
}

class ForkedDaemon : public ::testing::TestWithParam<DaemonServer> {};

TEST_P(ForkedDaemon, DeliversEveryWorkerUnderItsApplicationsName) {
  LiveRun run;
  ASSERT_NO_FATAL_FAILURE(start_live_run(run));
  auto server =
      ForkingServer::start([&](int port) { return GetParam().argv(run.staged, port); }, {});
  ASSERT_TRUE(server.ok()) << server.error().message;
  const std::vector<pid_t> workers = server->workers();
  ASSERT_EQ(workers.size(), static_cast<size_t>(kWorkers));
  const std::string& app = GetParam().app;

  // Both servers' command lines name the staged directory (gunicorn's
  // --chdir without the trailing slash the staged selector has).
  const std::string staged_dir =
      std::filesystem::path(run.staged.path("wsgi_app.py")).parent_path().string();
  auto daemon = Daemon::start(daemon_args(*run.server, regex_escape(staged_dir)));
  ASSERT_TRUE(daemon.ok()) << daemon.error().message;
  const Load load = drive(server->port(), workers, kGunicornRequestMs);
  ASSERT_TRUE(load.error.empty()) << load.error << "\n" << server->stderr_text();
  // The interval the load ended in, delivered.
  const size_t after_load = count_application(run.server->profiles(), app);
  ASSERT_TRUE(wait_for(
      *run.server, [&](const auto& p) { return count_application(p, app) >= after_load + 1; }, 30s))
      << "profiles received: " << run.server->profiles().size() << "\n"
      << daemon->log();
  ASSERT_NO_FATAL_FAILURE(expect_clean_stop(*daemon));

  auto received = decode_received(run.server->profiles());
  ASSERT_TRUE(received.ok()) << received.error().message;
  const auto mine = of_application(*received, app);
  const std::set<std::string> applications = applications_of(*received);
  for (pid_t worker : workers) {
    EXPECT_GE(samples_of(mine, worker), kMinSamples)
        << "worker " << worker << " under " << app
        << "; applications received: " << fmt::format("{}", fmt::join(applications, ", "));
    for (const std::string& other : applications) {
      if (other != app) {
        EXPECT_EQ(samples_of(of_application(*received, other), worker), 0)
            << "worker " << worker << " under " << other;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Servers, ForkedDaemon,
    ::testing::Values(DaemonServer{"uwsgi", "wsgi_app.py",
                                   [](const StagedWorkloads& staged, int port) {
                                     return std::vector<std::string>{
                                         kUwsgi,          "--plugin",
                                         "python3",       "--master",
                                         "--processes",   std::to_string(kWorkers),
                                         "--threads",     "2",
                                         "--http-socket", fmt::format("127.0.0.1:{}", port),
                                         "--wsgi-file",   staged.path("wsgi_app.py"),
                                         "--need-app",    "--disable-logging",
                                         "--die-on-term"};
                                   }},
                      DaemonServer{
                          "gunicorn", "wsgi_app",
                          [](const StagedWorkloads& staged, int port) {
                            return std::vector<std::string>{
                                kGunicorn,
                                "--workers",
                                std::to_string(kWorkers),
                                "--bind",
                                fmt::format("127.0.0.1:{}", port),
                                "--chdir",
                                std::filesystem::path(staged.path("wsgi_app.py")).parent_path(),
                                "--timeout",
                                "120",
                                "wsgi_app:application"};
                          }}),
    [](const ::testing::TestParamInfo<DaemonServer>& info) { return info.param.name; });

// Celery's prefork pool (Debian's python3-celery on /usr/bin/python3.11):
// the worker forks its pool children with billiard; each child runs tasks of
// tests/workloads/celery_app.py, queued through kombu's filesystem transport
// (no broker server), each reporting its pid, thread and stack in a file.
constexpr int kPoolChildren = 2;
constexpr int kTaskMs = 250;
// Tasks per child: ~1.5 s of CPU, ~148 samples at 99 Hz.
constexpr int kTasksPerChild = 6;
constexpr int kMaxTasks = 200;

Result<std::vector<Served>> read_task_reports(const std::string& dir) {
  std::vector<Served> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json")
      continue;
    auto text = read_file(entry.path().string(), 1 << 20);
    if (!text)
      return text.error();
    auto served = parse_served(*text);
    if (!served)
      return served.error().context(entry.path().string());
    out.push_back(std::move(*served));
  }
  if (ec)
    return make_error("{}: {}", dir, ec.message());
  return out;
}

TEST(ForkedCelery, EveryPoolChildIsProfiledWithTheTasksExactStack) {
  require_root();
  ASSERT_TRUE(std::filesystem::exists(kDebianPython))
      << kDebianPython << " is missing: run scripts/setup --tests";
  TempDir queue;
  const std::string app_dir = std::filesystem::path(workload_path("celery_app.py")).parent_path();
  SpawnOptions o;
  o.argv = {kDebianPython,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            std::to_string(kPoolChildren),
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-O",
            "fair"};
  o.env = {{"CELERY_APP_DIR", queue.path()}, {"PYTHONPATH", app_dir}};
  auto worker = ChildProcess::spawn(o);
  ASSERT_TRUE(worker.ok()) << worker.error().message;
  struct Killer {
    ChildProcess& p;
    ~Killer() {
      if (p.pid() <= 0 || p.reaped())
        return;
      for (pid_t child : children_of(p.pid()))
        ::kill(child, SIGKILL);
      p.kill();
    }
  } killer{*worker};
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (children_of(worker->pid()).size() != kPoolChildren) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "no pool of " << kPoolChildren << " in 60 s: " << worker->stderr_text();
    auto exited = worker->wait(20ms);
    ASSERT_FALSE(exited.ok()) << "celery ended: " << exited->describe() << worker->stderr_text();
  }
  const std::vector<pid_t> children = children_of(worker->pid());
  EXPECT_EQ(judge_app_name(worker->pid(), "celery_app"), "") << "worker";
  for (pid_t child : children)
    EXPECT_EQ(judge_app_name(child, "celery_app"), "") << "pool child " << child;

  TempDir dir;
  auto rec = Recording::start({}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  // Keeps a few tasks queued until every child ran kTasksPerChild of them
  // (a minute of wall time on a loaded machine, hence the generous bound);
  // each `send` (a Python process queueing tasks) paces the loop, as does
  // waiting on the worker when nothing needs sending.
  std::vector<Served> reports;
  int sent = 0;
  std::string load_error;
  deadline = std::chrono::steady_clock::now() + 120s;
  for (;;) {
    auto got = read_task_reports(queue.path() + "/reports");
    if (!got) {
      load_error = got.error().message;
      break;
    }
    reports = std::move(*got);
    std::map<int64_t, int> per_child;
    for (const Served& s : reports)
      ++per_child[s.pid];
    if (std::all_of(children.begin(), children.end(),
                    [&](pid_t c) { return per_child[c] >= kTasksPerChild; }))
      break;
    if (std::chrono::steady_clock::now() > deadline || sent >= kMaxTasks) {
      load_error = fmt::format("{} tasks sent, {} done in 120 s, not {} by each child", sent,
                               reports.size(), kTasksPerChild);
      break;
    }
    if (sent - static_cast<int>(reports.size()) < 2 * kPoolChildren) {
      SpawnOptions send;
      send.argv = {kDebianPython, workload_path("celery_app.py"), "send",
                   std::to_string(2 * kPoolChildren), std::to_string(kTaskMs)};
      send.env = {{"CELERY_APP_DIR", queue.path()}};
      auto sender = ChildProcess::spawn(send);
      auto status = sender ? sender->wait(60s) : Result<ExitStatus>(sender.error());
      if (!status || !status->success()) {
        load_error =
            "celery_app.py send: " +
            (status ? status->describe() + " " + sender->stderr_text() : status.error().message);
        break;
      }
      sent += 2 * kPoolChildren;
    } else {
      auto exited = worker->wait(20ms);
      if (exited.ok()) {
        load_error = "celery ended: " + exited->describe();
        break;
      }
    }
  }
  auto r = rec->stop();
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(load_error.empty()) << load_error << "\n" << worker->stderr_text();

  for (pid_t child : children) {
    SCOPED_TRACE(fmt::format("pool child {}", child));
    std::map<int64_t, std::vector<std::vector<Frame>>> stacks_by_tid;
    for (const Served& s : reports)
      if (s.pid == child) {
        auto& stacks = stacks_by_tid[s.tid];
        if (std::find(stacks.begin(), stacks.end(), s.stack) == stacks.end())
          stacks.push_back(s.stack);
      }
    ASSERT_FALSE(stacks_by_tid.empty()) << "the child ran no task";
    EXPECT_EQ(refusal(*r, child), "") << r->stderr_text;
    const auto& expected = *stacks_by_tid.begin()->second.begin();
    // Between tasks a child waits for work, takes it and reports: those
    // samples are outside the task; the task's own are judged by stack.
    auto task = std::find_if(expected.begin(), expected.end(),
                             [](const Frame& f) { return f.function == "burn"; });
    ASSERT_NE(task, expected.end()) << format_stack(expected);
    const Frame target = *task;
    std::vector<ProfileSample> in_task;
    for (const ProfileSample& s : python_samples_of(*r, child))
      if (std::find(s.stack.begin(), s.stack.end(), target) != s.stack.end())
        in_task.push_back(s);
    ASSERT_GE(total(in_task), kMinSamples)
        << "expected ~148 samples in the task; " << refusal(*r, child) << "\n"
        << r->stderr_text;
    const int64_t exact = count_exact_of(in_task, stacks_by_tid);
    EXPECT_GE(exact, kExactFraction * total(in_task)) << describe_mismatches(in_task, expected);
    std::cout << fmt::format(
        "[ stats    ] celery prefork child {}: {} of {} Python samples in the task exact "
        "({:.1f}%)\n",
        child, exact, total(in_task),
        100.0 * static_cast<double>(exact) /
            static_cast<double>(std::max<int64_t>(1, total(in_task))));
  }
}

struct MpCase {
  std::string interpreter;
  std::string method;
};

void PrintTo(const MpCase& c, std::ostream* os) {
  *os << c.interpreter << " " << c.method;
}

class ForkedMultiprocessing : public ::testing::TestWithParam<MpCase> {};

TEST_P(ForkedMultiprocessing, EveryChildIsProfiledWithItsExactStack) {
  require_root();
  const Interpreter interp = interpreter_named(GetParam().interpreter);
  ASSERT_FALSE(interp.executable.empty());
  TempDir dir;
  auto rec = Recording::start({}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto child = ChildProcess::spawn(workload_options(
      interp, "mp_children.py", {"--method", GetParam().method, "--seconds", "1.5"}));
  ASSERT_TRUE(child.ok()) << child.error().message;

  struct ChildTruth {
    std::vector<Frame> stack;
    double startup_cpu_s = 0;
  };
  std::map<int64_t, ChildTruth> truth;  // by child pid
  for (;;) {
    auto line = child->read_line(120s);
    ASSERT_TRUE(line.ok()) << line.error().message;
    auto json = parse_json(*line);
    ASSERT_TRUE(json.ok()) << *line;
    auto kind = json_string(*json, "kind");
    ASSERT_TRUE(kind.ok()) << *line;
    if (*kind == "end")
      break;
    if (*kind != "child")
      continue;
    auto pid = json_int(*json, "pid");
    auto stack = json_array(*json, "stack");
    const JsonValue* startup = json->find("startup_cpu_s");
    ASSERT_TRUE(pid.ok() && stack.ok() && startup && startup->is_number()) << *line;
    auto frames = parse_stack(**stack);
    ASSERT_TRUE(frames.ok()) << frames.error().message;
    truth[*pid] = {std::move(*frames), startup->number};
  }
  auto status = child->wait(60s);
  ASSERT_TRUE(status.ok()) << status.error().message;
  auto r = rec->stop();
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(truth.size(), 2u) << child->stderr_text();

  for (const auto& [pid, t] : truth) {
    SCOPED_TRACE(fmt::format("child {}", pid));
    EXPECT_EQ(refusal(*r, pid), "") << r->stderr_text;
    const auto mine = python_samples_of(*r, pid);
    // A child starts (imports, unpickles) before it runs its target and
    // tears down after it: those samples are judged by count, against the
    // CPU time the child says it spent before (exiting takes less), the
    // target's by their stacks.
    auto work = std::find_if(t.stack.begin(), t.stack.end(),
                             [](const Frame& f) { return f.function == "work"; });
    ASSERT_NE(work, t.stack.end()) << format_stack(t.stack);
    const Frame target = *work;
    std::vector<ProfileSample> in_target;
    int64_t startup = 0;
    for (const ProfileSample& s : mine) {
      if (std::find(s.stack.begin(), s.stack.end(), target) != s.stack.end())
        in_target.push_back(s);
      else
        startup += s.count;
    }
    const double startup_bound = t.startup_cpu_s * kRateHz * 2 + 10;
    EXPECT_LE(static_cast<double>(startup), startup_bound)
        << "samples outside the child's target; it ran " << t.startup_cpu_s
        << " s of CPU before it\n"
        << describe_mismatches(mine, t.stack);
    ASSERT_GE(total(in_target), kMinSamples)
        << "expected ~148 samples in 1.5 s of CPU at 99 Hz; " << refusal(*r, pid) << "\n"
        << r->stderr_text;
    const int64_t exact = count_exact(in_target, t.stack);
    EXPECT_GE(exact, kExactFraction * total(in_target)) << describe_mismatches(in_target, t.stack);
    std::cout << fmt::format(
        "[ stats    ] {} {} child {}: {} of {} Python samples in its target exact ({:.1f}%); {} "
        "samples outside it ({:.3f} s of CPU before it)\n",
        GetParam().interpreter, GetParam().method, pid, exact, total(in_target),
        100.0 * static_cast<double>(exact) /
            static_cast<double>(std::max<int64_t>(1, total(in_target))),
        startup, t.startup_cpu_s);
  }
}

INSTANTIATE_TEST_SUITE_P(
    StartMethods, ForkedMultiprocessing,
    ::testing::Values(MpCase{"pyenv-3.12.1", "fork"}, MpCase{"pyenv-3.12.1", "spawn"},
                      MpCase{"pyenv-3.12.1", "forkserver"}, MpCase{"debian-3.11.2", "fork"},
                      MpCase{"debian-3.11.2", "spawn"}, MpCase{"debian-3.11.2", "forkserver"}),
    [](const ::testing::TestParamInfo<MpCase>& info) {
      std::string name = info.param.interpreter + "_" + info.param.method;
      for (char& c : name)
        if (c == '-' || c == '.')
          c = '_';
      return name;
    });

}  // namespace
}  // namespace krait::test
