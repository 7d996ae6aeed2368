// Shared memory of the CUDA grid emulator (included by cuda_emu_device.h).
//
// cu_to_host.py rewrites
//   __shared__ double part[1024];
// into
//   static constexpr ::cuda_emu::SharedDecl mim_emu_shared_part{"part", __FILE__, __LINE__};
//   auto part = ::cuda_emu::StaticShared<double[1024]>(mim_emu_shared_part);
// and `extern __shared__ float buf[];` into DynamicShared<float>(...). The
// storage belongs to the running block: each block starts with fresh
// storage filled with 0xff bytes (NaN as float), never a process-wide
// static. Elements are reached through SharedRef, a reference-like proxy
// whose reads and writes are recorded for the race detector; indices are
// checked against each declared extent (an out-of-bounds index is a fault
// and the access goes to a scratch slot instead).
//
// A proxy behaves like T& in expressions (`a[i] += a[i + o]`, `x = a[0]`,
// `a[i] = v`). `auto v = a[i];` binds the proxy, not a copy: write
// `T v = a[i];` for a value.
#ifndef MIM_KERNELS_TESTING_CUDA_EMU_SHARED_H_
#define MIM_KERNELS_TESTING_CUDA_EMU_SHARED_H_

#include <cstddef>
#include <type_traits>

namespace cuda_emu {

// One __shared__ declaration in the source.
struct SharedDecl {
  const char* name;
  const char* file;
  int line;
};

namespace internal {
// The running block's storage for `decl` (allocated by its first caller).
void* StaticSharedStorage(const SharedDecl& decl, size_t bytes, size_t align);
// The running block's dynamic shared memory; *bytes its size.
void* DynamicSharedStorage(size_t* bytes);
// Records an access of `bytes` at p by the running thread (race detector).
void OnSharedAccess(const SharedDecl& decl, const void* p, size_t bytes, bool write);
// Reports index outside [0, extent) and returns scratch of `bytes` bytes.
void* OnSharedOutOfBounds(const SharedDecl& decl, long long index, long long extent,
                          size_t bytes);
}  // namespace internal

// Not thread-safe: belongs to the emulated thread that made it (as the
// reference it stands for would).
template <typename T>
class SharedRef {
 public:
  SharedRef(const SharedDecl* decl, T* p) : decl_(decl), p_(p) {}
  SharedRef(const SharedRef&) = default;

  operator T() const { return Load(); }
  T Load() const {
    if (decl_ != nullptr) internal::OnSharedAccess(*decl_, p_, sizeof(T), false);
    return *p_;
  }
  const SharedRef& operator=(const T& v) const {
    if (decl_ != nullptr) internal::OnSharedAccess(*decl_, p_, sizeof(T), true);
    *p_ = v;
    return *this;
  }
  const SharedRef& operator=(const SharedRef& o) const { return *this = o.Load(); }

#define MIM_CUDA_EMU_COMPOUND(op)                         \
  template <typename U>                                   \
  const SharedRef& operator op##=(const U& u) const {     \
    T v = Load();                                         \
    v op## = u;                                           \
    return *this = v;                                     \
  }
  MIM_CUDA_EMU_COMPOUND(+)
  MIM_CUDA_EMU_COMPOUND(-)
  MIM_CUDA_EMU_COMPOUND(*)
  MIM_CUDA_EMU_COMPOUND(/)
  MIM_CUDA_EMU_COMPOUND(%)
  MIM_CUDA_EMU_COMPOUND(&)
  MIM_CUDA_EMU_COMPOUND(|)
  MIM_CUDA_EMU_COMPOUND(^)
  MIM_CUDA_EMU_COMPOUND(<<)
  MIM_CUDA_EMU_COMPOUND(>>)
#undef MIM_CUDA_EMU_COMPOUND
  const SharedRef& operator++() const { return *this += 1; }
  const SharedRef& operator--() const { return *this -= 1; }
  T operator++(int) const {
    T v = Load();
    *this = static_cast<T>(v + 1);
    return v;
  }
  T operator--(int) const {
    T v = Load();
    *this = static_cast<T>(v - 1);
    return v;
  }
  // &a[i] is not emulated: a raw pointer would bypass the checks.
  void operator&() const = delete;

 private:
  const SharedDecl* decl_;  // null: scratch after an out-of-bounds index
  T* p_;
};

// A shared array of `extent` elements of T (T itself may be an array: a
// row of a multi-dimensional declaration). Not thread-safe, as SharedRef.
template <typename T>
class SharedSpan {
 public:
  SharedSpan(const SharedDecl* decl, T* base, long long extent)
      : decl_(decl), base_(base), extent_(extent) {}

  template <typename I>
  auto operator[](I i) const {
    static_assert(std::is_integral_v<I> || std::is_enum_v<I>, "shared index must be integral");
    // Unsigned indices beyond LLONG_MAX wrap negative: out of bounds too.
    const long long idx = static_cast<long long>(i);
    T* p = base_ + idx;
    const SharedDecl* d = decl_;
    if (idx < 0 || idx >= extent_ || decl_ == nullptr) {
      p = static_cast<T*>(
          decl_ == nullptr ? static_cast<void*>(base_)
                           : internal::OnSharedOutOfBounds(*decl_, idx, extent_, sizeof(T)));
      d = nullptr;
    }
    if constexpr (std::is_array_v<T>) {
      return SharedSpan<std::remove_extent_t<T>>(d, *p, std::extent_v<T>);
    } else {
      return SharedRef<T>(d, p);
    }
  }
  long long extent() const { return extent_; }

 private:
  const SharedDecl* decl_;  // null: scratch after an out-of-bounds index
  T* base_;
  long long extent_;
};

// `__shared__ A name;` for A = T[N]... (a span) or a scalar T (a SharedRef).
template <typename A>
auto StaticShared(const SharedDecl& decl) {
  void* p = internal::StaticSharedStorage(decl, sizeof(A), alignof(A));
  if constexpr (std::is_array_v<A>) {
    using T = std::remove_extent_t<A>;
    return SharedSpan<T>(&decl, static_cast<T*>(p), std::extent_v<A>);
  } else {
    return SharedRef<A>(&decl, static_cast<A*>(p));
  }
}

// `extern __shared__ T name[];`: all such declarations share the launch's
// dynamic shared memory from its start, as on a GPU.
template <typename T>
SharedSpan<T> DynamicShared(const SharedDecl& decl) {
  size_t bytes = 0;
  void* p = internal::DynamicSharedStorage(&bytes);
  return SharedSpan<T>(&decl, static_cast<T*>(p), static_cast<long long>(bytes / sizeof(T)));
}

}  // namespace cuda_emu

#endif  // MIM_KERNELS_TESTING_CUDA_EMU_SHARED_H_
