// What krait did with each process of the zoo, judged.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "export/pprof.h"
#include "runtime/zoo_harness.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test::zoo {

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------
// What krait did with each process.

std::vector<const JsonValue*> stats_entries(const JsonValue& stats, int64_t pid) {
  std::vector<const JsonValue*> out;
  const JsonValue* procs = stats.find("processes");
  if (!procs || !procs->is_array())
    return out;
  for (const auto& p : procs->items)
    if (const JsonValue* id = p.find("pid"); id && id->is_int() && id->integer == pid)
      out.push_back(&p);
  return out;
}

std::string json_text(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_string() ? m->string : "";
}
int64_t json_number(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_int() ? m->integer : 0;
}
bool json_flag(const JsonValue& v, std::string_view key) {
  const JsonValue* m = v.find(key);
  return m && m->is_bool() && m->boolean;
}

// The daemon's log lines about `pid` being left out ("pid 12 (x) is not
// profiled: why"; throttling, once it exists, counts too).
std::vector<std::string> refusals_in_log(const std::string& log, pid_t pid) {
  std::vector<std::string> out;
  std::istringstream lines(log);
  std::string line;
  const std::string a = fmt::format("pid {} ", pid), b = fmt::format("pid {}:", pid);
  while (std::getline(lines, line)) {
    if (line.find(a) == std::string::npos && line.find(b) == std::string::npos)
      continue;
    for (const char* word : {"not profiled", "refused", "throttled"}) {
      const size_t at = line.find(word);
      if (at != std::string::npos) {
        std::string reason = line.substr(at + std::strlen(word));
        while (!reason.empty() && (reason.front() == ':' || reason.front() == ' '))
          reason.erase(0, 1);
        out.push_back(reason);
        break;
      }
    }
  }
  return out;
}

std::string shorten(std::string text, size_t n) {
  for (char& c : text)
    if (c == '\n')
      c = ' ';
  if (text.size() > n)
    text = text.substr(0, n - 3) + "...";
  return text;
}

struct Verdict {
  std::string did;      // for the table
  bool listed = false;  // in the summary (record) / profiled or refused in the log (daemon)
  bool refused_without_reason = false;
};

Verdict what_krait_did(const KraitRun& run, const Member& m, int64_t samples) {
  Verdict v;
  if (run.mode == Mode::kRecord) {
    if (!run.stats)
      return {"(no summary)", false, false};
    std::vector<std::string> parts;
    auto entries = stats_entries(*run.stats, m.pid);
    // The pid-reuse pair shares a pid; the summary lists processes in the
    // order it first saw them.
    if (m.kind == Kind::kPidReuseOld)
      entries.resize(std::min<size_t>(entries.size(), 1));
    if (m.kind == Kind::kPidReuseNew)
      entries.erase(entries.begin(), entries.begin() + std::min<size_t>(entries.size(), 1));
    for (const JsonValue* e : entries) {
      v.listed = true;
      std::string reading;
      if (const JsonValue* in = e->find("inspection"); in && in->is_object())
        reading =
            fmt::format(" [read in {} tasks, {:.0f} ms CPU, {:.0f} ms]", json_number(*in, "tasks"),
                        json_number(*in, "cpu_ns") / 1e6, json_number(*in, "wall_ns") / 1e6);
      if (json_flag(*e, "profiled")) {
        parts.push_back(fmt::format("profiled ({}, {}), {} samples, {} truncated{}{}",
                                    json_text(*e, "python_version"), json_text(*e, "offsets"),
                                    json_number(*e, "samples"), json_number(*e, "truncated"),
                                    json_flag(*e, "exited") ? ", exited" : "", reading));
      } else {
        const std::string reason = json_text(*e, "reason");
        v.refused_without_reason |= reason.empty();
        parts.push_back("refused: " + (reason.empty() ? "(no reason)" : reason) + reading);
      }
    }
    if (parts.empty())
      parts.push_back("not in the summary");
    for (size_t i = 0; i < parts.size(); ++i)
      v.did += (i ? "; " : "") + parts[i];
    return v;
  }
  const auto refusals = refusals_in_log(run.log, m.pid);
  for (const auto& r : refusals) {
    v.listed = true;
    v.refused_without_reason |= r.empty();
    v.did += (v.did.empty() ? "" : "; ") + ("refused: " + (r.empty() ? "(no reason)" : r));
  }
  if (samples > 0) {
    v.listed = true;
    v.did =
        fmt::format("profiled, {} samples delivered{}", samples, v.did.empty() ? "" : "; " + v.did);
  }
  if (v.did.empty())
    v.did = "no samples delivered, no refusal logged";
  return v;
}

// The leaf-most frame that is not the kernel's.
const Frame* user_leaf(const ProfileSample& s) {
  for (size_t i = s.full_stack.size(); i-- > 0;)
    if (s.mappings[i] != kKernelMapping)
      return &s.full_stack[i];
  return nullptr;
}

