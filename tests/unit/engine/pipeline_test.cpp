// Pipeline on fixture memory: a fake 3.12 process whose code objects are
// laid out with the real 3.12.1 offsets, so every rule of turning a sample
// into a profile stack is checked without BPF or a live interpreter.
#include "engine/pipeline.h"
#include "engine/stack_builder.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>

#include "python/layout.h"
#include "python/offsets/offset_table.h"
#include "unwind/module_cache.h"
#include "unwind/process_modules.h"
#include "util/clock.h"

namespace krait::engine {
namespace {

constexpr uint64_t kCodeType = 0x7000'0000;
constexpr uint32_t kGeneration = 7;

class NullSink final : public ProcessMapSink {
 public:
  Result<void> set_process(uint32_t, const krait_proc_info&) override { return {}; }
};

// One fake code object: its address, token and expected symbol.
struct FakeCode {
  uint64_t address;
  uint32_t token;
  std::string name;
  std::string file;
  int32_t firstlineno;
};

// The reader half (Pipeline) and the builder half (StackBuilder) on one
// thread: flush() lets the Inspector's reads finish, runs their
// completions as the run loop would, and hands every queued job to the
// builder.
struct Harness {
  Harness(ProcessTracker& tracker, inspect::Inspector& inspector, profile::Profile& profile,
          uint32_t max_depth)
      : out(profile),
        inspector(inspector),
        queue(64u << 20),
        builder(std::move(StackBuilder::create({}).value())),
        pipeline(tracker, inspector, queue, PipelineOptions{max_depth, false}) {}
  void flush() {
    inspector.drain(std::chrono::steady_clock::now() + std::chrono::seconds(60));
    pipeline.tick(monotonic_ns());
    while (auto job = queue.try_pop())
      builder->add(*job);
    for (auto& p : builder->take_profiles(0))
      out.merge(p.profile);
  }
  profile::Profile& out;
  inspect::Inspector& inspector;
  JobQueue queue;
  std::unique_ptr<StackBuilder> builder;
  Pipeline pipeline;
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto inspector = inspect::Inspector::create({});
    ASSERT_TRUE(inspector.ok());
    inspector_ = std::move(*inspector);
    const python::OffsetTable* table = python::find_table({3, 12, 1});
    ASSERT_NE(table, nullptr) << "the built-in 3.12.1 offsets table is missing";
    auto layout = python::build_layout(*table, {3, 12, 1});
    ASSERT_TRUE(layout.ok()) << layout.error().message;
    layout_ = *layout;
  }

  void put_string(proc::FakeMemory& mem, uint64_t addr, const std::string& text) {
    const auto& s = layout_.strings;
    std::vector<uint8_t> obj(s.ascii_size + text.size() + 1, 0);
    int64_t len = static_cast<int64_t>(text.size());
    uint32_t state = (1u << s.kind_bit) | (1u << s.compact_bit) | (1u << s.ascii_bit);
    std::memcpy(obj.data() + s.unicode_length, &len, sizeof len);
    std::memcpy(obj.data() + s.unicode_state, &state, sizeof state);
    std::memcpy(obj.data() + s.ascii_size, text.data(), text.size());
    mem.add(addr, std::move(obj));
  }

  void put_bytes(proc::FakeMemory& mem, uint64_t addr, const std::vector<uint8_t>& data) {
    const auto& s = layout_.strings;
    std::vector<uint8_t> obj(s.bytes_data + data.size(), 0);
    int64_t len = static_cast<int64_t>(data.size());
    std::memcpy(obj.data() + s.var_size, &len, sizeof len);
    std::memcpy(obj.data() + s.bytes_data, data.data(), data.size());
    mem.add(addr, std::move(obj));
  }

