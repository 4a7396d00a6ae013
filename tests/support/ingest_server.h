// A stand-in for Grafana Pyroscope in tests: an HTTP/1.1 server on
// 127.0.0.1 (ephemeral port) that implements both ingestion contracts the
// way Pyroscope documents and validates them, records every profile it
// accepts, and can be told to fail in the ways a real server does.
//
// Contracts (see src/export/pyroscope.h for the client side):
// - POST /push.v1.PusherService/Push (Connect unary): Content-Type must be
//   application/proto (else 415); the body must decode as push.v1.PushRequest
//   with the project's generated classes (else 400). Each series is
//   validated like Pyroscope's distributor: at least one label, names in
//   Prometheus syntax and unique, `__name__` a valid metric name,
//   `service_name` present and non-empty, values valid UTF-8, names up to
//   1024 and values up to 2048 bytes, at most 30 labels; each sample needs a
//   non-empty raw_profile and an ID that is a UUID. Errors answer 400 with a
//   Connect JSON error body. Success: 200, application/proto, empty body.
// - POST /ingest?name=app{k=v,...}&from=&until=&sampleRate=&spyName=&format=
//   (the original API): `name` is parsed like Pyroscope's labelset parser
//   (application [A-Za-z0-9_./-]+, label keys [A-Za-z0-9_.]+, a value ends
//   at ',' or '}'). With format=pprof the body itself is the profile; with no
//   format and a multipart/form-data body, the file field `profile` is.
//   Anything else is 400. Success: 200, empty body.
// Every request is recorded (method, target, headers, the status answered,
// when it arrived and was answered); every accepted profile is recorded as a
// ReceivedProfile.
//
// Failure modes, switchable at any time from any thread:
// - refuse_connections(): stops listening and closes open connections, so
//   new connections are refused (ECONNREFUSED); accept_normally() listens
//   again on the same port.
// - fail_with_status(): answers every request with that status (e.g. 500,
//   or 429 with Retry-After), recording no profile.
// - hang(): reads each request completely and never answers; the connection
//   is closed when the mode changes or the server stops. Nothing recorded.
// - require_*(): requests without the expected credentials get 401.
// Mode switches are synchronous: when the call returns, the next connection
// or request sees the new behaviour.
//
// TLS: with IngestServerOptions::tls the server speaks HTTPS with a fresh
// self-signed certificate for IP 127.0.0.1 (certificate_pem() is also the CA
// to trust).
//
// Threading: one accept thread plus one thread per connection, all joined
// by the destructor (which first closes every connection). Every public
// member is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace krait::test {

struct ReceivedProfile {
  std::string protocol;                       // "push" or "ingest"
  std::string application;                    // push: service_name; ingest: name before '{'
  std::map<std::string, std::string> labels;  // push: every series label; ingest: the {k=v} set
  std::string from, until, sample_rate, spy_name;  // ingest query parameters as sent
  std::string raw_pprof;                           // the profile bytes as received
  std::string id;                                  // push: RawSample.ID
  std::map<std::string, std::string> headers;      // lower-case names
  int64_t arrived_unix_ns = 0;  // system clock when its request's first byte was read
};

// Times are taken by the server's own threads, so a test that asks when a
// client sent something is not off by how late the test thread noticed:
// `arrived` is when the server read the request's first byte (at or after
// the client sent it), `answered` when it began to write the answer (before
// the client can have read it).
struct ReceivedRequest {
  std::string method;
  std::string target;  // path and query, as sent
  std::map<std::string, std::string> headers;
  int status = 0;  // what the server answered; 0 while hanging or when never answered
  std::chrono::steady_clock::time_point arrived{};
  std::chrono::steady_clock::time_point answered{};  // unset while hanging or never answered
  int64_t arrived_unix_ns = 0;                       // `arrived` on the system clock
};

struct IngestServerOptions {
  bool tls = false;
};

// A self-signed certificate (and its key), PEM; CA:TRUE, SAN IP:127.0.0.1.
struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
};
Result<TestCertificate> make_test_certificate();

class IngestServer {
 public:
  static Result<std::unique_ptr<IngestServer>> start(IngestServerOptions options = {});
  ~IngestServer();
  IngestServer(const IngestServer&) = delete;
  IngestServer& operator=(const IngestServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const;  // http(s)://127.0.0.1:PORT
  const std::string& certificate_pem() const { return certificate_.cert_pem; }

  // Failure modes (see the file comment).
  Result<void> accept_normally();
  Result<void> refuse_connections();
  void fail_with_status(int status, std::string body = {},
                        std::optional<std::string> retry_after = std::nullopt);
  void hang();

  void require_basic_auth(std::string user, std::string password);
  void require_bearer_token(std::string token);
  void require_tenant(std::string tenant);

  std::vector<ReceivedProfile> profiles() const;
  std::vector<ReceivedRequest> requests() const;
  // Wait (with a wall-clock limit) until at least `count` profiles were
  // accepted / requests received / requests are hanging.
  bool wait_for_profiles(size_t count, std::chrono::milliseconds timeout) const;
  bool wait_for_requests(size_t count, std::chrono::milliseconds timeout) const;
  bool wait_for_hanging(size_t count, std::chrono::milliseconds timeout) const;

 private:
  enum class Mode { kNormal, kStatus, kHang };
  struct Tls;
  struct Connection;
  struct Request;
  struct Reply {
    int status = 200;
    std::string content_type;
    std::string body;
    std::optional<std::string> retry_after;
  };

  IngestServer() = default;
  Result<void> listen_locked();
  Result<void> set_listening(bool listening);
  void accept_loop();
  void serve(std::shared_ptr<Connection> connection);
  Reply handle(const Request& request, size_t request_index);
  Reply handle_push(const Request& request);
  Reply handle_ingest(const Request& request);
  std::optional<Reply> check_auth(const Request& request) const;

  IngestServerOptions options_;
  TestCertificate certificate_;
  std::unique_ptr<Tls> tls_;
  uint16_t port_ = 0;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  UniqueFd control_;  // eventfd: wakes the accept thread to apply listening_wanted_
  UniqueFd listen_fd_;
  bool listening_wanted_ = true;
  uint64_t wanted_generation_ = 0;
  uint64_t applied_generation_ = 0;
  std::optional<Error> listen_error_;
  bool stopping_ = false;
  Mode mode_ = Mode::kNormal;
  Reply failure_;
  std::string basic_user_, basic_password_, bearer_token_, tenant_;
  std::set<std::shared_ptr<Connection>> connections_;
  std::vector<ReceivedProfile> profiles_;
  std::vector<ReceivedRequest> requests_;
  size_t hanging_ = 0;
  std::vector<std::jthread> connection_threads_;
  std::jthread accept_thread_;
};

}  // namespace krait::test
