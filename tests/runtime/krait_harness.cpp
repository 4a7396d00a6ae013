#include "runtime/krait_harness.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "export/pprof.h"
#include "runtime/go_raw.h"
#include "util/files.h"
#include "util/text.h"

namespace krait::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The child's stdout to EOF (lines joined).
std::string drain_stdout(ChildProcess& child, std::chrono::milliseconds timeout) {
  std::string out;
  for (;;) {
    auto line = child.read_line(timeout);
    if (!line)
      break;
    out += *line;
    out += '\n';
  }
  return out;
}

std::string find_go() {
  for (const char* p : {"/usr/bin/go", "/usr/lib/go/bin/go", "/usr/local/go/bin/go"})
    if (::access(p, X_OK) == 0)
      return p;
  return "";
}

}  // namespace

Result<std::string> go_pprof_raw(const std::string& profile, const TempDir& dir) {
  const std::string go = find_go();
  if (go.empty())
    return make_error(
        "`go` is missing: install golang-go (scripts/setup --tests does) to read pprof files");
  SpawnOptions opts;
  opts.argv = {go, "tool", "pprof", "-raw", profile};
  const std::string home = dir.file("gohome");
  std::filesystem::create_directories(home);
  opts.env = {{"HOME", home},
              {"GOCACHE", home + "/cache"},
              {"GOPATH", home + "/path"},
              {"GOFLAGS", ""},
              {"GOPROXY", "off"},
              {"GOTOOLCHAIN", "local"},
              {"GOENV", "off"},
              {"TMPDIR", home}};
  auto child = ChildProcess::spawn(opts);
  if (!child)
    return child.error();
  std::string out = drain_stdout(*child, std::chrono::seconds(120));
  auto status = child->wait(std::chrono::seconds(120));
  if (!status)
    return status.error();
  if (!status->success())
    return make_error("go tool pprof -raw rejected {}: {}: {}", profile, status->describe(),
                      child->stderr_text());
  return out;
}

std::vector<ProfileSample> decode_samples(const perftools::profiles::Profile& p) {
  std::map<uint64_t, const perftools::profiles::Location*> locations;
  std::map<uint64_t, const perftools::profiles::Function*> functions;
  std::map<uint64_t, const perftools::profiles::Mapping*> mappings;
  for (const auto& m : p.mapping())
    mappings[m.id()] = &m;
  for (const auto& l : p.location())
    locations[l.id()] = &l;
  for (const auto& f : p.function())
    functions[f.id()] = &f;
  auto str = [&](int64_t i) -> std::string {
    return i >= 0 && i < p.string_table_size() ? p.string_table(static_cast<int>(i)) : "";
  };
  std::vector<ProfileSample> out;
  for (const auto& s : p.sample()) {
    ProfileSample ps;
    ps.count = s.value_size() > 0 ? s.value(0) : 0;
    for (int i = 0; i < s.value_size() && i < p.sample_type_size(); ++i)
      ps.values[str(p.sample_type(i).type())] = s.value(i);
    for (const auto& l : s.label())
      ps.labels[str(l.key())] = str(l.str());
    for (int i = s.location_id_size() - 1; i >= 0; --i) {
      const auto* loc = locations[s.location_id(i)];
      if (!loc)
        continue;
      // Inlined lines are listed innermost first; root-first order reverses them.
      for (int j = loc->line_size() - 1; j >= 0; --j) {
        const auto& line = loc->line(j);
        const auto* fn = functions[line.function_id()];
        Frame f;
        if (fn) {
          f.function = str(fn->name());
          f.file = str(fn->filename());
        }
        f.line = line.line();
        const auto* m = mappings[loc->mapping_id()];
        std::string mapping = m ? str(m->filename()) : "";
        if (mapping == "[python]")
          ps.stack.push_back(f);
        ps.full_stack.push_back(std::move(f));
        ps.mappings.push_back(std::move(mapping));
      }
    }
    out.push_back(std::move(ps));
  }
  return out;
}

