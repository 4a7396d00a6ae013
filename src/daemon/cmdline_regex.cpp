#include "daemon/cmdline_regex.h"

#include <re2/re2.h>

#include <algorithm>

namespace krait::daemon {

Result<CmdlineRegex> CmdlineRegex::compile(std::string_view pattern, std::string_view key) {
  RE2::Options options;
  options.set_max_mem(kCmdlineRegexMaxMemBytes);
  options.set_log_errors(false);  // the error is returned, not printed
  options.set_encoding(RE2::Options::EncodingLatin1);
  auto re = std::make_shared<const RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re->ok())
    return make_error("{}: regex '{}' does not compile: {}", key, pattern, re->error());
  return CmdlineRegex(std::move(re));
}

bool CmdlineRegex::search(std::string_view text) const {
  return re_->Match(re2::StringPiece(text.data(), text.size()), 0, text.size(), RE2::UNANCHORED,
                    nullptr, 0);
}

std::optional<std::string_view> CmdlineRegex::search_first_group(std::string_view text) const {
  re2::StringPiece groups[2];
  const int wanted = std::min(re_->NumberOfCapturingGroups(), 1) + 1;
  if (!re_->Match(re2::StringPiece(text.data(), text.size()), 0, text.size(), RE2::UNANCHORED,
                  groups, wanted))
    return std::nullopt;
  const re2::StringPiece& picked = groups[wanted - 1];
  if (picked.data() == nullptr)
    return std::string_view();
  return std::string_view(picked.data(), picked.size());
}

}  // namespace krait::daemon
