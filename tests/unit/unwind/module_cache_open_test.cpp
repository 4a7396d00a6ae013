// ModuleCache while opening a file: a library swapped for a FIFO, and a slow
// open that must not delay other callers.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "fixture_support.h"
#include "module_test_support.h"
#include "unwind/cfi_table.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

namespace krait::unwind {
namespace {

using namespace module_test;
using unwind_fixtures::TempDir;

// Stands between every open of one file and the kernel (fanotify
// FAN_OPEN_PERM, root only): runs `on_open` on its own thread at each open,
// then lets the open go on at once, or, with `hold`, only at release().
// Makes "the file changed between two opens" and "this open is slow"
// happen at a known point rather than by luck.
class OpenGate {
 public:
  OpenGate(const std::string& path, bool hold, std::function<void()> on_open)
      : hold_(hold), on_open_(std::move(on_open)) {
    fan_ = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fan_ < 0 || wake_ < 0) {
      error_ = std::string("fanotify_init: ") + std::strerror(errno);
      return;
    }
    if (::fanotify_mark(fan_, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, path.c_str()) != 0) {
      error_ = std::string("fanotify_mark (FAN_OPEN_PERM): ") + std::strerror(errno);
      return;
    }
    thread_ = std::thread([this] { run(); });
  }
  ~OpenGate() {
    stopping_ = true;
    wake();
    if (thread_.joinable())
      thread_.join();
    if (fan_ >= 0)
      ::close(fan_);  // answers whatever is still pending
    if (wake_ >= 0)
      ::close(wake_);
  }
  OpenGate(const OpenGate&) = delete;
  OpenGate& operator=(const OpenGate&) = delete;

  // "" when the gate is in place (needs CAP_SYS_ADMIN and a kernel with
  // fanotify permission events).
  const std::string& error() const { return error_; }
  int opens() const { return opens_; }
  void release() {
    released_ = true;
    wake();
  }

 private:
  void wake() {
    uint64_t one = 1;
    if (wake_ >= 0)
      (void)!::write(wake_, &one, sizeof one);
  }
  void allow(int fd) {
    fanotify_response response{.fd = fd, .response = FAN_ALLOW};
    (void)!::write(fan_, &response, sizeof response);
    ::close(fd);
  }
  void run() {
    std::vector<int> held;
    for (;;) {
      pollfd fds[2] = {{.fd = fan_, .events = POLLIN, .revents = 0},
                       {.fd = wake_, .events = POLLIN, .revents = 0}};
      ::poll(fds, 2, -1);
      if (released_ || stopping_) {
        for (int fd : held)
          allow(fd);
        held.clear();
      }
      if (stopping_)
        return;
      uint64_t drained = 0;
      (void)!::read(wake_, &drained, sizeof drained);
      alignas(fanotify_event_metadata) char buffer[4096];
      ssize_t n = ::read(fan_, buffer, sizeof buffer);
      if (n <= 0)
        continue;
      auto* event = reinterpret_cast<fanotify_event_metadata*>(buffer);
      for (; FAN_EVENT_OK(event, n); event = FAN_EVENT_NEXT(event, n)) {
        if (event->fd < 0)
          continue;
        ++opens_;
        if (on_open_)
          on_open_();
        if (hold_ && !released_)
          held.push_back(event->fd);
        else
          allow(event->fd);
      }
    }
  }

  bool hold_;
  std::function<void()> on_open_;
  int fan_ = -1;
  int wake_ = -1;
  std::string error_;
  std::atomic<int> opens_{0};
  std::atomic<bool> released_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Runs `f` on its own thread; the result, or nullopt when it has not
// finished within `patience` (then `unblock` runs and the thread is
// waited for, so that a test that fails does not hang).
template <typename F>
auto finishes_within(std::chrono::seconds patience, F f, const std::function<void()>& unblock)
    -> std::optional<decltype(f())> {
  auto call = std::async(std::launch::async, std::move(f));
  if (call.wait_for(patience) == std::future_status::ready)
    return call.get();
  unblock();
  call.wait();
  return std::nullopt;
}

// A library whose path becomes a FIFO while krait opens it (after the file
// was opened once, before anything else is read): ModuleCache::get used to
// open the path a second time without O_NONBLOCK and blocked forever. Now
// the file is opened once, through the mapping, and the FIFO never is.
TEST(ModuleCacheTest, LibrarySwappedForAFifoWhileOpeningNeverBlocks) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string lib = std::filesystem::canonical(dir->path()).string() + "/libswapped.so";
  std::filesystem::copy_file(paths.lib, lib);
  const std::string fifo = dir->path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Mapping mapping(lib);
  ASSERT_TRUE(mapping.ok());
  auto entry = mapping.entry();
  ASSERT_TRUE(entry.has_value());

