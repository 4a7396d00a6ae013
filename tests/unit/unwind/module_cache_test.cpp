// ModuleCache, ProcessModules and CfiTable: sharing between processes,
// files that change under krait (swapped for a FIFO, claiming another's
// build-id), concurrent and bounded caching, live /proc, and the CFI index
// against readelf's own decoding.
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
#include "unwind/cfi_table.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"

extern "C" __attribute__((noinline, used)) int krait_module_cache_test_marker(int x) {
  return x * 7 + 1;
}

namespace krait::unwind {
namespace {

using unwind_fixtures::TempDir;

Result<std::string> run_tool(const std::vector<std::string>& argv) {
  auto run = unwind_fixtures::run_program(argv);
  if (!run)
    return run.error();
  if (run->exit_code != 0)
    return make_error("{} failed: {}", argv[0], run->err);
  return run->out;
}

std::vector<proc::MapEntry> with_file_replaced(std::vector<proc::MapEntry> maps,
                                               const std::string& old_path,
                                               const std::string& new_path) {
  struct stat st {};
  EXPECT_EQ(::stat(new_path.c_str(), &st), 0) << new_path;
  for (proc::MapEntry& entry : maps) {
    if (entry.path != old_path)
      continue;
    entry.path = new_path;
    entry.inode = st.st_ino;
    entry.dev_major = major(st.st_dev);
    entry.dev_minor = minor(st.st_dev);
  }
  return maps;
}

const Module* module_of(const ProcessModules& modules, const std::string& path) {
  for (const Module& m : modules.modules())
    if (m.path == path)
      return &m;
  return nullptr;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The fixture library under another name, with the same build-id note but
// other contents: its function renamed (same length, so nothing moves) and
// its .eh_frame zeroed, so it has neither the original's names nor its CFI.
constexpr const char* kLibFunction = "krait_unwind_lib_call";
constexpr const char* kImpostorFunction = "krait_IMPOSTOR_lib_cx";
std::string make_impostor(const std::string& lib, const std::string& dir) {
  std::vector<uint8_t> bytes = file_bytes(lib);
  const std::string from = kLibFunction;
  const std::string to = kImpostorFunction;
  EXPECT_EQ(from.size(), to.size());
  size_t renamed = 0;
  for (auto it = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
       it != bytes.end(); it = std::search(it, bytes.end(), from.begin(), from.end())) {
    std::copy(to.begin(), to.end(), it);
    ++renamed;
  }
  EXPECT_GE(renamed, 2u) << "the name is in .dynstr and .strtab";
  auto elf = elf::ElfFile::open(lib);
  EXPECT_TRUE(elf.ok());
  auto eh_frame = elf->find_section(".eh_frame");
  EXPECT_TRUE(eh_frame.has_value());
  if (eh_frame)
    std::fill_n(bytes.begin() + static_cast<long>(eh_frame->offset), eh_frame->size, 0);
  std::string path = dir + "/libimpostor.so";
  write_file(path, bytes);
  return path;
}

// A page of `path` mapped into this process (read-only); unmapped on
// destruction.
class Mapping {
 public:
  explicit Mapping(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return;
    void* at = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (at != MAP_FAILED)
      address_ = at;
  }
  ~Mapping() {
    if (address_ != nullptr)
      ::munmap(address_, 4096);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool ok() const { return address_ != nullptr; }

  // This process's map entry for the mapping.
  std::optional<proc::MapEntry> entry() const {
    auto maps = proc::read_maps(::getpid());
    if (!maps.ok())
      return std::nullopt;
    for (const proc::MapEntry& e : *maps)
      if (e.start == reinterpret_cast<uint64_t>(address_))
        return e;
    return std::nullopt;
  }

 private:
  void* address_ = nullptr;
};

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

// Two processes of one program: each file is opened once, and the two
// ProcessModules hold the same ModuleFiles.
TEST(ModuleCacheTest, FilesAreSharedBetweenProcesses) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  auto paths = unwind_fixtures::fixture_paths();
  auto first = unwind_fixtures::capture({paths.c, "one"}, dir->path(), {"one-main"});
  auto second = unwind_fixtures::capture({paths.c, "two"}, dir->path(), {"two-main"});
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(second.ok()) << second.error().message;
  const auto& maps_a = (*first)[0].maps;
  const auto& maps_b = (*second)[0].maps;

  std::set<std::tuple<uint32_t, uint32_t, uint64_t>> distinct;
  bool vdso = false;
  for (const auto* maps : {&maps_a, &maps_b})
    for (const proc::MapEntry& e : *maps) {
      if (e.exec && e.is_file())
        distinct.emplace(e.dev_major, e.dev_minor, e.inode);
      vdso |= e.exec && e.path == "[vdso]";
    }

  ModuleCache cache;
  {
    ProcessModules a = ProcessModules::from_maps(0, maps_a, cache);
    ProcessModules b = ProcessModules::from_maps(0, maps_b, cache);
    EXPECT_TRUE(a.problems().empty());
    EXPECT_EQ(cache.size(), distinct.size() + (vdso ? 1 : 0));
    const Module* lib_a = module_of(a, paths.lib);
    const Module* lib_b = module_of(b, paths.lib);
    ASSERT_NE(lib_a, nullptr);
    ASSERT_NE(lib_b, nullptr);
    EXPECT_EQ(lib_a->file.get(), lib_b->file.get());
    EXPECT_EQ(module_of(a, paths.c)->file.get(), module_of(b, paths.c)->file.get());
    // Held by both ProcessModules: nothing to evict.
    cache.evict_unused();
    EXPECT_EQ(cache.size(), distinct.size() + (vdso ? 1 : 0));
  }
  cache.evict_unused();
  EXPECT_EQ(cache.size(), vdso ? 1u : 0u);
}

// A file that claims another's build-id (here: the fixture library's note
// on other contents) is not taken for it: each keeps its own CFI and
// symbols. The cache used to share ModuleFiles by build-id, so whichever
// was mapped first supplied both.
TEST(ModuleCacheTest, SameBuildIdDoesNotMakeTwoFilesOne) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto capture = unwind_fixtures::capture({paths.c, "copy"}, dir->path(), {"copy-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  const std::string impostor = make_impostor(paths.lib, dir->path());
  ModuleCache cache;
  ProcessModules a = ProcessModules::from_maps(0, (*capture)[0].maps, cache);
  ProcessModules b = ProcessModules::from_maps(
      0, with_file_replaced((*capture)[0].maps, paths.lib, impostor), cache);
  const Module* real = module_of(a, paths.lib);
  const Module* fake = module_of(b, impostor);
  ASSERT_NE(real, nullptr);
  ASSERT_NE(fake, nullptr);
  ASSERT_EQ(real->file->build_id(), fake->file->build_id()) << "the impostor lost the claim";
  EXPECT_NE(real->file.get(), fake->file.get());
  EXPECT_NE(real->file->identity(), fake->file->identity());
  auto function = real->file->elf().find_symbol(kLibFunction);
  ASSERT_TRUE(function.has_value());
  EXPECT_TRUE(real->file->find_fde(function->value)) << "the real library has CFI there";
  EXPECT_FALSE(fake->file->find_fde(function->value)) << "the impostor's CFI is the real one's";
  EXPECT_FALSE(fake->file->elf().find_symbol(kLibFunction).has_value());
  EXPECT_TRUE(fake->file->elf().find_symbol(kImpostorFunction).has_value());
}

// Maps saved from a process whose file was replaced since: refused, not
// silently read from the new file.
TEST(ModuleCacheTest, ReplacedFileIsRefused) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  std::string lib = dir->path() + "/libreplaced.so";
  std::filesystem::copy_file(paths.lib, lib);
  auto capture = unwind_fixtures::capture({paths.c, "replaced"}, dir->path(), {"replaced-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  auto maps = with_file_replaced((*capture)[0].maps, paths.lib, lib);
  // Replace the file by a new inode with the same name, the way package
  // managers do (the old inode lives on while processes map it).
  std::filesystem::rename(lib, lib + ".old");
  std::filesystem::copy_file(paths.lib, lib);
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, maps, cache);
  ASSERT_EQ(module_of(modules, lib), nullptr);
  bool reported = false;
  for (const ModuleProblem& p : modules.problems())
    reported |= p.path == lib && p.reason.find("no longer the mapped file") != std::string::npos;
  EXPECT_TRUE(reported);
}

// A mapping that is gone by the time it is opened (the process exited or
// unmapped it) fails, but the failure is not remembered for the file: the
// next mapping of the same file opens.
TEST(ModuleCacheTest, FailureOfAMappingThatIsGoneIsNotRemembered) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string lib = std::filesystem::canonical(dir->path()).string() + "/libgone.so";
  std::filesystem::copy_file(paths.lib, lib);
  std::optional<proc::MapEntry> gone;
  {
    Mapping mapping(lib);
    ASSERT_TRUE(mapping.ok());
    gone = mapping.entry();
  }
  ASSERT_TRUE(gone.has_value());
  ModuleCache cache;
  auto failed = cache.get(::getpid(), *gone);
  ASSERT_FALSE(failed.ok()) << "an unmapped range was opened";
  Mapping again(lib);
  ASSERT_TRUE(again.ok());
  auto entry = again.entry();
  ASSERT_TRUE(entry.has_value());
  auto file = cache.get(::getpid(), *entry);
  EXPECT_TRUE(file.ok()) << "the failure of the unmapped range was remembered: "
                         << file.error().message;
}

// At most max_files files stay; the least recently used ones that nothing
// else holds go first, and every eviction is counted.
TEST(ModuleCacheTest, BoundEvictsLeastRecentlyUsedUnheldFiles) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto capture = unwind_fixtures::capture({paths.c, "bound"}, dir->path(), {"bound-main"});
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  std::vector<proc::MapEntry> files;  // one executable mapping per file
  std::set<std::tuple<uint32_t, uint32_t, uint64_t>> seen;
  for (const proc::MapEntry& e : (*capture)[0].maps)
    if (e.exec && e.is_file() && seen.emplace(e.dev_major, e.dev_minor, e.inode).second)
      files.push_back(e);
  ASSERT_GE(files.size(), 4u) << "the fixture maps itself, its library, libc and the loader";

  ModuleCache cache(ModuleFileOptions{}, ModuleCacheLimits{.max_files = 2});
  auto held = cache.get(0, files[0]);
  ASSERT_TRUE(held.ok()) << held.error().message;
  for (size_t i = 1; i < files.size(); ++i) {
    auto file = cache.get(0, files[i]);
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_LE(cache.size(), 2u);
  }
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.stats().evicted, files.size() - 2);
  EXPECT_EQ(cache.stats().opened, files.size());
  // The held file stayed, and is answered from the cache.
  auto again = cache.get(0, files[0]);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), held->get());
  EXPECT_EQ(cache.stats().hits, 1u);
  // So did the most recently used one; the others were evicted.
  auto last = cache.get(0, files.back());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(cache.stats().hits, 2u);
  auto evicted = cache.get(0, files[1]);
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(cache.stats().opened, files.size() + 1);
}

