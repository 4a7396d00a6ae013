// Mixed stacks (`krait record`, default --stacks mixed) against real
// processes whose truth is known by other means:
//  - a C extension built here for every interpreter of the manifest
//    (tests/fixtures/cext/krait_cext.c): Python -> C, C -> Python callback,
//    and a pthread that never touches Python; the Python frames come from
//    the workload (CPython's own view), the C names from nm of the built file;
//  - a system call (tests/workloads/kernel_read.py): kernel frames, named as
//    in /proc/kallsyms, leafward of the Python line that made the call;
//  - Debian's zlib and libcrypto under /usr/bin/python3.11: the libraries'
//    own function names, checked against nm -D of the very files the process
//    maps (address and name);
//  - native unwinding to the thread's root for every interpreter, from both
//    --stats-json and the root frame of each stack; the rates are printed;
//  - a non-Python process (tests/fixtures/cext/busy_loop.c) under
//    --all-processes.
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

constexpr double kInterleavedFraction = 0.90;
constexpr double kKernelFraction = 0.80;
constexpr double kRootFraction = 0.99;

const std::string kPythonMapping = "[python]";
const std::string kKernelMapping = "[kernel.kallsyms]";
const std::string kSyntheticMapping = "[synthetic]";

// ---------------------------------------------------------------------------
// Tools and files.