  // A code object whose 3.11+ location table says: code units 0-7 run line
  // firstlineno+1, units 8-15 line firstlineno+3 (PEP 657 "no columns" form).
  // `table` replaces that table.
  FakeCode put_code(proc::FakeMemory& mem, uint64_t addr, const std::string& name,
                    const std::string& file, int32_t firstlineno,
                    const std::vector<uint8_t>& table = {0x80 | (13 << 3) | 7, 2,
                                                         0x80 | (13 << 3) | 7, 4}) {
    const krait_py_layout& b = layout_.bpf;
    const uint64_t name_addr = addr + 0x10000, file_addr = addr + 0x20000,
                   table_addr = addr + 0x30000;
    put_string(mem, name_addr, name);
    put_string(mem, file_addr, file);
    put_bytes(mem, table_addr, table);
    std::vector<uint8_t> head(b.code_read_size, 0);
    auto store = [&](uint16_t off, auto v) { std::memcpy(head.data() + off, &v, sizeof v); };
    store(0, uint64_t{1});  // ob_refcnt of a live object
    store(b.code_type, kCodeType);
    store(b.code_filename, file_addr);
    store(b.code_name, name_addr);
    store(b.code_linetable, table_addr);
    store(b.code_firstlineno, static_cast<uint32_t>(firstlineno));
    mem.add(addr, std::move(head));
    return {addr,
            krait_code_token(file_addr, name_addr, table_addr, static_cast<uint32_t>(firstlineno)),
            name, file, firstlineno};
  }

  const TrackedProcess& add_process(ProcessTracker& tracker,
                                    std::shared_ptr<proc::FakeMemory> mem) {
    TrackedProcess p;
    p.pid = 4242;
    p.generation = kGeneration;
    p.state = ProcessState::kPython;
    p.name = "fakepython";
    p.attachment.status = python::AttachStatus::kAttached;
    p.attachment.version = python::PyVersion{3, 12, 1};
    p.attachment.layout = layout_;
    p.attachment.info.code_type_addr = kCodeType;
    p.memory = std::move(mem);
    return tracker.adopt(std::move(p));
  }

  // A sample record with these frames (leaf first).
  struct Record {
    krait_sample sample{};
    size_t n = 0;
  };
  std::unique_ptr<Record> make_sample(std::vector<krait_py_frame> frames,
                                      uint16_t status = KRAIT_PY_OK, uint16_t flags = 0,
                                      uint32_t generation = kGeneration) {
    auto r = std::make_unique<Record>();
    r->sample.hdr.type = KRAIT_EVENT_SAMPLE;
    r->sample.hdr.pid = 4242;
    r->sample.hdr.tid = 4243;
    r->sample.proc_generation = generation;
    r->sample.py_status = status;
    r->sample.py_flags = flags;
    r->sample.py_nframes = static_cast<uint32_t>(frames.size());
    std::strncpy(r->sample.comm, "worker-1", KRAIT_COMM_LEN);
    for (size_t i = 0; i < frames.size(); ++i)
      r->sample.frames[i] = frames[i];
    r->n = frames.size();
    return r;
  }

  // The one stack in `profile` as (function, file, line) leaf first, plus its labels.
  static std::vector<std::tuple<std::string, std::string, int64_t>> only_stack(
      const profile::Profile& profile, profile::Labels* labels = nullptr) {
    auto samples = profile.samples();
    EXPECT_EQ(samples.size(), 1u);
    std::vector<std::tuple<std::string, std::string, int64_t>> out;
    if (samples.empty())
      return out;
    for (auto id : samples[0].stack) {
      const auto& f = profile.frames()[id];
      out.emplace_back(f.function, f.file, f.line);
    }
    if (labels)
      *labels = profile.label_sets()[samples[0].labels];
    return out;
  }

  python::PythonLayout layout_;
  NullSink sink_;
  std::unique_ptr<inspect::Inspector> inspector_;
};

TEST_F(PipelineTest, SymbolizesFramesLeafFirstWithLinesAndLabels) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode outer = put_code(*mem, 0x100000, "main", "/app/main.py", 10);
  FakeCode inner = put_code(*mem, 0x200000, "Worker.run", "/app/work.py", 40);
  add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;

  // Leaf at byte 18 (unit 9: second range), caller at byte 4 with the entry bit.
  auto r = make_sample(
      {{inner.address, inner.token, 18}, {outer.address, outer.token, 4 | KRAIT_FRAME_ENTRY}});
  pipeline.on_sample({r->sample, {r->sample.frames, r->n}});

