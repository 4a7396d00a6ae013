// Reading a pprof profile back into a profile::Profile, for `krait convert`:
// the inverse of encode_pprof() (export/pprof.h) for krait's own files, and
// a best effort for other writers' files.
//
// The input is untrusted (a file someone hands to krait): it is checked
// with validate_pprof() first, every id is looked up, never indexed, and
// the work and memory are linear in the message's size. A message that
// breaks a rule gives an error naming it, never a crash.
//
// What comes back:
// - Frames: one per Line of a location (line[0], the innermost inlined
//   function, nearest the leaf), or one address-only native frame for a
//   location without lines. The kind comes from the location's mapping:
//   "[python]" Python, "[kernel.kallsyms]" kernel, "[synthetic]" synthetic,
//   anything else native. Real mappings (a library, or a kernel mapping
//   with an address range) become profile mappings; krait's pseudo-mappings
//   ("[python]", "[synthetic]", "[unknown]", an empty-range
//   "[kernel.kallsyms]") leave the frame unmapped. A system name equal to
//   the name is dropped (encode_pprof() writes it so for native frames).
// - Counts: the value of the sample type samples/count, else the first
//   value; samples with a count <= 0 are skipped.
// - Labels: string labels as they are; numeric ones as decimal text.
// - Meta: period (when period_type's unit is nanoseconds), time_nanos,
//   duration_nanos, comments.
// So for any Profile p, profile_from_pprof(decode(encode_pprof(p))) has the
// same (stack, labels) counts as p, with unmapped kernel frames moved to
// p's kernel mapping when it has one.
//
// Threading: reentrant.
#pragma once

#include "export/profile.pb.h"
#include "profile/profile.h"
#include "util/result.h"

namespace krait::exporter {

Result<profile::Profile> profile_from_pprof(const perftools::profiles::Profile& pprof);

}  // namespace krait::exporter
