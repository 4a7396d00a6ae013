// Definitions for mixed_harness.h; the header holds the contracts.
#include "runtime/mixed_harness.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "support/workloads.h"
#include "util/files.h"

namespace krait::test::mixed {

using namespace std::chrono_literals;

namespace {

// A program of the base system the test needs; missing means the test fails
// saying which package provides it.
Result<std::string> tool(const std::string& name, const std::string& package) {
  const std::string path = "/usr/bin/" + name;
  if (::access(path.c_str(), X_OK) != 0)
    return make_error("{} is missing: install {} (scripts/setup --tests does)", path, package);
  return path;
}

// Runs a command to completion; its stdout, or an error with its stderr.
Result<std::string> capture(const SpawnOptions& options) {
  auto child = ChildProcess::spawn(options);
  if (!child)
    return child.error();
  std::string out;
  while (auto line = child->read_line(60s)) {
    out += *line;
    out += '\n';
  }
  auto status = child->wait(60s);
  if (!status)
    return status.error();
  if (!status->success())
    return make_error("{} failed ({}): {}", options.argv.at(0), status->describe(),
                      child->stderr_text());
  return out;
}

Result<std::string> capture(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.argv = argv;
  return capture(options);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(line);
  return out;
}

// `readelf -lW file`: the LOAD segments, to turn file offsets into the
// addresses the symbols use.
struct Segment {
  uint64_t offset = 0, vaddr = 0, filesz = 0;
};

Result<std::vector<Segment>> load_segments(const std::string& file) {
  auto readelf = tool("readelf", "binutils");
  if (!readelf)
    return readelf.error();
  auto out = capture({*readelf, "-lW", file});
  if (!out)
    return out.error();
  std::vector<Segment> segments;
  for (const auto& line : lines_of(*out)) {
    std::istringstream in(line);
    std::string type, offset, vaddr, paddr, filesz;
    if (!(in >> type >> offset >> vaddr >> paddr >> filesz) || type != "LOAD")
      continue;
    segments.push_back({std::stoull(offset, nullptr, 16), std::stoull(vaddr, nullptr, 16),
                        std::stoull(filesz, nullptr, 16)});
  }
  if (segments.empty())
    return make_error("readelf found no LOAD segment in {}", file);
  return segments;
}

// Where the interpreter itself says its headers are: sysconfig from 2.7 on,
// distutils as a fallback for a build whose sysconfig cannot tell.
constexpr const char* kIncludeQuery = R"(
try:
    import sysconfig
    paths = sysconfig.get_paths()
    print(paths['include'])
    print(paths['platinclude'])
except Exception:
    from distutils import sysconfig
    print(sysconfig.get_python_inc())
    print(sysconfig.get_python_inc(plat_specific=True))
)";

}  // namespace

// ---------------------------------------------------------------------------
// Tools and files.

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

std::string comm_of(int64_t pid) {
  auto text = read_file(fmt::format("/proc/{}/comm", pid));
  if (!text)
    return "<" + text.error().message + ">";
  std::string out = *text;
  if (!out.empty() && out.back() == '\n')
    out.pop_back();
  return out;
}

std::vector<MapsEntry> read_maps(int64_t pid) {
  std::vector<MapsEntry> out;
  auto text = read_file(fmt::format("/proc/{}/maps", pid));
  if (!text)
    return out;
  for (const auto& line : lines_of(*text)) {
    MapsEntry e;
    char perms[8] = {};
    unsigned long long start = 0, end = 0, offset = 0;
    int path_at = -1;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset,
                    &path_at) < 4 ||
        path_at < 0 || line[path_at] != '/')
      continue;
    e.start = start;
    e.end = end;
    e.offset = offset;
    e.path = line.substr(path_at);
    out.push_back(std::move(e));
  }
  return out;
}

// The files that hold the interpreter's own code in a process: its
// executable, and libpython where the build is shared.
std::set<std::string> interpreter_files(int64_t pid) {
  std::set<std::string> out{real_path(fmt::format("/proc/{}/exe", pid))};
  for (const auto& e : read_maps(pid))
    if (std::filesystem::path(e.path).filename().string().rfind("libpython", 0) == 0)
      out.insert(e.path);
  return out;
}

