// Sending profiles to Grafana Pyroscope over HTTP(S) with libcurl, in either
// of its two ingestion contracts:
//
// - kPush (default; what Grafana Alloy's pyroscope.write sends): Connect
//   unary call POST <url>/push.v1.PusherService/Push, Content-Type
//   application/proto, header Connect-Protocol-Version: 1, body a
//   push.v1.PushRequest (src/export/push.proto) with one series whose labels
//   are __name__ = "process_cpu", service_name = the application, and the
//   upload's labels; one sample with the gzipped pprof and the upload's id.
//   Label names are made Prometheus-valid ([a-zA-Z_][a-zA-Z0-9_]*, other
//   characters become '_'), sorted, and duplicates dropped (first wins);
//   values are made valid UTF-8 ('?' for bad bytes), as Pyroscope's
//   validation requires.
// - kIngest (the original Pyroscope API): POST <url>/ingest?name=<app>{k=v,..}
//   &from=<unix s>&until=<unix s>&sampleRate=<hz>&spyName=krait, body a
//   multipart/form-data form whose file field `profile` holds the pprof.
//   No `format` parameter: Pyroscope's ingest handler reads the body of a
//   `format=pprof` request as bare pprof, and only looks for the `profile`
//   form field when no format is given and the body is multipart. The
//   application name keeps [A-Za-z0-9._/-] and label names [A-Za-z0-9._]
//   (others become '_'); ',', '{', '}' and '=' in label values become '_'.
//
// Authentication: HTTP basic (user and password) or a bearer token, never
// both; the tenant id goes in X-Scope-OrgID. The values come from the caller
// (the daemon reads them from files or the environment, never argv).
// TLS: peers are verified against the system store or `ca_file`;
// `insecure_skip_verify` turns verification off (tests, private setups).
//
// Errors are one line saying what failed: DNS lookup, connection refused,
// timeout (connect or response), TLS, or the HTTP status with the first
// bytes of the body. They are classified for the UploadQueue: connection
// problems, timeouts, 408, 429 and 5xx are kRetry (Retry-After passed on),
// other 4xx, 3xx and local misconfiguration are kRejected.
//
// Threading: a PyroscopeSender keeps one curl handle (and its connection
// cache) and must be used by one thread at a time; the UploadQueue's worker
// is that thread. Different senders are independent.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "export/upload_queue.h"
#include "util/result.h"

namespace krait::exporter {

enum class PyroscopeProtocol : uint8_t { kPush, kIngest };

struct PyroscopeAuth {
  std::string basic_user;  // basic auth when non-empty (with basic_password)
  std::string basic_password;
  std::string bearer_token;  // "Authorization: Bearer ..." when non-empty
  std::string tenant_id;     // X-Scope-OrgID when non-empty
};

struct PyroscopeOptions {
  std::string url;  // http(s)://host[:port][/prefix], the Pyroscope (or Alloy) base URL
  PyroscopeProtocol protocol = PyroscopeProtocol::kPush;
  PyroscopeAuth auth;
  std::string ca_file;  // PEM bundle to verify the server with; empty: system store
  bool insecure_skip_verify = false;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{30'000};  // a whole request; send() may pass less
  std::string user_agent = "krait/0.1.0";
};

class PyroscopeSender final : public Sender {
  struct Curl;
  // Lets create() use std::make_unique while no one else can construct one.
  struct Key {
    explicit Key() = default;
  };

 public:
  // Checks the options (URL scheme, auth combination, readable ca_file).
  static Result<std::unique_ptr<PyroscopeSender>> create(PyroscopeOptions options);
  PyroscopeSender(Key, PyroscopeOptions options, std::unique_ptr<Curl> curl);
  ~PyroscopeSender() override;

  // One request; `timeout` caps options.timeout for this call.
  SendOutcome send(const Upload& upload, std::chrono::milliseconds timeout) override;

  const PyroscopeOptions& options() const { return options_; }

 private:
  PyroscopeOptions options_;
  std::unique_ptr<Curl> curl_;
};

// The pieces of both requests, exposed for tests.

// The serialized push.v1.PushRequest for `upload`.
std::string encode_push_request(const Upload& upload);

// The value of the legacy `name` parameter, before URL encoding:
// "app{key=value,...}" with keys sorted and sanitized as described above.
std::string ingest_name(const Upload& upload);

// Parses a Retry-After value: delay-seconds or an HTTP-date (then relative
// to `now`; a date in the past gives 0). nullopt when it is neither.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

}  // namespace krait::exporter
