#include "symbolize/demangle.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace krait::symbolize {

bool is_mangled(std::string_view name) {
  return name.size() > 2 && name[0] == '_' && name[1] == 'Z';
}

std::string demangle(std::string_view name) {
  // Names come from the symbol tables of files profiled processes map. The
  // demangler's time and output grow with back-references, and a few bytes
  // can ask for a lot: real names are far shorter than the input cap, and
  // an output past the output cap is not worth showing.
  constexpr size_t kMaxMangled = 4096;
  constexpr size_t kMaxDemangled = 16384;
  if (!is_mangled(name) || name.size() > kMaxMangled)
    return std::string(name);
  std::string input(name);  // NUL-terminated for the C ABI
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(
      abi::__cxa_demangle(input.c_str(), nullptr, nullptr, &status), &std::free);
  if (status != 0 || out == nullptr)
    return input;
  std::string demangled(out.get());
  if (demangled.size() > kMaxDemangled)
    return input;
  return demangled;
}

}  // namespace krait::symbolize