// A cached file rewritten in place (same inode, new size or mtime) is not
// answered from the cache: it is opened again.
TEST(ModuleCacheTest, FileRewrittenInPlaceIsOpenedAgain) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  const std::string lib = std::filesystem::canonical(dir->path()).string() + "/librewritten.so";
  std::filesystem::copy_file(paths.lib, lib);
  Mapping mapping(lib);
  ASSERT_TRUE(mapping.ok());
  auto entry = mapping.entry();
  ASSERT_TRUE(entry.has_value());
  ModuleCache cache;
  auto first = cache.get(::getpid(), *entry);
  ASSERT_TRUE(first.ok()) << first.error().message;
  // Rewritten in place: the same inode, other contents, a longer file.
  std::vector<uint8_t> bytes = file_bytes(make_impostor(paths.lib, dir->path()));
  bytes.resize(bytes.size() + 4096);
  {
    std::ofstream out(lib, std::ios::binary | std::ios::in | std::ios::out);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  auto second = cache.get(::getpid(), *entry);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(second->get(), first->get());
  EXPECT_EQ(cache.stats().changed, 1u);
  EXPECT_EQ((*second)->file_id().inode, (*first)->file_id().inode);
  EXPECT_TRUE((*second)->elf().find_symbol(kImpostorFunction).has_value());
}

