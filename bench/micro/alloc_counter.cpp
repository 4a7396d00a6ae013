#include "alloc_counter.h"

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>

namespace krait::bench {
namespace {

std::atomic<uint64_t> g_allocations{0};
std::atomic<uint64_t> g_bytes{0};
std::atomic<int64_t> g_live{0};

// Usable size, not the requested size: sized delete may pass a different
// (requested) size, and both sides must count the same number.
void* note_alloc(void* p) {
  if (p != nullptr) {
    const auto usable = malloc_usable_size(p);
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    g_bytes.fetch_add(usable, std::memory_order_relaxed);
    g_live.fetch_add(static_cast<int64_t>(usable), std::memory_order_relaxed);
  }
  return p;
}

void note_free(void* p) {
  if (p != nullptr)
    g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
}

void* allocate(std::size_t n) {
  return note_alloc(std::malloc(n == 0 ? 1 : n));
}

void* allocate_aligned(std::size_t n, std::align_val_t align) {
  const auto a = static_cast<std::size_t>(align);
  // aligned_alloc wants a size that is a multiple of the alignment.
  return note_alloc(std::aligned_alloc(a, (n + a - 1) / a * a));
}

void release(void* p) {
  note_free(p);
  std::free(p);
}

}  // namespace

AllocSnapshot alloc_snapshot() {
  return {g_allocations.load(std::memory_order_relaxed), g_bytes.load(std::memory_order_relaxed),
          g_live.load(std::memory_order_relaxed)};
}

}  // namespace krait::bench

using krait::bench::allocate;
using krait::bench::allocate_aligned;
using krait::bench::release;

void* operator new(std::size_t n) {
  if (void* p = allocate(n))
    return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return allocate(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return allocate(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate_aligned(n, a))
    return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return operator new(n, a);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_aligned(n, a);
}

void operator delete(void* p) noexcept {
  release(p);
}
void operator delete[](void* p) noexcept {
  release(p);
}
void operator delete(void* p, std::size_t) noexcept {
  release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  release(p);
}
