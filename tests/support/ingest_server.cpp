#include "support/ingest_server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "export/pprof.h"
#include "export/push.pb.h"
#include "util/json_writer.h"

namespace krait::test {
namespace {

constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
  void operator()(X509* x509) const { X509_free(x509); }
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  void operator()(BIO* bio) const { BIO_free(bio); }
  void operator()(X509_EXTENSION* ext) const { X509_EXTENSION_free(ext); }
};
template <typename T>
using Ssl = std::unique_ptr<T, SslDeleter>;

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0)
    return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string_view::npos)
    return "";
  const auto end = s.find_last_not_of(" \t");
  return std::string(s.substr(begin, end - begin + 1));
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

bool valid_label_name(std::string_view name) {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

bool valid_metric_name(std::string_view name) {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

// Decodes one UTF-8 sequence at a time; any malformed, overlong or
// surrogate sequence fails.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    uint32_t cp = 0;
    if (c <= 0x7f) {
      ++i;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<size_t>(extra) >= s.size())
      return false;
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((d & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

bool is_uuid(std::string_view id) {
  if (id.size() != 36)
    return false;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (id[i] != '-')
        return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(id[i]))) {
      return false;
    }
  }
  return true;
}

std::string percent_decode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() &&
               std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      unsigned value = 0;
      std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=')
      break;
    const int v = value(c);
    if (v < 0)
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string connect_error(std::string_view code, std::string_view message) {
  JsonWriter json;
  json.begin_object().key("code").value(code).key("message").value(message).end_object();
  return json.str();
}

// Pyroscope's legacy labelset syntax: app{key=value,key=value}.
Result<std::pair<std::string, std::map<std::string, std::string>>> parse_ingest_name(
    std::string_view name) {
  enum { kApp, kKey, kValue, kDone } state = kApp;
  std::string app, key, value;
  std::map<std::string, std::string> labels;
  const std::string text = std::string(name) + "{";
  for (char c : text) {
    switch (state) {
      case kApp:
        if (c == '{') {
          app = trim(app);
          if (app.empty())
            return make_error("name: service name is required");
          for (char a : app)
            if (!(std::isalnum(static_cast<unsigned char>(a)) || a == '_' || a == '.' || a == '-' ||
                  a == '/'))
              return make_error("name: invalid service name character '{}' in '{}'", a, app);
          state = kKey;
        } else {
          app += c;
        }
        break;
      case kKey:
        if (c == '}') {
          state = kDone;
        } else if (c == '=') {
          state = kValue;
          value.clear();
        } else {
          key += c;
        }
        break;
      case kValue:
        if (c == ',' || c == '}') {
          const std::string k = trim(key);
          if (k.empty())
            return make_error("name: label name is required");
          if (k != "__name__")
            for (char a : k)
              if (!(std::isalnum(static_cast<unsigned char>(a)) || a == '_' || a == '.'))
                return make_error("name: invalid label name character '{}' in '{}'", a, k);
          labels[k] = trim(value);
          key.clear();
          state = kKey;
        } else {
          value += c;
        }
        break;
      case kDone:
        break;
    }
  }
  return std::make_pair(app, labels);
}

std::optional<std::string> multipart_field(std::string_view content_type, std::string_view body,
                                           std::string_view field) {
  const std::string lowered = lower(content_type);
  const size_t at = lowered.find("boundary=");
  if (at == std::string::npos)
    return std::nullopt;
  std::string boundary(content_type.substr(at + 9));
  boundary = boundary.substr(0, boundary.find(';'));
  boundary = trim(boundary);
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  const std::string delimiter = "--" + boundary;
  size_t pos = body.find(delimiter);
  while (pos != std::string_view::npos) {
    pos += delimiter.size();
    if (body.substr(pos, 2) == "--")
      return std::nullopt;
    if (body.substr(pos, 2) != "\r\n")
      return std::nullopt;
    pos += 2;
    const size_t headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string_view::npos)
      return std::nullopt;
    const std::string headers = lower(body.substr(pos, headers_end - pos));
    const size_t data_begin = headers_end + 4;
    const size_t data_end = body.find("\r\n" + delimiter, data_begin);
    if (data_end == std::string_view::npos)
      return std::nullopt;
    const std::string wanted = fmt::format("name=\"{}\"", field);
    if (headers.find("content-disposition: form-data") != std::string::npos &&
        headers.find(wanted) != std::string::npos)
      return std::string(body.substr(data_begin, data_end - data_begin));
    pos = data_end + 2;
  }
  return std::nullopt;
}

