// `krait convert` on a real recording: chain.py recorded as pprof, then
// converted to folded text, speedscope and HTML, each of which must carry
// the pprof's samples; the HTML page is then opened in headless chromium,
// whose DOM must hold the workload's own functions (from its truth) as
// drawn flame-graph cells, and whose screenshot is kept as a test artifact
// (directory $KRAIT_TEST_ARTIFACTS, default <build>/test-artifacts).
// Bad input gives one line and exit status 1.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "export/pprof.h"
#include "export/pprof_import.h"
#include "formats_support.h"
#include "runtime/krait_harness.h"
#include "support/json.h"
#include "support/manifest.h"
#include "support/workloads.h"
#include "util/files.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

Interpreter pick(const std::string& version_prefix) {
  for (const auto& i : load_manifest())
    if (i.version.rfind(version_prefix, 0) == 0)
      return i;
  ADD_FAILURE() << "no Python " << version_prefix << " in " << manifest_path();
  return {};
}

std::string read_all(const std::string& path) {
  auto text = read_file(path, size_t{256} << 20);
  EXPECT_TRUE(text.ok()) << text.error().message;
  return text.ok() ? *text : std::string();
}

std::string artifacts_dir() {
  const char* env = std::getenv("KRAIT_TEST_ARTIFACTS");
  const std::string dir = env != nullptr && *env != '\0' ? env : KRAIT_TEST_ARTIFACTS_DEFAULT;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EXPECT_FALSE(ec) << "cannot create " << dir << ": " << ec.message();
  return dir;
}

// Per "<process> (<pid>);<thread> (<tid>)" prefix: samples, from the
// folded text (flamegraph.pl's reading: the count after the last space);
// `leaf_count` adds the samples whose stack holds the frame `leaf`.
std::map<std::string, int64_t> folded_threads(const std::string& text, int64_t* leaf_count,
                                              const std::string& leaf) {
  std::map<std::string, int64_t> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t space = line.rfind(' ');
    const std::string stack = line.substr(0, space);
    const int64_t count = std::strtoll(line.c_str() + space + 1, nullptr, 10);
    const size_t first = stack.find(';');
    const size_t second = stack.find(';', first + 1);
    out[stack.substr(0, second)] += count;
    // The truth's leaf as one whole frame: native frames may follow it.
    const size_t at = stack.find(";" + leaf);
    const size_t after = at == std::string::npos ? at : at + 1 + leaf.size();
    if (at != std::string::npos && (after == stack.size() || stack[after] == ';'))
      *leaf_count += count;
  }
  return out;
}

// Runs headless chromium with `args` to completion: its stdout, or an error
// with its stderr. HOME and the profile directory are `home`'s: chromium
// needs both writable.
Result<std::string> run_chromium(const TempDir& home, const std::vector<std::string>& args) {
  SpawnOptions opts;
  opts.argv = {"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
               "--user-data-dir=" + home.file("profile")};
  opts.argv.insert(opts.argv.end(), args.begin(), args.end());
  opts.env["HOME"] = home.path();
  auto child = ChildProcess::spawn(opts);
  if (!child)
    return child.error();
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = child->read_line(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
    if (!line)
      break;  // end of output (or the deadline; wait() below tells which)
    out += *line;
    out += '\n';
  }
  auto status = child->wait(10s);
  if (!status)
    return status.error();
  if (!status->success())
    return make_error("chromium {}: {}", status->describe(), child->stderr_text());
  return out;
}

