// python::walk_frame_chain (src/python/frame_walk.h), the walk `krait dump`
// and layout validation share, over hand-laid fixture memory: the records
// it gives must be the sampler's (leaf first, tokens, instruction
// positions, entry marks at shim frames), and chains a hostile process can
// build (cycles, endless, garbage code pointers) must end with a reason.
#include "python/frame_walk.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "support/python_test_layout.h"

namespace krait::python {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kTstate = 0x1000;
constexpr uint64_t kCodeType = 0xc0de;

struct Fixture {
  proc::FakeMemory memory;
  void frame(uint64_t at, uint64_t back, uint64_t code, int32_t lasti, uint8_t owner = 0) {
    std::vector<uint8_t> bytes(24);
    std::memcpy(&bytes[0], &back, 8);
    std::memcpy(&bytes[8], &code, 8);
    std::memcpy(&bytes[16], &lasti, 4);
    bytes[20] = owner;
    memory.add(at, bytes);
  }
  void code(uint64_t at, uint64_t type, uint32_t firstline) {
    std::vector<uint8_t> bytes(48);
    const uint64_t file = at + 0x100, name = at + 0x200, table = at + 0x300;
    std::memcpy(&bytes[8], &type, 8);
    std::memcpy(&bytes[16], &file, 8);
    std::memcpy(&bytes[24], &name, 8);
    std::memcpy(&bytes[32], &table, 8);
    std::memcpy(&bytes[40], &firstline, 4);
    memory.add(at, bytes);
  }
  void tstate(uint64_t first_frame) { memory.add_value<uint64_t>(kTstate + 8, first_frame); }
};

FrameChain walk(Fixture& f, const PythonLayout& l, size_t max = 64, int budget = 1000) {
  BudgetedReader reader(f.memory, budget);
  return walk_frame_chain(reader, l, kTstate, kCodeType, max);
}

TEST(FrameWalk, GivesTheSamplersRecordsLeafFirst) {
  Fixture f;
  f.tstate(0x2000);
  f.frame(0x2000, 0x2100, 0x3000, 14);
  f.frame(0x2100, 0x2200, 0x3400, -1);  // f_lasti -1: not started, sent as 0
  f.frame(0x2200, 0, 0x3000, 6);
  f.code(0x3000, kCodeType, 10);
  f.code(0x3400, kCodeType, 20);
  FrameChain c = walk(f, frame_object_test_layout());
  ASSERT_EQ(c.status, KRAIT_PY_OK) << c.reason;
  ASSERT_EQ(c.frames.size(), 3u);
  EXPECT_FALSE(c.truncated);
  EXPECT_EQ(c.frames[0].record.code, 0x3000u);
  EXPECT_EQ(c.frames[0].record.instr, 14u);
  EXPECT_EQ(c.frames[0].record.token, krait_code_token(0x3100, 0x3200, 0x3300, 10));
  EXPECT_EQ(c.frames[0].frame, 0x2000u);
  EXPECT_EQ(c.frames[0].name, 0x3200u);
  EXPECT_EQ(c.frames[0].file, 0x3100u);
  EXPECT_EQ(c.frames[1].record.instr, 0u);
  EXPECT_EQ(c.frames[1].record.token, krait_code_token(0x3500, 0x3600, 0x3700, 20));
  EXPECT_EQ(c.frames[2].record.instr, 6u);
}

TEST(FrameWalk, ShimFramesMarkTheFrameTheyEnter) {
  Fixture f;
  PythonLayout l = frame_object_test_layout();
  l.bpf.frame_owner_shim = 3;
  f.tstate(0x2000);
  f.frame(0x2000, 0x2100, 0x3000, 2);
  f.frame(0x2100, 0x2200, 0, 0, 3);  // shim: its code is not read
  f.frame(0x2200, 0x2300, 0x3000, 4);
  f.frame(0x2300, 0, 0, 0, 3);
  f.code(0x3000, kCodeType, 1);
  FrameChain c = walk(f, l);
  ASSERT_EQ(c.status, KRAIT_PY_OK) << c.reason;
  ASSERT_EQ(c.frames.size(), 2u);
  EXPECT_EQ(c.frames[0].record.instr, 2u | KRAIT_FRAME_ENTRY);
  EXPECT_EQ(c.frames[1].record.instr, 4u | KRAIT_FRAME_ENTRY);
}

TEST(FrameWalk, NotACodeObjectStopsOrIsSkippedAsTheLayoutSays) {
  Fixture f;
  f.tstate(0x2000);
  f.frame(0x2000, 0x2100, 0x3000, 2);
  f.frame(0x2100, 0x2200, 0x3400, 0);  // 0x3400: some other object
  f.frame(0x2200, 0, 0x3000, 8);
  f.code(0x3000, kCodeType, 1);
  f.code(0x3400, 0xbad, 1);
  PythonLayout l = frame_object_test_layout();
  FrameChain strict = walk(f, l);
  EXPECT_EQ(strict.status, KRAIT_PY_BAD_CODE_OBJECT);
  EXPECT_THAT(strict.reason, HasSubstr("does not point to a code object"));
  EXPECT_EQ(strict.frames.size(), 1u);
  l.bpf.skip_non_code = 1;
  FrameChain skipping = walk(f, l);
  ASSERT_EQ(skipping.status, KRAIT_PY_OK) << skipping.reason;
  ASSERT_EQ(skipping.frames.size(), 2u);
  EXPECT_EQ(skipping.frames[0].record.instr, 2u | KRAIT_FRAME_ENTRY);
}

TEST(FrameWalk, HostileChainsEndWithAReason) {
  Fixture f;
  f.tstate(0x2000);
  f.frame(0x2000, 0x2100, 0x3000, 0);
  f.frame(0x2100, 0x2000, 0x3000, 0);  // back to the first
  f.code(0x3000, kCodeType, 1);
  FrameChain cyclic = walk(f, frame_object_test_layout());
  EXPECT_EQ(cyclic.status, KRAIT_PY_READ_FAULT_FRAME);
  EXPECT_THAT(cyclic.reason, HasSubstr("cyclic"));
  EXPECT_EQ(cyclic.frames.size(), 2u);

  FrameChain cut = walk(f, frame_object_test_layout(), 1);
  EXPECT_EQ(cut.status, KRAIT_PY_OK);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.frames.size(), 1u);