// create() indexes on the caller's thread: the tables are built before the
// ModuleFile is returned, so rewriting the file afterwards (a stand-in for
// "no file is parsed later") leaves the index intact. Lazily, the same
// rewrite is what the index sees.
TEST(ModuleFileTest, IndexesEagerlyOnTheCreatingThread) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto paths = unwind_fixtures::fixture_paths();
  auto function = elf::ElfFile::open(paths.lib)->find_symbol(kLibFunction);
  ASSERT_TRUE(function.has_value());
  for (bool eager : {true, false}) {
    const std::string lib = dir->path() + (eager ? "/libeager.so" : "/liblazy.so");
    std::filesystem::copy_file(paths.lib, lib);
    auto file = ModuleFile::open(lib, ModuleFileOptions{.debug_roots = {}, .index_eagerly = eager});
    ASSERT_TRUE(file.ok()) << file.error().message;
    std::vector<uint8_t> zeros(std::filesystem::file_size(lib), 0);
    std::ofstream(lib, std::ios::binary | std::ios::in | std::ios::out)
        .write(reinterpret_cast<const char*>(zeros.data()),
               static_cast<std::streamsize>(zeros.size()));
    EXPECT_EQ(static_cast<bool>((*file)->find_fde(function->value)), eager)
        << (eager ? "eager" : "lazy");
    EXPECT_EQ((*file)->elf().function_at(function->value) != nullptr, eager)
        << (eager ? "eager" : "lazy");
  }
}

