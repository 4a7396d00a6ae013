// The Pyroscope stand-in itself, driven by hand-written HTTP requests (not
// by krait's sender), so the sender tests rest on a server whose contract is
// checked independently.
#include "support/ingest_server.h"

#include <gtest/gtest.h>

#include <thread>

#include "export/push.pb.h"
#include "upload_support.h"

namespace krait::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<IngestServer> start_server(IngestServerOptions options = {}) {
  auto server = IngestServer::start(options);
  EXPECT_TRUE(server.ok()) << (server.ok() ? "" : server.error().message);
  return server.ok() ? std::move(*server) : nullptr;
}

std::string post(std::string_view target, std::string_view content_type, std::string_view body,
                 std::string_view extra_headers = "") {
  return fmt::format(
      "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}"
      "Connection: close\r\n\r\n{}",
      target, content_type, body.size(), extra_headers, body);
}

std::string push_body(const std::vector<std::pair<std::string, std::string>>& labels,
                      const std::string& pprof, const std::string& id) {
  push::v1::PushRequest request;
  auto* series = request.add_series();
  for (const auto& [name, value] : labels) {
    auto* label = series->add_labels();
    label->set_name(name);
    label->set_value(value);
  }
  auto* sample = series->add_samples();
  sample->set_raw_profile(pprof);
  sample->set_id(id);
  return request.SerializeAsString();
}

constexpr std::string_view kUuid = "0f8fad5b-d9cb-469f-a165-70867728950e";

TEST(IngestServerTest, AcceptsAPushAndRecordsItsLabelsAndBytes) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const std::string pprof = tiny_pprof("handler");
  auto response = raw_http_exchange(
      server->port(),
      post("/push.v1.PusherService/Push", "application/proto",
           push_body({{"__name__", "process_cpu"}, {"service_name", "web"}, {"pid", "7"}}, pprof,
                     std::string(kUuid))));
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 200) << *response;
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(profiles[0].protocol, "push");
  EXPECT_EQ(profiles[0].application, "web");
  EXPECT_EQ(profiles[0].labels.at("pid"), "7");
  EXPECT_EQ(profiles[0].labels.at("__name__"), "process_cpu");
  EXPECT_EQ(profiles[0].raw_pprof, pprof);
  EXPECT_EQ(profiles[0].id, kUuid);
  ASSERT_EQ(server->requests().size(), 1u);
  EXPECT_EQ(server->requests()[0].status, 200);
}

TEST(IngestServerTest, RejectsPushesPyroscopeWouldReject) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const std::string pprof = tiny_pprof("f");
  const std::string id(kUuid);
  struct Case {
    std::string what;
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"wrong content type",
       post("/push.v1.PusherService/Push", "application/json",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a"}}, pprof, id)),
       415},
      {"not a PushRequest",
       post("/push.v1.PusherService/Push", "application/proto", "\xff\xff\xff"), 400},
      {"no service_name",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}}, pprof, id)),
       400},
      {"duplicate label",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a"}, {"service_name", "b"}},
                      pprof, id)),
       400},
      {"label name with a dash",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a"}, {"my-label", "x"}},
                      pprof, id)),
       400},
      {"value not UTF-8",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a\xc3"}}, pprof, id)),
       400},
      {"sample id not a UUID",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a"}}, pprof, "42")),
       400},
      {"raw profile not pprof",
       post("/push.v1.PusherService/Push", "application/proto",
            push_body({{"__name__", "process_cpu"}, {"service_name", "a"}}, "\x1f\x8bnope", id)),
       400},
      {"unknown path", post("/push.v1.PusherService/Pull", "application/proto", ""), 404},
  };
  for (const Case& c : cases) {
    auto response = raw_http_exchange(server->port(), c.request);
    ASSERT_TRUE(response.ok()) << c.what << ": " << response.error().message;
    EXPECT_EQ(response_status(*response), c.status) << c.what << ": " << *response;
  }
  EXPECT_TRUE(server->profiles().empty());
}

TEST(IngestServerTest, IngestTakesBarePprofWithFormatPprof) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const std::string pprof = tiny_pprof("worker");
  auto response = raw_http_exchange(
      server->port(),
      post("/ingest?name=celery%7Benv%3Dprod%2Cpid%3D12%7D&from=1700000000&until=1700000015"
           "&sampleRate=99&spyName=krait&format=pprof",
           "application/octet-stream", pprof));
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 200) << *response;
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(profiles[0].protocol, "ingest");
  EXPECT_EQ(profiles[0].application, "celery");
  EXPECT_EQ(profiles[0].labels,
            (std::map<std::string, std::string>{{"env", "prod"}, {"pid", "12"}}));
  EXPECT_EQ(profiles[0].from, "1700000000");
  EXPECT_EQ(profiles[0].until, "1700000015");
  EXPECT_EQ(profiles[0].sample_rate, "99");
  EXPECT_EQ(profiles[0].spy_name, "krait");
  EXPECT_EQ(profiles[0].raw_pprof, pprof);
}

TEST(IngestServerTest, IngestTakesTheProfileFieldOfAMultipartForm) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const std::string pprof = tiny_pprof("worker");
  const std::string form =
      "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nignored\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\n" +
      pprof + "\r\n--XyZ--\r\n";
  auto response = raw_http_exchange(
      server->port(),
      post("/ingest?name=app.py%7B%7D&from=1&until=2", "multipart/form-data; boundary=XyZ", form));
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 200) << *response;
  ASSERT_EQ(server->profiles().size(), 1u);
  EXPECT_EQ(server->profiles()[0].application, "app.py");
  EXPECT_EQ(server->profiles()[0].raw_pprof, pprof);

  // The same form with format=pprof: Pyroscope reads the whole body as the
  // profile, which is not pprof.
  response = raw_http_exchange(server->port(), post("/ingest?name=app&format=pprof",
                                                    "multipart/form-data; boundary=XyZ", form));
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 400) << *response;
  // Bad names.
  for (const char* name : {"%7Bpid%3D1%7D", "my%20app%21", "app%7Bbad-key%3D1%7D"}) {
    response = raw_http_exchange(
        server->port(),
        post(fmt::format("/ingest?name={}&format=pprof", name), "application/octet-stream", pprof));
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response_status(*response), 400) << name << ": " << *response;
  }
  EXPECT_EQ(server->profiles().size(), 1u);
}

