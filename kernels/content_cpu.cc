// CPU twin of content_ops.h: one pass per row over the valid behaviours.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/content_ops.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"
#include "kernels/simd.h"

namespace mim::kernels {
namespace cpu {
namespace {

// Dot products with 8 independent partial sums in one vector (a single
// running sum is one long dependency chain). The summation order is fixed,
// so results are deterministic and the same on every ISA (simd.h).
template <typename T>
MIM_SIMD_INLINE T Dot(const T* a, const T* b, int64_t n) {
  Vec8<T> acc = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += Load8(a + i) * Load8(b + i);
  T sum = Sum8<T>(acc);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// <t, x> and <x, x> in one pass over x.
template <typename T>
MIM_SIMD_INLINE void DotAndSquaredNorm(const T* t, const T* x, int64_t n,
                                       T* dot, T* sq) {
  Vec8<T> ad = {}, as = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const Vec8<T> xv = Load8(x + i);
    ad += Load8(t + i) * xv;
    as += xv * xv;
  }
  T d = Sum8<T>(ad), q = Sum8<T>(as);
  for (; i < n; ++i) {
    d += t[i] * x[i];
    q += x[i] * x[i];
  }
  *dot = d;
  *sq = q;
}

// out[k] = sum_{i<n} a[i] * x[i * dim + k], summed over i in order. Column
// tiles of kTile floats stay in registers for the whole pass over i, so
// `out` is written once instead of read and written per behaviour.
template <typename T, int kTile>
MIM_SIMD_INLINE void WeightedRowSum(const T* a, const T* x, int64_t n,
                                    int64_t dim, T* out) {
  constexpr int kVecs = kTile / 8;
  int64_t k = 0;
  for (; k + kTile <= dim; k += kTile) {
    Vec8<T> acc[kVecs] = {};
    for (int64_t i = 0; i < n; ++i) {
      const Vec8<T> ai = Splat8(a[i]);
      const T* xi = x + i * dim + k;
      for (int v = 0; v < kVecs; ++v) acc[v] += ai * Load8(xi + 8 * v);
    }
    for (int v = 0; v < kVecs; ++v) Store8(out + k + 8 * v, acc[v]);
  }
  for (; k + 8 <= dim; k += 8) {
    Vec8<T> acc = {};
    for (int64_t i = 0; i < n; ++i) acc += Splat8(a[i]) * Load8(x + i * dim + k);
    Store8(out + k, acc);
  }
  for (; k < dim; ++k) {
    T acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * x[i * dim + k];
    out[k] = acc;
  }
}

template <typename T>
struct ForwardArgs {
  int64_t L, dm, d;
  const T *m, *m_t, *h;
  const int32_t* lens;
  T *alpha, *h_mm, *h_fusion;
};

// Rows [lo, hi): all alpha_i of a row first (independent dot products),
// then the two weighted sums. `scratch` holds L alphas when the caller
// does not want them.
template <typename T, int kTile>
MIM_SIMD_INLINE void ForwardRows(const ForwardArgs<T>& x, int64_t lo,
                                 int64_t hi, T* scratch) {
  const T eps = T(kContentCosineEps);
  const int64_t L = x.L, dm = x.dm, d = x.d;
  for (int64_t b = lo; b < hi; ++b) {
    const int64_t n = x.lens[b];
    const T* t = x.m_t + b * dm;
    const T* mb = x.m + b * L * dm;
    T* a = x.alpha != nullptr ? x.alpha + b * L : scratch;
    const T nt = std::sqrt(Dot(t, t, dm) + eps);
    for (int64_t i = 0; i < n; ++i) {
      T dot, sq;
      DotAndSquaredNorm(t, mb + i * dm, dm, &dot, &sq);
      a[i] = dot / (nt * std::sqrt(sq + eps));
    }
    if (x.alpha != nullptr) std::fill(a + n, a + L, T(0));
    WeightedRowSum<T, kTile>(a, mb, n, dm, x.h_mm + b * dm);
    WeightedRowSum<T, kTile>(a, x.h + b * L * d, n, d, x.h_fusion + b * d);
  }
}

template <typename T>
void ForwardRowsBaseline(const ForwardArgs<T>& x, int64_t lo, int64_t hi,
                         T* scratch) {
  ForwardRows<T, 32>(x, lo, hi, scratch);  // 8 SSE accumulators
}
template <typename T>
MIM_TARGET_AVX2 void ForwardRowsAvx2(const ForwardArgs<T>& x, int64_t lo,
                                     int64_t hi, T* scratch) {
  ForwardRows<T, 64>(x, lo, hi, scratch);  // 8 AVX accumulators
}

absl::Status ValidateContent(const char* op, const ContentShape& s,
                             const int32_t* lens) {
  absl::Status st = ValidateSeq(op, s.content, lens);
  if (!st.ok()) return st;
  if (s.id_dim < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: id_dim %d < 0", op, s.id_dim));
  }
  return absl::OkStatus();
}

}  // namespace

template <typename T>
absl::Status ContentForward(const ContentShape& s, const T* m, const T* m_t,
                            const T* h, const int32_t* lens, T* alpha, T* h_mm,
                            T* h_fusion) {
  absl::Status st = ValidateContent("ContentFusionForwardCpu", s, lens);
  if (!st.ok()) return st;
  if (s.content.batch == 0) return absl::OkStatus();
  const int64_t L = s.content.max_len, dm = s.content.dim;
  st = RequireNonNull("ContentFusionForwardCpu",
                      {{"m", m, L * dm > 0},
                       {"m_t", m_t, true},
                       {"h_mm", h_mm, true},
                       {"h_fusion", h_fusion, true},
                       {"h", h, L * s.id_dim > 0}});
  if (!st.ok()) return st;
  const ForwardArgs<T> args{s.content.max_len, s.content.dim, s.id_dim, m, m_t,
                            h, lens, alpha, h_mm, h_fusion};
  const bool avx2 = UseAvx2();
  ParallelForBalanced(s.content.batch, [&](int64_t lo, int64_t hi) {
    std::vector<T> scratch(alpha == nullptr ? s.content.max_len : 0);
    if (avx2) {
      ForwardRowsAvx2<T>(args, lo, hi, scratch.data());
    } else {
      ForwardRowsBaseline<T>(args, lo, hi, scratch.data());
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status ContentBackward(const ContentShape& s, const T* m, const T* m_t,
                             const T* h, const int32_t* lens, const T* grad_mm,
                             const T* grad_fusion, T* grad_m, T* grad_m_t,
                             T* grad_h) {
  absl::Status st = ValidateContent("ContentFusionBackwardCpu", s, lens);
  if (!st.ok()) return st;
  if (s.content.batch == 0) return absl::OkStatus();
  // grad_m, grad_m_t and grad_h may be null (skipped).
  const int64_t L = s.content.max_len, dm = s.content.dim;
  st = RequireNonNull("ContentFusionBackwardCpu",
                      {{"m", m, L * dm > 0},
                       {"m_t", m_t, true},
                       {"h", h, L * s.id_dim > 0},
                       {"grad_mm", grad_mm, dm > 0},
                       {"grad_fusion", grad_fusion, s.id_dim > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.id_dim;
  const T eps = T(kContentCosineEps);
  ParallelForBalanced(s.content.batch, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n = lens[b];
      const T* t = m_t + b * dm;
      const T* gmm = grad_mm + b * dm;
      const T* gfu = grad_fusion + b * d;
      if (grad_m != nullptr) {
        std::fill_n(grad_m + (b * L + n) * dm, (L - n) * dm, T(0));
      }
      if (grad_h != nullptr) {
        std::fill_n(grad_h + (b * L + n) * d, (L - n) * d, T(0));
      }
      T* gt = grad_m_t != nullptr ? grad_m_t + b * dm : nullptr;
      if (gt != nullptr) std::fill_n(gt, dm, T(0));
      const T nt = std::sqrt(Dot(t, t, dm) + eps);
      // d alpha / d m_t = m_i/(nt nm) - alpha m_t/nt^2: the m_t term is
      // collected as one scalar and applied after the loop.
      T coef_t = 0;
      for (int64_t i = 0; i < n; ++i) {
        const T* mi = m + (b * L + i) * dm;
        const T* hi_ = h + (b * L + i) * d;
        T dot, sq;
        DotAndSquaredNorm(t, mi, dm, &dot, &sq);
        const T nm = std::sqrt(sq + eps);
        const T inv = T(1) / (nt * nm);
        const T a = dot * inv;
        const T da = Dot(gmm, mi, dm) + Dot(gfu, hi_, d);
        if (grad_h != nullptr) {
          T* gh = grad_h + (b * L + i) * d;
          for (int64_t k = 0; k < d; ++k) gh[k] = a * gfu[k];
        }
        if (grad_m != nullptr) {
          T* gm = grad_m + (b * L + i) * dm;
          const T cm = da * a / (nm * nm);
          for (int64_t k = 0; k < dm; ++k) {
            gm[k] = a * gmm[k] + da * inv * t[k] - cm * mi[k];
          }
        }
        if (gt != nullptr) {
          for (int64_t k = 0; k < dm; ++k) gt[k] += da * inv * mi[k];
          coef_t += da * a;
        }
      }
      if (gt != nullptr) {
        const T c = coef_t / (nt * nt);
        for (int64_t k = 0; k < dm; ++k) gt[k] -= c * t[k];
      }
    }
  });
  return absl::OkStatus();
}

#define MIM_INSTANTIATE(T)                                                   \
  template absl::Status ContentForward<T>(const ContentShape&, const T*,     \
                                          const T*, const T*, const int32_t*, \
                                          T*, T*, T*);                        \
  template absl::Status ContentBackward<T>(                                  \
      const ContentShape&, const T*, const T*, const T*, const int32_t*,     \
      const T*, const T*, T*, T*, T*);
MIM_INSTANTIATE(float)
MIM_INSTANTIATE(double)
#undef MIM_INSTANTIATE

}  // namespace cpu

absl::Status ContentFusionForwardCpu(const ContentShape& s, const float* m,
                                     const float* m_t, const float* h,
                                     const int32_t* lens, float* alpha,
                                     float* h_mm, float* h_fusion) {
  return cpu::ContentForward<float>(s, m, m_t, h, lens, alpha, h_mm,
                                    h_fusion);
}
absl::Status ContentFusionBackwardCpu(const ContentShape& s, const float* m,
                                      const float* m_t, const float* h,
                                      const int32_t* lens,
                                      const float* grad_mm,
                                      const float* grad_fusion, float* grad_m,
                                      float* grad_m_t, float* grad_h) {
  return cpu::ContentBackward<float>(s, m, m_t, h, lens, grad_mm, grad_fusion,
                                     grad_m, grad_m_t, grad_h);
}

}  // namespace mim::kernels