// Thousands of mappings of several files (every executable mapping of a
// Python process split into pages, as mprotect() splits them): every page
// gets the module, file and bias of its unsplit mapping.
TEST(ProcessModulesTest, ManyMappingsOfSeveralFiles) {
  ASSERT_CAPTURE(capture, "python-main");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<proc::MapEntry> split;
  for (const proc::MapEntry& e : capture->maps) {
    if (!e.exec || !e.is_file()) {
      split.push_back(e);
      continue;
    }
    for (uint64_t start = e.start; start < e.end; start += page) {
      proc::MapEntry piece = e;
      piece.start = start;
      piece.end = std::min(e.end, start + page);
      piece.offset = e.offset + (start - e.start);
      split.push_back(piece);
    }
  }
  ModuleCache cache;
  ProcessModules whole = ProcessModules::from_maps(0, capture->maps, cache);
  ProcessModules pieces = ProcessModules::from_maps(0, split, cache);
  size_t files = 0;
  std::set<const ModuleFile*> distinct;
  for (const Module& m : whole.modules())
    distinct.insert(m.file.get());
  files = distinct.size();
  ASSERT_GE(files, 4u);
  ASSERT_GT(pieces.modules().size(), 1000u) << "too few pages to be many mappings";
  EXPECT_EQ(pieces.problems().size(), whole.problems().size());
  size_t checked = 0;
  for (const Module& m : pieces.modules()) {
    const Module* reference = whole.find(m.start);
    ASSERT_NE(reference, nullptr) << std::hex << m.start;
    EXPECT_EQ(m.file.get(), reference->file.get());
    EXPECT_EQ(m.bias, reference->bias) << m.path;
    EXPECT_EQ(pieces.find(m.end - 1), &m);
    ++checked;
  }
  EXPECT_EQ(checked, pieces.modules().size());
}

// Mappings past kMaxMappingsPerProcess are not considered, and problems()
// says how many were skipped.
TEST(ProcessModulesTest, MappingsPastTheCapAreSkippedAndReported) {
  ASSERT_CAPTURE(capture, "c-main");
  std::vector<proc::MapEntry> maps = capture->maps;
  const size_t real = maps.size();
  const proc::MapEntry last = maps.back();
  for (size_t i = 0; maps.size() < kMaxMappingsPerProcess + 100; ++i) {
    proc::MapEntry anonymous{.start = last.end + i * 8192, .end = last.end + i * 8192 + 4096};
    anonymous.read = true;
    maps.push_back(anonymous);
  }
  // A file mapping past the cap is not looked at.
  proc::MapEntry beyond = capture->maps.front();
  beyond.start = maps.back().end + 4096;
  beyond.end = beyond.start + 4096;
  beyond.exec = true;
  maps.push_back(beyond);
  ModuleCache cache;
  ProcessModules modules = ProcessModules::from_maps(0, maps, cache);
  ProcessModules reference = ProcessModules::from_maps(0, std::span(maps).first(real), cache);
  EXPECT_EQ(modules.modules().size(), reference.modules().size());
  EXPECT_EQ(modules.find(beyond.start), nullptr);
  bool reported = false;
  for (const ModuleProblem& p : modules.problems())
    reported |= p.reason.find(std::to_string(maps.size() - kMaxMappingsPerProcess) +
                              " past the first") != std::string::npos;
  EXPECT_TRUE(reported);
}