TEST(IngestServerTest, AnswersWithTheConfiguredFailureStatusAndRetryAfter) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const std::string pprof = tiny_pprof("f");
  const std::string request =
      post("/ingest?name=a&format=pprof", "application/octet-stream", pprof);
  server->fail_with_status(429, "slow down", "7");
  auto response = raw_http_exchange(server->port(), request);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response_status(*response), 429);
  EXPECT_NE(response->find("\r\nRetry-After: 7\r\n"), std::string::npos) << *response;
  server->fail_with_status(500);
  response = raw_http_exchange(server->port(), request);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response_status(*response), 500);
  EXPECT_TRUE(server->profiles().empty());
  ASSERT_TRUE(server->accept_normally().ok());
  response = raw_http_exchange(server->port(), request);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response_status(*response), 200);
  EXPECT_EQ(server->profiles().size(), 1u);
}

int64_t unix_ns_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The server's own times fall inside the exchange, in order: arrival, then
// answer; the profile carries its request's arrival on the system clock.
TEST(IngestServerTest, TimesEachRequestsArrivalAndAnswer) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const auto sent = std::chrono::steady_clock::now();
  const int64_t sent_unix = unix_ns_now();
  auto response = raw_http_exchange(
      server->port(),
      post("/ingest?name=a&format=pprof", "application/octet-stream", tiny_pprof("f")));
  const auto read = std::chrono::steady_clock::now();
  const int64_t read_unix = unix_ns_now();
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 200) << *response;
  const auto requests = server->requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_LE(sent, requests[0].arrived);
  EXPECT_LE(requests[0].arrived, requests[0].answered);
  EXPECT_LE(requests[0].answered, read);
  EXPECT_LE(sent_unix, requests[0].arrived_unix_ns);
  EXPECT_LE(requests[0].arrived_unix_ns, read_unix);
  const auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(profiles[0].arrived_unix_ns, requests[0].arrived_unix_ns);
}

TEST(IngestServerTest, RefusesConnectionsThenListensAgainOnTheSamePort) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const uint16_t port = server->port();
  ASSERT_TRUE(server->refuse_connections().ok());
  auto refused = raw_http_exchange(port, "GET / HTTP/1.1\r\n\r\n");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("Connection refused"), std::string::npos)
      << refused.error().message;
  ASSERT_TRUE(server->accept_normally().ok());
  EXPECT_EQ(server->port(), port);
  auto response = raw_http_exchange(
      port, post("/ingest?name=a&format=pprof", "application/octet-stream", tiny_pprof("f")));
  ASSERT_TRUE(response.ok()) << response.error().message;
  EXPECT_EQ(response_status(*response), 200);
}

TEST(IngestServerTest, HangsWithoutAnsweringUntilTheModeChanges) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->hang();
  const std::string request =
      post("/ingest?name=a&format=pprof", "application/octet-stream", tiny_pprof("f"));
  std::string response = "unset";
  std::thread client([&] {
    auto r = raw_http_exchange(server->port(), request);
    response = r.ok() ? *r : r.error().message;
  });
  ASSERT_TRUE(server->wait_for_hanging(1, 5s)) << "the request never reached the server";
  EXPECT_EQ(server->requests().size(), 1u);
  EXPECT_EQ(server->requests()[0].status, 0);
  EXPECT_EQ(server->requests()[0].answered, std::chrono::steady_clock::time_point{})
      << "a hanging request has no answer time";
  ASSERT_TRUE(server->accept_normally().ok());
  client.join();
  EXPECT_EQ(response, "") << "a hung request must be closed without any answer";
  EXPECT_TRUE(server->profiles().empty());
}

TEST(IngestServerTest, RequiresTheConfiguredCredentials) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->require_basic_auth("alice", "s3cret");
  server->require_tenant("team-a");
  const std::string pprof = tiny_pprof("f");
  const std::string target = "/ingest?name=a&format=pprof";
  // base64("alice:s3cret") = YWxpY2U6czNjcmV0
  auto ok = raw_http_exchange(
      server->port(), post(target, "application/octet-stream", pprof,
                           "Authorization: Basic YWxpY2U6czNjcmV0\r\nX-Scope-OrgID: team-a\r\n"));
  auto wrong_password = raw_http_exchange(
      server->port(), post(target, "application/octet-stream", pprof,
                           "Authorization: Basic YWxpY2U6bm9wZQ==\r\nX-Scope-OrgID: team-a\r\n"));
  auto no_tenant = raw_http_exchange(
      server->port(),
      post(target, "application/octet-stream", pprof, "Authorization: Basic YWxpY2U6czNjcmV0\r\n"));
  ASSERT_TRUE(ok.ok() && wrong_password.ok() && no_tenant.ok());
  EXPECT_EQ(response_status(*ok), 200) << *ok;
  EXPECT_EQ(response_status(*wrong_password), 401);
  EXPECT_EQ(response_status(*no_tenant), 401);
  EXPECT_EQ(server->profiles().size(), 1u);
}

}  // namespace
}  // namespace krait::test