// `nm --defined-only -S [-D] file`: the symbol table (or the dynamic one),
// names without their version suffix, and the PLT stubs objdump names.
Result<std::vector<Symbol>> nm_symbols(const std::string& file, bool dynamic) {
  auto nm = tool("nm", "binutils");
  if (!nm)
    return nm.error();
  std::vector<std::string> argv = {*nm, "--defined-only", "-S"};
  if (dynamic)
    argv.push_back("-D");
  argv.push_back(file);
  auto out = capture(argv);
  if (!out)
    return out.error();
  std::vector<Symbol> symbols;
  for (const auto& line : lines_of(*out)) {
    std::istringstream in(line);
    std::string value, size, type, name;
    if (!(in >> value >> size >> type >> name))
      continue;  // no size: not a function body we can check against
    if (type != "T" && type != "t" && type != "W" && type != "i")
      continue;
    Symbol s;
    s.name = name.substr(0, name.find('@'));
    s.value = std::stoull(value, nullptr, 16);
    s.size = std::stoull(size, nullptr, 16);
    symbols.push_back(std::move(s));
  }
  if (symbols.empty())
    return make_error("nm found no function symbols in {}", file);
  // PLT stubs have no symbols; objdump names them after their target
  // ("<read@plt>:"), as krait does.
  auto objdump = tool("objdump", "binutils");
  if (!objdump)
    return objdump.error();
  auto dump = capture({*objdump, "-d", "-j", ".plt", "-j", ".plt.sec", "-j", ".plt.got", file});
  if (!dump)
    return dump.error();
  static const std::regex stub(R"(^([0-9a-f]+) <(.+@plt)>:$)");
  for (const auto& line : lines_of(*dump))
    if (std::smatch m; std::regex_match(line, m, stub))
      symbols.push_back({.name = m[2], .value = std::stoull(m[1], nullptr, 16), .size = 16});
  return symbols;
}

// ---------------------------------------------------------------------------
// Samples.

// A sample's label, "" when it has none.
std::string label(const ProfileSample& s, const std::string& key) {
  auto it = s.labels.find(key);
  return it == s.labels.end() ? "" : it->second;
}

bool is_root_name(const std::string& name) {
  return name == "_start" || name == "clone" || name == "clone3" || name == "__clone" ||
         name == "__clone3";
}

// "fn (file:line)" for Python frames, "fn" for native ones, "fn [k]" for the
// kernel's, root first: what a failure message shows of a sample.
std::string format_full(const ProfileSample& s) {
  std::string out;
  for (size_t i = 0; i < s.full_stack.size(); ++i) {
    const Frame& f = s.full_stack[i];
    if (!out.empty())
      out += " > ";
    if (s.mappings[i] == kPythonMapping)
      out += fmt::format("{} ({}:{})", f.function,
                         std::filesystem::path(f.file).filename().string(), f.line);
    else if (s.mappings[i] == kKernelMapping)
      out += f.function + " [k]";
    else
      out += f.function;
  }
  return out;
}

// Indexes into full_stack of the frames with `mapping`.
std::vector<size_t> indexes_of(const ProfileSample& s, const std::string& mapping) {
  std::vector<size_t> out;
  for (size_t i = 0; i < s.mappings.size(); ++i)
    if (s.mappings[i] == mapping)
      out.push_back(i);
  return out;
}

bool has_mapping(const ProfileSample& s, const std::string& mapping) {
  return std::find(s.mappings.begin(), s.mappings.end(), mapping) != s.mappings.end();
}

// The first index >= from of a frame named `name` in file `mapping`, or npos.
size_t find_frame(const ProfileSample& s, const std::string& name, const std::string& mapping,
                  size_t from) {
  for (size_t i = from; i < s.full_stack.size(); ++i)
    if (s.full_stack[i].function == name && s.mappings[i] == mapping)
      return i;
  return std::string::npos;
}

