// Device side of the CUDA grid emulator: what a .cu file sees once
// kernels/testing/cu_to_host.py has rewritten it into host C++ (see
// kernels/testing/README.md for the model and what it cannot show).
//
//  - __global__/__device__/__host__ and friends are empty macros: a kernel
//    is a plain function.
//  - `kernel<<<grid, block, smem, stream>>>(args)` has been rewritten into
//    cuda_emu::LaunchKernel(...): the arguments are converted to the
//    kernel's parameter types once (CUDA's parameter copy), pointer
//    arguments are checked against device allocations, then the blocks run
//    one after another on the calling host thread. The threads of a block
//    are fibers: each runs until it finishes or waits (__syncthreads, a
//    warp intrinsic), so barrier-free kernels cost one fiber per block.
//  - threadIdx/blockIdx/blockDim/gridDim name the running fiber's values.
//  - `__shared__ T a[N];` has been rewritten into a per-block allocation
//    reached through SharedSpan/SharedRef, which check every index against
//    the declared extent and record each access for the race detector:
//    a shared byte written by one thread and read or written by another in
//    the same barrier interval (no __syncthreads() between; for two lanes of
//    one warp, no __syncwarp() either) is a fault, as is a read of shared
//    memory no thread of the block has written. `extern __shared__ T a[];`
//    is the launch's dynamic shared memory.
//  - Warp intrinsics (__shfl*_sync, __ballot_sync, __any_sync, __all_sync,
//    __syncwarp) wait for every lane named in the mask that has not exited,
//    then exchange values: lockstep per instruction.
//  - Atomics are host atomics on the same addresses.
//
// Not emulated (compile errors, not silent misbehaviour): __constant__,
// textures, cooperative groups, shared-memory atomics and pointers to
// shared elements (&a[i]), members of shared structs.
#ifndef MIM_KERNELS_TESTING_CUDA_EMU_DEVICE_H_
#define MIM_KERNELS_TESTING_CUDA_EMU_DEVICE_H_

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/testing/cuda_emu_runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// cu_to_host.py rewrites every __shared__ declaration; one it could not
// parse stops the build here with this name in the error.
#define __shared__ MIM_CUDA_EMU_error_shared_declaration_not_rewritten_by_cu_to_host
#define __constant__ MIM_CUDA_EMU_error_constant_memory_is_not_emulated

namespace cuda_emu {
namespace internal {
extern thread_local uint3 t_thread_idx;
extern thread_local uint3 t_block_idx;
extern thread_local dim3 t_block_dim;
extern thread_local dim3 t_grid_dim;
}  // namespace internal
}  // namespace cuda_emu

#define threadIdx (static_cast<const uint3&>(::cuda_emu::internal::t_thread_idx))
#define blockIdx (static_cast<const uint3&>(::cuda_emu::internal::t_block_idx))
#define blockDim (static_cast<const dim3&>(::cuda_emu::internal::t_block_dim))
#define gridDim (static_cast<const dim3&>(::cuda_emu::internal::t_grid_dim))
constexpr int warpSize = 32;