  profile::Labels labels;
  h.flush();
  auto stack = only_stack(profile, &labels);
  ASSERT_EQ(stack.size(), 2u);
  EXPECT_EQ(stack[0],
            std::make_tuple(std::string("Worker.run"), std::string("/app/work.py"), int64_t{43}));
  EXPECT_EQ(stack[1],
            std::make_tuple(std::string("main"), std::string("/app/main.py"), int64_t{11}));
  EXPECT_EQ(profile.frames()[profile.samples()[0].stack[0]].start_line, 40);
  auto has = [&](const std::string& k, const std::string& v) {
    return std::find(labels.begin(), labels.end(), std::make_pair(k, v)) != labels.end();
  };
  EXPECT_TRUE(has("pid", "4242"));
  EXPECT_TRUE(has("tid", "4243"));
  EXPECT_TRUE(has("thread_name", "worker-1"));
  EXPECT_TRUE(has("process_name", "fakepython"));
  EXPECT_TRUE(has("python_version", "3.12.1"));
}

TEST_F(PipelineTest, ReplacedCodeObjectIsNeverNamedFromTheOldOne) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "current", "/app/a.py", 1);
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;

  // The sample saw an object whose token differs: memory now holds another one.
  auto r = make_sample({{code.address, code.token ^ 1, 0}});
  pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  h.flush();
  auto stack = only_stack(profile);
  ASSERT_EQ(stack.size(), 1u);
  EXPECT_NE(std::get<0>(stack[0]), "current");
  EXPECT_NE(std::get<0>(stack[0]).find("freed"), std::string::npos);
  EXPECT_EQ(h.pipeline.process_stats(p.key).unsymbolized_frames, 1u);
}

TEST_F(PipelineTest, FreedCodeObjectWithIntactFieldsIsNotNamed) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "gone", "/app/gone.py", 1);
  // What pymalloc leaves in a freed block: its free-list link in ob_refcnt,
  // every other field as it was (so the token still matches).
  mem->add_value<uint64_t>(code.address, 0x7f12'3456'7000ull);
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;

  auto r = make_sample({{code.address, code.token, 0}});
  pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  h.flush();
  auto stack = only_stack(profile);
  ASSERT_EQ(stack.size(), 1u);
  EXPECT_NE(std::get<0>(stack[0]), "gone");
  EXPECT_EQ(h.pipeline.process_stats(p.key).unsymbolized_frames, 1u);
}

// What the sampler sends the first time it sees a code object: the raw
// bytes at the name and file string objects.
krait_code_event capture_of(const proc::FakeMemory& mem, const FakeCode& code, uint64_t name_addr,
                            uint64_t file_addr, uint64_t table_addr) {
  krait_code_event e{};
  e.hdr.type = KRAIT_EVENT_CODE;
  e.hdr.pid = 4242;
  e.code = code.address;
  e.token = code.token;
  e.firstlineno = static_cast<uint32_t>(code.firstlineno);
  e.name_addr = name_addr;
  e.file_addr = file_addr;
  // Copy as many bytes as the fixture holds, like a read that stops at the end.
  for (size_t n = sizeof e.name; n > 0; --n)
    if (mem.read({name_addr}, {e.name, n}).ok())
      break;
  for (size_t n = sizeof e.file; n > 0; --n)
    if (mem.read({file_addr}, {e.file, n}).ok())
      break;
  e.linetable_addr = table_addr;
  for (size_t n = sizeof e.linetable; n > 0; --n)
    if (mem.read({table_addr}, {e.linetable, n}).ok())
      break;
  return e;
}

