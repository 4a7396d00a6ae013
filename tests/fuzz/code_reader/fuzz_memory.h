// The input layout shared by the code_reader harness and its seed recorder
// (record_seed.cpp): a layout choice, the addresses a sampler would hand
// user space, a code-capture event, and the process memory as regions.
//
//   u8  flags           bit 0: layout from the _Py_DebugOffsets bytes below,
//                       else from built-in table number `table`;
//                       bit 1: the token is recomputed from the code object
//                       in memory (as a sample of a live object carries it),
//                       else taken from the input
//   u8  table           index into builtin_offset_tables(), modulo their count
//   u16 n, n bytes      _Py_DebugOffsets (the start of _PyRuntime); n may be 0
//   u64 code_type       PyCode_Type's address
//   u64 code            a sampled code object's address
//   u32 token           krait_code_token of it (unless flags bit 1)
//   u32 instr           the sampled instruction position
//   u64 frame           the frame that ran it (names methods before 3.11)
//   u64 interp_head     where the first interpreter's address is stored
//   u16 n, n bytes      a krait_code_event (the sampler's capture), zero-filled
//   u8  count           regions (at most kMaxRegions), each:
//     u64 address, u32 size, size bytes   (later regions win where they overlap)
#pragma once

#include <cstdint>
#include <vector>

namespace krait::fuzz {

inline constexpr unsigned kCodeFlagDebugOffsets = 1;
inline constexpr unsigned kCodeFlagComputeToken = 2;
inline constexpr size_t kMaxRegions = 64;

}  // namespace krait::fuzz