// Pyroscope parses what it stores: gzipped or plain pprof. Anything else
// (say, a whole multipart form sent as format=pprof) is refused.
std::optional<std::string> pprof_problem(std::string_view raw) {
  if (raw.empty())
    return "empty profile";
  if (raw.size() >= 2 && static_cast<uint8_t>(raw[0]) == 0x1f &&
      static_cast<uint8_t>(raw[1]) == 0x8b) {
    auto decoded = exporter::decode_pprof(raw);
    if (!decoded)
      return "not a pprof profile: " + decoded.error().message;
    return std::nullopt;
  }
  perftools::profiles::Profile profile;
  if (!profile.ParseFromString(std::string(raw)))
    return "not a pprof profile (neither gzip nor a profile.proto message)";
  return std::nullopt;
}

}  // namespace

struct IngestServer::Tls {
  Ssl<SSL_CTX> ctx;
};

struct IngestServer::Connection {
  explicit Connection(UniqueFd f) : fd(std::move(f)) {}
  UniqueFd fd;
  Ssl<SSL> ssl;
  std::string pending;

  ssize_t read_some(char* buf, size_t size) {
    if (ssl) {
      const int n = SSL_read(ssl.get(), buf, static_cast<int>(size));
      return n > 0 ? n : -1;
    }
    for (;;) {
      const ssize_t n = ::recv(fd.get(), buf, size, 0);
      if (n < 0 && errno == EINTR)
        continue;
      return n;
    }
  }
  bool write_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n;
      if (ssl) {
        const int w = SSL_write(ssl.get(), data.data(), static_cast<int>(data.size()));
        n = w > 0 ? w : -1;
      } else {
        n = ::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
          continue;
      }
      if (n <= 0)
        return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  bool fill() {
    char buf[65536];
    const ssize_t n = read_some(buf, sizeof buf);
    if (n <= 0)
      return false;
    pending.append(buf, static_cast<size_t>(n));
    return true;
  }
};

