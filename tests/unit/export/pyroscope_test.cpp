// PyroscopeSender against the ingest stand-in: both protocols, labels,
// auth, TLS, and how each failure is reported and classified.
#include "export/pyroscope.h"

#include <gtest/gtest.h>

#include <fstream>

#include "export/push.pb.h"
#include "support/ingest_server.h"
#include "upload_support.h"

namespace krait::test {
namespace {

using exporter::PyroscopeOptions;
using exporter::PyroscopeProtocol;
using exporter::PyroscopeSender;
using exporter::SendStatus;
using namespace std::chrono_literals;

std::unique_ptr<IngestServer> start_server(IngestServerOptions options = {}) {
  auto server = IngestServer::start(options);
  EXPECT_TRUE(server.ok()) << (server.ok() ? "" : server.error().message);
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<PyroscopeSender> make_sender(PyroscopeOptions options) {
  auto sender = PyroscopeSender::create(std::move(options));
  EXPECT_TRUE(sender.ok()) << (sender.ok() ? "" : sender.error().message);
  return sender.ok() ? std::move(*sender) : nullptr;
}

PyroscopeOptions options_for(const IngestServer& server, PyroscopeProtocol protocol) {
  PyroscopeOptions options;
  options.url = server.url();
  options.protocol = protocol;
  options.timeout = 5s;
  return options;
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (static_cast<uint8_t>(in[i]) << 16) |
                       (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    out += {kAlphabet[n >> 18], kAlphabet[(n >> 12) & 63], kAlphabet[(n >> 6) & 63],
            kAlphabet[n & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t n = static_cast<uint8_t>(in[i]) << 16;
    out += {kAlphabet[n >> 18], kAlphabet[(n >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t n = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out += {kAlphabet[n >> 18], kAlphabet[(n >> 12) & 63], kAlphabet[(n >> 6) & 63], '='};
  }
  return out;
}

TEST(PyroscopeSenderTest, PushDeliversTheProfileWithItsLabels) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto sender = make_sender(options_for(*server, PyroscopeProtocol::kPush));
  ASSERT_TRUE(sender);
  auto upload = make_upload("checkout", {{"pid", "4242"}, {"hostname", "web-1"}, {"env", "prod"}});
  auto outcome = sender->send(upload, 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  EXPECT_EQ(outcome.http_status, 200);
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 1u);
  const ReceivedProfile& got = profiles[0];
  EXPECT_EQ(got.protocol, "push");
  EXPECT_EQ(got.labels, (std::map<std::string, std::string>{{"__name__", "process_cpu"},
                                                            {"service_name", "checkout"},
                                                            {"pid", "4242"},
                                                            {"hostname", "web-1"},
                                                            {"env", "prod"}}));
  EXPECT_EQ(got.raw_pprof, upload.pprof);
  EXPECT_EQ(got.id, upload.id);
  EXPECT_EQ(got.headers.at("content-type"), "application/proto");
  EXPECT_EQ(got.headers.at("connect-protocol-version"), "1");
  EXPECT_EQ(got.headers.count("authorization"), 0u);
  EXPECT_EQ(got.headers.count("x-scope-orgid"), 0u);
}

TEST(PyroscopeSenderTest, IngestDeliversTheProfileAsAMultipartForm) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto sender = make_sender(options_for(*server, PyroscopeProtocol::kIngest));
  ASSERT_TRUE(sender);
  auto upload =
      make_upload("app.py", {{"pid", "4242"}, {"env", "prod"}}, 1'700'000'100, 1'700'000'115);
  auto outcome = sender->send(upload, 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 1u);
  const ReceivedProfile& got = profiles[0];
  EXPECT_EQ(got.protocol, "ingest");
  EXPECT_EQ(got.application, "app.py");
  EXPECT_EQ(got.labels, (std::map<std::string, std::string>{{"pid", "4242"}, {"env", "prod"}}));
  EXPECT_EQ(got.from, "1700000100");
  EXPECT_EQ(got.until, "1700000115");
  EXPECT_EQ(got.sample_rate, "99");
  EXPECT_EQ(got.spy_name, "krait");
  EXPECT_EQ(got.raw_pprof, upload.pprof);
  EXPECT_NE(got.headers.at("content-type").find("multipart/form-data"), std::string::npos);
}

TEST(PyroscopeSenderTest, LabelsAreMadeAcceptableToEachProtocol) {
  auto server = start_server();
  ASSERT_TRUE(server);
  const profile::Labels labels = {{"container-id", "abc"},
                                  {"9lives", "x"},
                                  {"cmd", "python a,b{c}=d"},
                                  {"bad", std::string("caf\xc3", 4)},
                                  {"service_name", "impostor"}};
  auto push = make_sender(options_for(*server, PyroscopeProtocol::kPush));
  auto ingest = make_sender(options_for(*server, PyroscopeProtocol::kIngest));
  ASSERT_TRUE(push && ingest);
  auto outcome = push->send(make_upload("my app/v2", labels), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  outcome = ingest->send(make_upload("my app/v2", labels), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 2u);
  // Push: Prometheus label names, UTF-8 values, our service_name wins.
  EXPECT_EQ(profiles[0].labels, (std::map<std::string, std::string>{{"__name__", "process_cpu"},
                                                                    {"service_name", "my app/v2"},
                                                                    {"container_id", "abc"},
                                                                    {"_9lives", "x"},
                                                                    {"cmd", "python a,b{c}=d"},
                                                                    {"bad", "caf?"}}));
  // Ingest: the legacy name syntax.
  EXPECT_EQ(profiles[1].application, "my_app/v2");
  EXPECT_EQ(profiles[1].labels.at("container_id"), "abc");
  EXPECT_EQ(profiles[1].labels.at("cmd"), "python a_b_c__d");
  EXPECT_EQ(profiles[1].labels.at("service_name"), "impostor");
}

TEST(PyroscopeSenderTest, SendsBasicAuthAndTenantHeaders) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->require_basic_auth("krait", "pa:ss w0rd");
  server->require_tenant("team-7");
  for (auto protocol : {PyroscopeProtocol::kPush, PyroscopeProtocol::kIngest}) {
    auto options = options_for(*server, protocol);
    options.auth.basic_user = "krait";
    options.auth.basic_password = "pa:ss w0rd";
    options.auth.tenant_id = "team-7";
    auto sender = make_sender(options);
    ASSERT_TRUE(sender);
    auto outcome = sender->send(make_upload("a"), 5s);
    EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  }
  auto profiles = server->profiles();
  ASSERT_EQ(profiles.size(), 2u);
  for (const auto& p : profiles) {
    EXPECT_EQ(p.headers.at("authorization"), "Basic " + base64("krait:pa:ss w0rd"));
    EXPECT_EQ(p.headers.at("x-scope-orgid"), "team-7");
  }
}

TEST(PyroscopeSenderTest, SendsABearerToken) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->require_bearer_token("glc_abc123");
  auto options = options_for(*server, PyroscopeProtocol::kPush);
  options.auth.bearer_token = "glc_abc123";
  auto sender = make_sender(options);
  ASSERT_TRUE(sender);
  auto outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  ASSERT_EQ(server->profiles().size(), 1u);
  EXPECT_EQ(server->profiles()[0].headers.at("authorization"), "Bearer glc_abc123");
}

TEST(PyroscopeSenderTest, WrongCredentialsAreRejectedWithAHint) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->require_bearer_token("right");
  auto options = options_for(*server, PyroscopeProtocol::kPush);
  options.auth.bearer_token = "wrong";
  auto sender = make_sender(options);
  ASSERT_TRUE(sender);
  auto outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRejected);
  EXPECT_EQ(outcome.http_status, 401);
  EXPECT_NE(outcome.message.find("HTTP 401"), std::string::npos) << outcome.message;
  EXPECT_NE(outcome.message.find("credentials"), std::string::npos) << outcome.message;
  EXPECT_EQ(outcome.message.find('\n'), std::string::npos);
}

TEST(PyroscopeSenderTest, ClassifiesServerFailures) {
  auto server = start_server();
  ASSERT_TRUE(server);
  auto sender = make_sender(options_for(*server, PyroscopeProtocol::kPush));
  ASSERT_TRUE(sender);

  server->fail_with_status(500, "database\nis down");
  auto outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  EXPECT_EQ(outcome.http_status, 500);
  EXPECT_NE(outcome.message.find("HTTP 500"), std::string::npos) << outcome.message;
  EXPECT_NE(outcome.message.find("database is down"), std::string::npos) << outcome.message;

  server->fail_with_status(429, "", "7");
  outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  ASSERT_TRUE(outcome.retry_after.has_value());
  EXPECT_EQ(*outcome.retry_after, 7s);

  server->fail_with_status(400, "bad profile");
  outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRejected);
  EXPECT_NE(outcome.message.find("bad profile"), std::string::npos) << outcome.message;

  server->fail_with_status(408);
  EXPECT_EQ(sender->send(make_upload("a"), 5s).status, SendStatus::kRetry);
  EXPECT_TRUE(server->profiles().empty());
}

TEST(PyroscopeSenderTest, ReportsARefusedConnection) {
  auto server = start_server();
  ASSERT_TRUE(server);
  ASSERT_TRUE(server->refuse_connections().ok());
  auto sender = make_sender(options_for(*server, PyroscopeProtocol::kIngest));
  ASSERT_TRUE(sender);
  auto outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  EXPECT_EQ(outcome.http_status, 0);
  EXPECT_NE(outcome.message.find("connection refused"), std::string::npos) << outcome.message;
  EXPECT_NE(outcome.message.find(server->url()), std::string::npos) << outcome.message;
}

TEST(PyroscopeSenderTest, ReportsATimeoutWhenTheServerHangs) {
  auto server = start_server();
  ASSERT_TRUE(server);
  server->hang();
  auto sender = make_sender(options_for(*server, PyroscopeProtocol::kPush));
  ASSERT_TRUE(sender);
  const auto start = std::chrono::steady_clock::now();
  auto outcome = sender->send(make_upload("a"), 300ms);  // caps options.timeout (5 s)
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  EXPECT_NE(outcome.message.find("timed out waiting"), std::string::npos) << outcome.message;
  EXPECT_LT(took, 3s);
  ASSERT_TRUE(server->accept_normally().ok());
  EXPECT_TRUE(server->profiles().empty());
}

TEST(PyroscopeSenderTest, ReportsAFailedDnsLookup) {
  PyroscopeOptions options;
  options.url = "http://krait-no-such-host.invalid:4040";
  options.timeout = 5s;
  auto sender = make_sender(options);
  ASSERT_TRUE(sender);
  auto outcome = sender->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  EXPECT_NE(outcome.message.find("cannot resolve host 'krait-no-such-host.invalid'"),
            std::string::npos)
      << outcome.message;
}

TEST(PyroscopeSenderTest, VerifiesTlsUnlessToldNotTo) {
  auto server = start_server({.tls = true});
  ASSERT_TRUE(server);
  TempDir dir;
  const std::string ca = dir.file("ca.pem");
  write_text_file(ca, server->certificate_pem());

  auto strict = make_sender(options_for(*server, PyroscopeProtocol::kPush));
  ASSERT_TRUE(strict);
  auto outcome = strict->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kRetry);
  EXPECT_NE(outcome.message.find("TLS"), std::string::npos) << outcome.message;
  EXPECT_TRUE(server->profiles().empty());