// Every named frame of `file` in the samples of `pid` against binutils: the
// location's address, turned into the file's address through the process's
// own /proc/PID/maps and the file's segments, must lie inside a symbol of
// that name (a return address may sit just past its end). Returns the number
// of distinct named locations checked; failures are added to the test.
Result<int> check_names_against_nm(const perftools::profiles::Profile& p, int64_t pid,
                                   const std::string& file, bool dynamic) {
  auto symbols = nm_symbols(file, dynamic);
  if (!symbols)
    return symbols.error();
  auto segments = load_segments(file);
  if (!segments)
    return segments.error();
  std::vector<MapsEntry> maps;
  for (auto& e : read_maps(pid))
    if (real_path(e.path) == real_path(file))
      maps.push_back(e);
  if (maps.empty())
    return make_error("process {} does not map {}", pid, file);

  auto str = [&](int64_t i) { return p.string_table(static_cast<int>(i)); };
  std::map<uint64_t, const perftools::profiles::Location*> locations;
  std::map<uint64_t, const perftools::profiles::Function*> functions;
  for (const auto& l : p.location())
    locations[l.id()] = &l;
  for (const auto& f : p.function())
    functions[f.id()] = &f;
  std::set<uint64_t> seen;
  for (const auto& s : p.sample()) {
    bool mine = false;
    for (const auto& l : s.label())
      mine |= str(l.key()) == "pid" && str(l.str()) == std::to_string(pid);
    if (mine)
      seen.insert(s.location_id().begin(), s.location_id().end());
  }

  int checked = 0;
  for (uint64_t id : seen) {
    const auto* loc = locations[id];
    if (!loc || loc->line_size() == 0)
      continue;
    const uint64_t address = loc->address();
    const MapsEntry* m = nullptr;
    for (const auto& e : maps)
      if (address >= e.start && address < e.end)
        m = &e;
    if (!m)
      continue;
    // The outermost line names the function whose code holds the address
    // (inner lines are inlined callees).
    const auto* fn = functions[loc->line(loc->line_size() - 1).function_id()];
    const std::string name = fn ? str(fn->name()) : "";
    if (name.empty() || name[0] == '[')
      continue;  // unnamed: nothing to check
    const uint64_t file_offset = address - m->start + m->offset;
    std::optional<uint64_t> vaddr;
    for (const auto& seg : *segments)
      if (file_offset >= seg.offset && file_offset < seg.offset + seg.filesz)
        vaddr = file_offset - seg.offset + seg.vaddr;
    ++checked;
    bool covered = false;
    for (const auto& sym : *symbols)
      covered |= vaddr && sym.name == name && *vaddr >= sym.value && *vaddr <= sym.value + sym.size;
    EXPECT_TRUE(covered) << "frame " << name << " at " << fmt::format("{:#x}", address)
                         << " (file address "
                         << (vaddr ? fmt::format("{:#x}", *vaddr) : std::string("none")) << ") of "
                         << file << " lies in no symbol of that name (nm" << (dynamic ? " -D" : "")
                         << ")";
  }
  return checked;
}

// ---------------------------------------------------------------------------
// Interpreters and the extension.

// Compiles krait_cext.so for `interp` into `dir`; returns its path.
Result<std::string> build_extension(const Interpreter& interp, const TempDir& dir) {
  auto cc = tool("cc", "build-essential");
  if (!cc)
    return cc.error();
  auto paths = capture(interpreter_options(interp, {"-c", kIncludeQuery}));
  if (!paths)
    return paths.error().context(interp.name + ": asking for its include directory");
  std::vector<std::string> argv = {*cc,     "-shared", "-fPIC",   "-O2",
                                   "-Wall", "-Wextra", "-Werror", "-pthread"};
  std::set<std::string> dirs;
  for (const auto& d : lines_of(*paths)) {
    // Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h>,
    // relative to the include root one level up.
    dirs.insert(d);
    dirs.insert(std::filesystem::path(d).parent_path().string());
  }
  const std::string include = lines_of(*paths).at(0);
  if (::access((include + "/Python.h").c_str(), R_OK) != 0)
    return make_error(
        "{}: no Python.h in {}, the interpreter's include directory: install its headers "
        "(python3.11-dev for Debian's, scripts/provision-pythons for the others)",
        interp.name, include);
  for (const auto& d : dirs)
    argv.push_back("-I" + d);
  const std::string out = dir.file("krait_cext.so");
  argv.insert(argv.end(), {"-o", out, KRAIT_CEXT_SOURCE});
  auto built = capture(argv);
  if (!built)
    return built.error().context(interp.name + ": compiling the extension");
  return out;
}

std::string truth_string(const Truth& truth, const std::string& a, const std::string& b) {
  const JsonValue* v = truth.json.find(a);
  if (v && !b.empty())
    v = v->find(b);
  return v && v->is_string() ? v->string : "";
}

int64_t truth_int(const Truth& truth, const std::string& a, const std::string& b) {
  const JsonValue* v = truth.json.find(a);
  if (v)
    v = v->find(b);
  return v && v->is_int() ? v->integer : -1;
}

}  // namespace krait::test::mixed
