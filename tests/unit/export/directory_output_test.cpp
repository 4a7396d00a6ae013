// DirectoryOutput: names, atomic writes, retention of our own files only,
// and errors that leave the caller running. (A full disk is in the runtime
// tier: it needs a tiny tmpfs.)
#include "export/directory_output.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "upload_support.h"
#include "util/files.h"

namespace krait::test {
namespace {

namespace fs = std::filesystem;
using exporter::DirectoryOutput;
using exporter::DirectoryOutputOptions;

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir))
    names.insert(entry.path().filename().string());
  return names;
}

TEST(DirectoryOutputTest, NamesFilesByApplicationAndInterval) {
  EXPECT_EQ(DirectoryOutput::file_name("app.py", 1700000000, 1700000015),
            "app.py-1700000000-1700000015.pb.gz");
  EXPECT_EQ(DirectoryOutput::file_name("my app/../etc", 1, 2), "my_app_.._etc-1-2.pb.gz");
  EXPECT_EQ(DirectoryOutput::file_name(".hidden", 1, 2), "_hidden-1-2.pb.gz");
  EXPECT_EQ(DirectoryOutput::file_name("", 1, 2), "unknown-1-2.pb.gz");
  EXPECT_EQ(DirectoryOutput::file_name("celery", 1, 2, 3), "celery-1-2.3.pb.gz");
  EXPECT_EQ(DirectoryOutput::file_name(std::string(300, 'x'), 1, 2).size(),
            100 + std::string("-1-2.pb.gz").size());
}

TEST(DirectoryOutputTest, ParsesOnlyItsOwnNames) {
  auto parsed = DirectoryOutput::parse_file_name("my-app-2-1700000000-1700000015.pb.gz");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->application, "my-app-2");
  EXPECT_EQ(parsed->from, 1700000000);
  EXPECT_EQ(parsed->until, 1700000015);
  EXPECT_EQ(parsed->duplicate, 0u);
  parsed = DirectoryOutput::parse_file_name("app.py-5-6.2.pb.gz");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->application, "app.py");
  EXPECT_EQ(parsed->duplicate, 2u);
  for (const char* foreign :
       {"notes.txt", "app-1-2.pb", "app-1-2.pb.gz.tmp.77.0", "app-x-2.pb.gz", "-1-2.pb.gz",
        ".hidden-1-2.pb.gz", "app-1-2.0.pb.gz", "a b-1-2.pb.gz", "app-1.pb.gz", "app-1-2-.pb.gz"})
    EXPECT_FALSE(DirectoryOutput::parse_file_name(foreign).has_value()) << foreign;
}

TEST(DirectoryOutputTest, WritesTheBytesAndCreatesTheDirectory) {
  TempDir tmp;
  const std::string dir = tmp.file("nested/profiles");
  DirectoryOutput output({.path = dir});
  const std::string pprof = tiny_pprof("main");
  auto path = output.write("web", 100, 115, pprof);
  ASSERT_TRUE(path.ok()) << path.error().message;
  EXPECT_EQ(*path, dir + "/web-100-115.pb.gz");
  auto data = read_file(*path);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(*data, pprof);
  EXPECT_EQ(names_in(dir), std::set<std::string>{"web-100-115.pb.gz"});  // no temporary left
  EXPECT_EQ(output.stats().written, 1u);
}

TEST(DirectoryOutputTest, NeverOverwritesAnEarlierProfile) {
  TempDir tmp;
  DirectoryOutput output({.path = tmp.path()});
  ASSERT_TRUE(output.write("a b", 1, 2, "first").ok());
  auto second = output.write("a/b", 1, 2, "second");  // sanitizes to the same name
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(*second, tmp.file("a_b-1-2.1.pb.gz"));
  EXPECT_EQ(*read_file(tmp.file("a_b-1-2.pb.gz")), "first");
  EXPECT_EQ(*read_file(*second), "second");
}

TEST(DirectoryOutputTest, RetentionByCountDeletesTheOldestOfOurFilesOnly) {
  TempDir tmp;
  const std::string dir = tmp.path();
  write_text_file(tmp.file("notes.txt"), "keep me");
  write_text_file(tmp.file("other-1-2.pb.gz.bak"), "keep me");
  fs::create_directory(tmp.file("dir-1-2.pb.gz"));
  fs::create_symlink("/etc/hostname", tmp.file("link-1-2.pb.gz"));
  DirectoryOutput output({.path = dir, .max_files = 3});
  // Written out of interval order: age is the interval, not the write order.
  for (int64_t until : {300, 100, 500, 200, 400})
    ASSERT_TRUE(output.write("app", until - 15, until, "x").ok());
  EXPECT_EQ(
      names_in(dir),
      (std::set<std::string>{"notes.txt", "other-1-2.pb.gz.bak", "dir-1-2.pb.gz", "link-1-2.pb.gz",
                             "app-285-300.pb.gz", "app-385-400.pb.gz", "app-485-500.pb.gz"}));
  EXPECT_EQ(output.stats().deleted, 2u);
  EXPECT_EQ(output.stats().written, 5u);
}

TEST(DirectoryOutputTest, RetentionByBytesKeepsTheNewestThatFit) {
  TempDir tmp;
  const std::string blob(1000, 'p');
  DirectoryOutput output({.path = tmp.path(), .max_bytes = 2500});
  for (int64_t until : {10, 20, 30, 40})
    ASSERT_TRUE(output.write("svc", until - 10, until, blob).ok());
  EXPECT_EQ(names_in(tmp.path()), (std::set<std::string>{"svc-20-30.pb.gz", "svc-30-40.pb.gz"}));
  // A file alone over the budget is still kept: it is the newest profile.
  ASSERT_TRUE(output.write("svc", 40, 50, std::string(4000, 'q')).ok());
  EXPECT_EQ(names_in(tmp.path()), std::set<std::string>{"svc-40-50.pb.gz"});
}

TEST(DirectoryOutputTest, AnUnusableDirectoryIsAnErrorAndLaterWritesRecover) {
  TempDir tmp;
  const std::string blocker = tmp.file("blocker");
  write_text_file(blocker, "a file where the directory should be");
  DirectoryOutput output({.path = blocker + "/profiles"});
  auto failed = output.write("app", 1, 2, "x");
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find(blocker + "/profiles"), std::string::npos)
      << failed.error().message;
  EXPECT_EQ(failed.error().message.find('\n'), std::string::npos);
  EXPECT_EQ(output.stats().failed, 1u);
  EXPECT_EQ(output.stats().last_error, failed.error().message);

  DirectoryOutput not_a_dir({.path = blocker});
  EXPECT_FALSE(not_a_dir.write("app", 1, 2, "x").ok());

  ASSERT_TRUE(fs::remove(blocker));
  auto recovered = output.write("app", 3, 4, "y");
  ASSERT_TRUE(recovered.ok()) << recovered.error().message;
  EXPECT_EQ(*read_file(*recovered), "y");
}

}  // namespace
}  // namespace krait::test