// This very process, through /proc/self/maps: the module of a function of
// ours has the bias that makes its address the nm value.
TEST(ProcessModulesTest, LiveProcess) {
  ModuleCache cache;
  auto modules = ProcessModules::load(::getpid(), cache);
  ASSERT_TRUE(modules.ok()) << modules.error().message;
  auto address = reinterpret_cast<uint64_t>(&krait_module_cache_test_marker);
  const Module* module = modules->find(address);
  ASSERT_NE(module, nullptr);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  EXPECT_EQ(module->path, exe);
  auto nm = run_tool({"/usr/bin/nm", exe});
  ASSERT_TRUE(nm.ok()) << nm.error().message;
  auto at = nm->find(" T krait_module_cache_test_marker\n");
  ASSERT_NE(at, std::string::npos);
  uint64_t value = std::stoull(nm->substr(nm->rfind('\n', at) + 1, 16), nullptr, 16);
  EXPECT_EQ(module->file_address(address), value);
  // The vDSO and libc are there as well.
  bool vdso = false;
  for (const Module& m : modules->modules())
    vdso |= m.path == "[vdso]";
  EXPECT_TRUE(vdso);
  Dl_info info{};
  ASSERT_NE(::dladdr(reinterpret_cast<void*>(&::getpid), &info), 0);
  const Module* libc = modules->find(reinterpret_cast<uint64_t>(&::getpid));
  ASSERT_NE(libc, nullptr);
  EXPECT_EQ(libc->bias, reinterpret_cast<uint64_t>(info.dli_fbase));
  EXPECT_EQ(modules->find(0), nullptr);
}

// readelf's decoding of the frame sections: every FDE it lists, we find
// with the same range.
struct OracleFde {
  uint64_t start = 0, end = 0;
};
Result<std::vector<OracleFde>> readelf_fdes(const std::string& path, const std::string& section) {
  auto out = run_tool({"/usr/bin/readelf", "--debug-dump=frames", path});
  if (!out)
    return out.error();
  std::vector<OracleFde> fdes;
  bool in_section = false;
  std::istringstream in(*out);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("Contents of the ")) {
      in_section = line.find(" " + section + " ") != std::string::npos;
      continue;
    }
    auto fde = line.find(" FDE cie=");
    auto pc = line.find("pc=");
    if (!in_section || fde == std::string::npos || pc == std::string::npos)
      continue;
    auto dots = line.find("..", pc);
    fdes.push_back(OracleFde{std::stoull(line.substr(pc + 3, dots - pc - 3), nullptr, 16),
                             std::stoull(line.substr(dots + 2), nullptr, 16)});
  }
  return fdes;
}

void expect_table_matches_readelf(const CfiTable& table, const std::vector<OracleFde>& fdes,
                                  const std::string& what) {
  size_t nonempty = 0;
  for (const OracleFde& fde : fdes) {
    if (fde.end == fde.start)
      continue;
    ++nonempty;
    const FdeEntry* found = table.find(fde.start);
    ASSERT_NE(found, nullptr) << what << " FDE " << std::hex << fde.start;
    EXPECT_EQ(found->start, fde.start) << what;
    EXPECT_EQ(found->end, fde.end) << what;
    found = table.find(fde.end - 1);
    ASSERT_NE(found, nullptr) << what;
    EXPECT_EQ(found->start, fde.start) << what;
  }
  EXPECT_EQ(table.size(), nonempty) << what;
  EXPECT_GT(nonempty, 10u) << what;
}

