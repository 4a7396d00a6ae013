#include "support/temp_dir.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace krait::test {

namespace {

Result<std::string> make_directory() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/krait-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    return make_error("mkdtemp {}: {}", pattern, std::strerror(errno));
  return pattern;
}

}  // namespace

TempDir::TempDir() {
  auto made = make_directory();
  if (!made)
    throw std::runtime_error(made.error().message);
  path_ = std::move(*made);
}

Result<TempDir> TempDir::create() {
  auto made = make_directory();
  if (!made)
    return made.error();
  return TempDir(std::move(*made));
}

TempDir::~TempDir() {
  if (path_.empty())
    return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::vector<std::string> TempDir::list() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path_, ec))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace krait::test
