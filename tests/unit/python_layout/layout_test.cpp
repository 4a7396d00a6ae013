// build_layout over every built-in table: the layout the sampler gets must
// keep every read inside the caps the BPF side assumes, and name its frame
// model correctly per version.
#include "python/layout.h"

#include <gtest/gtest.h>

#include "python/offsets/offset_table.h"

namespace krait::python {
namespace {

void expect_in_caps(const krait_py_layout& b, const std::string& version) {
  auto fits = [](uint16_t off, uint16_t read_size) {
    return off == KRAIT_OFFSET_NONE || off + 8u <= read_size;
  };
  EXPECT_LE(b.tstate_read_size, KRAIT_TSTATE_READ_CAP) << version;
  EXPECT_LE(b.frame_read_size, KRAIT_FRAME_READ_CAP) << version;
  EXPECT_LE(b.code_read_size, KRAIT_CODE_READ_CAP) << version;
  for (uint16_t off : {b.tstate_next, b.tstate_thread_id, b.tstate_frame})
    EXPECT_TRUE(fits(off, b.tstate_read_size)) << version << " tstate offset " << off;
  EXPECT_TRUE(b.tstate_native_tid == 0 || fits(b.tstate_native_tid, b.tstate_read_size))
      << version << " native_thread_id offset " << b.tstate_native_tid;
  for (uint16_t off : {b.frame_back, b.frame_code, b.frame_instr, b.frame_owner, b.frame_is_entry})
    EXPECT_TRUE(fits(off, b.frame_read_size)) << version << " frame offset " << off;
  for (uint16_t off :
       {b.code_type, b.code_firstlineno, b.code_filename, b.code_name, b.code_linetable})
    EXPECT_TRUE(fits(off, b.code_read_size)) << version << " code offset " << off;
}

TEST(Layout, EveryBuiltinTableBuildsALayoutWithinTheSamplerCaps) {
  ASSERT_FALSE(builtin_offset_tables().empty());
  for (const auto& table : builtin_offset_tables()) {
    auto layout = build_layout(table, table.version);
    ASSERT_TRUE(layout.ok()) << table.version.str() << ": " << layout.error().message;
    expect_in_caps(layout->bpf, table.version.str());
  }
}

TEST(Layout, FrameModelFollowsTheVersion) {
  struct Case {
    PyVersion v;
    uint8_t instr_kind;
    bool via_cframe;
    bool entry_flag;
    uint8_t shim;
    uint32_t instr_scale;
  };
  const Case cases[] = {
      {{2, 7, 18}, KRAIT_INSTR_LASTI, false, false, KRAIT_OWNER_NONE, 1},
      {{3, 9, 18}, KRAIT_INSTR_LASTI, false, false, KRAIT_OWNER_NONE, 1},
      {{3, 10, 13}, KRAIT_INSTR_LASTI, false, false, KRAIT_OWNER_NONE, 2},
      {{3, 11, 7}, KRAIT_INSTR_POINTER, true, true, KRAIT_OWNER_NONE, 1},
      {{3, 12, 1}, KRAIT_INSTR_POINTER, true, false, 3, 1},
      {{3, 13, 0}, KRAIT_INSTR_POINTER, false, false, 3, 1},
  };
  for (const auto& c : cases) {
    const OffsetTable* t = find_table(c.v);
    ASSERT_NE(t, nullptr) << c.v.str();
    auto l = build_layout(*t, c.v);
    ASSERT_TRUE(l.ok()) << l.error().message;
    EXPECT_EQ(l->bpf.instr_kind, c.instr_kind) << c.v.str();
    EXPECT_EQ(l->bpf.cframe_frame != KRAIT_OFFSET_NONE, c.via_cframe) << c.v.str();
    EXPECT_EQ(l->bpf.frame_is_entry != KRAIT_OFFSET_NONE, c.entry_flag) << c.v.str();
    EXPECT_EQ(l->bpf.frame_owner_shim, c.shim) << c.v.str();
    EXPECT_EQ(l->instr_scale, c.instr_scale) << c.v.str();
    EXPECT_EQ(l->strings.py2_bytes, c.v.major == 2) << c.v.str();
    // The sampler tells a thread's own state from a stale one by it (3.11+).
    EXPECT_EQ(l->bpf.tstate_native_tid != 0, (c.v >= PyVersion{3, 11, 0})) << c.v.str();
  }
}

TEST(Layout, MissingFieldIsNamedInTheError) {
  OffsetTable t = *find_table({3, 11, 7});
  t.fields.erase("PyThreadState.thread_id");
  auto l = build_layout(t, {3, 11, 7});
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message.find("PyThreadState.thread_id"), std::string::npos)
      << l.error().message;
}

TEST(Layout, OffsetBeyondTheSamplerReadIsRefused) {
  OffsetTable t = *find_table({3, 11, 7});
  t.fields["PyCodeObject.co_filename"] = 4000;
  auto l = build_layout(t, {3, 11, 7});
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message.find("PyCodeObject"), std::string::npos) << l.error().message;
}

}  // namespace
}  // namespace krait::python
