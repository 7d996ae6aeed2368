// Building blocks of the CiUBM model, each with forward and backward on a
// kernels::ComputeBackend, so each can be tested on its own. Internal to
// worker/model (the public API is ciubm_model.h).
//
// Conventions: row-major float32; outputs and gradients are overwritten;
// buffers grow on first use and are reused afterwards. Every op runs on the
// kernels::ComputeBackend given at construction (it must outlive the
// module), and every pointer argument is in that backend's memory (host
// memory for the CPU, device memory for CUDA); so are the modules' own
// buffers. A module keeps its last Forward's inputs for Backward, so it is
// per-call state: one per model workspace, never shared.
#ifndef MIM_WORKER_MODEL_MODULES_H_
#define MIM_WORKER_MODEL_MODULES_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/attention_ops.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"
#include "kernels/common.h"
#include "worker/model/ciubm_model.h"

namespace mim::model {

// A [rows, width] block taking part in a column concat.
struct ColumnBlock {
  const float* data = nullptr;
  int64_t width = 0;
};
struct MutableColumnBlock {
  float* data = nullptr;  // null: skip this block (its columns are dropped)
  int64_t width = 0;
};

// out[r, off_k : off_k + w_k] = in_k[r, :], off_k = sum of earlier widths,
// on `backend`. out must hold rows * sum(w_k) floats. Errors: the
// backend's (CopyColumns).
absl::Status ConcatColumns(const kernels::ComputeBackend& backend,
                           int64_t rows, absl::Span<const ColumnBlock> in,
                           float* out);
// The inverse (the backward of ConcatColumns): out_k[r, :] =
// in[r, off_k : off_k + w_k]. `in` has rows * sum(w_k) floats.
absl::Status SplitColumns(const kernels::ComputeBackend& backend,
                          int64_t rows, const float* in,
                          absl::Span<const MutableColumnBlock> out);

// ID interest of one backbone over behaviours h [B, L, d] and target
// h_t [B, d]: masked mean (kAvgPool), DIN attention (kDin) or top-k by dot
// product then DIN (kSim). Not thread-safe.
class IdInterestModule {
 public:
  IdInterestModule(const kernels::ComputeBackend& backend, Backbone backbone,
                   int64_t dim, const kernels::AttentionMlpShape& att,
                   int sim_k);

  // Floats of attention parameters (0 for kAvgPool), laid out as
  // w1 b1 w2 b2 w3 b3 (kernels/attention_ops.h).
  int64_t num_params() const;

  // out [B, d]. Keeps the pointers for Backward: h, h_t, lens and params
  // must stay valid and unchanged until Backward returns.
  absl::Status Forward(const kernels::SeqShape& s, const float* h,
                       const float* h_t, const int32_t* lens,
                       const float* params, float* out);
  // From grad_out [B, d] of the last Forward: grad_h [B, L, d] (0 at
  // padding and, for kSim, at unselected positions), grad_h_t [B, d]
  // (0 for kAvgPool), grad_params [num_params()].
  absl::Status Backward(const float* grad_out, float* grad_h,
                        float* grad_h_t, float* grad_params);

 private:
  kernels::AttentionMlpParams Params(const float* p) const;
  kernels::AttentionMlpGrads Grads(float* p) const;  // same layout

  const kernels::ComputeBackend* backend_;
  Backbone backbone_;
  int64_t dim_;
  kernels::AttentionMlpShape att_;
  int sim_k_;
  // Last Forward's inputs.
  kernels::SeqShape shape_;
  const float* h_ = nullptr;
  const float* h_t_ = nullptr;
  const int32_t* lens_ = nullptr;
  const float* params_ = nullptr;
  int k_ = 0;  // kSim: min(sim_k, L)
  // kSim buffers.
  kernels::BackendArray<int32_t> positions_, new_lens_;
  kernels::BackendArray<float> selected_, grad_selected_;
};

// Content interest + fusion over content m [B, L, dm], m_t [B, dm] and ID
// embeddings h [B, L, d]: h_mm = sum a_i m_i, h_fusion = sum a_i h_i with
// a_i = cos(m_t, m_i). Content vectors are frozen: no gradient for them.
// Not thread-safe.
class ContentInterestModule {
 public:
  ContentInterestModule(const kernels::ComputeBackend& backend,
                        int64_t id_dim, int64_t content_dim);

  // h_mm [B, dm], h_fusion [B, d]. Keeps the input pointers for Backward.
  absl::Status Forward(const kernels::SeqShape& s, const float* m,
                       const float* m_t, const float* h, const int32_t* lens,
                       float* h_mm, float* h_fusion);
  // grad_h [B, L, d] from grad_mm [B, dm] and grad_fusion [B, d]; either
  // may be null (treated as zero, i.e. that output is not used).
  absl::Status Backward(const float* grad_mm, const float* grad_fusion,
                        float* grad_h);

 private:
  const kernels::ComputeBackend* backend_;
  int64_t id_dim_, content_dim_;
  kernels::SeqShape shape_;
  const float* m_ = nullptr;
  const float* m_t_ = nullptr;
  const float* h_ = nullptr;
  const int32_t* lens_ = nullptr;
  kernels::BackendArray<float> zeros_;
};

// MLP tower: hidden ReLU layers then one linear output (the logit).
// Parameters per layer: w [in, out] then b [out]. Not thread-safe.
class MlpTower {
 public:
  MlpTower(const kernels::ComputeBackend& backend, int64_t input_width,
           const std::vector<int>& hidden);

  int64_t num_params() const;
  int64_t input_width() const { return widths_.front(); }
  // Widths of every layer boundary: input, hidden..., 1.
  const std::vector<int64_t>& widths() const { return widths_; }

  // logits [rows]. Keeps x and params for Backward.
  absl::Status Forward(int64_t rows, const float* x, const float* params,
                       float* logits);
  // grad_x [rows, input_width] (may be null) and grad_params.
  absl::Status Backward(const float* grad_logits, float* grad_x,
                        float* grad_params);

 private:
  const kernels::ComputeBackend* backend_;
  std::vector<int64_t> widths_;
  int64_t rows_ = 0;
  const float* x_ = nullptr;
  const float* params_ = nullptr;
  std::vector<kernels::BackendArray<float>> acts_;   // outputs of each layer
  std::vector<kernels::BackendArray<float>> grads_;  // grads of each layer's input
};

}  // namespace mim::model

#endif  // MIM_WORKER_MODEL_MODULES_H_