TEST(CfiTableTest, EhFrameMatchesReadelf) {
  std::string libpython = unwind_fixtures::fixture_paths().libpython;
  for (const std::string& path : {unwind_fixtures::fixture_paths().cpp, libpython}) {
    auto elf = elf::ElfFile::open(path);
    ASSERT_TRUE(elf.ok()) << elf.error().message;
    auto section = elf->find_section(".eh_frame");
    auto bytes = elf->section_bytes(".eh_frame");
    ASSERT_TRUE(section && bytes.ok()) << path;
    auto table = CfiTable::from_eh_frame(*bytes, section->addr);
    ASSERT_TRUE(table.ok()) << table.error().message;
    EXPECT_EQ(table->source(), CfiTable::Source::kEhFrame);
    auto fdes = readelf_fdes(path, ".eh_frame");
    ASSERT_TRUE(fdes.ok()) << fdes.error().message;
    expect_table_matches_readelf(*table, *fdes, path);
    EXPECT_EQ(table->find(0), nullptr);
  }
}

TEST(CfiTableTest, DebugFrameMatchesReadelf) {
  std::string path = unwind_fixtures::fixture_paths().c_debug_frame;
  auto elf = elf::ElfFile::open(path);
  ASSERT_TRUE(elf.ok()) << elf.error().message;
  auto bytes = elf->section_bytes(".debug_frame");
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  auto table = CfiTable::from_debug_frame(*bytes);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->source(), CfiTable::Source::kDebugFrame);
  auto fdes = readelf_fdes(path, ".debug_frame");
  ASSERT_TRUE(fdes.ok()) << fdes.error().message;
  // The fixture has few functions of its own; the check is per FDE.
  size_t nonempty = 0;
  for (const OracleFde& fde : *fdes) {
    if (fde.end == fde.start)
      continue;
    ++nonempty;
    const FdeEntry* found = table->find(fde.start);
    ASSERT_NE(found, nullptr) << std::hex << fde.start;
    EXPECT_EQ(found->start, fde.start);
    EXPECT_EQ(found->end, fde.end);
    EXPECT_TRUE(found->absolute);
  }
  EXPECT_EQ(table->size(), nonempty);
  EXPECT_GE(nonempty, 4u);
}

// A section of tiny entries, each FDE with a CIE of its own: indexing stops
// at the cap on distinct CIEs instead of growing with the section (each
// parsed CIE and indexed FDE costs more memory than its bytes).
TEST(CfiTableTest, DistinctCiesAreCapped) {
  auto elf = elf::ElfFile::open(unwind_fixtures::fixture_paths().lib);
  ASSERT_TRUE(elf.ok());
  auto bytes = elf->section_bytes(".eh_frame");
  ASSERT_TRUE(bytes.ok());
  // The section starts with a CIE, then the first FDE (lengths exclude
  // their own 4 bytes).
  uint32_t cie_length = 0;
  std::memcpy(&cie_length, bytes->data(), 4);
  const size_t cie_size = 4 + cie_length;
  uint32_t fde_length = 0;
  ASSERT_LT(cie_size + 8, bytes->size());
  std::memcpy(&fde_length, bytes->data() + cie_size, 4);
  const size_t fde_size = 4 + fde_length;
  ASSERT_LE(cie_size + fde_size, bytes->size());
  std::vector<uint8_t> pair(bytes->begin(),
                            bytes->begin() + static_cast<long>(cie_size + fde_size));
  const uint32_t cie_pointer = static_cast<uint32_t>(cie_size + 4);  // back from the FDE's id field
  std::memcpy(pair.data() + cie_size + 4, &cie_pointer, 4);
  const size_t pairs = 300'000;
  std::vector<uint8_t> section;
  section.reserve(pairs * pair.size() + 4);
  for (size_t i = 0; i < pairs; ++i)
    section.insert(section.end(), pair.begin(), pair.end());
  section.insert(section.end(), 4, 0);
  auto table = CfiTable::from_eh_frame(section, 0x10000);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_GT(table->size(), 1000u);
  EXPECT_LE(table->size(), size_t{1} << 18) << "indexed past the cap on distinct CIEs";
}