  FrameChain broke = walk(f, frame_object_test_layout(), 64, 3);
  EXPECT_NE(broke.status, KRAIT_PY_OK);
  EXPECT_THAT(broke.reason, HasSubstr("unreadable"));

  Fixture g;
  g.tstate(0x2000);
  g.frame(0x2000, 0x9999000, 0x3000, 0);  // the next frame is unmapped
  g.code(0x3000, kCodeType, 1);
  FrameChain unmapped = walk(g, frame_object_test_layout());
  EXPECT_EQ(unmapped.status, KRAIT_PY_READ_FAULT_FRAME);
  EXPECT_EQ(unmapped.frames.size(), 1u);

  Fixture h;  // no thread state at all
  FrameChain no_state = walk(h, frame_object_test_layout());
  EXPECT_EQ(no_state.status, KRAIT_PY_READ_FAULT_STATE);
}

TEST(FrameWalk, TheCheckEndsTheWalkWhereItSays) {
  Fixture f;
  f.tstate(0x2000);
  f.frame(0x2000, 0x2100, 0x3000, 0);
  f.frame(0x2100, 0, 0x3000, 0);
  f.code(0x3000, kCodeType, 1);
  BudgetedReader reader(f.memory, 100);
  int seen = 0;
  FrameChain c = walk_frame_chain(reader, frame_object_test_layout(), kTstate, kCodeType, 64,
                                  [&](const WalkedFrame&) { return ++seen < 2; });
  EXPECT_EQ(c.status, KRAIT_PY_OK);
  EXPECT_EQ(c.frames.size(), 1u);
  EXPECT_EQ(seen, 2);
}

TEST(FrameWalk, StructsNotReadableWholeAreReadFieldByField) {
  // As in a recorded process image that holds only the fields read: the
  // frame's back and code pointers, the code object's type, name and file.
  Fixture f;
  f.tstate(0x2000);
  f.memory.add_value<uint64_t>(0x2000, 0);       // f_back
  f.memory.add_value<uint64_t>(0x2008, 0x3000);  // f_code
  f.memory.add_value<uint64_t>(0x3008, kCodeType);
  f.memory.add_value<uint64_t>(0x3010, 0x3100);  // co_filename
  f.memory.add_value<uint64_t>(0x3018, 0x3200);  // co_name
  FrameChain c = walk(f, frame_object_test_layout());
  ASSERT_EQ(c.status, KRAIT_PY_OK) << c.reason;
  ASSERT_EQ(c.frames.size(), 1u);
  EXPECT_EQ(c.frames[0].name, 0x3200u);
  EXPECT_EQ(c.frames[0].file, 0x3100u);
  EXPECT_EQ(c.frames[0].record.instr, 0u);
  EXPECT_EQ(c.frames[0].record.token, krait_code_token(0x3100, 0x3200, 0, 0));

  Fixture g;  // the code pointer itself is missing: the frame is unreadable
  g.tstate(0x2000);
  g.memory.add_value<uint64_t>(0x2000, 0);
  FrameChain bad = walk(g, frame_object_test_layout());
  EXPECT_EQ(bad.status, KRAIT_PY_READ_FAULT_FRAME);
}

}  // namespace
}  // namespace krait::python
