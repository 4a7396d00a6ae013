#include "proc/memory.h"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

namespace krait::proc {

Result<void> ProcessMemory::read(uint64_t address, std::span<uint8_t> out) const {
  if (out.empty())
    return {};
  iovec local{out.data(), out.size()};
  iovec remote{reinterpret_cast<void*>(address), out.size()};
  ssize_t n = ::process_vm_readv(pid_, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(out.size()))
    return {};
  if (n < 0 && errno == ESRCH)
    return make_error("process {} has exited", pid_);
  if (n < 0 && errno == EPERM)
    return make_error("not allowed to read the memory of process {}: krait needs CAP_SYS_PTRACE",
                      pid_);
  return make_error("cannot read {} bytes at {:#x} in process {}", out.size(), address, pid_);
}

Result<void> FakeMemory::read(uint64_t address, std::span<uint8_t> out) const {
  // Newest first: a later add() overwrites the bytes it overlaps.
  std::vector<bool> filled(out.size(), false);
  size_t missing = out.size();
  for (auto it = regions_.rbegin(); it != regions_.rend() && missing; ++it) {
    const uint64_t lo = std::max(address, it->address);
    const uint64_t hi = std::min(address + out.size(), it->address + it->bytes.size());
    for (uint64_t a = lo; a < hi; ++a) {
      const size_t i = a - address;
      if (filled[i])
        continue;
      out[i] = it->bytes[a - it->address];
      filled[i] = true;
      --missing;
    }
  }
  if (missing)
    return make_error("cannot read {} bytes at {:#x} (unmapped in fixture)", out.size(), address);
  return {};
}

}  // namespace krait::proc
