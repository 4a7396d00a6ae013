// The HTTP and Pyroscope wire details the ingest server checks requests
// against (ingest_server.h states the contracts): header and label syntax,
// decoding of queries and credentials, multipart bodies, Connect errors.
// Private to the ingest server's sources.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "support/ingest_server.h"
#include "util/result.h"

namespace krait::test::ingest {

constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;

std::string lower(std::string_view s);
// Without leading and trailing blanks and tabs.
std::string trim(std::string_view s);
const char* reason_phrase(int status);
// Prometheus syntax.
bool valid_label_name(std::string_view name);
bool valid_metric_name(std::string_view name);
// Any malformed, overlong or surrogate sequence fails.
bool valid_utf8(std::string_view s);
bool is_uuid(std::string_view id);
std::string percent_decode(std::string_view in);
std::optional<std::string> base64_decode(std::string_view in);
// A Connect JSON error body.
std::string connect_error(std::string_view code, std::string_view message);

// Pyroscope's legacy labelset syntax: app{key=value,key=value}.
Result<std::pair<std::string, std::map<std::string, std::string>>> parse_ingest_name(
    std::string_view name);

// The content of form field `field` of a multipart/form-data body.
std::optional<std::string> multipart_field(std::string_view content_type, std::string_view body,
                                           std::string_view field);

// Why `raw` is not a profile Pyroscope would store (gzipped or plain pprof),
// or nullopt.
std::optional<std::string> pprof_problem(std::string_view raw);

}  // namespace krait::test::ingest

namespace krait::test {

// One request as read off a connection.
struct IngestServer::Request {
  std::string method, target, path, version;
  std::map<std::string, std::string> headers;
  std::map<std::string, std::string> query;
  std::string body;
  bool close = false;
  std::chrono::steady_clock::time_point arrived{};  // first byte read
  int64_t arrived_unix_ns = 0;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

}  // namespace krait::test
