// C++ symbol demangling (the Itanium ABI, as GCC and Clang mangle).
//
// Pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace krait::symbolize {

// The demangled form of `name` with parameter types ("ns::f(int)"), clone
// suffixes as "[clone .cold]"; `name` itself when it is not a mangled C++
// name (C functions) or does not demangle.
std::string demangle(std::string_view name);

// Whether `name` looks like an Itanium-mangled name ("_Z...").
bool is_mangled(std::string_view name);

}  // namespace krait::symbolize
