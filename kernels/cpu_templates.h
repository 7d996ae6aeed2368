// Internal: the CPU twins as templates on the element type. The public API
// instantiates them for float; tests also instantiate them for double so
// every backward can be checked against central finite differences in
// double precision on exactly the code path that ships.
// Not part of the public API (visibility is package-private).
#ifndef MIM_KERNELS_CPU_TEMPLATES_H_
#define MIM_KERNELS_CPU_TEMPLATES_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/attention_ops.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/dense_ops.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels::cpu {

template <typename T>
struct MlpParams {
  const T *w1, *b1, *w2, *b2, *w3, *b3;
};
template <typename T>
struct MlpGrads {
  T *w1, *b1, *w2, *b2, *w3, *b3;
};

template <typename T>
absl::Status Gather(const GatherShape& s, const T* table, const int32_t* index,
                    T* out);
template <typename T>
absl::Status GatherBackward(const GatherShape& s, const T* grad_out,
                            const int32_t* index, T* grad_table);

template <typename T>
absl::Status DinForward(const SeqShape& s, const AttentionMlpShape& m,
                        const T* h, const T* h_t, const int32_t* lens,
                        const MlpParams<T>& p, T* scores, T* out);
template <typename T>
absl::Status DinBackward(const SeqShape& s, const AttentionMlpShape& m,
                         const T* h, const T* h_t, const int32_t* lens,
                         const MlpParams<T>& p, const T* grad_out, T* grad_h,
                         T* grad_h_t, const MlpGrads<T>& g);

template <typename T>
absl::Status ContentForward(const ContentShape& s, const T* m, const T* m_t,
                            const T* h, const int32_t* lens, T* alpha, T* h_mm,
                            T* h_fusion);
template <typename T>
absl::Status ContentBackward(const ContentShape& s, const T* m, const T* m_t,
                             const T* h, const int32_t* lens, const T* grad_mm,
                             const T* grad_fusion, T* grad_m, T* grad_m_t,
                             T* grad_h);

template <typename T>
absl::Status MeanPoolForward(const SeqShape& s, const T* x,
                             const int32_t* lens, T* out);
template <typename T>
absl::Status MeanPoolBackward(const SeqShape& s, const T* grad_out,
                              const int32_t* lens, T* grad_x);
template <typename T>
absl::Status SelectRowsForward(const SeqShape& s, const T* x,
                               const int32_t* positions, int k, T* out);
template <typename T>
absl::Status SelectRowsBackward(const SeqShape& s, const T* grad_out,
                                const int32_t* positions, int k, T* grad_x);

template <typename T>
absl::Status DenseForward(const DenseShape& s, const T* x, const T* w,
                          const T* b, Activation act, T* y);
template <typename T>
absl::Status DenseBackward(const DenseShape& s, const T* x, const T* w,
                           const T* y, const T* grad_y, Activation act,
                           T* grad_x, T* grad_w, T* grad_b);
template <typename T>
absl::Status SigmoidXentForward(int64_t n, const T* logits, const T* labels,
                                T* loss);
template <typename T>
absl::Status SigmoidXentBackward(int64_t n, const T* logits, const T* labels,
                                 T* grad_logits);

}  // namespace mim::kernels::cpu

#endif  // MIM_KERNELS_CPU_TEMPLATES_H_
