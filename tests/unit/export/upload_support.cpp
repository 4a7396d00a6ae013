#include "upload_support.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "export/pprof.h"
#include "util/unique_fd.h"

namespace krait::test {

std::string tiny_pprof(std::string_view function) {
  profile::ProfileMeta meta;
  meta.start_time_unix_ns = 1'700'000'000'000'000'000;
  meta.duration_ns = 15'000'000'000;
  meta.period_ns = 10'101'010;
  profile::Profile profile(meta);
  profile::Frame frame;
  frame.kind = profile::FrameKind::kPython;
  frame.function = std::string(function);
  frame.file = "/srv/app.py";
  frame.line = 42;
  const profile::FrameId id = profile.intern_frame(frame);
  profile.add_sample(std::span<const profile::FrameId>(&id, 1), profile.intern_labels({}), 3);
  auto bytes = exporter::encode_pprof(profile);
  EXPECT_TRUE(bytes.ok()) << (bytes.ok() ? "" : bytes.error().message);
  return bytes.ok() ? *bytes : std::string();
}

exporter::Upload make_upload(std::string application, profile::Labels labels, int64_t from_unix_s,
                             int64_t until_unix_s) {
  exporter::Upload upload;
  upload.pprof = tiny_pprof(application + "_main");
  upload.application = std::move(application);
  upload.labels = std::move(labels);
  upload.from_unix_ns = from_unix_s * 1'000'000'000;
  upload.until_unix_ns = until_unix_s * 1'000'000'000;
  upload.sample_rate_hz = 99;
  upload.id = exporter::make_upload_id();
  return upload;
}

Result<std::string> raw_http_exchange(uint16_t port, std::string_view request) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return make_error("socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return make_error("connect to 127.0.0.1:{}: {}", port, std::strerror(errno));
  while (!request.empty()) {
    const ssize_t n = ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
    if (n <= 0)
      return make_error("send: {}", std::strerror(errno));
    request.remove_prefix(static_cast<size_t>(n));
  }
  std::string response;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    response.append(buf, static_cast<size_t>(n));
  }
  return response;
}

int response_status(std::string_view response) {
  if (response.size() < 12 || response.substr(0, 5) != "HTTP/")
    return 0;
  const size_t space = response.find(' ');
  if (space == std::string_view::npos)
    return 0;
  return std::atoi(std::string(response.substr(space + 1, 3)).c_str());
}

}  // namespace krait::test
