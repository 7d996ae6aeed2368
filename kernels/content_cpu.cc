// CPU twin of content_ops.h: one pass per row over the valid behaviours.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/content_ops.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"

namespace mim::kernels {
namespace cpu {
namespace {

// Dot products with 8 independent partial sums: the compiler keeps them in
// vector registers (a single running sum is one long dependency chain that
// strict IEEE ordering forbids it to vectorize). The summation order is
// fixed, so results stay deterministic.
constexpr int kLanes = 8;

template <typename T>
T Dot(const T* a, const T* b, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  T sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
          ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// <t, x> and <x, x> in one pass over x.
template <typename T>
void DotAndSquaredNorm(const T* t, const T* x, int64_t n, T* dot, T* sq) {
  T ad[kLanes] = {}, as[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      ad[j] += t[i + j] * x[i + j];
      as[j] += x[i + j] * x[i + j];
    }
  }
  T d = ((ad[0] + ad[1]) + (ad[2] + ad[3])) + ((ad[4] + ad[5]) + (ad[6] + ad[7]));
  T q = ((as[0] + as[1]) + (as[2] + as[3])) + ((as[4] + as[5]) + (as[6] + as[7]));
  for (; i < n; ++i) {
    d += t[i] * x[i];
    q += x[i] * x[i];
  }
  *dot = d;
  *sq = q;
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
  const int64_t L = s.content.max_len, dm = s.content.dim, d = s.id_dim;
  const T eps = T(kContentCosineEps);
  ParallelFor(s.content.batch, [&](int64_t lo, int64_t hi, int) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n = lens[b];
      const T* t = m_t + b * dm;
      T* omm = h_mm + b * dm;
      T* ofu = h_fusion + b * d;
      std::fill_n(omm, dm, T(0));
      std::fill_n(ofu, d, T(0));
      if (alpha != nullptr) std::fill_n(alpha + b * L, L, T(0));
      const T nt = std::sqrt(Dot(t, t, dm) + eps);
      for (int64_t i = 0; i < n; ++i) {
        const T* mi = m + (b * L + i) * dm;
        const T* hi_ = h + (b * L + i) * d;
        T dot, sq;
        DotAndSquaredNorm(t, mi, dm, &dot, &sq);
        const T a = dot / (nt * std::sqrt(sq + eps));
        if (alpha != nullptr) alpha[b * L + i] = a;
        for (int64_t k = 0; k < dm; ++k) omm[k] += a * mi[k];
        for (int64_t k = 0; k < d; ++k) ofu[k] += a * hi_[k];
      }
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
  const int64_t L = s.content.max_len, dm = s.content.dim, d = s.id_dim;
  const T eps = T(kContentCosineEps);
  ParallelFor(s.content.batch, [&](int64_t lo, int64_t hi, int) {
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
