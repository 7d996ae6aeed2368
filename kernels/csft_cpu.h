// Internal: the C-SFT CPU twins as templates on the element type, so tests
// check every backward in double against central finite differences on the
// code path that ships (float). Not part of the public API.
#ifndef MIM_KERNELS_CSFT_CPU_H_
#define MIM_KERNELS_CSFT_CPU_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/csft_ops.h"

namespace mim::kernels::cpu {

template <typename T>
absl::Status TensorFusionForward(const TensorFusionShape& s, const T* a,
                                 const T* b, T* out);
template <typename T>
absl::Status TensorFusionBackward(const TensorFusionShape& s, const T* a,
                                  const T* b, const T* grad_out, T* grad_a,
                                  T* grad_b);
template <typename T>
absl::Status L2NormalizeForward(int64_t rows, int64_t dim, const T* x, T* y);
template <typename T>
absl::Status L2NormalizeBackward(int64_t rows, int64_t dim, const T* x,
                                 const T* grad_y, T* grad_x);
template <typename T>
absl::Status InfoNceForward(const InfoNceShape& s, T temperature, const T* q,
                            const T* c, const int64_t* query_ids,
                            const int64_t* cand_ids, T* loss, T* prob,
                            int32_t* negatives);
template <typename T>
absl::Status InfoNceBackward(const InfoNceShape& s, T temperature, const T* q,
                             const T* c, const T* prob, T grad_loss, T* grad_q,
                             T* grad_c);

}  // namespace mim::kernels::cpu

#endif  // MIM_KERNELS_CSFT_CPU_H_
