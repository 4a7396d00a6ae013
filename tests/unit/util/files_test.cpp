// Bounded whole-file reads: files at, under and over the cap, the prefix
// variant, and /proc files whose size stat() reports as 0.
#include "util/files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace krait {
namespace {

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/krait_files_XXXXXX";
    const int fd = ::mkstemp(pattern.data());
    ASSERT_GE(fd, 0);
    ::close(fd);
    path_ = pattern;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  void write(const std::string& bytes) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  std::string path_;
};

TEST_F(FilesTest, ReadsAWholeFileUpToTheCap) {
  const std::string bytes = std::string(100, 'a') + std::string(1, '\0') + "b";
  write(bytes);
  EXPECT_EQ(read_file(path_).value(), bytes);
  EXPECT_EQ(read_file(path_, bytes.size()).value(), bytes);
  write("");
  EXPECT_EQ(read_file(path_, 0).value(), "");
}

TEST_F(FilesTest, RefusesAFileOverTheCapNamingFileAndCap) {
  write(std::string(40'000, 'x'));
  auto text = read_file(path_, 39'999);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.error().message.find(path_), std::string::npos) << text.error().message;
  EXPECT_NE(text.error().message.find("39999 bytes"), std::string::npos) << text.error().message;
  EXPECT_FALSE(read_file(path_, 0).ok());
}

TEST_F(FilesTest, TheDefaultCapIsFourMebibytes) {
  write(std::string(kReadFileDefaultMaxBytes, 'y'));
  auto text = read_file(path_);
  ASSERT_TRUE(text.ok()) << text.error().message;
  EXPECT_EQ(text->size(), kReadFileDefaultMaxBytes);
  write(std::string(kReadFileDefaultMaxBytes + 1, 'y'));
  EXPECT_FALSE(read_file(path_).ok());
}

TEST_F(FilesTest, APrefixReadStopsAtItsCap) {
  write(std::string(20'000, 'a') + std::string(20'000, 'b'));
  EXPECT_EQ(read_file_prefix(path_, 20'001).value(), std::string(20'000, 'a') + "b");
  EXPECT_EQ(read_file_prefix(path_, 0).value(), "");
  EXPECT_EQ(read_file_prefix(path_, 1'000'000).value().size(), 40'000u);
}

TEST_F(FilesTest, ReadsProcFilesThatStatCallsEmpty) {
  auto cmdline = read_file("/proc/self/cmdline");
  ASSERT_TRUE(cmdline.ok()) << cmdline.error().message;
  EXPECT_FALSE(cmdline->empty());
  auto prefix = read_file_prefix("/proc/self/cmdline", 3);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(*prefix, cmdline->substr(0, 3));
}

TEST_F(FilesTest, NamesAFileThatCannotBeOpened) {
  auto text = read_file(path_ + ".missing");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.error().message.find(path_ + ".missing"), std::string::npos);
}

}  // namespace
}  // namespace krait
