// Content interest and fusion (MIM / CiUBM), one pass over the sequence:
//   alpha_i  = cos(m_t, m_i)          content vectors, dim d_m
//   h_mm     = sum_{i<len} alpha_i m_i        [B, d_m]
//   h_fusion = sum_{i<len} alpha_i h_i        [B, d]   (ID embeddings)
//
// Cosine uses a smoothed norm so zero vectors are safe and differentiable:
//   cos(a, b) = a.b / (sqrt(|a|^2 + eps) * sqrt(|b|^2 + eps)),
// eps = kContentCosineEps. A zero vector gives alpha = 0.
#ifndef MIM_KERNELS_CONTENT_OPS_H_
#define MIM_KERNELS_CONTENT_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/common.h"

namespace mim::kernels {

inline constexpr float kContentCosineEps = 1e-8f;

// content: m [B, L, d_m] with targets m_t [B, d_m]; ids: h [B, L, d].
// batch and max_len must match between the two shapes.
struct ContentShape {
  SeqShape content;  // {B, L, d_m}
  int64_t id_dim = 0;  // d
};

// Writes h_mm [B, d_m], h_fusion [B, d] and, if non-null, alpha [B, L]
// (0 at padding).
absl::Status ContentFusionForwardCpu(const ContentShape& s, const float* m,
                                     const float* m_t, const float* h,
                                     const int32_t* lens, float* alpha,
                                     float* h_mm, float* h_fusion);
absl::Status ContentFusionForwardCuda(const ContentShape& s, const float* m,
                                      const float* m_t, const float* h,
                                      const int32_t* lens, float* alpha,
                                      float* h_mm, float* h_fusion);

// Given grad_mm [B, d_m] and grad_fusion [B, d], writes grad_m [B, L, d_m],
// grad_m_t [B, d_m], grad_h [B, L, d] (zeros at padding). Any output may be
// null to skip it (the trainer may keep content embeddings frozen).
absl::Status ContentFusionBackwardCpu(const ContentShape& s, const float* m,
                                      const float* m_t, const float* h,
                                      const int32_t* lens,
                                      const float* grad_mm,
                                      const float* grad_fusion, float* grad_m,
                                      float* grad_m_t, float* grad_h);
absl::Status ContentFusionBackwardCuda(const ContentShape& s, const float* m,
                                       const float* m_t, const float* h,
                                       const int32_t* lens,
                                       const float* grad_mm,
                                       const float* grad_fusion, float* grad_m,
                                       float* grad_m_t, float* grad_h);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_CONTENT_OPS_H_