TEST_F(PipelineTest, CodeObjectGoneBeforeItIsReadIsNamedFromTheSamplersCapture) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  const std::string long_file = "/srv/app/" + std::string(300, 'x') + "/module.py";
  FakeCode imported = put_code(*mem, 0x100000, "<module>", "/srv/app/mod.py", 1);
  FakeCode exec_d = put_code(*mem, 0x200000, "generated", long_file, 9);
  krait_code_event c1 = capture_of(*mem, imported, 0x110000, 0x120000, 0x130000);
  krait_code_event c2 = capture_of(*mem, exec_d, 0x210000, 0x220000, 0x230000);
  // Both die before user space reads them.
  mem->add_value<uint64_t>(imported.address, 0x7f12'3456'7000ull);
  mem->add_value<uint64_t>(exec_d.address, 0);
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;

  pipeline.on_code_capture(c1);
  pipeline.on_code_capture(c2);
  auto r = make_sample({{exec_d.address, exec_d.token, 2}, {imported.address, imported.token, 0}});
  pipeline.on_sample({r->sample, {r->sample.frames, r->n}});

  h.flush();
  auto stack = only_stack(profile);
  ASSERT_EQ(stack.size(), 2u);
  EXPECT_EQ(std::get<0>(stack[1]), "<module>");
  EXPECT_EQ(std::get<1>(stack[1]), "/srv/app/mod.py");
  EXPECT_EQ(std::get<2>(stack[1]), 2) << "the captured line table gives the line";
  EXPECT_EQ(std::get<0>(stack[0]), "generated");
  const std::string& file = std::get<1>(stack[0]);
  ASSERT_GT(file.size(), 3u);
  EXPECT_EQ(file.substr(file.size() - 3), "...");
  EXPECT_EQ(long_file.rfind(file.substr(0, file.size() - 3), 0), 0u) << file;
  // The module's capture was complete: named without a read. The other's
  // file name was cut, its read found the object gone: named from the
  // capture, and counted so.
  EXPECT_EQ(h.pipeline.process_stats(p.key).frames_from_capture, 1u);
  EXPECT_EQ(h.pipeline.process_stats(p.key).unsymbolized_frames, 0u);
}

// A module body's table is longer than the code event's inline copy: the
// sampler sends it whole right after, and a frame past the copy still gets
// its line once the object is gone.
TEST_F(PipelineTest, WholeLineTableSentAfterTheCaptureGivesLinesPastTheInlineCopy) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  // 400 entries of 8 code units (16 bytes) each, every one a line further.
  std::vector<uint8_t> table;
  for (int i = 0; i < 400; ++i)
    table.insert(table.end(), {0x80 | (13 << 3) | 7, 2});
  FakeCode body = put_code(*mem, 0x100000, "<module>", "/srv/app/big.py", 1, table);
  krait_code_event capture = capture_of(*mem, body, 0x110000, 0x120000, 0x130000);
  const size_t object_bytes = layout_.strings.bytes_data + table.size();
  ASSERT_GT(object_bytes, sizeof capture.linetable) << "the inline copy must hold it in part";
  std::vector<uint64_t> words(sizeof(krait_linetable_event) / 8 + 1, 0);
  auto* whole = reinterpret_cast<krait_linetable_event*>(words.data());
  whole->hdr.type = KRAIT_EVENT_LINETABLE;
  whole->hdr.pid = 4242;
  whole->code = body.address;
  whole->token = body.token;
  whole->size = static_cast<uint32_t>(object_bytes);
  ASSERT_TRUE(mem->read({0x130000}, {whole->bytes, object_bytes}).ok());
  mem->add_value<uint64_t>(body.address, 0);  // freed before user space reads it
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);

  h.pipeline.on_code_capture(capture);
  h.pipeline.on_linetable_capture(*whole, {whole->bytes, whole->size});
  // Entry 350 (bytes 5600-5615): line 1 + 351, far past the inline copy.
  auto r = make_sample({{body.address, body.token, 350 * 16 + 4}});
  h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  h.flush();
  auto stack = only_stack(profile);
  ASSERT_EQ(stack.size(), 1u);
  EXPECT_EQ(stack[0],
            std::make_tuple(std::string("<module>"), std::string("/srv/app/big.py"), int64_t{352}));
  EXPECT_EQ(h.pipeline.process_stats(p.key).frames_from_capture, 0u)
      << "a capture that held the frame whole loses nothing";
}

