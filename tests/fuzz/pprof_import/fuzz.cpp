// Reading a pprof file back (export/pprof_import.h, `krait convert`):
// profile_from_pprof over a parsed message, then every writer over what it
// returns. The file is whatever someone hands to krait convert.
//
// Input: a serialized perftools.profiles.Profile (the bytes inside the
// gzip of a .pb.gz file; gunzip is zlib's and bounded in pprof.h).
// Checks, besides memory safety: an accepted profile encodes as pprof that
// reads back with the same distinct samples and total count (the header's
// round trip), and the HTML page closes exactly the two script elements
// its template has, whatever the names hold.
#include <string>

#include "export/flamegraph_html.h"
#include "export/folded.h"
#include "export/pprof.h"
#include "export/pprof_import.h"
#include "export/speedscope.h"
#include "fuzz_input.h"

using namespace krait;

namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  perftools::profiles::Profile message;
  if (!message.ParseFromArray(data, static_cast<int>(size)))
    return 0;
  auto imported = exporter::profile_from_pprof(message);
  if (!imported)
    return 0;
  auto bytes = exporter::encode_pprof(*imported);
  KRAIT_FUZZ_CHECK(bytes.ok());
  auto decoded = exporter::decode_pprof(*bytes);
  KRAIT_FUZZ_CHECK(decoded.ok());
  auto again = exporter::profile_from_pprof(*decoded);
  KRAIT_FUZZ_CHECK(again.ok());
  KRAIT_FUZZ_CHECK(again->distinct_samples() == imported->distinct_samples());
  if (imported->total_count() < static_cast<uint64_t>(INT64_MAX))
    KRAIT_FUZZ_CHECK(again->total_count() == imported->total_count());
  (void)exporter::encode_folded(*imported);
  (void)exporter::encode_speedscope(*imported, "fuzz");
  std::string html = exporter::encode_flamegraph_html(*imported, "fuzz", 64);
  for (char& c : html)
    c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  KRAIT_FUZZ_CHECK(count_of(html, "</script") == 2);
  return 0;
}
