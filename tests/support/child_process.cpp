#include "support/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

extern char** environ;

namespace krait::test {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

ExitStatus decode(int status) {
  ExitStatus out;
  if (WIFEXITED(status)) {
    out.exited = true;
    out.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out.signal = WTERMSIG(status);
  }
  return out;
}

std::vector<std::string> merged_environment(
    const std::map<std::string, std::optional<std::string>>& changes) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    size_t eq = entry.find('=');
    if (eq != std::string::npos)
      vars[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [key, value] : changes) {
    if (value)
      vars[key] = *value;
    else
      vars.erase(key);
  }
  std::vector<std::string> out;
  for (const auto& [key, value] : vars)
    out.push_back(key + "=" + value);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings)
    out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (exited)
    return fmt::format("exit {}", code);
  return fmt::format("signal {} ({})", signal, strsignal(signal));
}

Result<ChildProcess> ChildProcess::spawn(const SpawnOptions& options) {
  if (options.argv.empty())
    return make_error("spawn: empty argv");
  // Everything the child touches after fork is prepared here: between fork and
  // exec only async-signal-safe calls are allowed.
  std::vector<std::string> argv_strings = options.argv;
  std::vector<std::string> env_strings = merged_environment(options.env);
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<char*> envp = pointers(env_strings);
  const std::string program = options.program.value_or(options.argv[0]);

  int out_pipe[2];
  int err_pipe[2];
  int exec_pipe[2];  // carries errno of a failed exec; closes on success
  if (pipe2(out_pipe, O_CLOEXEC) != 0)
    return make_error("pipe2: {}", strerror(errno));
  UniqueFd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0)
    return make_error("pipe2: {}", strerror(errno));
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);
  if (pipe2(exec_pipe, O_CLOEXEC) != 0)
    return make_error("pipe2: {}", strerror(errno));
  UniqueFd exec_read(exec_pipe[0]), exec_write(exec_pipe[1]);

  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return make_error("fork: {}", strerror(errno));
  if (pid == 0) {
    // First: a change of credentials clears the parent-death signal.
    if (options.run_as) {
      const Credentials c = *options.run_as;
      if (setgroups(0, nullptr) != 0 || setresgid(c.gid, c.gid, c.gid) != 0 ||
          setresuid(c.uid, c.uid, c.uid) != 0) {
        int err = errno;
        ssize_t ignored = write(exec_write.get(), &err, sizeof err);
        (void)ignored;
        _exit(127);
      }
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died before prctl took effect.
    if (getppid() != parent)
      _exit(127);
    dup2(out_write.get(), STDOUT_FILENO);
    dup2(err_write.get(), STDERR_FILENO);
    execve(program.c_str(), argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = write(exec_write.get(), &err, sizeof err);
    (void)ignored;
    _exit(127);
  }
  out_write.reset();
  err_write.reset();
  exec_write.reset();

  int exec_errno = 0;
  ssize_t n;
  do {
    n = read(exec_read.get(), &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (options.run_as)
      return make_error("cannot execute {} as uid {} gid {}: {}", program, options.run_as->uid,
                        options.run_as->gid, strerror(exec_errno));
    return make_error("cannot execute {}: {}", program, strerror(exec_errno));
  }

  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    return make_error("pidfd_open: {}", strerror(err));
  }
  fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
  fcntl(err_read.get(), F_SETFL, O_NONBLOCK);
  return ChildProcess(pid, UniqueFd(pidfd), std::move(out_read), std::move(err_read));
}

ChildProcess::ChildProcess(pid_t pid, UniqueFd pidfd, UniqueFd out, UniqueFd err)
    : pid_(pid), pidfd_(std::move(pidfd)), out_(std::move(out)), err_(std::move(err)) {}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      out_(std::move(other.out_)),
      err_(std::move(other.err_)),
      out_buffer_(std::move(other.out_buffer_)),
      err_buffer_(std::move(other.err_buffer_)),
      status_(std::exchange(other.status_, std::nullopt)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    kill();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    out_ = std::move(other.out_);
    err_ = std::move(other.err_);
    out_buffer_ = std::move(other.out_buffer_);
    err_buffer_ = std::move(other.err_buffer_);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  kill();
}

bool ChildProcess::pump(std::chrono::milliseconds timeout) {
  if (!out_.valid())
    return false;
  pollfd fds[2] = {{out_.get(), POLLIN, 0}, {err_.valid() ? err_.get() : -1, POLLIN, 0}};
  int ready = poll(fds, 2, static_cast<int>(timeout.count()));
  if (ready <= 0)
    return true;
  if (fds[1].revents != 0)
    drain_stderr();
  if (fds[0].revents == 0)
    return true;
  char chunk[65536];
  while (true) {
    ssize_t n = read(out_.get(), chunk, sizeof chunk);
    if (n > 0) {
      out_buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return true;
    out_.reset();  // end of file or a read error: no more lines will come
    return false;
  }
}

void ChildProcess::drain_stderr() {
  char chunk[65536];
  while (err_.valid()) {
    ssize_t n = read(err_.get(), chunk, sizeof chunk);
    if (n > 0) {
      err_buffer_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return;
    err_.reset();
  }
}

Result<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    size_t newline = out_buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = out_buffer_.substr(0, newline);
      out_buffer_.erase(0, newline + 1);
      return line;
    }
    if (!out_.valid()) {
      // Give stderr a moment's worth of data: the child has closed stdout,
      // usually by exiting, and its last words explain why.
      if (err_.valid()) {
        pollfd fd = {err_.get(), POLLIN, 0};
        while (poll(&fd, 1, 1000) > 0 && err_.valid()) {
          drain_stderr();
          fd.fd = err_.valid() ? err_.get() : -1;
        }
      }
      return make_error("pid {} closed stdout{}; stderr: {}", pid_,
                        out_buffer_.empty() ? "" : " after a partial line", err_buffer_);
    }
    int left = remaining_ms(deadline);
    if (left == 0) {
      drain_stderr();
      return make_error("no line from pid {} within {} ms; stderr so far: {}", pid_,
                        timeout.count(), err_buffer_);
    }
    pump(std::chrono::milliseconds(left));
  }
}