// A line table record for an object no code event announced, or for another
// incarnation of the address (token), changes nothing.
TEST_F(PipelineTest, LineTableRecordWithoutItsCodeEventIsIgnored) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "f", "/app/f.py", 5);
  krait_code_event capture = capture_of(*mem, code, 0x110000, 0x120000, 0x130000);
  add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  std::vector<uint64_t> words(sizeof(krait_linetable_event) / 8 + 1, 0);
  auto* other = reinterpret_cast<krait_linetable_event*>(words.data());
  other->hdr.pid = 4242;
  other->code = code.address;
  other->token = code.token ^ 1;
  other->size = 64;
  std::memset(other->bytes, 0xff, other->size);
  h.pipeline.on_linetable_capture(*other, {other->bytes, other->size});
  h.pipeline.on_code_capture(capture);
  h.pipeline.on_linetable_capture(*other, {other->bytes, other->size});
  auto r = make_sample({{code.address, code.token, 18}});
  h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  h.flush();
  auto stack = only_stack(profile);
  ASSERT_EQ(stack.size(), 1u);
  EXPECT_EQ(stack[0], std::make_tuple(std::string("f"), std::string("/app/f.py"), int64_t{8}));
}

TEST_F(PipelineTest, ACompleteCaptureNamesFramesWithoutReadingTheProcess) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto elsewhere = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*elsewhere, 0x100000, "handler", "/app/h.py", 20);
  krait_code_event capture = capture_of(*elsewhere, code, 0x110000, 0x120000, 0x130000);
  // The process's own memory holds nothing: every read would fail.
  const TrackedProcess& p = add_process(tracker, std::make_shared<proc::FakeMemory>());
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  h.pipeline.on_code_capture(capture);
  auto r = make_sample({{code.address, code.token, 18}});
  h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  EXPECT_EQ(h.queue.try_pop().has_value(), true) << "named at once, not parked";
  EXPECT_EQ(inspector_->stats().tasks_run, 0u);
  EXPECT_TRUE(inspector_->idle());
  EXPECT_EQ(h.pipeline.process_stats(p.key).samples_parked, 0u);
}

// A read that never returns (the process's memory does not answer) holds
// only that process's samples, up to a cap, and never the reader.
class BlockingMemory final : public proc::RemoteMemory {
 public:
  explicit BlockingMemory(std::shared_ptr<proc::FakeMemory> inner) : inner_(std::move(inner)) {}
  Result<void> read(uint64_t address, std::span<uint8_t> out) const override {
    std::unique_lock lock(mutex_);
    opened_.wait(lock, [&] { return open_; });
    return inner_->read(address, out);
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }

 private:
  std::shared_ptr<proc::FakeMemory> inner_;
  mutable std::mutex mutex_;
  mutable std::condition_variable opened_;
  bool open_ = false;
};

TEST_F(PipelineTest, SamplesWaitingForAReadThatDoesNotComeAreBoundedAndSentOnLater) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto fake = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*fake, 0x100000, "stuck", "/app/s.py", 1);
  auto blocking = std::make_shared<BlockingMemory>(fake);
  TrackedProcess p;
  p.pid = 4242;
  p.generation = kGeneration;
  p.state = ProcessState::kPython;
  p.attachment.status = python::AttachStatus::kAttached;
  p.attachment.version = python::PyVersion{3, 12, 1};
  p.attachment.layout = layout_;
  p.attachment.info.code_type_addr = kCodeType;
  p.memory = blocking;
  const TrackedProcess& tracked = tracker.adopt(std::move(p));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);

  const size_t n = kMaxParkedPerProcess + 10;
  auto r = make_sample({{code.address, code.token, 0}});
  for (size_t i = 0; i < n; ++i)
    h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  EXPECT_EQ(h.pipeline.parked_samples(tracked.key), kMaxParkedPerProcess);
  EXPECT_EQ(h.pipeline.stats().park_full, 10u);
  size_t sent = 0;
  while (h.queue.try_pop())
    ++sent;
  EXPECT_EQ(sent, 10u) << "over the cap, samples go on with what is known";

  // Past the wait, the rest goes on too, named as unknown.
  h.pipeline.tick(monotonic_ns() + kParkTimeoutNs);
  EXPECT_EQ(h.pipeline.parked_samples(tracked.key), 0u);
  EXPECT_EQ(h.pipeline.stats().parked_timeouts, kMaxParkedPerProcess);
  blocking->open();
}

