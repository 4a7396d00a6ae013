// proc::list_pids and proc::read_comm over a /proc laid out by hand (names
// that are not pids, a comm a process stuffed), and over the real /proc.
#include "proc/processes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

namespace krait::proc {
namespace {

namespace fs = std::filesystem;

class ProcessesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("krait-proc-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  void process(const std::string& name, const std::string& comm) {
    fs::create_directories(root_ / name);
    std::ofstream(root_ / name / "comm") << comm;
  }

  fs::path root_;
};

TEST_F(ProcessesTest, OnlyPidDirectoriesAreListedInOrder) {
  process("42", "worker\n");
  process("7", "python3\n");
  process("self", "krait\n");
  process("0", "swapper\n");
  process("12abc", "x\n");
  process("99999999999", "too large for a pid\n");
  process("-3", "negative\n");
  fs::create_directories(root_ / "sys");
  EXPECT_EQ(list_pids(root_.string()), (std::vector<pid_t>{7, 42}));
  EXPECT_TRUE(list_pids((root_ / "missing").string()).empty());
}

TEST_F(ProcessesTest, CommLosesItsNewlineAndIsBounded) {
  process("7", "python3\n");
  process("8", std::string(100, 'x'));
  auto comm = read_comm(7, root_.string());
  ASSERT_TRUE(comm.ok()) << comm.error().message;
  EXPECT_EQ(*comm, "python3");
  // The kernel writes at most 16 bytes: a larger file is not a comm.
  EXPECT_FALSE(read_comm(8, root_.string()).ok());
  EXPECT_FALSE(read_comm(9, root_.string()).ok());
}

TEST_F(ProcessesTest, ThisProcessIsListedWithItsName) {
  const auto pids = list_pids();
  EXPECT_TRUE(std::binary_search(pids.begin(), pids.end(), ::getpid()));
  auto comm = read_comm(::getpid());
  ASSERT_TRUE(comm.ok()) << comm.error().message;
  EXPECT_EQ(*comm, std::string("proc_processes_test").substr(0, 15));
  EXPECT_EQ(comm_or_unknown(::getpid()), *comm);
}

}  // namespace
}  // namespace krait::proc
