#include "top/keys.h"

namespace krait::top {
namespace {

Grouping next(Grouping g) {
  switch (g) {
    case Grouping::kFunctions:
      return Grouping::kLines;
    case Grouping::kLines:
      return Grouping::kProcesses;
    case Grouping::kProcesses:
      return Grouping::kThreads;
    case Grouping::kThreads:
      return Grouping::kFunctions;
  }
  return Grouping::kFunctions;
}

SortKey next(SortKey s) {
  switch (s) {
    case SortKey::kOwn:
      return SortKey::kTotal;
    case SortKey::kTotal:
      return SortKey::kName;
    case SortKey::kName:
      return SortKey::kOwn;
  }
  return SortKey::kOwn;
}

KeyResult prompt_key(int key, ViewSettings& view, UiState& state) {
  std::string& text = *state.prompt;
  if (key == kKeyEnter || key == '\r') {
    view.filter = text;
    state.prompt.reset();
  } else if (key == kKeyEscape) {
    state.prompt.reset();
  } else if (key == kKeyBackspace || key == 8) {
    if (!text.empty())
      text.pop_back();
  } else if (key >= 0x20 && key < 0x7f && text.size() < kMaxFilterBytes) {
    text += static_cast<char>(key);
  } else {
    return KeyResult::kIgnored;
  }
  return KeyResult::kChanged;
}

}  // namespace

KeyResult apply_key(int key, ViewSettings& view, UiState& state) {
  if (state.prompt)
    return prompt_key(key, view, state);
  switch (key) {
    case 'q':
    case 'Q':
      return KeyResult::kQuit;
    case 'o':
      view.sort = SortKey::kOwn;
      break;
    case 't':
      view.sort = SortKey::kTotal;
      break;
    case 'n':
      view.sort = SortKey::kName;
      break;
    case 's':
      view.sort = next(view.sort);
      break;
    case 'g':
      view.grouping = next(view.grouping);
      break;
    case 'k':
      view.native_frames = !view.native_frames;
      break;
    case 'c':
      state.cumulative = !state.cumulative;
      break;
    case 'p':
    case ' ':
      state.paused = !state.paused;
      break;
    case 'f':
    case '/':
      state.prompt = view.filter;
      break;
    default:
      return KeyResult::kIgnored;
  }
  return KeyResult::kChanged;
}

std::string footer_text(const UiState& state) {
  if (state.prompt)
    return "filter (pid or name; empty clears, Esc cancels): " + printable(*state.prompt);
  return "q quit  o/t/n sort  g group  f filter  k native  c cumulative  p pause";
}

}  // namespace krait::top