Result<double> cpu_seconds(pid_t pid) {
  auto text = read_file(fmt::format("/proc/{}/stat", pid));
  if (!text)
    return text.error();
  const size_t paren = text->rfind(')');
  if (paren == std::string::npos)
    return make_error("/proc/{}/stat: no ')'", pid);
  std::istringstream fields(text->substr(paren + 2));
  std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
  // After the comm: state is field 3, utime 14, stime 15.
  if (f.size() < 13)
    return make_error("/proc/{}/stat: too few fields", pid);
  auto utime = parse_unsigned<uint64_t>(f[11]);
  auto stime = parse_unsigned<uint64_t>(f[12]);
  if (!utime || !stime)
    return make_error("/proc/{}/stat: unreadable CPU times", pid);
  return static_cast<double>(*utime + *stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

Result<ChildProcess> start_ready_program(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.argv = argv;
  auto child = ChildProcess::spawn(options);
  if (!child)
    return child.error();
  auto ready = child->read_line(std::chrono::seconds(30));
  if (!ready || *ready != "ready")
    return make_error("{} did not say ready: {}", argv.at(0),
                      ready ? *ready + " " + child->stderr_text() : ready.error().message);
  return std::move(*child);
}

void require_root() {
  if (::geteuid() != 0)
    FAIL() << "runtime tests load BPF programs: run them as root (sudo scripts/test)";
}

Interpreter interpreter_named(const std::string& name) {
  const auto all = load_manifest();
  for (const auto& i : all)
    if (i.name == name)
      return i;
  // sid moves on (3.15.2 today, 3.15.3 next month): "sid-3.15" is whichever
  // 3.15 the provisioning found.
  const Interpreter* only = nullptr;
  int matches = 0;
  for (const auto& i : all)
    if (i.name.rfind(name + ".", 0) == 0) {
      only = &i;
      ++matches;
    }
  if (matches == 1)
    return *only;
  ADD_FAILURE() << "interpreter " << name << " is not in " << manifest_path()
                << (matches > 1 ? " once" : "") << ": run scripts/provision-pythons";
  return {};
}

int64_t ProfileSample::pid() const {
  auto it = labels.find("pid");
  return it == labels.end() ? -1 : std::stoll(it->second);
}
int64_t ProfileSample::tid() const {
  auto it = labels.find("tid");
  return it == labels.end() ? -1 : std::stoll(it->second);
}

Result<Recording> Recording::start(const std::vector<std::string>& args, const TempDir& dir) {
  const std::string profile = dir.file("profile.pb.gz");
  const std::string stats = dir.file("stats.json");
  SpawnOptions opts;
  opts.argv = {KRAIT_BINARY, "record", "-o", profile, "--stats-json", stats, "--ready-fd", "1"};
  opts.argv.insert(opts.argv.end(), args.begin(), args.end());
  auto child = ChildProcess::spawn(opts);
  if (!child)
    return child.error();
  auto ready = child->read_line(std::chrono::seconds(60));
  if (!ready || *ready != "ready")
    return make_error("krait did not start sampling: {}", child->stderr_text());
  return Recording(std::move(*child), profile, stats);
}

Result<RecordingResult> Recording::stop(int sig) {
  KRAIT_TRY(child_.signal(sig));
  return wait(std::chrono::seconds(60));
}

Result<RecordingResult> Recording::wait(std::chrono::seconds timeout) {
  auto status = child_.wait(timeout);
  if (!status)
    return status.error();
  return collect(*status, true);
}

Result<RecordingResult> Recording::wait_any_status(std::chrono::seconds timeout) {
  auto status = child_.wait(timeout);
  if (!status)
    return status.error();
  return collect(*status, false);
}

Result<RecordingResult> Recording::collect(ExitStatus status, bool require_success) {
  RecordingResult r;
  r.status = status;
  r.stderr_text = child_.stderr_text();
  if (require_success && !status.success())
    return make_error("krait record ended with {}: {}", status.describe(), r.stderr_text);
  TempDir go_dir;
  auto raw = go_pprof_raw(profile_, go_dir);
  if (!raw)
    return raw.error();
  r.go_raw = std::move(*raw);
  auto pprof = exporter::read_pprof_file(profile_);
  if (!pprof)
    return pprof.error();
  r.pprof = std::move(*pprof);
  // go read the same samples, stack by stack, not only the same file.
  KRAIT_TRY(same_samples_as_go(r.go_raw, r.pprof));
  r.samples = decode_samples(r.pprof);
  auto stats = parse_json(slurp(stats_));
  if (!stats)
    return stats.error().context("--stats-json");
  r.stats = std::move(*stats);
  // Every record the sampler wrote is well formed: user space refusing one
  // means the two sides disagree on the ABI (include/krait/abi.h).
  if (const JsonValue* losses = r.stats.find("losses"))
    if (const JsonValue* malformed = losses->find("malformed ring buffer records"))
      return make_error("krait refused {} malformed ring buffer records", malformed->integer);
  return r;
}

Result<CommandResult> run_krait(const std::vector<std::string>& args, std::chrono::seconds timeout,
                                const std::vector<std::string>& prefix) {
  SpawnOptions opts;
  opts.argv = prefix;
  opts.argv.push_back(KRAIT_BINARY);
  opts.argv.insert(opts.argv.end(), args.begin(), args.end());
  auto child = ChildProcess::spawn(opts);
  if (!child)
    return child.error();
  CommandResult r;
  r.stdout_text = drain_stdout(*child, timeout);
  auto status = child->wait(timeout);
  if (!status)
    return status.error();
  r.status = *status;
  r.stderr_text = child->stderr_text();
  return r;
}

std::vector<ProfileSample> samples_of_tid(const std::vector<ProfileSample>& all, int64_t tid) {
  std::vector<ProfileSample> out;
  for (const auto& s : all)
    if (s.tid() == tid)
      out.push_back(s);
  return out;
}

std::vector<ProfileSample> samples_of_pid(const std::vector<ProfileSample>& all, int64_t pid) {
  std::vector<ProfileSample> out;
  for (const auto& s : all)
    if (s.pid() == pid)
      out.push_back(s);
  return out;
}

int64_t total(const std::vector<ProfileSample>& samples) {
  int64_t n = 0;
  for (const auto& s : samples)
    n += s.count;
  return n;
}

int64_t count_exact(const std::vector<ProfileSample>& samples, const std::vector<Frame>& expected) {
  int64_t n = 0;
  for (const auto& s : samples)
    if (s.stack == expected)
      n += s.count;
  return n;
}

std::string describe_mismatches(const std::vector<ProfileSample>& samples,
                                const std::vector<Frame>& expected) {
  std::vector<std::pair<int64_t, std::string>> others;
  for (const auto& s : samples)
    if (s.stack != expected)
      others.emplace_back(s.count, format_stack(s.stack));
  std::sort(others.rbegin(), others.rend());
  std::string out =
      fmt::format("{} of {} samples exact; expected {}", count_exact(samples, expected),
                  total(samples), format_stack(expected));
  for (size_t i = 0; i < others.size() && i < 3; ++i)
    out += fmt::format("\n  {} x {}", others[i].first, others[i].second);
  return out;
}

const JsonValue* stats_process(const JsonValue& stats, int64_t pid) {
  const JsonValue* procs = stats.find("processes");
  if (!procs || !procs->is_array())
    return nullptr;
  for (const auto& p : procs->items) {
    const JsonValue* id = p.find("pid");
    if (id && id->is_int() && id->integer == pid)
      return &p;
  }
  return nullptr;
}

}  // namespace krait::test