  auto with_ca = options_for(*server, PyroscopeProtocol::kPush);
  with_ca.ca_file = ca;
  auto trusted = make_sender(with_ca);
  ASSERT_TRUE(trusted);
  outcome = trusted->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;

  auto insecure_options = options_for(*server, PyroscopeProtocol::kIngest);
  insecure_options.insecure_skip_verify = true;
  auto insecure = make_sender(insecure_options);
  ASSERT_TRUE(insecure);
  outcome = insecure->send(make_upload("a"), 5s);
  EXPECT_EQ(outcome.status, SendStatus::kDelivered) << outcome.message;
  EXPECT_EQ(server->profiles().size(), 2u);
}

TEST(PyroscopeSenderTest, RefusesBadOptions) {
  struct Case {
    PyroscopeOptions options;
    std::string expected;
  };
  std::vector<Case> cases;
  cases.push_back({{.url = ""}, "no Pyroscope URL"});
  cases.push_back({{.url = "ftp://pyroscope:21"}, "must start with http:// or https://"});
  cases.push_back({{.url = "http://pyroscope:4040/?x=1"}, "query string"});
  cases.push_back(
      {{.url = "http://p", .auth = {.basic_user = "u", .bearer_token = "t"}}, "choose one"});
  cases.push_back({{.url = "http://p", .auth = {.basic_user = "u"}}, "both a user and a password"});
  cases.push_back({{.url = "http://p", .ca_file = "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"});
  for (const Case& c : cases) {
    auto sender = PyroscopeSender::create(c.options);
    ASSERT_FALSE(sender.ok()) << c.options.url;
    EXPECT_NE(sender.error().message.find(c.expected), std::string::npos) << sender.error().message;
  }
}

TEST(PyroscopeSenderTest, EncodesAPushRequestTheGeneratedClassesDecode) {
  auto upload = make_upload("svc", {{"b", "2"}, {"a", "1"}, {"a", "dup"}});
  push::v1::PushRequest decoded;
  ASSERT_TRUE(decoded.ParseFromString(exporter::encode_push_request(upload)));
  ASSERT_EQ(decoded.series_size(), 1);
  std::vector<std::pair<std::string, std::string>> labels;
  for (const auto& l : decoded.series(0).labels())
    labels.emplace_back(l.name(), l.value());
  EXPECT_EQ(labels,
            (std::vector<std::pair<std::string, std::string>>{
                {"__name__", "process_cpu"}, {"a", "1"}, {"b", "2"}, {"service_name", "svc"}}));
  ASSERT_EQ(decoded.series(0).samples_size(), 1);
  EXPECT_EQ(decoded.series(0).samples(0).raw_profile(), upload.pprof);
  EXPECT_EQ(decoded.series(0).samples(0).id(), upload.id);
}

TEST(PyroscopeSenderTest, ParsesRetryAfterInBothForms) {
  const auto now = std::chrono::system_clock::from_time_t(1'700'000'000);
  EXPECT_EQ(exporter::parse_retry_after("120", now), std::chrono::milliseconds(120'000));
  EXPECT_EQ(exporter::parse_retry_after(" 0 ", now), std::chrono::milliseconds(0));
  // 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT.
  EXPECT_EQ(exporter::parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            std::chrono::milliseconds(30'000));
  EXPECT_EQ(exporter::parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            std::chrono::milliseconds(0));
  EXPECT_FALSE(exporter::parse_retry_after("soon", now).has_value());
  EXPECT_FALSE(exporter::parse_retry_after("", now).has_value());
  EXPECT_FALSE(exporter::parse_retry_after("-5", now).has_value());
}

// Retry-After comes from the server: out-of-range and garbage values give
// a bounded delay or none, never an exception or an overflow.
TEST(PyroscopeSenderTest, BoundsRetryAfterFromTheServer) {
  const auto now = std::chrono::system_clock::from_time_t(1'700'000'000);
  const std::chrono::milliseconds longest = std::chrono::hours(24 * 365 * 31);
  EXPECT_EQ(exporter::parse_retry_after("977616000", now), longest);  // 31 years exactly
  for (const char* huge :
       {"977616001", "999999999", "1000000000", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "99999999999999999999999999999999999999"})
    EXPECT_EQ(exporter::parse_retry_after(huge, now), longest) << huge;
  EXPECT_EQ(exporter::parse_retry_after(std::string(100'000, '9'), now), longest);
  EXPECT_EQ(exporter::parse_retry_after(std::string(100'000, '0') + "7", now),
            std::chrono::milliseconds(7'000));
  for (const char* garbage :
       {"12abc", "1.5", "+5", "0x10", "1 2", "\x01\x02", "Tue, 99 Nov", "Retry-After: 5"})
    EXPECT_FALSE(exporter::parse_retry_after(garbage, now).has_value()) << garbage;
  // A date centuries away is "a long time", not an overflow of the clock.
  EXPECT_EQ(exporter::parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), longest);
}

TEST(PyroscopeSenderTest, MakesDistinctVersion4Uuids) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string id = exporter::make_upload_id();
    ASSERT_EQ(id.size(), 36u);
    EXPECT_EQ(id[14], '4') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 100u);
}

}  // namespace
}  // namespace krait::test
