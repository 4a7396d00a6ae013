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
#include "support/ingest_http.h"
#include "support/ingest_tls.h"

namespace krait::test {

using namespace ingest;

struct IngestServer::Tls {
  Ssl<SSL_CTX> ctx;
};

struct IngestServer::Connection {
  explicit Connection(UniqueFd f) : fd(std::move(f)) {}
  UniqueFd fd;
  Ssl<SSL> ssl;
  std::string pending;
  // When the last read that brought bytes returned.
  std::chrono::steady_clock::time_point filled_at{};
  int64_t filled_at_unix_ns = 0;

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
    filled_at = std::chrono::steady_clock::now();
    filled_at_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    pending.append(buf, static_cast<size_t>(n));
    return true;
  }
};

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
    // Arrival: the read that brought the request's first byte, which may
    // already be buffered behind the previous request.
    bool arrived = !connection->pending.empty();
    auto note_arrival = [&] {
      request.arrived = connection->filled_at;
      request.arrived_unix_ns = connection->filled_at_unix_ns;
    };
    if (arrived)
      note_arrival();
    // Headers.
    size_t header_end;
    while ((header_end = connection->pending.find("\r\n\r\n")) == std::string::npos) {
      if (connection->pending.size() > kMaxHeaderBytes || !connection->fill()) {
        finish();
        return;
      }
      if (!arrived) {
        arrived = true;
        note_arrival();
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
      requests_.push_back({request.method,
                           request.target,
                           request.headers,
                           0,
                           request.arrived,
                           {},
                           request.arrived_unix_ns});
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
      requests_[index].answered = std::chrono::steady_clock::now();
    }
    changed_.notify_all();
    if (!connection->write_all(response) || request.close) {
      finish();
      return;
    }
  }
}

}  // namespace krait::test
