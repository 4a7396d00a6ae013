// Replies of the Pyroscope server (export/pyroscope.h): the Retry-After
// header value, delay-seconds or an HTTP date, which sets the upload
// queue's backoff. The server's replies are untrusted.
//
// Only parse_retry_after is public: the header and body callbacks of the
// sender (on_header, on_body in pyroscope.cpp) are file-local, so the
// header-line matching and the body excerpt are not reached from here.
//
// Input: i64 "now" in seconds since the epoch (folded into 2000-2100, a
// clock krait could run under), then the header's value.
// Checks, besides memory safety: a delay is never negative.
#include <chrono>

#include "export/pyroscope.h"
#include "fuzz_input.h"

using namespace krait;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  constexpr int64_t k2000 = 946684800, kCentury = int64_t{100} * 365 * 86400;
  const auto raw = in.take<uint64_t>();
  const int64_t now_s = k2000 + static_cast<int64_t>(raw % kCentury);
  const std::chrono::system_clock::time_point now{std::chrono::seconds(now_s)};
  const std::string value(in.rest_text());
  auto delay = exporter::parse_retry_after(value, now);
  if (delay)
    KRAIT_FUZZ_CHECK(delay->count() >= 0);
  return 0;
}