// One CIE (version 1, no augmentation, return address in 16, `cie_program`)
// and one FDE (absolute 8-byte addresses [0x1000, 0x1100), `fde_program`),
// then the terminator: a .eh_frame laid out by hand.
std::vector<uint8_t> eh_frame_of(const std::vector<uint8_t>& cie_program,
                                 const std::vector<uint8_t>& fde_program) {
  std::vector<uint8_t> out;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto u64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  std::vector<uint8_t> cie = {1, 0, 1, 0x78, 16};  // version, "", code 1, data -8, ra 16
  cie.insert(cie.end(), cie_program.begin(), cie_program.end());
  u32(static_cast<uint32_t>(4 + cie.size()));
  u32(0);  // CIE id
  out.insert(out.end(), cie.begin(), cie.end());
  const size_t fde_at = out.size();
  u32(static_cast<uint32_t>(4 + 16 + fde_program.size()));
  u32(static_cast<uint32_t>(fde_at + 4));  // back to the CIE at 0
  u64(0x1000);
  u64(0x100);
  out.insert(out.end(), fde_program.begin(), fde_program.end());
  u32(0);
  return out;
}

// A library chooses its own CFI: an entry that names a register libunwind
// keeps no slot for (DW_CFA_register r16 in r1791 made libunwind 1.6 write
// far outside its state) is not indexed; the same entry with a real register is.
TEST(CfiTableTest, EntriesNamingRegistersLibunwindLacksAreDropped) {
  const std::vector<uint8_t> def_cfa = {0x0c, 7, 8, 0x90, 1};  // def_cfa rsp+8; r16 at cfa-8
  auto good = CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x09, 16, 3}), 0);
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_NE(good->find(0x1010), nullptr);

  // DW_CFA_register r16, r1791 (uleb 0xff 0x0d), in the CIE and in the FDE.
  std::vector<uint8_t> hostile = def_cfa;
  hostile.insert(hostile.end(), {0x09, 16, 0xff, 0x0d});
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(hostile, {}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x09, 16, 0xff, 0x0d}), 0).ok());
  // DW_CFA_offset of register 40, DW_CFA_expression of register 17, and an
  // opcode no x86-64 tool emits.
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x80 | 40, 1}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x10, 17, 1, 0x96}), 0).ok());
  EXPECT_FALSE(CfiTable::from_eh_frame(eh_frame_of(def_cfa, {0x3f}), 0).ok());
  // A return address column other than 16.
  auto other_ra = eh_frame_of(def_cfa, {});
  other_ra[8 + 4] = 17;
  EXPECT_FALSE(CfiTable::from_eh_frame(other_ra, 0).ok());
}

// Random bytes and damaged real sections: no crash, no read outside the
// input (run under AddressSanitizer in krait_unwind_garbage_asan_test).
TEST(CfiTableTest, GarbageInput) {
  std::mt19937 random(99);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> bytes(random() % 512);
    for (uint8_t& b : bytes)
      b = static_cast<uint8_t>(random());
    // Plausible lengths make the parser go deeper than pure noise does.
    if (bytes.size() >= 8 && round % 2 == 0) {
      uint32_t length = static_cast<uint32_t>(random() % bytes.size());
      std::memcpy(bytes.data(), &length, 4);
      if (round % 4 == 0)
        std::memset(bytes.data() + 4, round % 8 == 0 ? 0 : 0xff, 4);
    }
    auto eh = CfiTable::from_eh_frame(bytes, random());
    if (eh.ok())
      for (int i = 0; i < 8; ++i)
        (void)eh->find(random());
    auto df = CfiTable::from_debug_frame(bytes);
    if (df.ok())
      for (int i = 0; i < 8; ++i)
        (void)df->find(random());
  }
  auto elf = elf::ElfFile::open(unwind_fixtures::fixture_paths().c_debug_frame);
  ASSERT_TRUE(elf.ok());
  for (const char* name : {".eh_frame", ".debug_frame"}) {
    auto original = elf->section_bytes(name);
    ASSERT_TRUE(original.ok());
    for (int round = 0; round < 500; ++round) {
      std::vector<uint8_t> bytes(original->begin(), original->end());
      for (int flips = 1 + round % 8; flips > 0; --flips)
        bytes[random() % bytes.size()] ^= static_cast<uint8_t>(1 + random() % 255);
      if (round % 5 == 0)
        bytes.resize(random() % bytes.size());
      auto table = std::string(name) == ".eh_frame" ? CfiTable::from_eh_frame(bytes, 0x1000)
                                                    : CfiTable::from_debug_frame(bytes);
      if (table.ok())
        for (size_t i = 0; i < table->size() && i < 4; ++i)
          (void)table->find(0x1000 + i * 16);
    }
  }
}

}  // namespace
}  // namespace krait::unwind
