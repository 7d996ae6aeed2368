// Internal: 8-lane vectors for the CPU twins, with runtime dispatch.
//
// Vec8<T> is a GCC vector of 8 T. In code compiled for baseline x86-64 the
// compiler lowers each operation to SSE2 (two or four registers); inside a
// function marked MIM_TARGET_AVX2 the same source uses 256-bit registers.
// Neither path contracts a*b+c into FMA (target "avx2" does not enable FMA,
// and :cpu_impl builds with -ffp-contract=off, which GCC's C++ modes do not
// default to), and every lane does the same operations in the same order,
// so both paths give bit-identical results for the ops written with it
// (content, gather, pooling). The matrix products go through OpenBLAS's
// sgemm, which picks its kernel per CPU, so a whole training run is the
// same bits run to run on one machine, not across CPU models.
#ifndef MIM_KERNELS_SIMD_H_
#define MIM_KERNELS_SIMD_H_

#include <cstdint>
#include <cstring>

namespace mim::kernels::cpu {

template <typename T>
struct Vec8Of {
  typedef T type __attribute__((vector_size(8 * sizeof(T))));
};
template <typename T>
using Vec8 = typename Vec8Of<T>::type;

#define MIM_SIMD_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__)
#define MIM_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define MIM_TARGET_AVX2
#endif

template <typename T>
MIM_SIMD_INLINE Vec8<T> Load8(const T* p) {
  Vec8<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
MIM_SIMD_INLINE void Store8(T* p, Vec8<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
MIM_SIMD_INLINE Vec8<T> Splat8(T x) {
  return Vec8<T>{x, x, x, x, x, x, x, x};
}
// Fixed pairwise order, so a reduction does not depend on the ISA.
template <typename T>
MIM_SIMD_INLINE T Sum8(Vec8<T> v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// True when the AVX2 paths may run: the CPU has AVX2 and no test forced
// the baseline path (ForceBaselineSimd).
bool UseAvx2();
// Test hook: run the baseline (SSE2) path even on an AVX2 machine.
void ForceBaselineSimd(bool force);

}  // namespace mim::kernels::cpu

#endif  // MIM_KERNELS_SIMD_H_
