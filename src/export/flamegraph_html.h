// A self-contained HTML file with an interactive flame graph: any browser
// opens it offline (no network, nothing outside the file). The page's
// script and style are krait's own, under src/export/flamegraph/, compiled
// into the executable (util/embedded.h).
//
// The data is one JSON document inside
// <script type="application/json" id="krait-data">, with every '<', '>',
// '&', U+2028 and U+2029 written as a \u escape, so no name a profiled
// process chooses can end the script element or be read as markup; the
// page puts names into the DOM as text only. Fields:
//   "title", "unit" ("nanoseconds" or "samples"), "period_ns",
//   "start_time_unix_ns", "duration_ns", "comments",
//   "kinds": the kind names indexed by frames' kind
//            (python, native, kernel, synthetic, process, thread),
//   "frames": [[name, file, line, kind], ...] (name as in
//            export/frame_names.h, no kind marker; file "" and line 0 when
//            unknown),
//   "nodes": flat [frame, parent, count, ...] triples: the merged call tree,
//            root first and every parent before its children. Node 0 is the
//            root (frame -1, parent -1, count = all samples); its children
//            are processes ("<process_name> (<pid>)"), theirs threads
//            ("<thread_name> (<tid>)"), then the stack root first. A
//            node's count is the samples of its subtree; its self count is
//            that minus its children's.
//   "total_nodes", "trimmed": how many nodes the full tree has and whether
//            the smallest were left out.
// At most kMaxFlameNodes nodes are written: beyond that the smallest
// subtrees are left out (their samples stay in their parent's count, as
// self time) and the page says so.
//
// Threading: reentrant; the Profile must not change while it is encoded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "profile/profile.h"

namespace krait::exporter {

inline constexpr size_t kMaxFlameNodes = 50'000;

// The whole HTML page. `title` names it (HTML-escaped).
std::string encode_flamegraph_html(const profile::Profile& profile, std::string_view title,
                                   size_t max_nodes = kMaxFlameNodes);

// The embedded JSON text with the \u escapes for HTML above applied.
std::string escape_json_for_html(std::string_view json);

}  // namespace krait::exporter
