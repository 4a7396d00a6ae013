// Folded-stack text ("collapsed stacks"): the input format of flamegraph.pl,
// inferno and speedscope.
//
// One line per distinct stack, root first, frames joined by ';', then a space
// and the sample count:
//   <process>;<thread>;<frame>;...;<frame> <count>
// - <process> is "<process_name> (<pid>)" and <thread> is
//   "<thread_name> (<tid>)", from the labels process_name, pid, thread_name
//   and tid. A missing name leaves "(<pid>)"; a missing id leaves the name;
//   with neither, the part is left out.
// - Python frame: "function (file:line)" with the file path as recorded;
//   ":line" is dropped when the line is unknown, and " (...)" when both the
//   file and the line are.
// - Native frame: the function name, no marker (flame-graph tools have none
//   for native code; perf's collapsed output leaves user frames bare too).
//   Unsymbolized: "[<mapping file basename>+0x<file offset>]" or
//   "[0x<address>]" without a mapping.
// - Kernel frame: the function name with the suffix "_[k]", which
//   flamegraph.pl and inferno colour as kernel (orange) with `--colors java`
//   (also js and perl); unsymbolized: "[0x<address>]_[k]".
//   With `--colors java`, Python frames come out green (their "(file.py:N)"
//   has a dot), C red, C++ yellow, kernel orange.
// - Synthetic frame: its name as given ("[truncated]").
// - A line with no frames and no labels reads "[empty stack]".
// Escaping: inside any name, ';' becomes ':' and control characters
// (newline, tab, ...) become ' ', so every line splits on ';' and on its last
// space. Lines whose text comes out equal are merged (counts added) and lines
// are sorted bytewise, so the output is deterministic.
//
// Threading: reentrant; the Profile must not change while it is encoded.
#pragma once

#include <string>

#include "profile/profile.h"
#include "util/result.h"

namespace krait::exporter {

// Returns the whole folded text, each line ending in '\n'.
std::string encode_folded(const profile::Profile& profile);

// encode_folded(), then write_file_atomically(): `path` is either replaced by
// a complete file or left as it was.
Result<void> write_folded_file(const profile::Profile& profile, const std::string& path);

}  // namespace krait::exporter
