// KernelSymbols on a kallsyms fixture and on this machine's /proc/kallsyms.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "symbolize/kernel_symbols.h"

namespace krait::symbolize {
namespace {

constexpr const char* kFixture =
    "ffffffff81000000 T _stext\n"
    "ffffffff81000000 T startup_64\n"
    "ffffffff81000100 t helper\n"
    "ffffffff81000180 D some_data\n"
    "ffffffff81000200 W weak_function\n"
    "ffffffff81000300 t __do_sys_getpid\n"
    "ffffffff81000300 T __ia32_sys_getpid\n"
    "ffffffff81000300 T __x64_sys_getpid\n"
    "ffffffff81000340 r rodata_thing\n"
    "ffffffff81000400 T _etext\n"
    "\n"
    "ffffffffc0a00000 t ext4_read\t[ext4]\n"
    "ffffffffc0a00080 T ext4_write\t[ext4]\n"
    "ffffffffc0b00000 t bpf_prog_1234_krait\t[bpf]\n";

TEST(KernelSymbolsTest, ParsesTextSymbolsWithModules) {
  auto symbols = KernelSymbols::parse(kFixture);
  ASSERT_TRUE(symbols.ok()) << symbols.error().message;
  // Data and read-only symbols are not indexed; aliases count once.
  EXPECT_EQ(symbols->size(), 8u);

  auto s = symbols->find(0xffffffff81000000);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "startup_64");  // of two global aliases, fewer underscores
  s = symbols->find(0xffffffff810000ff);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "startup_64");
  s = symbols->find(0xffffffff81000190);  // inside helper; some_data is not text
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "helper");
  EXPECT_EQ(s->module, "");
  s = symbols->find(0xffffffff81000250);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "weak_function");
  s = symbols->find(0xffffffff8100033f);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "__x64_sys_getpid");
  EXPECT_EQ(s->address, 0xffffffff81000300u);

  s = symbols->find(0xffffffffc0a00090);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "ext4_write");
  EXPECT_EQ(s->module, "ext4");
  s = symbols->find(0xffffffffc0b00010);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->module, "bpf");

  EXPECT_FALSE(symbols->find(0xffffffff80ffffff));  // before every symbol
  EXPECT_FALSE(symbols->find(0));
  // Past the last symbol by more than the cap.
  EXPECT_FALSE(symbols->find(0xffffffffc0b00000 + KernelSymbols::kMaxLastSymbolSize));
  EXPECT_TRUE(symbols->find(0xffffffffc0b00000 + KernelSymbols::kMaxLastSymbolSize - 1));
}

TEST(KernelSymbolsTest, RejectsMalformedLines) {
  for (const char* text : {"zzzz T name\n", "ffffffff81000000 T\n", "ffffffff81000000\n",
                           "ffffffff81000000 T name\t[unterminated\n", "ffffffff81000000Tname\n"}) {
    auto symbols = KernelSymbols::parse(text);
    EXPECT_FALSE(symbols.ok()) << text;
    if (!symbols.ok()) {
      EXPECT_NE(symbols.error().message.find("line 1"), std::string::npos)
          << symbols.error().message;
    }
  }
  EXPECT_TRUE(KernelSymbols::parse("").ok());
}

// This machine's kernel, read by the test with plain string search.
TEST(KernelSymbolsTest, ThisKernel) {
  ASSERT_EQ(::geteuid(), 0u) << "reading real kernel addresses from /proc/kallsyms needs root";
  std::ifstream in("/proc/kallsyms");
  ASSERT_TRUE(in) << "cannot read /proc/kallsyms";
  uint64_t getpid = 0;
  uint64_t module_address = 0;
  std::string module_name;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string address, type, name, module;
    fields >> address >> type >> name >> module;
    if (name == "__x64_sys_getpid")
      getpid = std::stoull(address, nullptr, 16);
    if (module_address == 0 && !module.empty() && (type == "t" || type == "T")) {
      module_address = std::stoull(address, nullptr, 16);
      module_name = module.substr(1, module.size() - 2);
    }
  }
  ASSERT_NE(getpid, 0u) << "__x64_sys_getpid is not in /proc/kallsyms";

  auto symbols = KernelSymbols::load();
  ASSERT_TRUE(symbols.ok()) << symbols.error().message;
  EXPECT_GT(symbols->size(), 10000u);
  for (uint64_t offset : {0, 1, 8}) {
    auto s = symbols->find(getpid + offset);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->name, "__x64_sys_getpid");
    EXPECT_EQ(s->address, getpid);
    EXPECT_EQ(s->module, "");
  }
  if (module_address != 0) {
    auto s = symbols->find(module_address);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->module, module_name);
  }
}

TEST(KernelSymbolsTest, MissingFileIsAnError) {
  auto symbols = KernelSymbols::load("/nonexistent/kallsyms");
  EXPECT_FALSE(symbols.ok());
}

}  // namespace
}  // namespace krait::symbolize