struct IngestServer::Request {
  std::string method, target, path, version;
  std::map<std::string, std::string> headers;
  std::map<std::string, std::string> query;
  std::string body;
  bool close = false;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

Result<TestCertificate> make_test_certificate() {
  Ssl<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key)
    return make_error("generating a test key: {}", openssl_error());
  Ssl<X509> cert(X509_new());
  if (!cert)
    return make_error("X509_new: {}", openssl_error());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(::getpid()) + 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("krait test server"), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  const std::pair<int, const char*> extensions[] = {
      {NID_basic_constraints, "critical,CA:TRUE"},
      {NID_key_usage, "critical,digitalSignature,keyCertSign"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
      {NID_subject_alt_name, "IP:127.0.0.1"},
  };
  for (const auto& [nid, value] : extensions) {
    Ssl<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1)
      return make_error("adding certificate extension {}: {}", value, openssl_error());
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return make_error("signing the test certificate: {}", openssl_error());
  auto to_pem = [](auto write) -> std::string {
    Ssl<BIO> bio(BIO_new(BIO_s_mem()));
    if (!bio || !write(bio.get()))
      return "";
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(size));
  };
  TestCertificate out;
  out.cert_pem = to_pem([&](BIO* bio) { return PEM_write_bio_X509(bio, cert.get()) == 1; });
  out.key_pem = to_pem([&](BIO* bio) {
    return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  if (out.cert_pem.empty() || out.key_pem.empty())
    return make_error("writing the test certificate as PEM: {}", openssl_error());
  return out;
}

Result<std::unique_ptr<IngestServer>> IngestServer::start(IngestServerOptions options) {
  std::unique_ptr<IngestServer> server(new IngestServer());
  server->options_ = options;
  if (options.tls) {
    auto cert = make_test_certificate();
    if (!cert)
      return cert.error();
    server->certificate_ = std::move(*cert);
    server->tls_ = std::make_unique<Tls>();
    server->tls_->ctx.reset(SSL_CTX_new(TLS_server_method()));
    if (!server->tls_->ctx)
      return make_error("SSL_CTX_new: {}", openssl_error());
    Ssl<BIO> cert_bio(BIO_new_mem_buf(server->certificate_.cert_pem.data(),
                                      static_cast<int>(server->certificate_.cert_pem.size())));
    Ssl<BIO> key_bio(BIO_new_mem_buf(server->certificate_.key_pem.data(),
                                     static_cast<int>(server->certificate_.key_pem.size())));
    Ssl<X509> x509(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    Ssl<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!x509 || !key || SSL_CTX_use_certificate(server->tls_->ctx.get(), x509.get()) != 1 ||
        SSL_CTX_use_PrivateKey(server->tls_->ctx.get(), key.get()) != 1)
      return make_error("loading the test certificate: {}", openssl_error());
  }
  server->control_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!server->control_.valid())
    return make_error("eventfd: {}", std::strerror(errno));
  {
    std::lock_guard guard(server->mutex_);
    KRAIT_TRY(server->listen_locked());
  }
  IngestServer* raw = server.get();
  server->accept_thread_ = std::jthread([raw] { raw->accept_loop(); });
  return server;
}

IngestServer::~IngestServer() {
  {
    std::lock_guard guard(mutex_);
    stopping_ = true;
    for (const auto& connection : connections_)
      ::shutdown(connection->fd.get(), SHUT_RDWR);
  }
  changed_.notify_all();
  const uint64_t one = 1;
  if (control_.valid())
    (void)!::write(control_.get(), &one, sizeof one);
  if (accept_thread_.joinable())
    accept_thread_.join();
  // The accept thread is gone, so nobody adds threads any more.
  for (auto& thread : connection_threads_)
    if (thread.joinable())
      thread.join();
}

std::string IngestServer::url() const {
  return fmt::format("{}://127.0.0.1:{}", options_.tls ? "https" : "http", port_);
}

Result<void> IngestServer::listen_locked() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return make_error("socket: {}", std::strerror(errno));
  const int yes = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port_);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return make_error("binding 127.0.0.1:{}: {}", port_, std::strerror(errno));
  if (::listen(fd.get(), 64) != 0)
    return make_error("listen: {}", std::strerror(errno));
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  listen_fd_ = std::move(fd);
  return {};
}

Result<void> IngestServer::set_listening(bool listening) {
  std::unique_lock lock(mutex_);
  listening_wanted_ = listening;
  const uint64_t generation = ++wanted_generation_;
  listen_error_.reset();
  const uint64_t one = 1;
  if (::write(control_.get(), &one, sizeof one) != sizeof one)
    return make_error("waking the accept thread: {}", std::strerror(errno));
  changed_.wait(lock, [&] { return applied_generation_ >= generation || stopping_; });
  if (listen_error_)
    return *listen_error_;
  return {};
}

Result<void> IngestServer::accept_normally() {
  {
    std::lock_guard guard(mutex_);
    mode_ = Mode::kNormal;
  }
  changed_.notify_all();
  return set_listening(true);
}

Result<void> IngestServer::refuse_connections() {
  return set_listening(false);
}

void IngestServer::fail_with_status(int status, std::string body,
                                    std::optional<std::string> retry_after) {
  {
    std::lock_guard guard(mutex_);
    mode_ = Mode::kStatus;
    failure_ = Reply{status, "text/plain", std::move(body), std::move(retry_after)};
  }
  changed_.notify_all();
}

void IngestServer::hang() {
  {
    std::lock_guard guard(mutex_);
    mode_ = Mode::kHang;
  }
  changed_.notify_all();
}

void IngestServer::require_basic_auth(std::string user, std::string password) {
  std::lock_guard guard(mutex_);
  basic_user_ = std::move(user);
  basic_password_ = std::move(password);
}

