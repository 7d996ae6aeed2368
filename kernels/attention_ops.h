// DIN target attention, fused: score_i = MLP([h_i, h_t, h_i - h_t, h_i*h_t])
// with hidden layers 80-40 (ReLU) and a linear scalar output, no softmax;
// out = sum_{i < len} score_i * h_i.
//
// The 4d-wide MLP input is never materialised. Writing the first layer as
// W1 = [Wa; Wb; Wc; Wd] (each dim x hidden1),
//   x W1 = h_i (Wa + Wc + diag(h_t) Wd) + h_t (Wb - Wc),
// so per target row we build W_eff = Wa + Wc + diag(h_t) Wd and
// c = h_t (Wb - Wc) + b1 once and run one GEMM over the row's behaviours.
#ifndef MIM_KERNELS_ATTENTION_OPS_H_
#define MIM_KERNELS_ATTENTION_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/common.h"

namespace mim::kernels {

// MLP sizes. hidden1/hidden2 default to DIN's 80-40; any positive sizes work.
struct AttentionMlpShape {
  int64_t hidden1 = 80;
  int64_t hidden2 = 40;
};

// Number of floats in each parameter, for allocation.
//   w1: (4*dim) x hidden1, rows ordered [Wa; Wb; Wc; Wd]   b1: hidden1
//   w2: hidden1 x hidden2                                   b2: hidden2
//   w3: hidden2 (a hidden2 x 1 column)                      b3: 1
int64_t AttentionW1Size(int64_t dim, const AttentionMlpShape& m);

// Read-only parameters (host or device pointers, matching the twin called).
struct AttentionMlpParams {
  const float* w1 = nullptr;
  const float* b1 = nullptr;
  const float* w2 = nullptr;
  const float* b2 = nullptr;
  const float* w3 = nullptr;
  const float* b3 = nullptr;
};

// Parameter gradients, same layouts; overwritten (not accumulated).
struct AttentionMlpGrads {
  float* w1 = nullptr;
  float* b1 = nullptr;
  float* w2 = nullptr;
  float* b2 = nullptr;
  float* w3 = nullptr;
  float* b3 = nullptr;
};

// h: [B, L, d] behaviours; h_t: [B, d] targets; lens: [B].
// Writes out: [B, d] and, if `scores` is non-null, scores: [B, L] (0 at
// padding). A row with lens 0 gets out = 0.
absl::Status DinAttentionForwardCpu(const SeqShape& s,
                                    const AttentionMlpShape& m,
                                    const float* h, const float* h_t,
                                    const int32_t* lens,
                                    const AttentionMlpParams& p, float* scores,
                                    float* out);
absl::Status DinAttentionForwardCuda(const SeqShape& s,
                                     const AttentionMlpShape& m,
                                     const float* h, const float* h_t,
                                     const int32_t* lens,
                                     const AttentionMlpParams& p,
                                     float* scores, float* out);

// Given grad_out: [B, d] (dLoss/dout), writes grad_h: [B, L, d] (0 at
// padding), grad_h_t: [B, d] and all parameter grads. Recomputes the
// forward activations internally (no cache to keep between calls).
// grad_h or grad_h_t may be null to skip them.
absl::Status DinAttentionBackwardCpu(const SeqShape& s,
                                     const AttentionMlpShape& m,
                                     const float* h, const float* h_t,
                                     const int32_t* lens,
                                     const AttentionMlpParams& p,
                                     const float* grad_out, float* grad_h,
                                     float* grad_h_t,
                                     const AttentionMlpGrads& g);
absl::Status DinAttentionBackwardCuda(const SeqShape& s,
                                      const AttentionMlpShape& m,
                                      const float* h, const float* h_t,
                                      const int32_t* lens,
                                      const AttentionMlpParams& p,
                                      const float* grad_out, float* grad_h,
                                      float* grad_h_t,
                                      const AttentionMlpGrads& g);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_ATTENTION_OPS_H_