TEST_F(PipelineTest, TruncatedAndFailedWalksCarryTheirReason) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "deep", "/app/d.py", 1);
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 3);
  Pipeline& pipeline = h.pipeline;

  auto truncated = make_sample({{code.address, code.token, 0}}, KRAIT_PY_OK, KRAIT_PYF_TRUNCATED);
  pipeline.on_sample({truncated->sample, {truncated->sample.frames, truncated->n}});
  auto fault = make_sample({{code.address, code.token, 0}}, KRAIT_PY_READ_FAULT_FRAME);
  pipeline.on_sample({fault->sample, {fault->sample.frames, fault->n}});
  auto native = make_sample({}, KRAIT_PY_NO_THREAD_STATE);
  pipeline.on_sample({native->sample, {native->sample.frames, native->n}});

  h.flush();
  // In any order: samples that wait for a read reach the profile later.
  std::multiset<std::string> roots;
  for (const auto& s : profile.samples())
    roots.insert(profile.frames()[s.stack.back()].function);
  EXPECT_EQ(roots, (std::multiset<std::string>{"[truncated: deeper than 3 frames]",
                                               "[frame unreadable]", "[no Python thread state]"}));
  EXPECT_EQ(h.pipeline.process_stats(p.key).truncated, 1u);
  EXPECT_EQ(h.pipeline.process_stats(p.key).by_status[KRAIT_PY_READ_FAULT_FRAME], 1u);
  EXPECT_EQ(h.pipeline.process_stats(p.key).by_status[KRAIT_PY_NO_THREAD_STATE], 1u);
  EXPECT_EQ(h.pipeline.process_stats(p.key).samples, 3u);
}

TEST_F(PipelineTest, StaleAndRefusedSamplesStayOutOfTheProfile) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "f", "/app/f.py", 1);
  const TrackedProcess& p = add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;

  auto stale = make_sample({{code.address, code.token, 0}}, KRAIT_PY_OK, 0, kGeneration + 1);
  pipeline.on_sample({stale->sample, {stale->sample.frames, stale->n}});
  auto refused = make_sample({}, KRAIT_PY_PROC_REFUSED);
  pipeline.on_sample({refused->sample, {refused->sample.frames, refused->n}});

  h.flush();
  EXPECT_EQ(profile.total_count(), 0u);
  EXPECT_EQ(pipeline.stats().stale_samples, 1u);
  EXPECT_EQ(h.pipeline.process_stats(p.key).by_status[KRAIT_PY_PROC_REFUSED], 1u);
}

// The daemon's per-interval prune also closes the module files (parsed CFI,
// symbols) that no live process's modules hold any more, so binaries that
// came and went leave nothing behind; files still mapped stay open.
TEST_F(PipelineTest, PruneClosesModuleFilesNoProcessHolds) {
  ProcessTracker tracker(sink_, *inspector_, {});
  JobQueue queue(1u << 20);
  auto cache = std::make_shared<unwind::ModuleCache>();
  Pipeline pipeline(tracker, *inspector_, queue, PipelineOptions{256, true}, cache);
  auto vdso = cache->vdso();
  const size_t kept = vdso ? 1 : 0;  // the cache keeps this kernel's vDSO
  {
    auto modules = unwind::ProcessModules::load(static_cast<int>(::getpid()), *cache);
    ASSERT_TRUE(modules.ok()) << modules.error().message;
    const size_t loaded = cache->size();
    ASSERT_GT(loaded, kept + 1) << "this test's own executable and libc";
    pipeline.prune_caches();
    EXPECT_EQ(cache->size(), loaded) << "a live process's files were closed";
  }
  pipeline.prune_caches();
  EXPECT_EQ(cache->size(), kept);
}

