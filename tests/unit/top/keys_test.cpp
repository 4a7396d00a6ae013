// The keys of the screen, applied to the view without a terminal.
#include "top/keys.h"

#include <gtest/gtest.h>

namespace krait::top {
namespace {

TEST(TopKeys, SortGroupNativePauseQuit) {
  ViewSettings v;
  UiState s;
  EXPECT_EQ(apply_key('n', v, s), KeyResult::kChanged);
  EXPECT_EQ(v.sort, SortKey::kName);
  apply_key('t', v, s);
  EXPECT_EQ(v.sort, SortKey::kTotal);
  apply_key('s', v, s);
  EXPECT_EQ(v.sort, SortKey::kName) << "s cycles";
  apply_key('o', v, s);
  EXPECT_EQ(v.sort, SortKey::kOwn);
  for (Grouping g :
       {Grouping::kLines, Grouping::kProcesses, Grouping::kThreads, Grouping::kFunctions}) {
    apply_key('g', v, s);
    EXPECT_EQ(v.grouping, g);
  }
  const bool native = v.native_frames;
  apply_key('k', v, s);
  EXPECT_NE(v.native_frames, native);
  apply_key(' ', v, s);
  EXPECT_TRUE(s.paused);
  apply_key('p', v, s);
  EXPECT_FALSE(s.paused);
  apply_key('c', v, s);
  EXPECT_TRUE(s.cumulative);
  EXPECT_EQ(apply_key('x', v, s), KeyResult::kIgnored);
  EXPECT_EQ(apply_key('q', v, s), KeyResult::kQuit);
}

TEST(TopKeys, FilterPromptEditsAppliesAndCancels) {
  ViewSettings v;
  UiState s;
  apply_key('f', v, s);
  ASSERT_TRUE(s.prompt.has_value());
  for (char c : std::string("12x"))
    apply_key(c, v, s);
  apply_key(kKeyBackspace, v, s);
  EXPECT_EQ(apply_key('q', v, s), KeyResult::kChanged) << "q is text while prompting";
  EXPECT_EQ(*s.prompt, "12q");
  apply_key(kKeyBackspace, v, s);
  apply_key(kKeyEnter, v, s);
  EXPECT_FALSE(s.prompt.has_value());
  EXPECT_EQ(v.filter, "12");
  apply_key('f', v, s);
  EXPECT_EQ(*s.prompt, "12") << "the prompt starts from the filter";
  apply_key('9', v, s);
  apply_key(kKeyEscape, v, s);
  EXPECT_EQ(v.filter, "12") << "Escape keeps the old filter";
  apply_key('f', v, s);
  apply_key(kKeyBackspace, v, s);
  apply_key(kKeyBackspace, v, s);
  apply_key(kKeyEnter, v, s);
  EXPECT_EQ(v.filter, "") << "empty clears";
  apply_key('f', v, s);
  for (int i = 0; i < 200; ++i)
    apply_key('a', v, s);
  EXPECT_EQ(s.prompt->size(), kMaxFilterBytes);
  EXPECT_EQ(apply_key(0x1b5, v, s), KeyResult::kIgnored) << "a function key is no text";
  EXPECT_NE(footer_text(s).find("filter"), std::string::npos);
}

}  // namespace
}  // namespace krait::top
