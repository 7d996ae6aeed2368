// Sequence utilities: masked average pooling, SIM-style top-K behaviour
// selection and the gather of the selected behaviours.
#ifndef MIM_KERNELS_SEQUENCE_OPS_H_
#define MIM_KERNELS_SEQUENCE_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/common.h"

namespace mim::kernels {

// out[b] = mean_{i < lens[b]} x[b, i]  ([B, d]); a row with lens 0 gives 0.
absl::Status MaskedMeanPoolForwardCpu(const SeqShape& s, const float* x,
                                      const int32_t* lens, float* out);
absl::Status MaskedMeanPoolForwardCuda(const SeqShape& s, const float* x,
                                       const int32_t* lens, float* out);
// grad_x[b, i] = grad_out[b] / lens[b] for i < lens[b], else 0.
absl::Status MaskedMeanPoolBackwardCpu(const SeqShape& s,
                                       const float* grad_out,
                                       const int32_t* lens, float* grad_x);
absl::Status MaskedMeanPoolBackwardCuda(const SeqShape& s,
                                        const float* grad_out,
                                        const int32_t* lens, float* grad_x);

// SIM hard search: picks the k behaviours i < lens[b] with the largest DOT
// PRODUCT x[b, i] . target[b] (pass L2-normalised vectors for cosine).
// Ties: the lower position wins. NaN scores rank lowest.
// Writes positions [B, k] (int32, selected positions in increasing order,
// i.e. original sequence order; -1 after the first new_lens[b] slots) and
// new_lens[b] = min(lens[b], k). Not differentiable (no backward); the
// gradient flows through SelectRows. Requires k >= 1.
absl::Status TopKSelectCpu(const SeqShape& s, const float* x,
                           const float* target, const int32_t* lens, int k,
                           int32_t* positions, int32_t* new_lens);
absl::Status TopKSelectCuda(const SeqShape& s, const float* x,
                            const float* target, const int32_t* lens, int k,
                            int32_t* positions, int32_t* new_lens);

// Gathers within each row: out[b, j] = x[b, positions[b, j]] for
// positions >= 0, else 0. `s` describes x; out is [B, k, dim].
// Errors: INVALID_ARGUMENT if a position >= s.max_len (both twins; the
// CUDA twin checks on the device and synchronizes to report it).
absl::Status SelectRowsForwardCpu(const SeqShape& s, const float* x,
                                  const int32_t* positions, int k, float* out);
absl::Status SelectRowsForwardCuda(const SeqShape& s, const float* x,
                                   const int32_t* positions, int k,
                                   float* out);
// grad_x [B, L, d] = scatter-add of grad_out [B, k, d] to the positions
// (overwritten; unselected positions get 0). Positions within a row may
// repeat; sums run in increasing j (deterministic on both twins).
absl::Status SelectRowsBackwardCpu(const SeqShape& s, const float* grad_out,
                                   const int32_t* positions, int k,
                                   float* grad_x);
absl::Status SelectRowsBackwardCuda(const SeqShape& s, const float* grad_out,
                                    const int32_t* positions, int k,
                                    float* grad_x);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_SEQUENCE_OPS_H_
