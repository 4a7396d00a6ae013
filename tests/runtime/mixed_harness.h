// What the mixed-stack runtime tests (mixed_test.cpp, mixed_native_test.cpp)
// share: the bars, reading /proc and binutils' view of a file, looking at
// samples' full stacks, and building the C extension for an interpreter.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "export/profile.pb.h"
#include "runtime/krait_harness.h"
#include "support/manifest.h"
#include "support/temp_dir.h"
#include "support/truth.h"

namespace krait::test::mixed {

constexpr double kInterleavedFraction = 0.90;
constexpr double kKernelFraction = 0.80;
constexpr double kRootFraction = 0.99;

inline const std::string kPythonMapping = "[python]";
inline const std::string kKernelMapping = "[kernel.kallsyms]";
inline const std::string kSyntheticMapping = "[synthetic]";

std::string real_path(const std::string& path);
// /proc/PID/comm without its newline, or why it could not be read.
std::string comm_of(int64_t pid);

// One line of /proc/PID/maps with a file.
struct MapsEntry {
  uint64_t start = 0, end = 0, offset = 0;
  std::string path;
};

// The mappings of `pid` that have a file; none when they cannot be read.
std::vector<MapsEntry> read_maps(int64_t pid);

// The files that hold the interpreter's own code in a process: its
// executable, and libpython where the build is shared.
std::set<std::string> interpreter_files(int64_t pid);

// A function symbol as binutils' nm lists it.
struct Symbol {
  std::string name;
  uint64_t value = 0;
  uint64_t size = 0;
};

// `nm --defined-only -S [-D] file`: the symbol table (or the dynamic one),
// names without their version suffix, and the PLT stubs objdump names.
Result<std::vector<Symbol>> nm_symbols(const std::string& file, bool dynamic);

// A sample's label, "" when it has none.
std::string label(const ProfileSample& s, const std::string& key);

// _start and the clone family: where a thread's native stack begins.
bool is_root_name(const std::string& name);

// "fn (file:line)" for Python frames, "fn" for native ones, "fn [k]" for the
// kernel's, root first: what a failure message shows of a sample.
std::string format_full(const ProfileSample& s);

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
std::vector<size_t> indexes_of(const ProfileSample& s, const std::string& mapping);

bool has_mapping(const ProfileSample& s, const std::string& mapping);

// The first index >= from of a frame named `name` in file `mapping`, or npos.
size_t find_frame(const ProfileSample& s, const std::string& name, const std::string& mapping,
                  size_t from = 0);

// Every named frame of `file` in the samples of `pid` against binutils: the
// location's address, turned into the file's address through the process's
// own /proc/PID/maps and the file's segments, must lie inside a symbol of
// that name (a return address may sit just past its end). Returns the number
// of distinct named locations checked; failures are added to the test.
Result<int> check_names_against_nm(const perftools::profiles::Profile& p, int64_t pid,
                                   const std::string& file, bool dynamic);

// Compiles krait_cext.so for `interp` into `dir`; returns its path.
Result<std::string> build_extension(const Interpreter& interp, const TempDir& dir);

// The truth's string at a (or a.b), "" when absent; its integer at a.b, -1
// when absent.
std::string truth_string(const Truth& truth, const std::string& a, const std::string& b = {});
int64_t truth_int(const Truth& truth, const std::string& a, const std::string& b);

using PerInterpreter = InterpreterTest;

}  // namespace krait::test::mixed
