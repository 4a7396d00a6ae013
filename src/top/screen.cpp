#include "top/screen.h"

#include <curses.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <clocale>
#include <cstdio>
#include <cstdlib>

namespace krait::top {

Result<std::unique_ptr<Screen>> Screen::open() {
  // Wide characters (names in UTF-8) need the locale's character set.
  std::setlocale(LC_CTYPE, "");
  SCREEN* screen = newterm(nullptr, stdout, stdin);
  if (screen == nullptr)
    return make_error("cannot use the terminal (TERM={}): run with --once for plain text",
                      std::getenv("TERM") ? std::getenv("TERM") : "unset");
  set_term(screen);
  // Keys arrive one at a time, unechoed; Ctrl-C stays a signal, which the
  // run loop's signalfd turns into a clean exit.
  cbreak();
  noecho();
  nonl();
  keypad(stdscr, TRUE);
  nodelay(stdscr, TRUE);
  set_escdelay(25);
  curs_set(0);
  return std::make_unique<Screen>(Key{}, screen);
}

Screen::Screen(Key, void* screen) : screen_(screen) {}

Screen::~Screen() {
  endwin();
  delscreen(static_cast<SCREEN*>(screen_));
  std::fflush(stdout);
}

int Screen::input_fd() const {
  return STDIN_FILENO;
}

KeyResult Screen::read_keys(ViewSettings& view, UiState& state) {
  KeyResult result = KeyResult::kIgnored;
  for (int key = getch(); key != ERR; key = getch()) {
    if (key == KEY_RESIZE) {
      result = KeyResult::kChanged;
      continue;
    }
    if (key == KEY_BACKSPACE || key == KEY_DC)
      key = kKeyBackspace;
    else if (key == KEY_ENTER)
      key = kKeyEnter;
    switch (apply_key(key, view, state)) {
      case KeyResult::kQuit:
        return KeyResult::kQuit;
      case KeyResult::kChanged:
        result = KeyResult::kChanged;
        break;
      case KeyResult::kIgnored:
        break;
    }
  }
  return result;
}

void Screen::resize() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row > 0 && size.ws_col > 0)
    resize_term(size.ws_row, size.ws_col);
  clear();
}

void Screen::draw(const HeaderFacts& facts, const ViewSettings& view, const Table& table,
                  const UiState& state) {
  // One column short of the edge: a write into the last cell of the last
  // line would scroll some terminals.
  const int lines = LINES;
  const size_t width = COLS > 1 ? static_cast<size_t>(COLS - 1) : 1;
  erase();
  int y = 0;
  auto put = [&](const std::string& text, attr_t attributes) {
    if (y >= lines)
      return;
    attron(attributes);
    mvaddnstr(y++, 0, text.c_str(), static_cast<int>(text.size()));
    attroff(attributes);
  };
  const auto header = header_lines(facts, view, width);
  for (size_t i = 0; i < header.size(); ++i)
    put(header[i], i == 0 ? A_BOLD : A_NORMAL);
  ++y;
  const Columns columns = columns_for_width(width);
  put(fit_left(column_header(columns, view.grouping), width), A_REVERSE);
  const int last_row = lines - 2;  // the footer's line stays free
  for (const Row& row : table.rows) {
    if (y > last_row)
      break;
    put(fit_left(row_line(row, columns), width, /*pad=*/false), A_NORMAL);
  }
  if (table.rows.empty() && y <= last_row)
    put(view.filter.empty() ? "(no samples yet)" : "(no samples in the filter)", A_DIM);
  y = lines - 1;
  put(fit_left(footer_text(state), width, /*pad=*/false), state.prompt ? A_BOLD : A_REVERSE);
  refresh();
}

}  // namespace krait::top
