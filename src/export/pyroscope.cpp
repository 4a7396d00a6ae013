#include "export/pyroscope.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "export/push.pb.h"
#include "util/text.h"
#include "util/utf8.h"

namespace krait::exporter {
namespace {

constexpr std::string_view kPushPath = "/push.v1.PusherService/Push";
constexpr size_t kBodyExcerpt = 200;
constexpr size_t kBodyKeep = 4096;

void init_curl_once() {
  // curl_global_init is not thread-safe in every libcurl build; call it once,
  // before any handle exists.
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct EasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct MimeDeleter {
  void operator()(curl_mime* mime) const { curl_mime_free(mime); }
};
using Mime = std::unique_ptr<curl_mime, MimeDeleter>;

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;

struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

Result<void> append_header(Slist& list, const std::string& header) {
  curl_slist* grown = curl_slist_append(list.get(), header.c_str());
  if (grown == nullptr)
    return make_error("out of memory building HTTP headers");
  (void)list.release();  // `grown` now owns the old list
  list.reset(grown);
  return {};
}

bool is_label_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_label_name_char(char c) {
  return is_label_name_start(c) || (c >= '0' && c <= '9');
}

// Prometheus label name syntax, which Pyroscope's push validation enforces.
std::string prometheus_label_name(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 1);
  if (name.empty() || !is_label_name_start(name.front()))
    out += '_';
  for (char c : name)
    out += is_label_name_char(c) ? c : '_';
  return out;
}

std::string ingest_app_name(std::string_view name) {
  std::string out;
  for (char c : name) {
    const bool ok = is_label_name_char(c) || c == '.' || c == '-' || c == '/';
    out += ok ? c : '_';
  }
  return out.empty() ? "unknown" : out;
}

std::string ingest_label_key(std::string_view key) {
  std::string out;
  for (char c : key)
    out += (is_label_name_char(c) || c == '.') ? c : '_';
  return out.empty() ? "_" : out;
}

std::string ingest_label_value(std::string_view value) {
  std::string out;
  for (char c : value)
    out += (c == ',' || c == '{' || c == '}' || c == '=') ? '_' : c;
  return out;
}

// RFC 3986 unreserved characters stay; everything else is %XX.
std::string percent_encode(std::string_view in) {
  std::string out;
  for (char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~')
      out += c;
    else
      out += fmt::format("%{:02X}", u);
  }
  return out;
}

std::string one_line_excerpt(std::string_view body) {
  std::string out;
  for (char c : body.substr(0, kBodyExcerpt)) {
    const auto u = static_cast<unsigned char>(c);
    const char shown = (u < 0x20 || u == 0x7f) ? ' ' : c;
    if (shown == ' ' && (out.empty() || out.back() == ' '))
      continue;
    out += shown;
  }
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  if (body.size() > kBodyExcerpt)
    out += "...";
  return out;
}

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos)
    return "";
  const auto end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

struct Response {
  std::string body;
  std::string retry_after;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<Response*>(user);
  const size_t n = size * count;
  const size_t room = kBodyKeep - std::min(kBodyKeep, response->body.size());
  response->body.append(data, std::min(n, room));
  return n;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<Response*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  constexpr std::string_view kName = "retry-after:";
  if (line.size() > kName.size() &&
      std::equal(kName.begin(), kName.end(), line.begin(),
                 [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
    response->retry_after = trim(line.substr(kName.size()));
  return n;
}

SendOutcome retry(std::string message) {
  return SendOutcome{SendStatus::kRetry, 0, std::nullopt, std::move(message)};
}
SendOutcome reject(std::string message) {
  return SendOutcome{SendStatus::kRejected, 0, std::nullopt, std::move(message)};
}

}  // namespace

struct PyroscopeSender::Curl {
  EasyHandle easy;
  std::string host;      // for messages
  std::string endpoint;  // push: the full URL; ingest: the URL without the query
};

std::string encode_push_request(const Upload& upload) {
  std::vector<std::pair<std::string, std::string>> labels;
  labels.emplace_back("__name__", "process_cpu");
  labels.emplace_back("service_name",
                      upload.application.empty() ? "unknown" : valid_utf8(upload.application));
  for (const auto& [name, value] : upload.labels)
    labels.emplace_back(prometheus_label_name(name), valid_utf8(value));
  // Stable: among duplicate names the first wins, and ours come first.
  std::stable_sort(labels.begin(), labels.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  labels.erase(std::unique(labels.begin(), labels.end(),
                           [](const auto& a, const auto& b) { return a.first == b.first; }),
               labels.end());

  push::v1::PushRequest request;
  push::v1::RawProfileSeries* series = request.add_series();
  for (auto& [name, value] : labels) {
    types::v1::LabelPair* pair = series->add_labels();
    pair->set_name(std::move(name));
    pair->set_value(std::move(value));
  }
  push::v1::RawSample* sample = series->add_samples();
  sample->set_raw_profile(upload.pprof);
  sample->set_id(upload.id);
  return request.SerializeAsString();
}

std::string ingest_name(const Upload& upload) {
  std::vector<std::pair<std::string, std::string>> labels;
  for (const auto& [key, value] : upload.labels) {
    if (key == "__name__")
      continue;
    labels.emplace_back(ingest_label_key(key), ingest_label_value(value));
  }
  std::stable_sort(labels.begin(), labels.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  labels.erase(std::unique(labels.begin(), labels.end(),
                           [](const auto& a, const auto& b) { return a.first == b.first; }),
               labels.end());
  std::string out = ingest_app_name(upload.application) + "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0)
      out += ',';
    out += labels[i].first + "=" + labels[i].second;
  }
  return out + "}";
}

std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) {
  // The server's word, bounded: anything longer is "a long time", and the
  // upload queue caps it further.
  constexpr std::chrono::seconds kLongest = std::chrono::hours(24 * 365 * 31);
  const std::string text = trim(value);
  if (text.empty())
    return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const auto seconds = parse_unsigned<uint64_t>(text);  // nullopt: more than 64 bits
    if (!seconds || *seconds > static_cast<uint64_t>(kLongest.count()))
      return kLongest;
    return std::chrono::seconds(*seconds);
  }
  const time_t when = curl_getdate(text.c_str(), nullptr);
  if (when < 0)
    return std::nullopt;
  // A date centuries away would overflow the clock's nanoseconds.
  if (when - std::chrono::system_clock::to_time_t(now) > kLongest.count())
    return kLongest;
  const auto delta = std::chrono::system_clock::from_time_t(when) - now;
  if (delta <= std::chrono::system_clock::duration::zero())
    return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(delta);
}

Result<std::unique_ptr<PyroscopeSender>> PyroscopeSender::create(PyroscopeOptions options) {
  init_curl_once();
  while (!options.url.empty() && options.url.back() == '/')
    options.url.pop_back();
  if (options.url.empty())
    return make_error("no Pyroscope URL: set one such as http://pyroscope:4040");
  UrlHandle url(curl_url());
  if (!url)
    return make_error("out of memory parsing the Pyroscope URL");
  if (curl_url_set(url.get(), CURLUPART_URL, options.url.c_str(), 0) != CURLUE_OK)
    return make_error("Pyroscope URL '{}' does not parse: write it as http(s)://host[:port][/path]",
                      options.url);
  char* raw = nullptr;
  curl_url_get(url.get(), CURLUPART_SCHEME, &raw, 0);
  CurlString scheme(raw);
  raw = nullptr;
  curl_url_get(url.get(), CURLUPART_HOST, &raw, 0);
  CurlString host(raw);
  raw = nullptr;
  curl_url_get(url.get(), CURLUPART_QUERY, &raw, 0);
  CurlString query(raw);
  const std::string scheme_text = scheme ? scheme.get() : "";
  if (scheme_text != "http" && scheme_text != "https")
    return make_error("Pyroscope URL '{}' must start with http:// or https://", options.url);
  if (query)
    return make_error("Pyroscope URL '{}' has a query string: give the base URL only", options.url);
  if (!options.auth.bearer_token.empty() &&
      (!options.auth.basic_user.empty() || !options.auth.basic_password.empty()))
    return make_error("Pyroscope auth: both a bearer token and basic auth are set; choose one");
  if (options.auth.basic_user.empty() != options.auth.basic_password.empty())
    return make_error("Pyroscope basic auth needs both a user and a password");
  if (!options.ca_file.empty() && ::access(options.ca_file.c_str(), R_OK) != 0)
    return make_error("cannot read the TLS CA file {}: {}", options.ca_file, std::strerror(errno));
  if (options.connect_timeout.count() <= 0 || options.timeout.count() <= 0)
    return make_error("Pyroscope timeouts must be positive");

  auto curl = std::make_unique<Curl>();
  curl->easy.reset(curl_easy_init());
  if (!curl->easy)
    return make_error("curl_easy_init failed (out of memory?)");
  curl->host = host ? host.get() : "";
  curl->endpoint = options.protocol == PyroscopeProtocol::kPush
                       ? options.url + std::string(kPushPath)
                       : options.url + "/ingest";
  return std::make_unique<PyroscopeSender>(Key{}, std::move(options), std::move(curl));
}

PyroscopeSender::PyroscopeSender(Key, PyroscopeOptions options, std::unique_ptr<Curl> curl)
    : options_(std::move(options)), curl_(std::move(curl)) {}

PyroscopeSender::~PyroscopeSender() = default;

namespace {

// What one request's options point into: it must outlive the transfer.
struct Request {
  std::string url;
  std::string body;
  Slist headers;
  Mime mime;
};

// The URL, body and headers of `upload` in the configured protocol, set on
// `easy`. Errors only when out of memory.
Result<void> build_request(CURL* easy, const PyroscopeOptions& options, const std::string& endpoint,
                           const Upload& upload, Request& request) {
  auto check = [](Result<void> r) { return r.ok(); };
  bool headers_ok = true;
  if (options.protocol == PyroscopeProtocol::kPush) {
    request.url = endpoint;
    request.body = encode_push_request(upload);
    headers_ok &= check(append_header(request.headers, "Content-Type: application/proto"));
    headers_ok &= check(append_header(request.headers, "Connect-Protocol-Version: 1"));
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  } else {
    request.url =
        fmt::format("{}?name={}&from={}&until={}&sampleRate={}&spyName=krait", endpoint,
                    percent_encode(ingest_name(upload)), upload.from_unix_ns / 1'000'000'000,
                    (upload.until_unix_ns + 999'999'999) / 1'000'000'000, upload.sample_rate_hz);
    request.mime.reset(curl_mime_init(easy));
    curl_mimepart* part = request.mime ? curl_mime_addpart(request.mime.get()) : nullptr;
    if (part == nullptr)
      return make_error("out of memory building the upload form");
    curl_mime_name(part, "profile");
    curl_mime_filename(part, "profile.pprof");
    curl_mime_type(part, "application/octet-stream");
    curl_mime_data(part, upload.pprof.data(), upload.pprof.size());
    curl_easy_setopt(easy, CURLOPT_MIMEPOST, request.mime.get());
  }
  // No "Expect: 100-continue": it costs a round trip (or a 1 s stall with
  // servers that ignore it) for bodies over 1 MiB.
  headers_ok &= check(append_header(request.headers, "Expect:"));
  if (!options.auth.bearer_token.empty())
    headers_ok &=
        check(append_header(request.headers, "Authorization: Bearer " + options.auth.bearer_token));
  if (!options.auth.tenant_id.empty())
    headers_ok &= check(append_header(request.headers, "X-Scope-OrgID: " + options.auth.tenant_id));
  if (!headers_ok)
    return make_error("out of memory building HTTP headers");
  return {};
}

// The time limits of one request: the sender's, cut to what send() was given.
struct Limits {
  std::chrono::milliseconds connect;
  std::chrono::milliseconds total;
};

// Everything but the body: where, how long, TLS, auth, and where the
// answer goes.
void set_transfer_options(CURL* easy, const PyroscopeOptions& options, const Request& request,
                          const Limits& limits, char* errbuf, Response& response) {
  curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, request.headers.get());
  curl_easy_setopt(easy, CURLOPT_USERAGENT, options.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(limits.connect.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(limits.total.count()));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &response);
  if (!options.auth.basic_user.empty()) {
    curl_easy_setopt(easy, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(easy, CURLOPT_USERNAME, options.auth.basic_user.c_str());
    curl_easy_setopt(easy, CURLOPT_PASSWORD, options.auth.basic_password.c_str());
  }
  if (!options.ca_file.empty())
    curl_easy_setopt(easy, CURLOPT_CAINFO, options.ca_file.c_str());
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, options.insecure_skip_verify ? 0L : 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, options.insecure_skip_verify ? 0L : 2L);
}

// Where a transfer that got no HTTP answer went wrong, in words that point
// at the fix, and whether trying again can help.
struct Destination {
  const std::string& endpoint;
  const std::string& host;
  const std::string& url;
  const std::string& ca_file;
};
SendOutcome transfer_failure(CURL* easy, CURLcode code, const std::string& detail,
                             const Destination& to, const Limits& limits) {
  long os_errno = 0;
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
  const std::string& endpoint = to.endpoint;
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
      return retry(fmt::format("cannot resolve host '{}' of {} (DNS lookup failed): {}", to.host,
                               endpoint, detail));
    case CURLE_COULDNT_RESOLVE_PROXY:
      return retry(fmt::format("cannot resolve the HTTP proxy for {} (DNS): {}", endpoint, detail));
    case CURLE_COULDNT_CONNECT:
      if (os_errno == ECONNREFUSED)
        return retry(
            fmt::format("connection refused by {} (is Pyroscope listening there?)", endpoint));
      return retry(fmt::format("cannot connect to {}: {}", endpoint, detail));
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connected_us = 0;
      curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connected_us);
      if (connected_us == 0)
        return retry(fmt::format("timed out connecting to {} after {} ms", endpoint,
                                 limits.connect.count()));
      return retry(fmt::format("timed out waiting for {} to answer (limit {} ms)", endpoint,
                               limits.total.count()));
    }
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return retry(fmt::format(
          "TLS with {} failed: {} (a private CA needs the CA file option; tests may use the "
          "insecure switch)",
          to.host, detail));
    case CURLE_SSL_CACERT_BADFILE:
      return reject(fmt::format("TLS CA file {} is unusable: {}", to.ca_file, detail));
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return reject(fmt::format("bad Pyroscope URL {}: {}", to.url, detail));
    default:
      return retry(fmt::format("sending to {} failed: {}", endpoint, detail));
  }
}