TEST(Convert, RecordedPprofBecomesEveryFormatWithTheSameSamples) {
  require_root();
  const Interpreter interp = pick("3.12");
  auto w = start_workload(interp, "chain.py", {"--depth", "5"});
  ASSERT_TRUE(w.ok()) << w.error().message;
  const int64_t pid = w->truth.pid;
  const auto& truth = w->truth.threads.at(0).stack;
  TempDir dir;
  auto rec = Recording::start({"-p", std::to_string(pid), "-d", "3"}, dir);
  ASSERT_TRUE(rec.ok()) << rec.error().message;
  auto r = rec->wait(60s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const std::string pprof_path = dir.file("profile.pb.gz");
  ASSERT_GE(total(samples_of_pid(r->samples, pid)), 100) << r->stderr_text;

  auto imported = exporter::profile_from_pprof(r->pprof);
  ASSERT_TRUE(imported.ok()) << imported.error().message;
  const auto facts = facts_of(*imported);
  const int64_t period = r->pprof.period();
  const int64_t all = total(r->samples);

  // The pprof's samples of the truth's leaf line, and per thread.
  int64_t pprof_leaf = 0;
  std::map<std::string, int64_t> pprof_threads;
  for (const auto& s : r->samples) {
    if (!s.stack.empty() && s.stack.back() == truth.back())
      pprof_leaf += s.count;
    pprof_threads[fmt::format("{} ({});{} ({})", s.labels.at("process_name"), s.labels.at("pid"),
                              s.labels.at("thread_name"), s.labels.at("tid"))] += s.count;
  }
  ASSERT_GT(pprof_leaf, 0);

  auto convert = [&](const std::string& format, const std::string& out) {
    auto c = run_krait({"convert", pprof_path, "-f", format, "-o", out});
    EXPECT_TRUE(c.ok()) << c.error().message;
    if (c.ok()) {
      EXPECT_TRUE(c->status.success()) << format << ": " << c->stderr_text;
    }
    return read_all(out);
  };

  // Folded: flamegraph.pl's reading gives the same threads and leaf counts.
  const std::string folded = convert("folded", dir.file("chain.folded"));
  int64_t folded_leaf = 0;
  const std::string leaf_text =
      fmt::format("{} ({}:{})", truth.back().function, truth.back().file, truth.back().line);
  EXPECT_EQ(folded_threads(folded, &folded_leaf, leaf_text), pprof_threads);
  EXPECT_EQ(folded_leaf, pprof_leaf);

  // speedscope: every thread's stacks and weights.
  const std::string speedscope = convert("speedscope", dir.file("chain.speedscope.json"));
  auto doc = parse_json(speedscope);
  ASSERT_TRUE(doc.ok()) << doc.error().message;
  auto stacks = speedscope_stacks(*doc);
  ASSERT_TRUE(stacks.ok()) << stacks.error().message;
  EXPECT_EQ(without_addresses(*stacks), without_addresses(expected_speedscope(facts, period)));

  // HTML: the embedded tree, then what chromium draws from it.
  const std::string html_path = dir.file("chain.html");
  const std::string html = convert("html", html_path);
  auto data_text = page_data_text(html);
  ASSERT_TRUE(data_text.ok()) << data_text.error().message;
  auto data = parse_json(*data_text);
  ASSERT_TRUE(data.ok()) << data.error().message;
  auto page = page_stacks(*data);
  ASSERT_TRUE(page.ok()) << page.error().message;
  EXPECT_EQ(without_addresses(*page), without_addresses(expected_page(facts)));
  EXPECT_EQ(data->find("nodes")->items.at(2).integer, all);

  ASSERT_EQ(::access("/usr/bin/chromium", X_OK), 0) << "chromium is missing: run scripts/setup";
  TempDir home;
  auto dom = run_chromium(home, {"--dump-dom", "file://" + html_path});
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  // Drawn cells carry their frame's name and kind as attributes (the
  // embedded JSON holds names only as JSON strings).
  for (const auto& fn : {truth.back().function, truth.at(1).function}) {
    EXPECT_NE(dom->find(fmt::format("data-name=\"{}\" data-kind=\"python\"", fn)),
              std::string::npos)
        << fn << " is not a drawn Python cell";
  }
  EXPECT_NE(dom->find("data-rendered-cells="), std::string::npos);

  const std::string artifacts = artifacts_dir();
  const std::string shot = artifacts + "/convert-chain-flamegraph.png";
  std::filesystem::remove(shot);
  auto shot_run =
      run_chromium(home, {"--screenshot=" + shot, "--window-size=1280,800", "file://" + html_path});
  ASSERT_TRUE(shot_run.ok()) << shot_run.error().message;
  const std::string png = read_all(shot);
  ASSERT_GT(png.size(), 8u) << "no screenshot at " << shot;
  EXPECT_EQ(png.substr(1, 3), "PNG");
  std::filesystem::copy_file(html_path, artifacts + "/convert-chain-flamegraph.html",
                             std::filesystem::copy_options::overwrite_existing);
  std::cout << fmt::format(
      "[ stats    ] {} samples; pprof {} B, folded {} B, speedscope {} B, "
      "html {} B; screenshot {}\n",
      all, read_all(pprof_path).size(), folded.size(), speedscope.size(), html.size(), shot);
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

TEST(Convert, BadInputIsOneLineNamingTheProblemAndExitOne) {
  TempDir dir;
  std::ofstream(dir.file("text.pb.gz")) << "just some text\n";
  write_gzip(dir.file("garbage.pb.gz"), std::string("\xff\xff\xff\xff garbage", 13));
  // A structurally broken profile: string_table[0] is not "".
  perftools::profiles::Profile broken;
  broken.add_string_table("not empty");
  write_gzip(dir.file("broken.pb.gz"), broken.SerializeAsString());
  {
    std::ofstream truncated(dir.file("truncated.pb.gz"));
    truncated << std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10);
  }
  const std::pair<std::string, std::string> cases[] = {
      {dir.file("missing.pb.gz"), "No such file"},   {dir.file("text.pb.gz"), "not gzip"},
      {dir.file("garbage.pb.gz"), "does not parse"}, {dir.file("truncated.pb.gz"), "truncated"},
      {dir.file("broken.pb.gz"), "string_table[0]"}, {dir.path(), "not a regular file"},
  };
  for (const auto& [input, problem] : cases) {
    auto r = run_krait({"convert", input, "-f", "html", "-o", dir.file("out.html")});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r->status.exited && r->status.code == 1) << input << ": " << r->status.describe();
    EXPECT_EQ(std::count(r->stderr_text.begin(), r->stderr_text.end(), '\n'), 1) << r->stderr_text;
    EXPECT_NE(r->stderr_text.find(problem), std::string::npos) << r->stderr_text;
    EXPECT_NE(r->stderr_text.find(input), std::string::npos) << r->stderr_text;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("out.html")));
  auto r = run_krait({"convert", dir.file("text.pb.gz"), "-f", "svg"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 1);
  EXPECT_NE(r->stderr_text.find("unknown output format 'svg'"), std::string::npos)
      << r->stderr_text;
}

}  // namespace
}  // namespace krait::test
