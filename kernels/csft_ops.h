// C-SFT (contrastive fine-tuning of content embeddings, the MIM paradigm's
// second stage) math, forward and backward:
//   tensor fusion   z = vec([a; 1] (outer) [b; 1])       [rows, (da+1)(db+1)]
//   L2 normalise    y = x / sqrt(|x|^2 + eps)            eps = kCsftNormEps
//   InfoNCE         L = mean_b -log softmax_j(q_b . c_j / tau)[b]
//
// Shared failure contract of kernels/common.h (INVALID_ARGUMENT for a bad
// shape, a non-positive temperature or a required null pointer). Outputs are
// overwritten. The CPU twins are templates (csft_cpu.h) instantiated for
// float (shipped) and double (finite-difference tests). The CUDA twins
// (csft_cuda.cu; all pointers device memory, the loss and negative counts
// too) are checked against them on the grid emulator in every CI run
// (kernels_cuda_test.cc); without --config=cuda they return UNIMPLEMENTED.
// //worker/csft:csft itself runs on the CPU twins.
#ifndef MIM_KERNELS_CSFT_OPS_H_
#define MIM_KERNELS_CSFT_OPS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace mim::kernels {

inline constexpr double kCsftNormEps = 1e-12;

// a [rows, dim_a], b [rows, dim_b] -> out [rows, (dim_a+1)*(dim_b+1)],
// out[r, i*(dim_b+1)+j] = ah[i]*bh[j] with ah = [a_r; 1], bh = [b_r; 1]:
// the flattened outer product keeps a, b and every product a_i b_j.
struct TensorFusionShape {
  int64_t rows = 0;
  int64_t dim_a = 0;
  int64_t dim_b = 0;
  int64_t out_dim() const { return (dim_a + 1) * (dim_b + 1); }
};

absl::Status TensorFusionForwardCpu(const TensorFusionShape& s, const float* a,
                                    const float* b, float* out);
absl::Status TensorFusionForwardCuda(const TensorFusionShape& s,
                                     const float* a, const float* b,
                                     float* out);
// grad_a [rows, dim_a] and grad_b [rows, dim_b]; either may be null to skip.
absl::Status TensorFusionBackwardCpu(const TensorFusionShape& s,
                                     const float* a, const float* b,
                                     const float* grad_out, float* grad_a,
                                     float* grad_b);
absl::Status TensorFusionBackwardCuda(const TensorFusionShape& s,
                                      const float* a, const float* b,
                                      const float* grad_out, float* grad_a,
                                      float* grad_b);

// Row-wise y = x / sqrt(|x|^2 + kCsftNormEps); a zero row stays zero.
absl::Status L2NormalizeForwardCpu(int64_t rows, int64_t dim, const float* x,
                                   float* y);
absl::Status L2NormalizeForwardCuda(int64_t rows, int64_t dim, const float* x,
                                    float* y);
// grad_x = grad_y / n - x (x . grad_y) / n^3, n = sqrt(|x|^2 + eps).
absl::Status L2NormalizeBackwardCpu(int64_t rows, int64_t dim, const float* x,
                                    const float* grad_y, float* grad_x);
absl::Status L2NormalizeBackwardCuda(int64_t rows, int64_t dim,
                                     const float* x, const float* grad_y,
                                     float* grad_x);

// Queries q [batch, dim] against candidates c [candidates, dim]; candidate b
// is query b's positive (so candidates >= batch); the rest are negatives
// shared by every query (in-batch positives of other rows, hard negatives,
// a queue). Masking, when ids are given: for query b, a candidate j != b
// with cand_ids[j] == cand_ids[b] (the positive item again) or
// cand_ids[j] == query_ids[b] (the query item itself) is left out of the
// softmax, so a popular item twice in a batch is never its own negative.
// query_ids may be null (no query mask); cand_ids null means no masking.
struct InfoNceShape {
  int64_t batch = 0;
  int64_t candidates = 0;
  int64_t dim = 0;
};

// Writes *loss (mean over the batch), prob [batch, candidates] (softmax,
// 0 where masked) and, if non-null, negatives [batch]: the number of
// candidates each query was contrasted with besides its positive.
absl::Status InfoNceForwardCpu(const InfoNceShape& s, float temperature,
                               const float* q, const float* c,
                               const int64_t* query_ids,
                               const int64_t* cand_ids, float* loss,
                               float* prob, int32_t* negatives);
absl::Status InfoNceForwardCuda(const InfoNceShape& s, float temperature,
                                const float* q, const float* c,
                                const int64_t* query_ids,
                                const int64_t* cand_ids, float* loss,
                                float* prob, int32_t* negatives);
// Gradients of grad_loss * loss given the forward's prob: grad_q
// [batch, dim], grad_c [candidates, dim]; either may be null to skip.
absl::Status InfoNceBackwardCpu(const InfoNceShape& s, float temperature,
                                const float* q, const float* c,
                                const float* prob, float grad_loss,
                                float* grad_q, float* grad_c);
absl::Status InfoNceBackwardCuda(const InfoNceShape& s, float temperature,
                                 const float* q, const float* c,
                                 const float* prob, float grad_loss,
                                 float* grad_q, float* grad_c);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_CSFT_OPS_H_
