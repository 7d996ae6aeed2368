// Data movement inside one memory space, for a model that keeps its
// activations in the backend's memory: the column copies of a feature
// concat (and its backward split) and an in-place add.
#ifndef MIM_KERNELS_MEMORY_OPS_H_
#define MIM_KERNELS_MEMORY_OPS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace mim::kernels {

// A strided block of `rows` x `width` floats: dst[r * dst_stride + c] =
// src[r * src_stride + c] for c < width. Strides are in floats and must be
// >= width; the blocks must not overlap. INVALID_ARGUMENT for a negative
// size, a stride below width or a null pointer with rows * width > 0.
struct ColumnCopyShape {
  int64_t rows = 0;
  int64_t width = 0;
  int64_t src_stride = 0;
  int64_t dst_stride = 0;
};
absl::Status CopyColumnsCpu(const ColumnCopyShape& s, const float* src,
                            float* dst);
absl::Status CopyColumnsCuda(const ColumnCopyShape& s, const float* src,
                             float* dst);

// dst[i] += src[i] for i < n. INVALID_ARGUMENT for n < 0 or a null
// pointer with n > 0.
absl::Status AddIntoCpu(int64_t n, const float* src, float* dst);
absl::Status AddIntoCuda(int64_t n, const float* src, float* dst);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_MEMORY_OPS_H_
