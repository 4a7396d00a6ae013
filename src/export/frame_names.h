// How the text formats meant for people (speedscope, the HTML flame graph)
// name frames and threads, so both agree with each other and with the
// folded text (export/folded.h) where it makes sense.
//
// Threading: reentrant.
#pragma once

#include <string>

#include "profile/profile.h"

namespace krait::exporter {

// The frame's name without any kind marker: the function; an unsymbolized
// native frame "[<mapping file basename>+0x<file offset>]" or "[0x<address>]";
// "[unknown]" for a Python or synthetic frame without a name. May be any
// bytes the profiled process gave; callers escape for their format.
std::string frame_display_name(const profile::Profile& profile, const profile::Frame& frame);

// The file a frame is shown with: its source file, or for a native frame
// without one the file of its mapping; "" when neither is known.
std::string frame_display_file(const profile::Profile& profile, const profile::Frame& frame);

// "<process_name> (<pid>)" from a label set, or the part that exists; ""
// when the set has neither label. The same for the thread with thread_name
// and tid.
std::string process_title(const profile::Labels& labels);
std::string thread_title(const profile::Labels& labels);

}  // namespace krait::exporter
