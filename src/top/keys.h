// The keys of `krait top`'s screen and what each does to the view: a pure
// function of the key and the state, so tests drive it without a terminal.
#pragma once

#include <optional>
#include <string>

#include "top/table.h"

namespace krait::top {

// What the screen shows besides the view settings.
struct UiState {
  bool paused = false;      // keeps showing the last interval taken
  bool cumulative = false;  // rows since the start instead of the last interval
  // The filter being typed after `f`; nullopt when not prompting.
  std::optional<std::string> prompt;
};

enum class KeyResult : uint8_t { kIgnored, kChanged, kQuit };

// Key codes besides plain characters (the screen maps the terminal's).
inline constexpr int kKeyBackspace = 127;
inline constexpr int kKeyEscape = 27;
inline constexpr int kKeyEnter = '\n';
// A filter longer than this is not a pid or a process name.
inline constexpr size_t kMaxFilterBytes = 64;

// Applies one key. While prompting, printable characters edit the filter,
// Enter applies it (empty clears), Escape cancels.
KeyResult apply_key(int key, ViewSettings& view, UiState& state);

// The footer: the keys, or the prompt while one is open.
std::string footer_text(const UiState& state);

}  // namespace krait::top