// The outcome of an HTTP answer: 2xx is done; 408, 429 and 5xx are worth
// another try (after Retry-After when given); the rest is refused.
SendOutcome http_outcome(long status, const Response& response, const std::string& endpoint) {
  SendOutcome outcome;
  outcome.http_status = static_cast<int>(status);
  if (status >= 200 && status < 300)
    return outcome;
  std::string excerpt = one_line_excerpt(response.body);
  outcome.message =
      fmt::format("HTTP {} from {}{}{}", status, endpoint, excerpt.empty() ? "" : ": ", excerpt);
  if (status == 408 || status == 429 || status >= 500) {
    outcome.status = SendStatus::kRetry;
    if (!response.retry_after.empty())
      outcome.retry_after =
          parse_retry_after(response.retry_after, std::chrono::system_clock::now());
  } else {
    outcome.status = SendStatus::kRejected;
    if (status == 401 || status == 403)
      outcome.message += " (check the credentials and the tenant id)";
    else if (status >= 300 && status < 400)
      outcome.message += " (a redirect: set the URL to where it points)";
  }
  return outcome;
}

}  // namespace

SendOutcome PyroscopeSender::send(const Upload& upload, std::chrono::milliseconds timeout) {
  CURL* easy = curl_->easy.get();
  // Reset drops every option of the previous request but keeps the live
  // connections, so keep-alive still saves a handshake per upload.
  curl_easy_reset(easy);

  const auto total = std::max(std::chrono::milliseconds(1), std::min(timeout, options_.timeout));
  const Limits limits{std::min(total, options_.connect_timeout), total};
  Response response;
  char errbuf[CURL_ERROR_SIZE] = {};
  Request request;
  if (auto built = build_request(easy, options_, curl_->endpoint, upload, request); !built)
    return reject(built.error().message);
  set_transfer_options(easy, options_, request, limits, errbuf, response);

  const CURLcode code = curl_easy_perform(easy);
  // The handle keeps pointers to these options; drop them before the
  // buffers they point into go out of scope.
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(easy, CURLOPT_MIMEPOST, nullptr);

  if (code != CURLE_OK) {
    const std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(code);
    return transfer_failure(
        easy, code, detail,
        Destination{curl_->endpoint, curl_->host, request.url, options_.ca_file}, limits);
  }
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  return http_outcome(status, response, curl_->endpoint);
}

}  // namespace krait::exporter