namespace cuda_emu {

// ---- launches ----
// The <<<grid, block, shared bytes, stream>>> of a launch. A value type.
struct LaunchConfig {
  LaunchConfig(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = nullptr)
      : grid(g), block(b), shared_bytes(smem), stream(s) {}
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
};

namespace internal {
// True when p points into (or one past) a cudaMalloc or pinned allocation.
bool IsDeviceAddress(const void* p);
// A pointer an operation queued on a stream uses, for the stream-order
// checker (emulator_internal.h, StreamOp): a kernel's `const T*` argument is
// read, a `T*` argument written (and read).
struct Operand {
  const void* ptr;
  bool write;
};
// Runs body(ctx) for every thread of the grid; bad_pointer_arg >= 0 names a
// kernel argument that is not a device address (the launch then faults).
// `operands`: the kernel's pointer arguments.
void Launch(const char* kernel, const LaunchConfig& cfg, void (*body)(void*), void* ctx,
            int bad_pointer_arg, const void* bad_pointer, const Operand* operands,
            int num_operands);

// The pointer arguments among `params`, with their constness.
template <typename Tuple, size_t... I>
int PointerOperands(const Tuple& params, Operand* out, std::index_sequence<I...>) {
  int n = 0;
  auto add = [&](const auto& v) {
    using V = std::decay_t<decltype(v)>;
    if constexpr (std::is_pointer_v<V>) {
      if (v != nullptr) {
        out[n++] = Operand{static_cast<const void*>(v),
                           !std::is_const_v<std::remove_pointer_t<V>>};
      }
    }
  };
  (add(std::get<I>(params)), ...);
  return n;
}

template <typename Tuple, size_t... I>
int FirstHostPointer(const Tuple& params, const void** bad, std::index_sequence<I...>) {
  int found = -1;
  auto check = [&](size_t i, const auto& v) {
    using V = std::decay_t<decltype(v)>;
    if constexpr (std::is_pointer_v<V>) {
      if (found < 0 && v != nullptr && !IsDeviceAddress(v)) {
        found = static_cast<int>(i);
        *bad = v;
      }
    }
  };
  (check(I, std::get<I>(params)), ...);
  return found;
}
}  // namespace internal

// What `kernel<<<cfg>>>(args...)` becomes. Launch errors are reported
// through cudaGetLastError(), as on a GPU.
template <typename... P, typename... A>
void LaunchKernel(const char* name, void (*kernel)(P...), const LaunchConfig& cfg, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
  struct Ctx {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
  } ctx{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  const void* bad = nullptr;
  const int bad_arg =
      internal::FirstHostPointer(ctx.params, &bad, std::index_sequence_for<P...>{});
  internal::Operand operands[sizeof...(P) + 1];
  const int num_operands =
      internal::PointerOperands(ctx.params, operands, std::index_sequence_for<P...>{});
  internal::Launch(
      name, cfg, [](void* c) {
        Ctx* x = static_cast<Ctx*>(c);
        std::apply(x->kernel, x->params);  // each thread gets its own copies
      },
      &ctx, bad_arg, bad, operands, num_operands);
}

// ---- barriers and warp intrinsics ----
namespace internal {
enum class WarpOp { kShfl, kShflUp, kShflDown, kShflXor, kVote, kSync };
// Deposits `bits` for the calling lane, waits for the other lanes of
// `mask`, returns the bits of the source lane the op selects (`arg`:
// lane, delta or lane mask; `width`: segment). For kVote, `bits` is the
// predicate and the result is the ballot of the participating lanes.
// *participants (when non-null): the lanes that took part.
unsigned long long WarpExchange(WarpOp op, unsigned mask, unsigned long long bits, int arg,
                                int width, unsigned* participants = nullptr);
void SyncThreads();

template <typename T>
T Shuffle(WarpOp op, unsigned mask, T v, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "warp shuffles of types up to 8 bytes only");
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = WarpExchange(op, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace internal
}  // namespace cuda_emu

inline void __syncthreads() { ::cuda_emu::internal::SyncThreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::cuda_emu::internal::WarpExchange(::cuda_emu::internal::WarpOp::kSync, mask, 0, 0, 32);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  return ::cuda_emu::internal::Shuffle(::cuda_emu::internal::WarpOp::kShfl, mask, v, src_lane,
                                       width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::cuda_emu::internal::Shuffle(::cuda_emu::internal::WarpOp::kShflUp, mask, v,
                                       static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::cuda_emu::internal::Shuffle(::cuda_emu::internal::WarpOp::kShflDown, mask, v,
                                       static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  return ::cuda_emu::internal::Shuffle(::cuda_emu::internal::WarpOp::kShflXor, mask, v,
                                       lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::cuda_emu::internal::WarpExchange(
      ::cuda_emu::internal::WarpOp::kVote, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
// Every participating lane (all non-exited lanes of the mask) voted true.
int __all_sync(unsigned mask, int pred);
// Lanes of the calling warp that have not exited.
unsigned __activemask();

// ---- arithmetic intrinsics: round-to-nearest without FMA contraction ----
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
template <typename T>
T __ldg(const T* p) {
  return *p;
}

// ---- atomics (global memory) ----
namespace cuda_emu::internal {
template <typename T, typename F>
T AtomicUpdate(T* addr, F f) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- and 8-byte types only");
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* b = reinterpret_cast<Bits*>(addr);
  Bits old_bits = __atomic_load_n(b, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &old_bits, sizeof(T));
    const T next = f(old);
    Bits next_bits;
    std::memcpy(&next_bits, &next, sizeof(T));
    if (__atomic_compare_exchange_n(b, &old_bits, next_bits, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
      return old;
    }
  }
}
}  // namespace cuda_emu::internal

template <typename T>
T atomicAdd(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return o + v; });
}
template <typename T>
T atomicSub(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return o - v; });
}
template <typename T>
T atomicMin(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return v < o ? v : o; });
}
template <typename T>
T atomicMax(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return v > o ? v : o; });
}
template <typename T>
T atomicExch(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T) { return v; });
}
template <typename T>
T atomicCAS(T* a, T compare, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [=](T o) { return o == compare ? v : o; });
}
template <typename T>
T atomicAnd(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return o & v; });
}
template <typename T>
T atomicOr(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return o | v; });
}
template <typename T>
T atomicXor(T* a, T v) {
  return ::cuda_emu::internal::AtomicUpdate(a, [v](T o) { return o ^ v; });
}

#include "kernels/testing/cuda_emu_shared.h"

#endif  // MIM_KERNELS_TESTING_CUDA_EMU_DEVICE_H_
