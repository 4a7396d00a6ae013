// KernelSymbols on a kallsyms fixture and on this machine's /proc/kallsyms.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <map>
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

// What the test reads of /proc/kallsyms itself, with plain string search.
struct KallsymsView {
  uint64_t getpid = 0;
  std::map<uint64_t, std::string> module_text;  // address -> module, text symbols only
};

KallsymsView read_kallsyms_view() {
  KallsymsView view;
  std::ifstream in("/proc/kallsyms");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string address, type, name, module;
    fields >> address >> type >> name >> module;
    if (name == "__x64_sys_getpid")
      view.getpid = std::stoull(address, nullptr, 16);
    if (module.size() > 2 && (type == "t" || type == "T"))
      view.module_text.emplace(std::stoull(address, nullptr, 16),
                               module.substr(1, module.size() - 2));
  }
  return view;
}

// This machine's kernel.
TEST(KernelSymbolsTest, ThisKernel) {
  ASSERT_EQ(::geteuid(), 0u) << "reading real kernel addresses from /proc/kallsyms needs root";
  const KallsymsView before = read_kallsyms_view();
  ASSERT_NE(before.getpid, 0u) << "__x64_sys_getpid is not in /proc/kallsyms";

  auto symbols = KernelSymbols::load();
  ASSERT_TRUE(symbols.ok()) << symbols.error().message;
  EXPECT_GT(symbols->size(), 10000u);
  for (uint64_t offset : {0, 1, 8}) {
    auto s = symbols->find(before.getpid + offset);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->name, "__x64_sys_getpid");
    EXPECT_EQ(s->address, before.getpid);
    EXPECT_EQ(s->module, "");
  }

  // Each module's text symbol names its module. BPF programs ([bpf]) and
  // ftrace trampolines ([__builtin__ftrace]) are listed as modules too, and
  // come and go with other processes' work: only symbols listed the same
  // before and after the load are checked, and there must be some (a kernel
  // with no module, no BPF program and no trampoline leaves nothing to check,
  // which fails rather than passing unchecked).
  const KallsymsView after = read_kallsyms_view();
  size_t checked = 0;
  for (const auto& [address, module] : before.module_text) {
    auto again = after.module_text.find(address);
    if (again == after.module_text.end() || again->second != module)
      continue;
    ++checked;
    auto s = symbols->find(address);
    ASSERT_TRUE(s) << module << " at " << std::hex << address;
    EXPECT_EQ(s->module, module) << s->name << " at " << std::hex << address;
  }
  EXPECT_GT(checked, 0u) << "no text symbol of a module in /proc/kallsyms to check";
}

TEST(KernelSymbolsTest, MissingFileIsAnError) {
  auto symbols = KernelSymbols::load("/nonexistent/kallsyms");
  EXPECT_FALSE(symbols.ok());
}

}  // namespace
}  // namespace krait::symbolize