Result<void> ChildProcess::signal(int sig) {
  if (status_ || pid_ < 0)
    return make_error("pid {} is already reaped", pid_);
  if (syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0)
    return make_error("signal {} to pid {}: {}", sig, pid_, strerror(errno));
  return {};
}

Result<ExitStatus> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_)
    return *status_;
  if (pid_ < 0)
    return make_error("no child");
  auto deadline = Clock::now() + timeout;
  while (true) {
    // The pipes are read while waiting: a child blocked on a full pipe would
    // never exit.
    pollfd fds[3] = {{pidfd_.get(), POLLIN, 0},
                     {out_.valid() ? out_.get() : -1, POLLIN, 0},
                     {err_.valid() ? err_.get() : -1, POLLIN, 0}};
    int left = remaining_ms(deadline);
    int ready = poll(fds, 3, left);
    if (ready < 0 && errno == EINTR)
      continue;
    if (fds[0].revents != 0) {
      reap_blocking();
      return *status_;
    }
    if (fds[1].revents != 0)
      pump(std::chrono::milliseconds(0));
    if (fds[2].revents != 0)
      drain_stderr();
    if (ready <= 0 && left == 0)
      return make_error("pid {} still running after {} ms", pid_, timeout.count());
  }
}

void ChildProcess::reap_blocking() {
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  status_ = decode(status);
  drain_stderr();
}

ExitStatus ChildProcess::kill() {
  if (status_ || pid_ < 0)
    return status_.value_or(ExitStatus{});
  syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  reap_blocking();
  return *status_;
}

const std::string& ChildProcess::stderr_text() {
  drain_stderr();
  return err_buffer_;
}

}  // namespace krait::test