int64_t frames_named(const std::vector<ProfileSample>& samples, std::string_view prefix) {
  int64_t n = 0;
  for (const auto& s : samples)
    for (const auto& f : s.full_stack)
      if (f.function.starts_with(prefix)) {
        n += s.count;
        break;
      }
  return n;
}

double percent(double part, double whole) {
  return whole > 0 ? 100.0 * part / whole : 0.0;
}

}  // namespace

void judge(ZooProcesses& zoo, const KraitRun& run) {
  const Member& normal = *zoo.find(Kind::kNormal);
  const auto mine = samples_of_pid(run.samples, normal.pid);
  const auto& truth = normal.truth->threads.at(0).stack;
  const int64_t normal_total = total(mine);
  const int64_t normal_exact = count_exact(mine, truth);
  const double normal_cpu = normal.cpu_end - normal.cpu_start;
  const double expected = normal_cpu * kRateHz;
  const double cpu_share = run.wall_s > 0 ? run.cpu_s / run.wall_s : 0;

  const char* only = std::getenv("KRAIT_ZOO_ONLY");
  std::cout << fmt::format(
      "[ zoo      ] {} over the zoo ({}): {}\n", run.command,
      only && *only ? fmt::format("KRAIT_ZOO_ONLY={}", only) : std::string("every hostile process"),
      run.abnormal.empty() ? "ended cleanly" : "ABNORMAL");
  for (const auto& a : run.abnormal)
    std::cout << "[ zoo      ]   krait: " << shorten(a, 2000) << "\n";
  std::cout << fmt::format("[ zoo      ]   {:<13} {:>8} {:>8} {:>7}  {}\n", "process", "pid",
                           "samples", "exact", "what krait did");
  std::vector<std::string> unlisted, reasonless;
  for (const Member& m : zoo.members()) {
    const auto own = samples_of_pid(run.samples, m.pid);
    int64_t n = total(own);
    std::string exact = "-";
    if (m.truth) {
      const auto& t = m.truth->threads.at(0);
      int64_t e = count_exact(own, t.stack);
      // The pid-reuse pair shares a pid: each is judged on its own truth.
      if (m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew) {
        n = e;
      } else {
        int64_t on_thread = 0;
        for (const auto& s : own)
          if (s.tid() == t.tid)
            on_thread += s.count;
        exact = fmt::format("{:.1f}%", percent(static_cast<double>(e), on_thread));
      }
      if (m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew)
        exact = fmt::format("{} own", e);
    }
    const Verdict v = what_krait_did(run, m, n);
    std::string notes;
    if (m.kind == Kind::kClaimedBuildId || m.kind == Kind::kFifoLibrary) {
      const std::string thread = m.kind == Kind::kClaimedBuildId ? "impostor-spin" : "fifo-spin";
      const std::string leaf = m.kind == Kind::kClaimedBuildId ? "zoo_impostor_spin" : "zoo_spin";
      int64_t spin = 0, named = 0;
      for (const auto& s : own) {
        auto it = s.labels.find("thread_name");
        if (it == s.labels.end() || it->second != thread)
          continue;
        spin += s.count;
        if (const Frame* f = user_leaf(s); f && f->function == leaf)
          named += s.count;
      }
      notes = fmt::format(" [{}: {} of {} samples end in {}]", thread, named, spin, leaf);
    }
    std::cout << fmt::format("[ zoo      ]   {:<13} {:>8} {:>8} {:>7}  {}{}\n", info(m.kind).name,
                             m.pid, n, exact, shorten(v.did, 150), notes);
    if (m.kind == Kind::kNormal || m.kind == Kind::kPidReuseOld || m.kind == Kind::kPidReuseNew)
      continue;
    if (info(m.kind).python_like && !v.listed)
      unlisted.push_back(info(m.kind).name);
    if (v.refused_without_reason)
      reasonless.push_back(info(m.kind).name);
  }
  std::cout << fmt::format(
      "[ zoo      ]   normal process: {} of {} samples exact ({:.1f}%), {} samples for {:.2f} s "
      "of CPU = {:.1f}% of the {:.0f} predicted\n",
      normal_exact, normal_total, percent(normal_exact, normal_total), normal_total, normal_cpu,
      percent(normal_total, expected), expected);
  std::cout << fmt::format(
      "[ zoo      ]   krait: peak RSS {} MiB (cap {}), CPU {:.2f} s over {:.1f} s = {:.1f}% of "
      "a core (cap {:.0f}%)\n",
      run.peak_rss_kib / 1024, kMaxRssMiB, run.cpu_s, run.wall_s, 100 * cpu_share,
      100 * kMaxCpuShare);
  if (run.stats)
    if (const JsonValue* losses = run.stats->find("losses"); losses && losses->is_object())
      for (size_t i = 0; i < losses->keys.size(); ++i)
        std::cout << fmt::format("[ zoo      ]   loss: {:>8}  {}\n", losses->items[i].integer,
                                 losses->keys[i]);

  SCOPED_TRACE(run.command);
  // krait itself.
  EXPECT_TRUE(run.abnormal.empty())
      << run.command << " did not run cleanly:\n"
      <<
      [&] {
        std::string all;
        for (const auto& a : run.abnormal)
          all += "  " + a + "\n";
        return all;
      }()
      << "its log ends with:\n"
      << run.log.substr(run.log.size() > 4000 ? run.log.size() - 4000 : 0);
  EXPECT_LE(run.peak_rss_kib, kMaxRssMiB * 1024)
      << "krait's peak RSS " << run.peak_rss_kib / 1024 << " MiB exceeds " << kMaxRssMiB << " MiB";
  EXPECT_LE(cpu_share, kMaxCpuShare)
      << "krait used " << run.cpu_s << " s of CPU in " << run.wall_s << " s";
  if (run.mode == Mode::kRecord) {
    EXPECT_EQ(run.go_raw_error, "") << "the profile is not valid pprof for go tool pprof";
  }

  // The normal process.
  EXPECT_GE(normal_exact, kExactFraction * static_cast<double>(normal_total))
      << describe_mismatches(mine, truth);
  EXPECT_GE(static_cast<double>(normal_total), kSampleFraction * expected)
      << "the normal process got " << normal_total << " samples for " << normal_cpu
      << " s of CPU at " << kRateHz << " Hz";
  EXPECT_GT(normal_total, 0) << "the normal process was not profiled at all";

  // The process that reused a pid has its own samples with its own stack.
  if (const Member* fresh = zoo.find(Kind::kPidReuseNew)) {
    const Member* old = zoo.find(Kind::kPidReuseOld);
    const auto both = samples_of_pid(run.samples, fresh->pid);
    const auto& new_truth = fresh->truth->threads.at(0).stack;
    const auto& old_truth = old->truth->threads.at(0).stack;
    const int64_t own = count_exact(both, new_truth);
    const double fresh_expected = (fresh->cpu_end - fresh->cpu_start) * kRateHz;
    EXPECT_GE(static_cast<double>(own), kReusedSampleFraction * fresh_expected)
        << "the process that reused pid " << fresh->pid << " got " << own
        << " samples with its own stack for " << fresh->cpu_end - fresh->cpu_start << " s of CPU\n"
        << describe_mismatches(both, new_truth);
    // In their steady state (the hot loop at the leaf, where the truths
    // apply), every sample of the pid is one of the two processes', each
    // at its own depth: none is named with the other's state. Samples at
    // start-up (imports) and exit are true stacks the truths do not cover.
    std::vector<ProfileSample> steady;
    for (const auto& s : both)
      if (!s.stack.empty() && s.stack.back().function == new_truth.back().function)
        steady.push_back(s);
    EXPECT_GE(static_cast<double>(count_exact(steady, new_truth) + count_exact(steady, old_truth)),
              kExactFraction * static_cast<double>(total(steady)))
        << "samples of pid " << fresh->pid << " with neither process's stack\n"
        << describe_mismatches(steady, new_truth);
  } else if (zoo.selected(Kind::kPidReuseNew) && run.survived_window) {
    ADD_FAILURE() << "the pid-reuse process never started";
  }

  // The library claiming libc's build-id: its filler never runs, so a frame
  // named after it is another file's frame named from the impostor; and its
  // own function must keep its name.
  if (const Member* m = zoo.find(Kind::kClaimedBuildId)) {
    EXPECT_EQ(frames_named(run.samples, "zoo_impostor_text"), 0)
        << "frames of other files named from the library claiming libc's build-id";
    EXPECT_EQ(frames_named(mine, "zoo_impostor"), 0)
        << "the normal process never maps the impostor";
    int64_t spin = 0, named = 0;
    std::map<std::string, int64_t> leaves;
    for (const auto& s : samples_of_pid(run.samples, m->pid)) {
      auto it = s.labels.find("thread_name");
      if (it == s.labels.end() || it->second != "impostor-spin")
        continue;
      spin += s.count;
      const Frame* f = user_leaf(s);
      if (f && f->function == "zoo_impostor_spin")
        named += s.count;
      leaves[f ? f->function : "(no frame)"] += s.count;
    }
    if (spin > 0) {
      EXPECT_GE(named, kImpostorLeafFraction * static_cast<double>(spin))
          << "the impostor's own function lost its name: " << named << " of " << spin
          << " samples of its thread end in zoo_impostor_spin; their leaves: "
          << fmt::format("{}", fmt::join(leaves, ", "));
    }
  }

  // Every hostile process krait can take for Python is accounted for (when
  // krait lived to say so: otherwise the failure above is the news).
  if (!run.survived_window || !run.status || (run.mode == Mode::kRecord && !run.stats))
    return;
  EXPECT_TRUE(unlisted.empty()) << fmt::format(
      "neither profiled nor refused with a reason ({}): {}",
      run.mode == Mode::kRecord ? "--stats-json" : "delivered samples / daemon log",
      fmt::join(unlisted, ", "));
  EXPECT_TRUE(reasonless.empty()) << fmt::format("refused without a reason: {}",
                                                 fmt::join(reasonless, ", "));
}

}  // namespace krait::test::zoo
