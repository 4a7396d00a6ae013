// Records a seed of the code_reader harness from a live Python process:
// attaches as krait does, then runs read_code_object, method_class_name and
// validate_layout over the process's memory through a recorder that keeps
// every region those reads returned, and writes the regions with the
// addresses and capture the harness needs (fuzz_memory.h).
//
//   record_seed PID CODE_ADDRESS FRAME_ADDRESS OUT_PREFIX
//
// Writes OUT_PREFIX-table (layout from the built-in table of the version,
// when there is one) and, for 3.13+, OUT_PREFIX-debug (layout from the
// process's own _Py_DebugOffsets). Used by tests/fuzz/make_seeds.py; needs
// the right to read the process's memory (root).
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "fuzz_memory.h"
#include "krait/abi.h"
#include "proc/memory.h"
#include "python/attach.h"
#include "python/code_reader.h"
#include "python/interpreter.h"
#include "python/method_class.h"
#include "python/offsets/debug_offsets.h"

using namespace krait;
using namespace krait::python;

namespace {

struct Region {
  uint64_t address;
  std::vector<uint8_t> bytes;
};

class RecordingMemory final : public proc::RemoteMemory {
 public:
  explicit RecordingMemory(pid_t pid) : live_(pid) {}
  Result<void> read(uint64_t address, std::span<uint8_t> out) const override {
    auto r = live_.read(address, out);
    if (r && !out.empty())
      regions_.push_back({address, {out.begin(), out.end()}});
    return r;
  }
  // The regions read, sorted and merged where they touch or lie within
  // `gap` bytes (the gap is read from the process too).
  std::vector<Region> merged(uint64_t gap) const {
    auto sorted = regions_;
    std::sort(sorted.begin(), sorted.end(),
              [](const Region& a, const Region& b) { return a.address < b.address; });
    std::vector<Region> out;
    for (auto& r : sorted) {
      if (!out.empty()) {
        Region& last = out.back();
        const uint64_t last_end = last.address + last.bytes.size();
        if (r.address <= last_end + gap) {
          const uint64_t end = std::max(last_end, r.address + r.bytes.size());
          std::vector<uint8_t> joined(end - last.address);
          if (live_.read(last.address, joined)) {
            last.bytes = std::move(joined);
            continue;
          }
        }
      }
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  proc::ProcessMemory live_;
  mutable std::vector<Region> regions_;
};

uint64_t number(const char* text) {
  uint64_t v = 0;
  std::from_chars(text, text + std::strlen(text), v);
  return v;
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
T field(const std::vector<uint8_t>& head, uint32_t offset) {
  T v{};
  if (offset != KRAIT_OFFSET_NONE && offset + sizeof(T) <= head.size())
    std::memcpy(&v, head.data() + offset, sizeof v);
  return v;
}

// As much of an object's head as is readable, up to out.size() bytes.
void capture(const proc::RemoteMemory& mem, uint64_t address, std::span<uint8_t> out) {
  for (size_t n = out.size(); n >= 8; n /= 2)
    if (address && mem.read(address, out.first(n)))
      return;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s PID CODE_ADDRESS FRAME_ADDRESS OUT_PREFIX\n", argv[0]);
    return 2;
  }
  const auto pid = static_cast<pid_t>(number(argv[1]));
  const uint64_t code = number(argv[2]);
  const uint64_t frame = number(argv[3]);
  const std::string prefix = argv[4];

  ImageCache images;
  Attachment att = attach_process(pid, images, {});
  if (att.status != AttachStatus::kAttached) {
    std::fprintf(stderr, "pid %d: not attached: %s\n", pid, att.reason.c_str());
    return 1;
  }
  const PythonLayout& layout = *att.layout;
  const uint64_t code_type = att.info.code_type_addr;
  const uint64_t interp_head = att.info.interp_head_addr;
  RecordingMemory mem(pid);
  proc::ProcessMemory live(pid);

  auto head = mem.read_bytes(code, layout.bpf.code_read_size);
  if (!head) {
    std::fprintf(stderr, "pid %d: code object unreadable: %s\n", pid, head.error().message.c_str());
    return 1;
  }
  const uint64_t filename = field<uint64_t>(*head, layout.bpf.code_filename);
  const uint64_t name = field<uint64_t>(*head, layout.bpf.code_name);
  const uint64_t linetable = field<uint64_t>(*head, layout.bpf.code_linetable);
  const uint32_t firstlineno = field<uint32_t>(*head, layout.bpf.code_firstlineno);
  const uint32_t token = krait_code_token(filename, name, linetable, firstlineno);
  auto info = read_code_object(mem, layout, code_type, code, token);
  if (!info) {
    std::fprintf(stderr, "pid %d: %s\n", pid, info.error().message.c_str());
    return 1;
  }
  std::string method;
  if (layout.method_class.enabled)
    method = method_class_name(mem, layout, frame, code).value_or("");
  Validation v = validate_layout(mem, pid, layout, interp_head, code_type);
  if (v.status != AttachStatus::kAttached) {
    std::fprintf(stderr, "pid %d: validation: %s\n", pid, v.reason.c_str());
    return 1;
  }

  // The sampler's capture of the same code object (object heads).
  krait_code_event event{};
  event.hdr.type = KRAIT_EVENT_CODE;
  event.hdr.pid = static_cast<uint32_t>(pid);
  event.code = code;
  event.token = token;
  event.firstlineno = firstlineno;
  event.name_addr = name;
  event.file_addr = filename;
  event.frame = frame;
  event.linetable_addr = linetable;
  capture(live, name, event.name);
  capture(live, filename, event.file);
  capture(live, linetable, event.linetable);

  std::string tail;
  put(tail, code_type);
  put(tail, code);
  put(tail, token);
  put(tail, uint32_t{0});  // instr: the first instruction
  put(tail, frame);
  put(tail, interp_head);
  put(tail, static_cast<uint16_t>(sizeof event));
  tail.append(reinterpret_cast<const char*>(&event), sizeof event);
  auto regions = mem.merged(256);
  if (regions.size() > fuzz::kMaxRegions)
    regions.resize(fuzz::kMaxRegions);
  // validate_layout checks each PyThreadState.native_thread_id against the
  // threads of the pid it is given, which in the harness is the fuzzer's
  // own: 0 (a thread that has not started) passes, so the recorded threads
  // get 0 and validation goes on to their frames.
  if (layout.tstate_native_thread_id != KRAIT_OFFSET_NONE) {
    auto put_zero = [&](uint64_t address) {
      for (auto& r : regions)
        if (address >= r.address && address + 8 <= r.address + r.bytes.size())
          std::memset(r.bytes.data() + (address - r.address), 0, 8);
    };
    auto word = [&](uint64_t address) -> uint64_t {
      auto v = live.read_value<uint64_t>(address);
      return v ? *v : 0;
    };
    const uint64_t interp = word(interp_head);
    uint64_t t = interp ? word(interp + layout.bpf.interp_tstate_head) : 0;
    for (int n = 0; t != 0 && n < 64; ++n) {
      put_zero(t + layout.tstate_native_thread_id);
      t = word(t + layout.bpf.tstate_next);
    }
  }
  put(tail, static_cast<uint8_t>(regions.size()));
  for (const auto& r : regions) {
    put(tail, r.address);
    put(tail, static_cast<uint32_t>(r.bytes.size()));
    tail.append(reinterpret_cast<const char*>(r.bytes.data()), r.bytes.size());
  }

  auto write = [&](const std::string& path, uint8_t flags, uint8_t table,
                   const std::vector<uint8_t>& debug) {
    std::string out;
    put(out, flags);
    put(out, table);
    put(out, static_cast<uint16_t>(debug.size()));
    out.append(reinterpret_cast<const char*>(debug.data()), debug.size());
    out += tail;
    std::ofstream(path, std::ios::binary) << out;
    std::printf("%s: Python %s, %s, %s%s, %zu regions, %zu bytes\n", path.c_str(),
                att.version->str().c_str(), att.offsets_source.c_str(), info->name.c_str(),
                method.empty() ? "" : (" (" + method + ")").c_str(), regions.size(), out.size());
  };

  const auto& tables = builtin_offset_tables();
  const OffsetTable* builtin = find_table(*att.version);
  if (!builtin)
    builtin = nearest_table_same_minor(*att.version);
  if (builtin) {
    const auto index = static_cast<uint8_t>(builtin - tables.data());
    write(prefix + "-table", fuzz::kCodeFlagComputeToken, index, {});
  }
  if (*att.version >= PyVersion{3, 13, 0}) {
    FindResult found = images.find(pid);
    const size_t size = debug_offsets_read_size(att.version->major, att.version->minor);
    auto debug = live.read_bytes(found.interpreter->runtime_addr, size);
    if (!debug) {
      std::fprintf(stderr, "pid %d: _Py_DebugOffsets unreadable\n", pid);
      return 1;
    }
    write(prefix + "-debug", fuzz::kCodeFlagComputeToken | fuzz::kCodeFlagDebugOffsets, 0, *debug);
  }
  return 0;
}
