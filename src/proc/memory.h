// Reading another process's memory.
//
// RemoteMemory is the seam the Python readers use, so unit tests can run
// them on fixtures; ProcessMemory reads a live process with
// process_vm_readv (no ptrace stop: the target never notices). Reads are
// all-or-nothing: a partial read is an error.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "util/result.h"

namespace krait::proc {

class RemoteMemory {
 public:
  virtual ~RemoteMemory() = default;
  virtual Result<void> read(uint64_t address, std::span<uint8_t> out) const = 0;

  template <typename T>
  Result<T> read_value(uint64_t address) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value{};
    auto r = read(address, {reinterpret_cast<uint8_t*>(&value), sizeof value});
    if (!r)
      return r.error();
    return value;
  }
  Result<std::vector<uint8_t>> read_bytes(uint64_t address, size_t size) const {
    std::vector<uint8_t> out(size);
    auto r = read(address, out);
    if (!r)
      return r.error();
    return out;
  }
};

class ProcessMemory final : public RemoteMemory {
 public:
  explicit ProcessMemory(pid_t pid) : pid_(pid) {}
  Result<void> read(uint64_t address, std::span<uint8_t> out) const override;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

// Fixture memory for tests: (address, bytes) regions; where regions overlap,
// the newest wins, as if it had been written over the older.
class FakeMemory final : public RemoteMemory {
 public:
  void add(uint64_t address, std::vector<uint8_t> bytes) {
    regions_.push_back({address, std::move(bytes)});
  }
  template <typename T>
  void add_value(uint64_t address, const T& value) {
    std::vector<uint8_t> bytes(sizeof value);
    std::memcpy(bytes.data(), &value, sizeof value);
    add(address, std::move(bytes));
  }
  Result<void> read(uint64_t address, std::span<uint8_t> out) const override;

 private:
  struct Region {
    uint64_t address;
    std::vector<uint8_t> bytes;
  };
  std::vector<Region> regions_;
};

}  // namespace krait::proc