// A program of the base system the test needs; missing means the test fails
// saying which package provides it.
Result<std::string> tool(const std::string& name, const std::string& package) {
  const std::string path = "/usr/bin/" + name;
  if (::access(path.c_str(), X_OK) != 0)
    return make_error("{} is missing: install {} (scripts/setup does)", path, package);
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

// One line of /proc/PID/maps with a file.
struct MapsEntry {
  uint64_t start = 0, end = 0, offset = 0;
  std::string path;
};

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

// A function symbol as binutils' nm lists it.
struct Symbol {
  std::string name;
  uint64_t value = 0;
  uint64_t size = 0;
};

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

// ---------------------------------------------------------------------------
// Samples.

std::vector<ProfileSample> samples_of_tid(const std::vector<ProfileSample>& all, int64_t tid) {
  std::vector<ProfileSample> out;
  for (const auto& s : all)
    if (s.tid() == tid)
      out.push_back(s);
  return out;
}

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

// Weighted tally of samples that pass a check, with the commonest failures.
class Tally {
 public:
  void add(const ProfileSample& s, bool good, const std::string& why = {}) {
    total_ += s.count;
    if (good) {
      good_ += s.count;
      return;
    }
    bad_[why + (why.empty() ? "" : ": ") + format_full(s)] += s.count;
  }
  int64_t total() const { return total_; }
  int64_t good() const { return good_; }
  double fraction() const { return total_ == 0 ? 0.0 : static_cast<double>(good_) / total_; }
  std::string describe() const {
    std::vector<std::pair<int64_t, std::string>> worst;
    for (const auto& [stack, n] : bad_)
      worst.emplace_back(n, stack);
    std::sort(worst.rbegin(), worst.rend());
    std::string out = fmt::format("{} of {} samples pass", good_, total_);
    for (size_t i = 0; i < worst.size() && i < 3; ++i)
      out += fmt::format("\n  {} x {}", worst[i].first, worst[i].second);
    return out;
  }

 private:
  int64_t total_ = 0;
  int64_t good_ = 0;
  std::map<std::string, int64_t> bad_;
};

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
                  size_t from = 0) {
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

std::string truth_string(const Truth& truth, const std::string& a, const std::string& b = {}) {
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

using PerInterpreter = InterpreterTest;

// ---------------------------------------------------------------------------
// 1 and 5a: Python -> C, C -> Python, and a thread of C only.

using CExtension = PerInterpreter;

TEST_P(CExtension, PythonAndCFramesInterleaveAsTheyCalledEachOther) {
  TempDir build;
  auto so = build_extension(interp_, build);
  ASSERT_TRUE(so.ok()) << so.error().message;
  auto symbols = nm_symbols(*so, false);
  ASSERT_TRUE(symbols.ok()) << symbols.error().message;

  auto w = start_workload(interp_, "cext.py", {"--ext-dir", build.path()});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  const int64_t pid = truth.pid;
  ASSERT_EQ(truth.threads.size(), 2u);
  const ThreadTruth& spin = truth.threads[0];
  const ThreadTruth& callback = truth.threads[1];
  ASSERT_EQ(spin.name, "cext-spin");
  ASSERT_EQ(callback.name, "cext-callback");
  const std::string spin_fn = truth_string(truth, "c_function", "cext-spin");
  const std::string callback_fn = truth_string(truth, "c_function", "cext-callback");
  const std::string worker_fn = truth_string(truth, "native_thread", "function");
  const int64_t native_tid = truth_int(truth, "native_thread", "tid");
  const std::string ext = real_path(truth_string(truth, "extension"));
  ASSERT_EQ(ext, real_path(*so)) << "the workload imported another krait_cext";
  const JsonValue* cb_frames = truth.json.find("callback_frames");
  ASSERT_TRUE(cb_frames && cb_frames->is_int() && cb_frames->integer >= 1);
  const size_t callback_frames = static_cast<size_t>(cb_frames->integer);
  ASSERT_GT(callback.stack.size(), callback_frames);
  // The names the extension gives itself are symbols of the file built.
  for (const auto& name : {spin_fn, callback_fn, worker_fn}) {
    bool found = false;
    for (const auto& s : *symbols)
      found |= s.name == name;
    ASSERT_TRUE(found) << name << " is not in nm's symbols of " << ext;
  }
  const std::set<std::string> interpreter = interpreter_files(pid);

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(pid), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, pid);

  // A: <truth's Python frames> > ...C... > krait_cext_spin > (kernel only).
  Tally a;
  for (const auto& s : samples_of_tid(mine, spin.tid)) {
    if (s.stack != spin.stack) {
      a.add(s, false, "Python frames");
      continue;
    }
    const size_t last_py = indexes_of(s, kPythonMapping).back();
    const size_t c = find_frame(s, spin_fn, ext, last_py + 1);
    bool leaf = c != std::string::npos;
    for (size_t i = c + 1; leaf && i < s.full_stack.size(); ++i)
      leaf = s.mappings[i] == kKernelMapping;
    a.add(s, leaf && !has_mapping(s, kSyntheticMapping), "C leaf");
  }
  EXPECT_GE(a.total(), 40) << "too few samples of the C loop\n" << r->stderr_text;
  EXPECT_GE(a.fraction(), kInterleavedFraction) << "part A (Python -> C):\n" << a.describe();

  // B: <caller's Python frames> > ...C... > krait_cext_call_back >
  //    <interpreter's C frames> > callback_hot (hot line) > (any C, kernel).
  // `hot` is the callback's first (root-most) Python frame.
  Tally b;
  for (const auto& s : samples_of_tid(mine, callback.tid)) {
    if (s.stack != callback.stack) {
      b.add(s, false, "Python frames");
      continue;
    }
    const auto py = indexes_of(s, kPythonMapping);
    const size_t caller = py[py.size() - 1 - callback_frames];
    const size_t hot = py[py.size() - callback_frames];
    const size_t c = find_frame(s, callback_fn, ext, caller + 1);
    bool interp_between = false;
    for (size_t i = c + 1; c != std::string::npos && i < hot; ++i)
      interp_between |= interpreter.count(s.mappings[i]) > 0;
    if (c == std::string::npos || c > hot)
      b.add(s, false, "C caller between the Python frames");
    else
      b.add(s, interp_between && !has_mapping(s, kSyntheticMapping), "interpreter frames");
  }
  EXPECT_GE(b.total(), 40) << "too few samples of the callback\n" << r->stderr_text;
  EXPECT_GE(b.fraction(), kInterleavedFraction) << "part B (C -> Python):\n" << b.describe();

  // A thread of C only: its native stack under the process's labels.
  Tally n;
  const std::string process_name = comm_of(pid);
  for (const auto& s : samples_of_tid(mine, native_tid)) {
    EXPECT_EQ(label(s, "pid"), std::to_string(pid));
    EXPECT_EQ(label(s, "process_name"), process_name);
    EXPECT_EQ(label(s, "thread_name"), truth_string(truth, "native_thread", "name"));
    // The root is glibc's clone3 (or clone). A stripped libc without debug
    // info (Debian sid's, unpacked for 3.13+) leaves it unnamed; it must
    // then still be libc's, and an incomplete unwind would have added a
    // synthetic reason frame.
    const bool root =
        !s.full_stack.empty() &&
        std::filesystem::path(s.mappings.front()).filename().string().rfind("libc.so", 0) == 0 &&
        (is_root_name(s.full_stack.front().function) || s.full_stack.front().function[0] == '[');
    n.add(s,
          s.stack.empty() && root && find_frame(s, worker_fn, ext) != std::string::npos &&
              !has_mapping(s, kSyntheticMapping),
          "native thread");
  }
  EXPECT_EQ(truth_string(truth, "native_thread", "name"), "cext-native");
  EXPECT_GE(n.total(), 40) << "too few samples of the native thread\n" << r->stderr_text;
  EXPECT_GE(n.fraction(), kInterleavedFraction) << "native thread:\n" << n.describe();
  // Its samples are its native stacks, not samples lost for want of Python
  // state (the sampler still counts the status per process).
  const JsonValue* losses = r->stats.find("losses");
  ASSERT_NE(losses, nullptr) << "no losses in --stats-json";
  EXPECT_EQ(losses->find("no Python thread state"), nullptr)
      << "the native thread's samples were summarized as lost";

  auto checked = check_names_against_nm(r->pprof, pid, ext, false);
  ASSERT_TRUE(checked.ok()) << checked.error().message;
  EXPECT_GE(*checked, 3) << "the extension's frames were named";
}

INSTANTIATE_TEST_SUITE_P(Interpreters, CExtension, ::testing::ValuesIn(interpreter_names()),
                         interpreter_test_name);

// ---------------------------------------------------------------------------
// 2: kernel frames of a system call, leafward of the Python line.

// Names of /proc/kallsyms (text symbols), the kernel's own list.
std::set<std::string> kallsyms_names() {
  std::set<std::string> out;
  auto text = read_file("/proc/kallsyms", size_t{256} << 20);
  if (!text)
    return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string address, type, name;
    if (l >> address >> type >> name && (type == "T" || type == "t"))
      out.insert(name);
  }
  return out;
}

