// Helpers the ModuleCache, ProcessModules and CfiTable tests share: binutils,
// files and maps made to change under krait, and a page of a file mapped
// into this process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proc/maps.h"
#include "unwind/process_modules.h"
#include "util/result.h"

namespace krait::unwind::module_test {

// argv's stdout; an error with its stderr when it exits non-zero.
Result<std::string> run_tool(const std::vector<std::string>& argv);

// `maps` with every entry of `old_path` naming `new_path` (and its inode and
// device) instead.
std::vector<proc::MapEntry> with_file_replaced(std::vector<proc::MapEntry> maps,
                                               const std::string& old_path,
                                               const std::string& new_path);

// The module of `path`, or nullptr.
const Module* module_of(const ProcessModules& modules, const std::string& path);

std::vector<uint8_t> file_bytes(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

// The fixture library under another name, with the same build-id note but
// other contents: its function renamed (same length, so nothing moves) and
// its .eh_frame zeroed, so it has neither the original's names nor its CFI.
inline constexpr const char* kLibFunction = "krait_unwind_lib_call";
inline constexpr const char* kImpostorFunction = "krait_IMPOSTOR_lib_cx";
std::string make_impostor(const std::string& lib, const std::string& dir);

// A page of `path` mapped into this process (read-only); unmapped on
// destruction.
class Mapping {
 public:
  explicit Mapping(const std::string& path);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool ok() const { return address_ != nullptr; }

  // This process's map entry for the mapping.
  std::optional<proc::MapEntry> entry() const;

 private:
  void* address_ = nullptr;
};

}  // namespace krait::unwind::module_test
