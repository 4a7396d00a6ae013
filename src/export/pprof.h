// pprof output: the profile.proto format (gzip-compressed protobuf) that
// `go tool pprof`, Pyroscope and Grafana read.
//
// What encode_pprof() writes for a profile::Profile:
// - sample types `samples`/`count` and `cpu`/`nanoseconds`: value[0] is the
//   sample count, value[1] = count * meta.period_ns (saturating at INT64_MAX);
//   period_type cpu/nanoseconds, period = meta.period_ns; time_nanos and
//   duration_nanos from meta; one comment per meta.comments entry.
// - string_table[0] is ""; every id is non-zero.
// - One Mapping per profile mapping, with the same 1-based id, filename,
//   build_id, range and offset, has_functions = true (krait symbolizes
//   itself; go tool pprof then leaves the addresses alone), has_filenames /
//   has_line_numbers when any of its frames has a file / a line. Frames without a mapping get a
//   pseudo-mapping by kind, added after the real ones only when used: "[python]" (Python frames),
//   "[kernel.kallsyms]" (kernel; the profile's own kernel mapping when it
//   has one), "[unknown]" (native), "[synthetic]" (placeholders such as
//   "[truncated]"). A frame whose mapping id is out of range counts as
//   unmapped. So every location has a mapping.
// - One Location per profile frame, id = FrameId + 1, in frames() order.
//   Python and synthetic frames: address 0 and one Line (function, line).
//   Native and kernel frames: the address, plus one Line when the function
//   is known.
// - One Function per distinct (name, system name, file, start line). Native
//   and kernel frames with an empty system name get the display name there.
//   Python and synthetic frames get an empty system name unless the frame's
//   differs from its name: go tool pprof "demangles" functions whose system
//   name equals their name, and that erases names like "<module>".
// - One Sample per Profile::samples() entry, location_id leaf first, and one
//   string Label per entry of its label set.
// The output is a pure function of the Profile: same Profile, same bytes.
//
// Threading: the functions are reentrant; the Profile must not change while
// it is being encoded.
#pragma once

#include <string>
#include <string_view>

#include "export/profile.pb.h"
#include "profile/profile.h"
#include "util/result.h"

namespace krait::exporter {

// Encodes and gzips `profile`. Fails only if the encoded profile exceeds
// protobuf's 2 GiB message limit or zlib fails.
Result<std::string> encode_pprof(const profile::Profile& profile);

// encode_pprof(), then write_file_atomically(): `path` is either replaced by
// a complete file or left as it was.
Result<void> write_pprof_file(const profile::Profile& profile, const std::string& path);

// Gunzips (one or more gzip members) and parses pprof bytes. For tests and
// tools; refuses input that is not gzip or inflates beyond 1 GiB.
Result<perftools::profiles::Profile> decode_pprof(std::string_view gzipped_bytes);

// Reads a file written by write_pprof_file() (or any gzipped pprof).
Result<perftools::profiles::Profile> read_pprof_file(const std::string& path);

// Checks the structural rules every reader relies on: string_table[0] == "",
// string indexes in range, ids non-zero and unique, every referenced
// mapping/location/function exists, one value per sample type. The error
// names the first violation. Checks structure only, not krait's conventions.
Result<void> validate_pprof(const perftools::profiles::Profile& pprof);

}  // namespace krait::exporter