  std::atomic<bool> swapped{false};
  OpenGate gate(lib, false, [&] {
    if (!swapped.exchange(true))
      std::filesystem::rename(fifo, lib);
  });
  ASSERT_EQ(gate.error(), "");
  auto unblock = [&] {
    // Give the open that waits for a writer one, so that it returns.
    int writer = ::open(lib.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (writer >= 0)
      ::close(writer);
  };
  ModuleCache cache;
  auto file = finishes_within(
      std::chrono::seconds(60), [&] { return cache.get(::getpid(), *entry); }, unblock);
  ASSERT_TRUE(file.has_value()) << "ModuleCache::get blocked on a library swapped for a FIFO";
  EXPECT_GE(gate.opens(), 1) << "the library was never opened: the swap did not happen";
  EXPECT_TRUE(swapped);
  ASSERT_TRUE(file->ok()) << file->error().message;
  EXPECT_EQ((**file)->build_id(), elf::ElfFile::open(paths.lib)->build_id());

  // The path is a FIFO from the start now: the mapped file is still found,
  // and with only the path to go by (pid 0) the FIFO is refused.
  ModuleCache fresh;
  auto again = finishes_within(
      std::chrono::seconds(60), [&] { return fresh.get(::getpid(), *entry); }, unblock);
  ASSERT_TRUE(again.has_value()) << "blocked on a mapping whose path is a FIFO";
  EXPECT_TRUE(again->ok()) << again->error().message;
  ModuleCache by_path_only;
  auto by_path = finishes_within(
      std::chrono::seconds(60), [&] { return by_path_only.get(0, *entry); }, unblock);
  ASSERT_TRUE(by_path.has_value()) << "blocked opening a FIFO by path";
  ASSERT_FALSE(by_path->ok());
  EXPECT_NE(by_path->error().message.find("not a regular file"), std::string::npos)
      << by_path->error().message;
}

// An open that takes forever (here: held by the gate) delays no other
// caller of the cache: the mutex is not held across opens.
TEST(ModuleCacheTest, ASlowOpenDoesNotDelayOtherCallers) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string base = std::filesystem::canonical(dir->path()).string();
  std::filesystem::copy_file(paths.lib, base + "/libslow.so");
  std::filesystem::copy_file(paths.lib, base + "/libquick.so");
  Mapping slow_mapping(base + "/libslow.so");
  Mapping quick_mapping(base + "/libquick.so");
  ASSERT_TRUE(slow_mapping.ok() && quick_mapping.ok());
  auto slow = slow_mapping.entry();
  auto quick = quick_mapping.entry();
  ASSERT_TRUE(slow && quick);

  OpenGate gate(base + "/libslow.so", true, {});
  ASSERT_EQ(gate.error(), "");
  ModuleCache cache;
  auto slow_call = std::async(std::launch::async, [&] { return cache.get(::getpid(), *slow); });
  // Once the slow open is held at the gate, ask for the other file.
  for (int i = 0; i < 60000 && gate.opens() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GE(gate.opens(), 1) << "the slow file was never opened";
  auto quick_result = finishes_within(
      std::chrono::seconds(60), [&] { return cache.get(::getpid(), *quick); },
      [&] { gate.release(); });
  gate.release();
  auto slow_result = slow_call.get();
  ASSERT_TRUE(quick_result.has_value()) << "get() of one file waited for another file's open";
  EXPECT_TRUE(quick_result->ok()) << quick_result->error().message;
  EXPECT_TRUE(slow_result.ok()) << slow_result.error().message;
  EXPECT_EQ(cache.size(), 2u);
}

}  // namespace
}  // namespace krait::unwind
