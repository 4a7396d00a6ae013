// Helpers for the tests of the daemon's outputs (src/export: the Pyroscope
// sender, the upload queue, the directory output): small real profiles,
// uploads, and a raw HTTP/1.1 client independent of the code under test.
// Scratch directories and files: support/temp_dir.h, support/files.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "export/upload_queue.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "util/result.h"

namespace krait::test {

// A gzipped pprof with one Python sample in `function`, made with
// encode_pprof (its bytes differ per function name).
std::string tiny_pprof(std::string_view function);

// An upload of `application` with a fresh id and a tiny profile.
exporter::Upload make_upload(std::string application, profile::Labels labels = {},
                             int64_t from_unix_s = 1'700'000'000,
                             int64_t until_unix_s = 1'700'000'015);

// Sends `request` verbatim to 127.0.0.1:port and returns everything the
// server sends back until it closes the connection (send requests with
// "Connection: close"). Error when the connection cannot be made.
Result<std::string> raw_http_exchange(uint16_t port, std::string_view request);

// The status code of a raw HTTP response ("HTTP/1.1 200 OK..."), 0 if none.
int response_status(std::string_view response);

}  // namespace krait::test