using KernelFrames = PerInterpreter;

TEST_P(KernelFrames, ShowUnderThePythonLineThatMadeTheCall) {
  auto w = start_workload(interp_, "kernel_read.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const auto& thread = w->truth.threads.at(0);
  const auto kallsyms = kallsyms_names();
  ASSERT_GT(kallsyms.size(), 1000u) << "/proc/kallsyms unreadable";

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(w->truth.pid), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  Tally t;
  int64_t unknown_names = 0;
  for (const auto& s : samples_of_pid(r->samples, w->truth.pid)) {
    if (s.stack != thread.stack) {
      t.add(s, false, "Python frames");
      continue;
    }
    const size_t last_py = indexes_of(s, kPythonMapping).back();
    const auto kernel = indexes_of(s, kKernelMapping);
    bool vfs_read = false;
    for (size_t i : kernel) {
      vfs_read |= s.full_stack[i].function == "vfs_read";
      if (!kallsyms.count(s.full_stack[i].function))
        unknown_names += s.count;
    }
    // Kernel frames are the leaf end, all of them after the Python frame.
    const bool leafward = !kernel.empty() && kernel.front() > last_py &&
                          kernel.back() == s.full_stack.size() - 1 &&
                          kernel.back() - kernel.front() + 1 == kernel.size();
    t.add(s, leafward && vfs_read && !has_mapping(s, kSyntheticMapping), "kernel frames");
  }
  EXPECT_GE(t.total(), 100) << r->stderr_text;
  EXPECT_GE(t.fraction(), kKernelFraction) << t.describe();
  EXPECT_EQ(unknown_names, 0) << "kernel frames whose names /proc/kallsyms does not list";
}

INSTANTIATE_TEST_SUITE_P(SharedAndStatic, KernelFrames,
                         ::testing::Values("pyenv-3.12.1", "debian-3.11.2"), interpreter_test_name);

TEST(Mixed, NoKernelLeavesOutKernelFrames) {
  require_root();
  const Interpreter interp = interpreter_named("pyenv-3.12.1");
  ASSERT_FALSE(interp.executable.empty());
  auto w = start_workload(interp, "kernel_read.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const auto& thread = w->truth.threads.at(0);
  TempDir dir;
  auto rec = Recording::start(
      {"-p", std::to_string(w->truth.pid), "-d", "2", "-r", "199", "--no-kernel"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, w->truth.pid);
  Tally t;
  int64_t with_kernel = 0;
  for (const auto& s : mine) {
    if (has_mapping(s, kKernelMapping))
      with_kernel += s.count;
    // Still a mixed stack: native frames leafward of the Python line.
    const auto py = indexes_of(s, kPythonMapping);
    t.add(s,
          s.stack == thread.stack && py.back() + 1 < s.full_stack.size() &&
              !has_mapping(s, kSyntheticMapping),
          "Python line then native frames");
  }
  EXPECT_GE(t.total(), 60) << r->stderr_text;
  EXPECT_EQ(with_kernel, 0) << "samples with kernel frames under --no-kernel";
  EXPECT_GE(t.fraction(), kKernelFraction) << t.describe();
}

// ---------------------------------------------------------------------------
// 3: Debian's own libraries under Debian's own interpreter.

TEST(Mixed, DebianZlibAndLibcryptoShowTheirOwnFunctions) {
  require_root();
  const Interpreter interp = interpreter_named("debian-3.11.2");
  ASSERT_FALSE(interp.executable.empty());
  auto w = start_workload(interp, "native_libs.py", {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Truth& truth = w->truth;
  ASSERT_EQ(truth_string(truth, "hashlib_backend"), "openssl")
      << "Debian's hashlib.sha256 should come from OpenSSL";
  std::string libz, libcrypto;
  for (const auto& e : read_maps(truth.pid)) {
    const std::string base = std::filesystem::path(e.path).filename().string();
    if (base.rfind("libz.so", 0) == 0)
      libz = e.path;
    if (base.rfind("libcrypto.so", 0) == 0)
      libcrypto = e.path;
  }
  ASSERT_FALSE(libz.empty()) << "the process maps no libz";
  ASSERT_FALSE(libcrypto.empty()) << "the process maps no libcrypto";

  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(truth.pid), "-d", "3", "-r", "199"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, truth.pid);

  // Besides the library's own functions, a sample can truly be in the
  // interpreter's code that the library call returns to or that sizes its
  // buffers (zlib.compress's output is a bytes writer in Debian's static
  // python3.11), and from there in libc's memory copy, whose variant and
  // speed depend on the CPU (AVX-512 on one host, AVX2 on another): so the
  // share of such samples does too. What must hold is that every native
  // frame below the Python call is one of these.
  const std::string exe = std::filesystem::canonical(interp.executable).string();
  auto interpreter_copy = [&](const ProfileSample& s, size_t last_py, const std::string& library) {
    bool in_interpreter = false;
    for (size_t i = last_py + 1; i < s.full_stack.size(); ++i) {
      const std::string& mapping = s.mappings[i];
      if (mapping == kKernelMapping)
        continue;
      const std::string base = std::filesystem::path(mapping).filename().string();
      if (mapping == exe || mapping == interp.executable || mapping == library) {
        in_interpreter |= mapping != library;
        continue;
      }
      // The leaf: a libc memory routine, reached through the interpreter.
      return i + 1 == s.full_stack.size() || s.mappings[i + 1] == kKernelMapping
                 ? in_interpreter && base.rfind("libc.so", 0) == 0 &&
                       s.full_stack[i].function.find("mem") != std::string::npos
                 : false;
    }
    return false;
  };

  struct Part {
    const char* thread;
    std::string library;
    bool (*wanted)(const std::string&);
  };
  const Part parts[] = {
      {"zlib", libz, [](const std::string& n) { return n.rfind("deflate", 0) == 0; }},
      {"sha256", libcrypto,
       [](const std::string& n) {
         std::string lower = n;
         std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
         return lower.find("sha256") != std::string::npos;
       }},
  };
  for (const Part& part : parts) {
    SCOPED_TRACE(part.thread);
    const ThreadTruth* t = nullptr;
    for (const auto& th : truth.threads)
      if (th.name == part.thread)
        t = &th;
    ASSERT_NE(t, nullptr);
    Tally tally;
    int64_t in_library = 0, in_copy = 0;
    for (const auto& s : samples_of_tid(mine, t->tid)) {
      if (s.stack != t->stack) {
        tally.add(s, false, "Python frames");
        continue;
      }
      const size_t last_py = indexes_of(s, kPythonMapping).back();
      bool found = false;
      for (size_t i = last_py + 1; i < s.full_stack.size(); ++i)
        found |= s.mappings[i] == part.library && part.wanted(s.full_stack[i].function);
      if (found) {
        ++in_library;
      } else if (interpreter_copy(s, last_py, part.library)) {
        found = true;
        ++in_copy;
      }
      tally.add(s, found && !has_mapping(s, kSyntheticMapping), "library function");
    }
    EXPECT_GE(tally.total(), 60) << r->stderr_text;
    EXPECT_GE(tally.fraction(), kInterleavedFraction) << tally.describe();
    // Most of the time is the library's own work, on any CPU.
    EXPECT_GE(in_library, 2 * in_copy)
        << in_library << " in the library, " << in_copy << " in the interpreter's memory copies";
    auto checked = check_names_against_nm(r->pprof, truth.pid, part.library, true);
    ASSERT_TRUE(checked.ok()) << checked.error().message;
    EXPECT_GE(*checked, 1);
  }
}

// ---------------------------------------------------------------------------
// 4: native unwinding reaches the root of the thread, for every interpreter.

TEST(Mixed, NativeUnwindingReachesTheThreadRoot) {
  require_root();
  const std::vector<Interpreter> interps = load_manifest();
  ASSERT_GE(interps.size(), 10u);
  // All started before any truth is awaited: each first lap then competes
  // with the others once, not with a growing crowd in turn.
  std::vector<ChildProcess> children;
  for (const auto& i : interps) {
    auto child = ChildProcess::spawn(workload_options(i, "chain.py", {"--depth", "20"}));
    ASSERT_TRUE(child.ok()) << i.name << ": " << child.error().message;
    children.push_back(std::move(*child));
  }
  std::vector<int64_t> pids;
  std::vector<std::string> args = {"-d", "4", "-r", "999"};
  for (size_t k = 0; k < children.size(); ++k) {
    auto line = children[k].read_line(60s);
    ASSERT_TRUE(line.ok()) << interps[k].name << ": " << line.error().message;
    auto truth = parse_truth(*line);
    ASSERT_TRUE(truth.ok()) << interps[k].name << ": " << truth.error().message;
    ASSERT_EQ(truth->pid, children[k].pid());
    pids.push_back(truth->pid);
    args.insert(args.end(), {"-p", std::to_string(truth->pid)});
  }
  // Every interpreter at once, at a rate that gives each a few hundred
  // samples on two CPUs.
  TempDir dir;
  auto rec = Recording::start(args, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;

  std::string table =
      fmt::format("{:<16} {:>7} {:>8} {:>8} {:>9} {:>9}  {}\n", "interpreter", "samples", "unwinds",
                  "to root", "stats %", "profile %", "other ends (stats)");
  for (size_t k = 0; k < interps.size(); ++k) {
    const Interpreter& interp = interps[k];
    SCOPED_TRACE(interp.name);
    const auto mine = samples_of_pid(r->samples, pids[k]);
    // The written stack's root: the native root frame, not a reason frame
    // over Python frames that could not be placed.
    Tally roots;
    for (const auto& s : mine)
      roots.add(s,
                !s.full_stack.empty() && is_root_name(s.full_stack.front().function) &&
                    !has_mapping(s, kSyntheticMapping),
                "root");
    const JsonValue* p = stats_process(r->stats, pids[k]);
    const JsonValue* unwinds = p ? p->find("native_unwinds") : nullptr;
    const JsonValue* to_root = p ? p->find("native_unwinds_to_root") : nullptr;
    const JsonValue* stops = p ? p->find("native_unwind_stops") : nullptr;
    if (!unwinds || !unwinds->is_int() || !to_root || !to_root->is_int() || !stops) {
      ADD_FAILURE() << "no native unwinding counters in --stats-json for pid " << pids[k];
      continue;
    }
    std::string ends;
    for (size_t i = 0; i < stops->keys.size(); ++i)
      ends +=
          fmt::format("{}{}={}", ends.empty() ? "" : " ", stops->keys[i], stops->items[i].integer);
    const double stats_rate =
        unwinds->integer ? static_cast<double>(to_root->integer) / unwinds->integer : 0.0;
    table += fmt::format("{:<16} {:>7} {:>8} {:>8} {:>8.1f}% {:>8.1f}%  {}\n", interp.name,
                         total(mine), unwinds->integer, to_root->integer, 100 * stats_rate,
                         100 * roots.fraction(), ends);
    EXPECT_GE(total(mine), 100) << "too few samples to judge\n" << r->stderr_text;
    if (interp.origin == "pyenv" &&
        (interp.version.rfind("3.11.", 0) == 0 || interp.version.rfind("3.12.", 0) == 0)) {
      EXPECT_GE(stats_rate, kRootFraction) << "--stats-json: " << ends;
      EXPECT_GE(roots.fraction(), kRootFraction) << roots.describe();
    }
  }
  std::printf(
      "native unwinding to the thread's root, chain.py --depth 20, default "
      "--user-stack-size:\n%s",
      table.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// 5b: a process that is not Python.

TEST(Mixed, AllProcessesRecordsANonPythonProcess) {
  require_root();
  auto busy = start_ready_program({KRAIT_BUSY_LOOP});
  ASSERT_TRUE(busy.ok()) << busy.error().message;
  const int64_t pid = busy->pid();
  const std::string exe = real_path(KRAIT_BUSY_LOOP);

  // Without --all-processes it is not recorded at all.
  {
    TempDir dir;
    auto rec = Recording::start({"-d", "1"}, dir);
    ASSERT_TRUE(rec.ok()) << rec.error().message;
    auto r = rec->wait(60s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(total(samples_of_pid(r->samples, pid)), 0);
  }

  TempDir dir;
  auto rec = Recording::start({"-d", "3", "-r", "199", "--all-processes"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto mine = samples_of_pid(r->samples, pid);
  Tally native, spin, read_in_kernel;
  for (const auto& s : mine) {
    EXPECT_TRUE(s.stack.empty()) << "Python frames in a C program: " << format_full(s);
    EXPECT_EQ(label(s, "process_name"), comm_of(pid));
    const size_t main_at = find_frame(s, "main", exe);
    native.add(s,
               !s.full_stack.empty() && s.full_stack.front().function == "_start" &&
                   main_at != std::string::npos && !has_mapping(s, kSyntheticMapping),
               "_start > main");
    spin.add(s, find_frame(s, "krait_busy_spin", exe, main_at) != std::string::npos);
    const size_t reader = find_frame(s, "krait_busy_read", exe, main_at);
    const auto kernel = indexes_of(s, kKernelMapping);
    read_in_kernel.add(s,
                       reader != std::string::npos && !kernel.empty() && kernel.front() > reader);
  }
  EXPECT_GE(native.total(), 60) << r->stderr_text;
  EXPECT_GE(native.fraction(), kInterleavedFraction) << native.describe();
  // The program splits its time between the two; each shows in its share.
  EXPECT_GE(spin.fraction(), 0.2) << spin.describe();
  EXPECT_GE(read_in_kernel.fraction(), 0.2) << read_in_kernel.describe();
  auto checked = check_names_against_nm(r->pprof, pid, exe, false);
  ASSERT_TRUE(checked.ok()) << checked.error().message;
  EXPECT_GE(*checked, 3);
}

}  // namespace
}  // namespace krait::test
