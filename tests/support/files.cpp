#include "support/files.h"

#include <gtest/gtest.h>

#include <fstream>

namespace krait::test {

void write_text_file(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  ASSERT_TRUE(out) << "writing " << path;
}

}  // namespace krait::test
