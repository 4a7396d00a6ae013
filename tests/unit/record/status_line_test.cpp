// The live status line of `krait record`: its text, and that it stays off
// anything but a terminal.
#include "record/status_line.h"

#include <gtest/gtest.h>
#include <pty.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "util/unique_fd.h"

namespace krait::record {
namespace {

TEST(StatusLine, ReadsAsOneSentenceWithGroupedCounts) {
  EXPECT_EQ(format_status({.elapsed_s = 12.7,
                           .duration_s = 30,
                           .samples = 1234567,
                           .processes = 3,
                           .dropped = 1000}),
            "krait: recording 12/30 s, 1,234,567 samples, 3 processes, 1,000 dropped");
  EXPECT_EQ(format_status({.elapsed_s = 0.2, .samples = 1, .processes = 1}),
            "krait: recording 0 s (Ctrl-C stops), 1 sample, 1 process, 0 dropped");
}

// Reads what was written to `file` (a temporary file) from the start.
std::string contents(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, file)) > 0)
    text.append(buf, n);
  return text;
}

TEST(StatusLine, WritesNothingWhenNotATerminal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    StatusLine line(file);
    EXPECT_FALSE(line.live());
    line.show({.elapsed_s = 1, .samples = 5, .processes = 1});
  }
  EXPECT_EQ(contents(file), "");
  std::fclose(file);
}

TEST(StatusLine, RewritesOneLineOnATerminalAndErasesIt) {
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  UniqueFd master_fd(master);
  std::FILE* tty = ::fdopen(slave, "w");
  ASSERT_NE(tty, nullptr);
  {
    StatusLine line(tty);
    EXPECT_TRUE(line.live());
    line.show({.elapsed_s = 1, .duration_s = 2, .samples = 5, .processes = 1});
    line.show({.elapsed_s = 2, .duration_s = 2, .samples = 9, .processes = 1});
  }
  std::fclose(tty);
  std::string seen;
  char buf[512];
  ssize_t n;
  while ((n = ::read(master_fd.get(), buf, sizeof buf)) > 0)
    seen.append(buf, static_cast<size_t>(n));
  // Each update returns to the start of the line and erases its rest; the
  // destructor leaves the line blank, and no newline is ever written.
  EXPECT_EQ(seen,
            "\rkrait: recording 1/2 s, 5 samples, 1 process, 0 dropped\x1b[K"
            "\rkrait: recording 2/2 s, 9 samples, 1 process, 0 dropped\x1b[K"
            "\r\x1b[K");
}

}  // namespace
}  // namespace krait::record
