#include "export/directory_output.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <system_error>
#include <tuple>
#include <vector>

#include "export/atomic_file.h"

namespace krait::exporter {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxAppBytes = 100;
constexpr std::string_view kSuffix = ".pb.gz";

bool is_app_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::string sanitize_app(std::string_view application) {
  std::string out;
  for (char c : application.substr(0, kMaxAppBytes))
    out += is_app_char(c) ? c : '_';
  if (out.empty())
    return "unknown";
  // No hidden files, and never "." or "..".
  if (out.front() == '.')
    out.front() = '_';
  return out;
}

bool parse_number(std::string_view text, int64_t& out) {
  if (text.empty() || text.size() > 18)
    return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && out >= 0;
}

struct OwnFile {
  std::string path;
  OutputFileName name;
  uint64_t bytes = 0;
};

}  // namespace

DirectoryOutput::DirectoryOutput(DirectoryOutputOptions options) : options_(std::move(options)) {}

std::string DirectoryOutput::file_name(std::string_view application, int64_t from_unix_s,
                                       int64_t until_unix_s, uint32_t duplicate) {
  std::string name =
      fmt::format("{}-{}-{}", sanitize_app(application), std::max<int64_t>(0, from_unix_s),
                  std::max<int64_t>(0, until_unix_s));
  if (duplicate > 0)
    name += fmt::format(".{}", duplicate);
  return name + std::string(kSuffix);
}

std::optional<OutputFileName> DirectoryOutput::parse_file_name(std::string_view name) {
  if (name.size() <= kSuffix.size() || !name.ends_with(kSuffix))
    return std::nullopt;
  std::string_view stem = name.substr(0, name.size() - kSuffix.size());
  OutputFileName out;
  // Parsed from the right: the application part may contain '-' and '.'.
  const size_t dot = stem.rfind('.');
  const size_t last_dash = stem.rfind('-');
  if (dot != std::string_view::npos && (last_dash == std::string_view::npos || dot > last_dash)) {
    int64_t dup = 0;
    if (!parse_number(stem.substr(dot + 1), dup) || dup == 0 || dup > UINT32_MAX)
      return std::nullopt;
    out.duplicate = static_cast<uint32_t>(dup);
    stem = stem.substr(0, dot);
  }
  const size_t until_dash = stem.rfind('-');
  if (until_dash == std::string_view::npos || !parse_number(stem.substr(until_dash + 1), out.until))
    return std::nullopt;
  stem = stem.substr(0, until_dash);
  const size_t from_dash = stem.rfind('-');
  if (from_dash == std::string_view::npos || !parse_number(stem.substr(from_dash + 1), out.from))
    return std::nullopt;
  const std::string_view app = stem.substr(0, from_dash);
  if (app.empty() || app.size() > kMaxAppBytes || app.front() == '.' ||
      !std::all_of(app.begin(), app.end(), is_app_char))
    return std::nullopt;
  out.application = std::string(app);
  return out;
}

Result<std::string> DirectoryOutput::write(std::string_view application, int64_t from_unix_s,
                                           int64_t until_unix_s, std::string_view pprof_gz) {
  std::lock_guard guard(mutex_);
  auto fail = [&](Error error) -> Result<std::string> {
    ++stats_.failed;
    stats_.last_error = error.message;
    return error;
  };
  if (options_.path.empty())
    return fail(make_error("no output directory configured"));
  std::error_code ec;
  fs::create_directories(options_.path, ec);
  if (ec)
    return fail(
        make_error("cannot create the output directory {}: {}", options_.path, ec.message()));
  if (!fs::is_directory(options_.path, ec))
    return fail(make_error("output directory {} is not a directory", options_.path));

  std::string path;
  for (uint32_t duplicate = 0;; ++duplicate) {
    path = (fs::path(options_.path) / file_name(application, from_unix_s, until_unix_s, duplicate))
               .string();
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0)
      break;
    if (duplicate == 1000)
      return fail(make_error("output directory {} already holds 1000 files named like {}",
                             options_.path, path));
  }
  if (auto written = write_file_atomically(path, pprof_gz); !written)
    return fail(written.error().context(
        fmt::format("writing a profile into {} (sampling goes on; free space or fix the "
                    "permissions)",
                    options_.path)));
  ++stats_.written;
  apply_retention(path);
  return path;
}

void DirectoryOutput::apply_retention(const std::string& keep) {
  if (options_.max_files == 0 && options_.max_bytes == 0)
    return;
  std::vector<OwnFile> files;
  uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(options_.path, ec), end; !ec && it != end; it.increment(ec)) {
    auto name = parse_file_name(it->path().filename().string());
    if (!name)
      continue;
    struct stat st;
    // lstat: a symlink that happens to carry our name is not ours.
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      continue;
    files.push_back({it->path().string(), std::move(*name), static_cast<uint64_t>(st.st_size)});
    total += static_cast<uint64_t>(st.st_size);
  }
  if (ec) {
    ++stats_.delete_failures;
    stats_.last_error = fmt::format("listing {} for retention: {}", options_.path, ec.message());
    spdlog::warn("{}", stats_.last_error);
    return;
  }
  std::sort(files.begin(), files.end(), [](const OwnFile& a, const OwnFile& b) {
    return std::tie(a.name.until, a.name.from, a.path) <
           std::tie(b.name.until, b.name.from, b.path);
  });
  uint64_t count = files.size();
  for (const OwnFile& file : files) {
    const bool too_many = options_.max_files != 0 && count > options_.max_files;
    const bool too_big = options_.max_bytes != 0 && total > options_.max_bytes;
    if (!too_many && !too_big)
      break;
    if (file.path == keep)
      continue;
    if (::unlink(file.path.c_str()) != 0 && errno != ENOENT) {
      ++stats_.delete_failures;
      stats_.last_error = fmt::format("retention cannot delete {}: {}", file.path,
                                      std::error_code(errno, std::generic_category()).message());
      spdlog::warn("{}", stats_.last_error);
      continue;
    }
    ++stats_.deleted;
    --count;
    total -= file.bytes;
  }
}

DirectoryOutputStats DirectoryOutput::stats() const {
  std::lock_guard guard(mutex_);
  return stats_;
}

}  // namespace krait::exporter
