#include "proc/memory.h"

#include <sys/uio.h>

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
  for (const auto& r : regions_) {
    if (address >= r.address && address - r.address <= r.bytes.size() &&
        out.size() <= r.bytes.size() - (address - r.address)) {
      std::memcpy(out.data(), r.bytes.data() + (address - r.address), out.size());
      return {};
    }
  }
  return make_error("cannot read {} bytes at {:#x} (unmapped in fixture)", out.size(), address);
}

}  // namespace krait::proc
