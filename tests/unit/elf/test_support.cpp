#include "test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <utility>

namespace krait::test {
namespace {

std::vector<std::string> split_ws(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  std::string token;
  while (in >> token)
    out.push_back(token);
  return out;
}

// readelf prints hex with or without 0x, sizes in decimal unless large.
uint64_t parse_hex(const std::string& s) {
  return std::strtoull(s.c_str(), nullptr, 16);
}
uint64_t parse_auto(const std::string& s) {
  return std::strtoull(s.c_str(), nullptr, 0);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    out.push_back(line);
  return out;
}

void write_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    data += n;
    len -= static_cast<size_t>(n);
  }
}

}  // namespace

const Fixtures& fixtures() {
  static const Fixtures f{
      .pie = KRAIT_FIXTURE_PIE,
      .lib = KRAIT_FIXTURE_LIB,
      .static_exe = KRAIT_FIXTURE_STATIC,
      .ibt = KRAIT_FIXTURE_IBT,
      .stripped = KRAIT_FIXTURE_STRIPPED,
      .debuglinked = KRAIT_FIXTURE_DEBUGLINKED,
      .debug_file = KRAIT_FIXTURE_DEBUG_FILE,
      .readelf = KRAIT_READELF,
      .nm = KRAIT_NM,
      .objdump = KRAIT_OBJDUMP,
  };
  return f;
}

std::string missing_fixtures() {
  const Fixtures& f = fixtures();
  std::string missing;
  for (const std::string& path : {f.pie, f.lib, f.static_exe, f.ibt, f.stripped, f.debuglinked,
                                  f.debug_file, f.readelf, f.nm, f.objdump}) {
    if (::access(path.c_str(), R_OK) != 0)
      missing += " " + path;
  }
  if (missing.empty())
    return "";
  return "missing fixtures or tools (build the krait_elf_fixtures target; install binutils):" +
         missing;
}

CommandResult run_command(const std::vector<std::string>& argv) {
  CommandResult result;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    return result;
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return result;
  }
  if (pid == 0) {
    ::dup2(pipe_fds[1], 1);
    int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0)
      ::dup2(null_fd, 2);
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // C locale: the oracles parse readelf's English output.
    ::setenv("LC_ALL", "C", 1);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    result.out.append(buffer, static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

Oracle readelf_oracle(const std::string& path) {
  Oracle oracle;
  const std::string& readelf = fixtures().readelf;
  auto run = [&](std::vector<std::string> args) -> std::vector<std::string> {
    args.insert(args.begin(), readelf);
    args.push_back(path);
    CommandResult r = run_command(args);
    if (r.exit_code != 0 && oracle.error.empty())
      oracle.error =
          "readelf " + args[1] + " " + path + " failed (exit " + std::to_string(r.exit_code) + ")";
    return lines_of(r.out);
  };

  for (const std::string& line : run({"-hW"})) {
    auto tokens = split_ws(line);
    if (tokens.size() >= 2 && tokens[0] == "Type:")
      oracle.elf_type = tokens[1];
  }

  std::string table;
  for (const std::string& line : run({"-sW"})) {
    if (line.rfind("Symbol table '", 0) == 0) {
      size_t end = line.find('\'', 14);
      table = line.substr(14, end - 14);
      continue;
    }
    auto tokens = split_ws(line);
    // "Num: Value Size Type Bind Vis Ndx [Name]"
    if (table.empty() || tokens.size() < 7 || tokens[0].back() != ':' || tokens[0] == "Num:")
      continue;
    OracleSymbol sym;
    sym.value = parse_hex(tokens[1]);
    sym.size = parse_auto(tokens[2]);
    sym.type = tokens[3];
    sym.bind = tokens[4];
    sym.ndx = tokens[6];
    // readelf appends version information to .dynsym names ("printf@GLIBC_2.2.5
    // (2)"); in .symtab a versioned name is the literal string table entry.
    if (tokens.size() >= 8)
      sym.name = table == ".dynsym" ? tokens[7].substr(0, tokens[7].find('@')) : tokens[7];
    oracle.symbols[table].push_back(sym);
  }

  for (const std::string& line : run({"-SW"})) {
    // "  [Nr] Name Type Address Off Size ES Flg Lk Inf Al"
    size_t open = line.find('[');
    size_t close = line.find(']');
    if (open == std::string::npos || close == std::string::npos || close < open)
      continue;
    std::string number = line.substr(open + 1, close - open - 1);
    if (number.find_first_not_of(' ') == std::string::npos ||
        !std::isdigit(static_cast<unsigned char>(number.back())))
      continue;
    auto tokens = split_ws(line.substr(close + 1));
    if (tokens.size() < 5)
      continue;
    if (tokens[0] == "NULL")  // section 0 has no name
      continue;
    oracle.sections.push_back(OracleSection{.name = tokens[0],
                                            .type = tokens[1],
                                            .addr = parse_hex(tokens[2]),
                                            .offset = parse_hex(tokens[3]),
                                            .size = parse_hex(tokens[4])});
  }

  for (const std::string& line : run({"-lW"})) {
    auto tokens = split_ws(line);
    // "TYPE Offset VirtAddr PhysAddr FileSiz MemSiz Flg... Align"
    if (tokens.size() < 8 || tokens[1].rfind("0x", 0) != 0)
      continue;
    OracleSegment seg;
    seg.type = tokens[0];
    seg.offset = parse_hex(tokens[1]);
    seg.vaddr = parse_hex(tokens[2]);
    seg.filesz = parse_hex(tokens[4]);
    seg.memsz = parse_hex(tokens[5]);
    seg.align = parse_hex(tokens.back());
    for (size_t i = 6; i + 1 < tokens.size(); ++i)
      seg.flags += tokens[i];
    oracle.segments.push_back(seg);
  }

  for (const std::string& line : run({"-nW"})) {
    const std::string marker = "Build ID: ";
    if (size_t at = line.find(marker); at != std::string::npos && oracle.build_id.empty())
      oracle.build_id = split_ws(line.substr(at + marker.size())).at(0);
  }

  for (const std::string& line : run({"-dW"})) {
    size_t open = line.find('[');
    size_t close = line.rfind(']');
    if (open == std::string::npos || close == std::string::npos || close < open)
      continue;
    std::string value = line.substr(open + 1, close - open - 1);
    if (line.find("(NEEDED)") != std::string::npos)
      oracle.needed.push_back(value);
    else if (line.find("(SONAME)") != std::string::npos)
      oracle.soname = value;
  }

  // --debug-dump=links complains on stderr when the debug file is not found
  // and may exit non-zero for that, so its status is not checked.
  CommandResult links = run_command({readelf, "--debug-dump=links", path});
  for (const std::string& line : lines_of(links.out)) {
    const std::string marker = "Separate debug info file: ";
    if (size_t at = line.find(marker); at != std::string::npos)
      oracle.debuglink = line.substr(at + marker.size());
  }
  return oracle;
}

NmResult nm_defined(const std::string& path, bool dynamic) {
  NmResult result;
  std::vector<std::string> args{fixtures().nm, "-P", "--defined-only"};
  if (dynamic)
    args.push_back("-D");
  args.push_back(path);
  CommandResult r = run_command(args);
  if (r.exit_code != 0) {
    result.error = "nm failed on " + path;
    return result;
  }
  for (const std::string& line : lines_of(r.out)) {
    // POSIX format: "name type value [size]"
    auto tokens = split_ws(line);
    if (tokens.size() < 3)
      continue;
    result.values.emplace(tokens[0].substr(0, tokens[0].find('@')), parse_hex(tokens[2]));
  }
  return result;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::vector<uint8_t> out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return out;
  uint8_t buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    out.insert(out.end(), buffer, buffer + n);
  }
  ::close(fd);
  return out;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool executable) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, executable ? 0755 : 0644);
  if (fd < 0)
    return;
  write_all(fd, reinterpret_cast<const char*>(bytes.data()), bytes.size());
  ::close(fd);
}