void IngestServer::require_bearer_token(std::string token) {
  std::lock_guard guard(mutex_);
  bearer_token_ = std::move(token);
}

void IngestServer::require_tenant(std::string tenant) {
  std::lock_guard guard(mutex_);
  tenant_ = std::move(tenant);
}

std::vector<ReceivedProfile> IngestServer::profiles() const {
  std::lock_guard guard(mutex_);
  return profiles_;
}

std::vector<ReceivedRequest> IngestServer::requests() const {
  std::lock_guard guard(mutex_);
  return requests_;
}

bool IngestServer::wait_for_profiles(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return profiles_.size() >= count; });
}

bool IngestServer::wait_for_requests(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return requests_.size() >= count; });
}

bool IngestServer::wait_for_hanging(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return hanging_ >= count; });
}

void IngestServer::accept_loop() {
  for (;;) {
    int listen_fd = -1;
    {
      std::lock_guard guard(mutex_);
      if (stopping_)
        return;
      listen_fd = listen_fd_.valid() ? listen_fd_.get() : -1;
    }
    pollfd fds[2] = {{control_.get(), POLLIN, 0}, {listen_fd, POLLIN, 0}};
    const int n = ::poll(fds, listen_fd >= 0 ? 2 : 1, -1);
    if (n < 0)
      continue;  // EINTR
    if (fds[0].revents & POLLIN) {
      uint64_t value = 0;
      (void)!::read(control_.get(), &value, sizeof value);
      std::lock_guard guard(mutex_);
      if (stopping_)
        return;
      // Only this thread opens and closes the listening socket, so it never
      // closes a descriptor that poll() is still watching.
      if (listening_wanted_ && !listen_fd_.valid()) {
        if (auto listened = listen_locked(); !listened)
          listen_error_ = listened.error();
      } else if (!listening_wanted_ && listen_fd_.valid()) {
        listen_fd_.reset();
        for (const auto& connection : connections_)
          ::shutdown(connection->fd.get(), SHUT_RDWR);
      }
      applied_generation_ = wanted_generation_;
      changed_.notify_all();
      continue;
    }
    if (listen_fd >= 0 && (fds[1].revents & POLLIN)) {
      UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd.valid())
        continue;
      auto connection = std::make_shared<Connection>(std::move(fd));
      std::lock_guard guard(mutex_);
      if (stopping_ || !listening_wanted_)
        continue;
      connections_.insert(connection);
      connection_threads_.emplace_back([this, connection] { serve(connection); });
    }
  }
}

