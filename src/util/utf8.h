// UTF-8 validity for strings krait writes out. Names, paths, command lines,
// thread names and cgroup paths come from profiled processes and may be any
// bytes; protobuf string fields (pprof, Pyroscope), JSON and the consumers
// of folded text all need valid UTF-8, and one bad name must not make a
// whole profile unreadable.
#pragma once

#include <string>
#include <string_view>

namespace krait {

// True when `text` is well-formed UTF-8: no overlong forms, no surrogates
// (U+D800-U+DFFF), nothing above U+10FFFF, no truncated sequence.
bool is_valid_utf8(std::string_view text);

// `text` with every byte that does not start or continue a well-formed
// sequence replaced by '?'. Returns the text unchanged (and allocates only
// the copy) when it is valid already.
std::string valid_utf8(std::string_view text);

}  // namespace krait