std::string real_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr)
    return path;
  std::string out(resolved);
  ::free(resolved);
  return out;
}

Child Child::spawn(const std::vector<std::string>& argv, const std::function<bool()>& in_child) {
  Child child;
  int to_child[2];
  int from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0)
    return child;
  if (::pipe2(from_child, O_CLOEXEC) != 0) {
    ::close(to_child[0]);
    ::close(to_child[1]);
    return child;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    if (in_child && !in_child())
      ::_exit(127);
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  if (pid < 0) {
    ::close(to_child[1]);
    ::close(from_child[0]);
    return child;
  }
  child.pid_ = pid;
  child.stdin_fd_ = to_child[1];
  child.stdout_fd_ = from_child[0];
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdin_fd_(std::exchange(other.stdin_fd_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      buffered_(std::move(other.buffered_)) {}

Child::~Child() {
  if (stdin_fd_ >= 0)
    ::close(stdin_fd_);
  if (stdout_fd_ >= 0)
    ::close(stdout_fd_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

std::string Child::read_line() {
  for (;;) {
    if (size_t newline = buffered_.find('\n'); newline != std::string::npos) {
      std::string line = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      return line;
    }
    if (stdout_fd_ < 0)
      break;
    char buffer[4096];
    ssize_t n = ::read(stdout_fd_, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    buffered_.append(buffer, static_cast<size_t>(n));
  }
  return std::exchange(buffered_, std::string());
}

int Child::finish() {
  if (stdin_fd_ >= 0) {
    ::close(stdin_fd_);
    stdin_fd_ = -1;
  }
  if (pid_ <= 0)
    return -1;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::map<std::string, uint64_t> parse_addresses(const std::string& line) {
  std::map<std::string, uint64_t> out;
  for (const std::string& token : split_ws(line)) {
    size_t eq = token.find('=');
    if (eq == std::string::npos)
      continue;
    out[token.substr(0, eq)] = std::strtoull(token.c_str() + eq + 1, nullptr, 16);
  }
  return out;
}

}  // namespace krait::test
