// Host memory for large kernel operands.
//
// Batch tensors and pulled embedding blocks are tens of MB and gathered at
// random rows. With 4 KiB pages every random row costs a TLB miss; with
// transparent huge pages (2 MiB) the whole block is a few TLB entries. Most
// distributions ship THP in "madvise" mode, so memory must ask for it:
// HugePageAllocator aligns allocations of 2 MiB and more to 2 MiB and
// madvise(MADV_HUGEPAGE)s them (PyTorch's CPU allocator does the same).
// Smaller allocations use plain operator new. Where THP is off, the advice
// is ignored and this is an ordinary aligned allocation.
#ifndef MIM_KERNELS_HOST_MEMORY_H_
#define MIM_KERNELS_HOST_MEMORY_H_

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mim::kernels {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

inline void* AllocateHost(size_t bytes) {
  if (bytes < kHugePageBytes) return ::operator new(bytes);
  const size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* p = std::aligned_alloc(kHugePageBytes, rounded);
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure is harmless
#endif
  return p;
}

inline void FreeHost(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes < kHugePageBytes) {
    ::operator delete(p);
  } else {
    std::free(p);
  }
}

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT
  T* allocate(size_t n) { return static_cast<T*>(AllocateHost(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { FreeHost(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const noexcept { return false; }
};

// std::vector whose large buffers sit on transparent huge pages.
template <typename T>
using HostVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace mim::kernels

#endif  // MIM_KERNELS_HOST_MEMORY_H_