TEST_F(PipelineTest, ExitKeepsTheProcessForTheSummaryButFreesItsCaches) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "f", "/app/f.py", 1);
  add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  Pipeline& pipeline = h.pipeline;
  auto r = make_sample({{code.address, code.token, 0}});
  pipeline.on_sample({r->sample, {r->sample.frames, r->n}});

  krait_proc_event exit{};
  exit.hdr.type = KRAIT_EVENT_EXIT;
  exit.hdr.pid = 4242;
  pipeline.on_exit(exit);

  h.flush();
  EXPECT_EQ(tracker.find(4242), nullptr);
  ASSERT_EQ(tracker.processes().size(), 1u);
  const TrackedProcess& gone = tracker.processes().begin()->second;
  EXPECT_EQ(gone.state, ProcessState::kExited);
  EXPECT_FALSE(pipeline.holds_names(gone.key));
  EXPECT_EQ(gone.memory, nullptr);
  EXPECT_EQ(pipeline.process_stats(gone.key).samples, 1u);
  EXPECT_EQ(profile.total_count(), 1u);
}

// The daemon's per-interval prune: the tracker forgets processes that
// exited, and the pipeline what it kept under their keys (their counts).
TEST_F(PipelineTest, PrunedProcessesLeaveNothingBehindInThePipeline) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "f", "/app/f.py", 1);
  const uint64_t key = add_process(tracker, std::move(mem)).key;
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);
  auto r = make_sample({{code.address, code.token, 0}});
  h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  krait_proc_event exit{};
  exit.hdr.type = KRAIT_EVENT_EXIT;
  exit.hdr.pid = 4242;
  h.pipeline.on_exit(exit);
  h.flush();
  ASSERT_EQ(h.pipeline.process_stats(key).samples, 1u) << "kept for the summary until pruned";

  const std::vector<uint64_t> pruned = tracker.prune_exited();
  EXPECT_EQ(pruned, std::vector<uint64_t>{key});
  h.pipeline.forget(pruned);
  EXPECT_TRUE(tracker.processes().empty());
  EXPECT_EQ(h.pipeline.process_stats(key).samples, 0u);
  EXPECT_FALSE(h.pipeline.holds_names(key));
  EXPECT_EQ(profile.total_count(), 1u);
}

// The sampler's own walk kept the thread on the CPU on its way out: that
// time is not waiting, and a weighted sample would multiply it.
TEST_F(PipelineTest, AWaitIsChargedWithoutTheTimeItsOwnWalkTook) {
  ProcessTracker tracker(sink_, *inspector_, {});
  auto mem = std::make_shared<proc::FakeMemory>();
  FakeCode code = put_code(*mem, 0x100000, "serve", "/app/serve.py", 10);
  add_process(tracker, std::move(mem));
  profile::Profile profile;
  Harness h(tracker, *inspector_, profile, 256);

  auto sample_at = [&](uint64_t ktime, uint32_t tid) {
    auto r = make_sample({{code.address, code.token, 4 | KRAIT_FRAME_ENTRY}});
    r->sample.hdr.ktime_ns = ktime;
    r->sample.hdr.tid = tid;
    r->sample.cpu_state = KRAIT_STATE_OFF_CPU;
    r->sample.off_cpu_reason = KRAIT_OFF_IO;
    r->sample.weight = 10;
    h.pipeline.on_sample({r->sample, {r->sample.frames, r->n}});
  };
  auto end_at = [&](uint64_t start, uint64_t end, uint32_t walk, uint32_t tid) {
    krait_block_end e{};
    e.hdr.type = KRAIT_EVENT_BLOCK_END;
    e.hdr.pid = 4242;
    e.hdr.tid = tid;
    e.hdr.ktime_ns = end;
    e.start_ns = start;
    e.weight = 10;
    e.walk_ns = walk;
    h.pipeline.on_block_end(e);
  };
  sample_at(1'000'000, 4243);
  end_at(1'000'000, 1'050'000, 30'000, 4243);  // 50 us away, 30 us of it the walk
  sample_at(2'000'000, 4244);
  end_at(2'000'000, 2'010'000, 90'000, 4244);  // a walk longer than the wait: nothing
  h.flush();

  uint64_t off_cpu = 0;
  for (const auto& s : profile.samples())
    off_cpu += s.off_cpu_ns;
  EXPECT_EQ(off_cpu, 10u * 20'000u);
}

}  // namespace
}  // namespace krait::engine
