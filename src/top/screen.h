// The full-screen terminal of `krait top` (ncurses): the header, the column
// header, as many rows as fit, and the footer with the keys; redrawn on
// every interval, key and resize.
//
// Ownership: one Screen owns the terminal from open() to its destructor,
// which restores it (every way out of `krait top` destroys it). Run-loop
// thread only. Input is read without blocking: the run loop waits on
// input_fd() in its epoll set and calls read_keys() when it is readable.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "top/keys.h"
#include "top/table.h"
#include "util/result.h"

namespace krait::top {

class Screen {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Takes over the terminal on stdin/stdout; an error when it is not one
  // ncurses knows ($TERM).
  static Result<std::unique_ptr<Screen>> open();
  Screen(Key, void* screen);
  ~Screen();
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  int input_fd() const;
  // Applies every pending key: kChanged when something changed, kQuit
  // on `q`.
  KeyResult read_keys(ViewSettings& view, UiState& state);
  // After SIGWINCH: takes the terminal's new size.
  void resize();
  void draw(const HeaderFacts& facts, const ViewSettings& view, const Table& table,
            const UiState& state);

 private:
  void* screen_;  // SCREEN*, kept opaque so <curses.h> macros stay in screen.cpp
};

}  // namespace krait::top
