// Dense layers, the CTR loss and the Adam update for dense parameters.
// CPU uses CBLAS (OpenBLAS); CUDA uses cuBLAS, in strict fp32 unless
// SetCudaMath(kTf32).
#ifndef MIM_KERNELS_DENSE_OPS_H_
#define MIM_KERNELS_DENSE_OPS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace mim::kernels {

// y [rows, out] = act(x [rows, in] * w [in, out] + b [out]).
struct DenseShape {
  int64_t rows = 0;
  int64_t in = 0;
  int64_t out = 0;
};

enum class Activation { kNone, kRelu };

// The math of every cuBLAS GEMM of the CUDA twins (the dense layers and
// the DIN attention MLP's layers). kFp32: strict fp32 (CUBLAS_DEFAULT_MATH).
// kTf32: TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH): each operand
// rounded to a 10-bit mantissa, products accumulated in fp32, so an output
// is within about 2^-10 * sum_k |x_k w_k| of the exact product
// (kernels_cuda_test.cc checks the bound). The CPU twins, and the project's
// own kernels, are unaffected. Process-wide; a GEMM of an op started after
// the call uses it. Safe for concurrent access.
enum class CudaMath { kFp32, kTf32 };
void SetCudaMath(CudaMath math);
CudaMath GetCudaMath();

absl::Status DenseForwardCpu(const DenseShape& s, const float* x,
                             const float* w, const float* b, Activation act,
                             float* y);
absl::Status DenseForwardCuda(const DenseShape& s, const float* x,
                              const float* w, const float* b, Activation act,
                              float* y);

// Given y from the forward (used for the ReLU mask: y > 0) and grad_y,
// writes grad_x [rows, in] (may be null, e.g. for the first layer),
// grad_w [in, out] and grad_b [out] (overwritten).
absl::Status DenseBackwardCpu(const DenseShape& s, const float* x,
                              const float* w, const float* y,
                              const float* grad_y, Activation act,
                              float* grad_x, float* grad_w, float* grad_b);
absl::Status DenseBackwardCuda(const DenseShape& s, const float* x,
                               const float* w, const float* y,
                               const float* grad_y, Activation act,
                               float* grad_x, float* grad_w, float* grad_b);

// Sigmoid cross-entropy with logits, mean over n:
//   loss = mean(max(z, 0) - z*y + log1p(exp(-|z|)))   (stable form)
// `loss` points to one float (device memory for the CUDA twin). The CUDA
// reduction is a fixed-order tree, so it is deterministic. Requires n >= 1.
absl::Status SigmoidCrossEntropyForwardCpu(int64_t n, const float* logits,
                                           const float* labels, float* loss);
absl::Status SigmoidCrossEntropyForwardCuda(int64_t n, const float* logits,
                                            const float* labels, float* loss);
// grad_logits = (sigmoid(z) - y) / n.
absl::Status SigmoidCrossEntropyBackwardCpu(int64_t n, const float* logits,
                                            const float* labels,
                                            float* grad_logits);
absl::Status SigmoidCrossEntropyBackwardCuda(int64_t n, const float* logits,
                                             const float* labels,
                                             float* grad_logits);

struct AdamConfig {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
};

// One Adam step (Kingma & Ba, with bias correction) on n parameters:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
// `step` is t, starting at 1; m and v start at 0 and are updated in place.
absl::Status AdamUpdateCpu(const AdamConfig& c, int64_t step, int64_t n,
                           const float* grad, float* param, float* m,
                           float* v);
absl::Status AdamUpdateCuda(const AdamConfig& c, int64_t step, int64_t n,
                            const float* grad, float* param, float* m,
                            float* v);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_DENSE_OPS_H_
