#include "test_support.h"

#include <stdio.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

namespace krait::python::testing {

namespace fs = std::filesystem;

const std::vector<std::string>& pyenv_versions() {
  static const std::vector<std::string> versions = {
      "2.7.18", "3.6.15", "3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"};
  return versions;
}

std::string pyenv_root() {
  if (const char* root = std::getenv("PYENV_ROOT"); root && *root)
    return root;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.pyenv";
}

std::string pyenv_python(const std::string& version) {
  return pyenv_root() + "/versions/" + version + "/bin/python";
}

std::string pyenv_libpython(const std::string& version) {
  fs::path lib = fs::path(pyenv_root()) / "versions" / version / "lib";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(lib, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("libpython") && name.ends_with(".so.1.0"))
      return entry.path().string();
  }
  return "";
}

std::string source_dir() {
  return KRAIT_SOURCE_DIR;
}

std::optional<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe)
    return result;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
    result.output.append(buf, n);
  int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

namespace {

// Name declared by one `ptype` member line ("PyObject *ob_type;",
// "void (*on_delete)(void *);", "unsigned int kind : 3;", "char x[8];").
std::string declared_name(std::string decl) {
  if (!decl.empty() && decl.back() == ';')
    decl.pop_back();
  if (size_t fp = decl.find("(*"); fp != std::string::npos) {
    size_t end = decl.find(')', fp);
    return decl.substr(fp + 2, end - fp - 2);
  }
  if (size_t colon = decl.find(" : "); colon != std::string::npos)
    decl.resize(colon);
  while (!decl.empty() && decl.back() == ']')
    decl.resize(decl.rfind('['));
  size_t start = decl.find_last_of(" *");
  return start == std::string::npos ? decl : decl.substr(start + 1);
}

}  // namespace

GdbLayout gdb_ptype(const std::string& file, const std::string& type) {
  GdbLayout layout;
  CommandResult r = run_command("gdb -nx -batch -ex 'set max-value-size unlimited' -ex 'ptype /o " +
                                type + "' '" + file + "'");
  if (r.status != 0) {
    layout.error = "gdb failed (is gdb installed?): " + r.output;
    return layout;
  }
  static const std::regex offset_line(R"(^/\*\s+(\d+)(?::\s*(\d+))?\s+\|\s+\d+ \*/\s*(.*)$)");
  static const std::regex close_line(R"(^\s*\}\s*([A-Za-z_][A-Za-z0-9_]*)?(\[\d+\])*;\s*$)");
  static const std::regex total_line(R"(/\* total size \(bytes\):\s+(\d+) \*/)");

  struct Frame {
    uint64_t offset = 0;
    std::vector<std::pair<std::string, GdbMember>> members;
    std::vector<std::string> order;
  };
  std::vector<Frame> stack;
  bool started = false;
  std::istringstream in(r.output);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (!started) {
      if (line.find("type = ") != std::string::npos && line.back() == '{') {
        started = true;
        stack.push_back({});
      }
      continue;
    }
    if (stack.empty())
      break;
    if (std::regex_search(line, m, total_line)) {
      if (stack.size() == 1)
        layout.size = std::stoull(m[1]);
      continue;
    }
    if (std::regex_match(line, m, offset_line)) {
      uint64_t offset = std::stoull(m[1]);
      std::string decl = m[3];
      if (!decl.empty() && decl.back() == '{') {
        stack.push_back({offset, {}, {}});
        continue;
      }
      GdbMember member{offset, std::nullopt};
      if (m[2].matched)
        member.bit = std::stoull(m[2]);
      std::string name = declared_name(decl);
      stack.back().members.emplace_back(name, member);
      stack.back().order.push_back(name);
      continue;
    }
    if (std::regex_match(line, m, close_line) && stack.size() > 1) {
      Frame inner = std::move(stack.back());
      stack.pop_back();
      // An anonymous struct/union lends its members to the enclosing one.
      std::string prefix = m[1].matched ? std::string(m[1]) + "." : "";
      if (m[1].matched)
        stack.back().members.emplace_back(m[1], GdbMember{inner.offset, std::nullopt});
      for (auto& [n, mem] : inner.members)
        stack.back().members.emplace_back(prefix + n, mem);
      for (auto& n : inner.order)
        stack.back().order.push_back(prefix + n);
      continue;
    }
    if (line.find('}') != std::string::npos && stack.size() == 1)
      break;  // end of the outer type
  }
  if (stack.empty() || !started) {
    layout.error = "gdb printed no layout for " + type + ": " + r.output.substr(0, 300);
    return layout;
  }
  for (auto& [n, mem] : stack.front().members)
    layout.members.emplace(n, mem);
  layout.order = stack.front().order;
  return layout;
}

std::vector<std::optional<uint64_t>> gdb_offsetof(
    const std::string& file, const std::vector<std::pair<std::string, std::string>>& members) {
  // Each result is printed on a line of its own after a marker, so a
  // failing expression (gdb prints an error instead) cannot shift the rest.
  std::string command = "gdb -nx -batch";
  for (size_t i = 0; i < members.size(); ++i) {
    command += " -ex 'echo @" + std::to_string(i) + " '";
    command +=
        " -ex 'print/d (unsigned long)&((" + members[i].first + " *)0)->" + members[i].second + "'";
  }
  CommandResult r = run_command(command + " '" + file + "'");
  std::vector<std::optional<uint64_t>> out(members.size());
  static const std::regex result(R"(@(\d+)\s*\$\d+ = (\d+))");
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), result), end; it != end; ++it) {
    size_t index = std::stoul((*it)[1]);
    if (index < out.size())
      out[index] = std::stoull((*it)[2]);
  }
  return out;
}

std::string line_diff(const std::string& expected, const std::string& actual) {
  auto lines = [](const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    std::string l;
    while (std::getline(in, l))
      out.push_back(l);
    return out;
  };
  std::vector<std::string> a = lines(expected);
  std::vector<std::string> b = lines(actual);
  std::string out;
  int shown = 0;
  size_t i = 0;
  size_t j = 0;
  // A simple merge on sorted-ish content: tables list fields in name order,
  // so walking both sides in step finds insertions and deletions.
  while ((i < a.size() || j < b.size()) && shown < 40) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      ++i;
      ++j;
      continue;
    }
    if (j >= b.size() || (i < a.size() && a[i] < b[j])) {
      out += "-" + a[i++] + "\n";
    } else if (i >= a.size() || b[j] < a[i]) {
      out += "+" + b[j++] + "\n";
    } else {
      out += "-" + a[i++] + "\n+" + b[j++] + "\n";
    }
    ++shown;
  }
  if (shown >= 40)
    out += "... (more differences)\n";
  return out;
}

}  // namespace krait::python::testing
