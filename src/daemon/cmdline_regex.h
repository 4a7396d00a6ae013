// The operator's regular expressions over command lines (process
// selection and application naming), in RE2 syntax: matching takes time
// linear in the text and memory bounded per expression, whatever the
// profiled process put in its command line (one argument may be 128 KiB).
// RE2 has no backreferences and no lookaround; see docs/daemon.md.
//
// Patterns and text are taken byte by byte (RE2's Latin-1 mode), as the
// ECMAScript regexes of earlier builds did: '.' matches any byte but '\n',
// so bytes that are not UTF-8 in a command line neither stop nor dodge a
// match, and a UTF-8 literal in a pattern matches the same bytes in the text.
//
// Threading: immutable after compile(); copies share the compiled
// expression; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace re2 {
class RE2;
}

namespace krait::daemon {

// What one compiled expression may use (RE2 splits it between the compiled
// program and the caches of its matcher; a search that would need more
// falls back to a slower automaton, still linear).
inline constexpr int64_t kCmdlineRegexMaxMemBytes = int64_t{8} << 20;  // 8 MiB

class CmdlineRegex {
 public:
  // Error, one line: "<key>: regex '<pattern>' does not compile: <why>".
  static Result<CmdlineRegex> compile(std::string_view pattern, std::string_view key);

  // True when the expression matches anywhere in `text`.
  bool search(std::string_view text) const;

  // The first capture group of the leftmost match, or the whole match when
  // the expression has no group; "" when the group took no part in the
  // match; nullopt when nothing matches. Points into `text`.
  std::optional<std::string_view> search_first_group(std::string_view text) const;

 private:
  explicit CmdlineRegex(std::shared_ptr<const re2::RE2> re) : re_(std::move(re)) {}
  std::shared_ptr<const re2::RE2> re_;
};

}  // namespace krait::daemon
