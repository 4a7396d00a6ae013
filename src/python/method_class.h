// Naming a method's class before 3.11, where code objects have no
// co_qualname. For a code object whose first argument is `self` or `cls`,
// the class that DEFINES the method is found from a frame running it: the
// first local (the instance, or the class for `cls`), its type's MRO, and
// the first class in it whose dict maps the method's name to a function (or
// classmethod) with this very code object. That is what co_qualname says in
// 3.11+, inherited methods included: Base.helper called on a Derived
// instance is Base.helper.
//
// Cost: a few dozen remote reads, once per code object (the caller caches),
// off the sampling path. Returns nullopt whenever anything does not hold
// (not a method, frame gone, dict not found): the bare name stays.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proc/memory.h"
#include "python/layout.h"

namespace krait::python {

std::optional<std::string> method_class_name(const proc::RemoteMemory& memory,
                                             const PythonLayout& layout, uint64_t frame,
                                             uint64_t code);

}  // namespace krait::python
