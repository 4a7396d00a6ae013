// Writing test inputs: fails the current test (GoogleTest) when a file
// cannot be written.
#pragma once

#include <string>
#include <string_view>

namespace krait::test {

// Writes `data` to `path`, replacing the file.
void write_text_file(const std::string& path, std::string_view data);

}  // namespace krait::test
