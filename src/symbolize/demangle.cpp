#include "symbolize/demangle.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace krait::symbolize {

bool is_mangled(std::string_view name) {
  return name.size() > 2 && name[0] == '_' && name[1] == 'Z';
}

std::string demangle(std::string_view name) {
  if (!is_mangled(name))
    return std::string(name);
  std::string input(name);  // NUL-terminated for the C ABI
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(
      abi::__cxa_demangle(input.c_str(), nullptr, nullptr, &status), &std::free);
  if (status != 0 || out == nullptr)
    return input;
  return std::string(out.get());
}

}  // namespace krait::symbolize