void IngestServer::serve(std::shared_ptr<Connection> connection) {
  auto finish = [&] {
    std::lock_guard guard(mutex_);
    connections_.erase(connection);
  };
  if (tls_) {
    connection->ssl.reset(SSL_new(tls_->ctx.get()));
    if (!connection->ssl || SSL_set_fd(connection->ssl.get(), connection->fd.get()) != 1 ||
        SSL_accept(connection->ssl.get()) != 1) {
      finish();
      return;
    }
  }
  for (;;) {
    Request request;
    // Headers.
    size_t header_end;
    while ((header_end = connection->pending.find("\r\n\r\n")) == std::string::npos) {
      if (connection->pending.size() > kMaxHeaderBytes || !connection->fill()) {
        finish();
        return;
      }
    }
    const std::string head = connection->pending.substr(0, header_end);
    connection->pending.erase(0, header_end + 4);
    size_t line_end = head.find("\r\n");
    const std::string request_line = head.substr(0, line_end);
    {
      const size_t sp1 = request_line.find(' ');
      const size_t sp2 = request_line.find(' ', sp1 + 1);
      if (sp1 == std::string::npos || sp2 == std::string::npos) {
        finish();
        return;
      }
      request.method = request_line.substr(0, sp1);
      request.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      request.version = request_line.substr(sp2 + 1);
    }
    while (line_end != std::string::npos) {
      const size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line =
          head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const size_t colon = line.find(':');
      if (colon == std::string::npos)
        continue;
      const std::string name = lower(line.substr(0, colon));
      const std::string value = trim(line.substr(colon + 1));
      auto [it, inserted] = request.headers.emplace(name, value);
      if (!inserted)
        it->second += ", " + value;
    }
    request.close = lower(request.header("connection")) == "close" || request.version == "HTTP/1.0";
    const size_t question = request.target.find('?');
    request.path = request.target.substr(0, question);
    if (question != std::string::npos) {
      std::string_view query = std::string_view(request.target).substr(question + 1);
      while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const size_t eq = pair.find('=');
        request.query[percent_decode(pair.substr(0, eq))] =
            eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1));
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      }
    }
    if (lower(request.header("expect")) == "100-continue" &&
        !connection->write_all("HTTP/1.1 100 Continue\r\n\r\n")) {
      finish();
      return;
    }
    // Body.
    std::optional<Reply> early;
    if (lower(request.header("transfer-encoding")).find("chunked") != std::string::npos) {
      for (;;) {
        size_t size_end;
        while ((size_end = connection->pending.find("\r\n")) == std::string::npos)
          if (!connection->fill()) {
            finish();
            return;
          }
        size_t chunk = 0;
        const auto [end, ec] = std::from_chars(connection->pending.data(),
                                               connection->pending.data() + size_end, chunk, 16);
        if (ec != std::errc() || chunk > kMaxBodyBytes) {
          finish();
          return;
        }
        (void)end;
        while (connection->pending.size() < size_end + 2 + chunk + 2)
          if (request.body.size() + chunk > kMaxBodyBytes || !connection->fill()) {
            finish();
            return;
          }
        request.body += connection->pending.substr(size_end + 2, chunk);
        connection->pending.erase(0, size_end + 2 + chunk + 2);
        if (chunk == 0)
          break;
      }
    } else if (!request.header("content-length").empty()) {
      const std::string text = request.header("content-length");
      size_t length = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
      if (ec != std::errc() || end != text.data() + text.size() || length > kMaxBodyBytes) {
        early = Reply{413, "text/plain", "body too large", std::nullopt};
        request.close = true;
      } else {
        while (connection->pending.size() < length)
          if (!connection->fill()) {
            finish();
            return;
          }
        request.body = connection->pending.substr(0, length);
        connection->pending.erase(0, length);
      }
    } else if (request.method == "POST") {
      early = Reply{411, "text/plain", "Content-Length or chunked encoding required", std::nullopt};
      request.close = true;
    }

    // The mode in force when the request arrived answers it: a test that
    // saw N requests arrive and then heals the server must see N failures.
    size_t index;
    Mode mode;
    Reply failure;
    {
      std::lock_guard guard(mutex_);
      requests_.push_back({request.method, request.target, request.headers, 0});
      index = requests_.size() - 1;
      mode = mode_;
      failure = failure_;
    }
    changed_.notify_all();

    std::optional<Reply> reply = early;
    if (!reply) {
      std::unique_lock lock(mutex_);
      if (mode == Mode::kHang) {
        ++hanging_;
        changed_.notify_all();
        changed_.wait(lock, [&] { return mode_ != Mode::kHang || stopping_; });
        --hanging_;
        lock.unlock();
        finish();
        return;  // closing without an answer
      }
      if (mode == Mode::kStatus)
        reply = failure;
    }
    if (!reply)
      reply = handle(request, index);

    std::string response = fmt::format("HTTP/1.1 {} {}\r\nContent-Length: {}\r\n", reply->status,
                                       reason_phrase(reply->status), reply->body.size());
    if (!reply->content_type.empty())
      response += fmt::format("Content-Type: {}\r\n", reply->content_type);
    if (reply->retry_after)
      response += fmt::format("Retry-After: {}\r\n", *reply->retry_after);
    if (request.close)
      response += "Connection: close\r\n";
    response += "\r\n" + reply->body;
    {
      std::lock_guard guard(mutex_);
      requests_[index].status = reply->status;
    }
    changed_.notify_all();
    if (!connection->write_all(response) || request.close) {
      finish();
      return;
    }
  }
}

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
  {
    std::lock_guard guard(mutex_);
    profiles_.push_back(std::move(profile));
  }
  changed_.notify_all();
  return Reply{200, "text/plain", "", std::nullopt};
}

}  // namespace krait::test
