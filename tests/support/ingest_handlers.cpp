// The ingest server's answers: credentials, then each contract's checks
// (ingest_server.h).
#include <cstring>

#include "export/pprof.h"
#include "export/push.pb.h"
#include "support/ingest_http.h"
#include "support/ingest_server.h"

namespace krait::test {

using namespace ingest;

std::optional<IngestServer::Reply> IngestServer::check_auth(const Request& request) const {
  std::lock_guard guard(mutex_);
  const std::string authorization = request.header("authorization");
  auto unauthorized = [](std::string why) {
    return Reply{401, "text/plain", std::move(why), std::nullopt};
  };
  if (!basic_user_.empty()) {
    if (authorization.rfind("Basic ", 0) != 0)
      return unauthorized("basic auth required");
    auto decoded = base64_decode(authorization.substr(6));
    if (!decoded || *decoded != basic_user_ + ":" + basic_password_)
      return unauthorized("wrong user or password");
  }
  if (!bearer_token_.empty() && authorization != "Bearer " + bearer_token_)
    return unauthorized("bearer token missing or wrong");
  if (!tenant_.empty() && request.header("x-scope-orgid") != tenant_)
    return unauthorized("tenant id missing or wrong");
  return std::nullopt;
}

IngestServer::Reply IngestServer::handle(const Request& request, size_t /*request_index*/) {
  if (auto denied = check_auth(request))
    return *denied;
  if (request.method == "POST" && request.path == "/push.v1.PusherService/Push")
    return handle_push(request);
  if (request.method == "POST" && request.path == "/ingest")
    return handle_ingest(request);
  return Reply{404, "text/plain", "no such endpoint", std::nullopt};
}

IngestServer::Reply IngestServer::handle_push(const Request& request) {
  auto invalid = [](std::string message) {
    return Reply{400, "application/json", connect_error("invalid_argument", message), std::nullopt};
  };
  if (request.header("content-type") != "application/proto")
    return Reply{415, "application/json",
                 connect_error("unknown", "content type must be application/proto"), std::nullopt};
  push::v1::PushRequest push;
  if (!push.ParseFromString(request.body))
    return invalid("body is not a push.v1.PushRequest");
  std::vector<ReceivedProfile> accepted;
  for (const auto& series : push.series()) {
    if (series.labels_size() == 0)
      return invalid("series without labels");
    if (series.labels_size() > 30)
      return invalid("more than 30 labels");
    std::map<std::string, std::string> labels;
    for (const auto& label : series.labels()) {
      if (!valid_label_name(label.name()) || label.name().size() > 1024)
        return invalid(fmt::format("invalid label name '{}'", label.name()));
      if (!valid_utf8(label.value()) || label.value().size() > 2048)
        return invalid(fmt::format("invalid value of label '{}'", label.name()));
      if (!labels.emplace(label.name(), label.value()).second)
        return invalid(fmt::format("duplicate label name '{}'", label.name()));
    }
    if (!valid_metric_name(labels["__name__"]))
      return invalid("invalid metric name (__name__)");
    if (labels["service_name"].empty())
      return invalid("service name is not provided");
    for (const auto& sample : series.samples()) {
      if (auto problem = pprof_problem(sample.raw_profile()))
        return invalid(*problem);
      if (!is_uuid(sample.id()))
        return invalid(fmt::format("sample ID '{}' is not a UUID", sample.id()));
      ReceivedProfile profile;
      profile.protocol = "push";
      profile.application = labels["service_name"];
      profile.labels = labels;
      profile.raw_pprof = sample.raw_profile();
      profile.id = sample.id();
      profile.headers = request.headers;
      profile.arrived_unix_ns = request.arrived_unix_ns;
      accepted.push_back(std::move(profile));
    }
  }
  {
    std::lock_guard guard(mutex_);
    for (auto& profile : accepted)
      profiles_.push_back(std::move(profile));
  }
  changed_.notify_all();
  return Reply{200, "application/proto", push::v1::PushResponse().SerializeAsString(),
               std::nullopt};
}

IngestServer::Reply IngestServer::handle_ingest(const Request& request) {
  auto bad = [](std::string message) {
    return Reply{400, "text/plain", std::move(message), std::nullopt};
  };
  auto query = [&](const std::string& key) -> std::string {
    auto it = request.query.find(key);
    return it == request.query.end() ? "" : it->second;
  };
  auto name = parse_ingest_name(query("name"));
  if (!name)
    return bad(name.error().message);
  for (const char* key : {"from", "until", "sampleRate"}) {
    const std::string value = query(key);
    if (!value.empty() &&
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return bad(fmt::format("{} must be a number, got '{}'", key, value));
  }
  const std::string format = query("format");
  const std::string content_type = request.header("content-type");
  std::string raw;
  if (format == "pprof") {
    raw = request.body;
  } else if (format == "trie" || format == "tree" || format == "lines" || format == "jfr" ||
             format == "speedscope") {
    return bad(fmt::format("format {} is not implemented by the test server", format));
  } else if (lower(content_type).find("multipart/form-data") != std::string::npos) {
    auto field = multipart_field(content_type, request.body, "profile");
    if (!field)
      return bad("multipart form without a 'profile' field");
    raw = std::move(*field);
  } else {
    return bad("neither format=pprof nor a multipart form: the body would be read as folded text");
  }
  if (auto problem = pprof_problem(raw))
    return bad(*problem);
  ReceivedProfile profile;
  profile.protocol = "ingest";
  profile.application = name->first;
  profile.labels = name->second;
  profile.from = query("from");
  profile.until = query("until");
  profile.sample_rate = query("sampleRate");
  profile.spy_name = query("spyName");
  profile.raw_pprof = std::move(raw);
  profile.headers = request.headers;
  profile.arrived_unix_ns = request.arrived_unix_ns;
  {
    std::lock_guard guard(mutex_);
    profiles_.push_back(std::move(profile));
  }
  changed_.notify_all();
  return Reply{200, "text/plain", "", std::nullopt};
}

}  // namespace krait::test