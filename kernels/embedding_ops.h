// Embedding gather (forward) and its segment-sum backward.
//
// A worker pulls a block of U unique embedding rows (U x dim) from the
// parameter server and expands it into batch tensors by int32 index.
// Backward sums the gradients of every use of a row back into that row, so
// the worker pushes one gradient per unique key.
#ifndef MIM_KERNELS_EMBEDDING_OPS_H_
#define MIM_KERNELS_EMBEDDING_OPS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace mim::kernels {

// Gather shape: `rows` x `dim` table, `num_indices` lookups.
struct GatherShape {
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t num_indices = 0;
};

// How the CUDA backward accumulates. CPU is always deterministic.
enum class GradMode {
  // Bit-identical results run to run: indices are sorted (stable) and each
  // row's gradients are summed in index order (CSR segment sum).
  kDeterministic,
  // Float atomics: faster, but summation order (hence last bits) varies.
  kAtomic,
};

// out[n, :] = table[index[n], :] for n < num_indices. index[n] < 0 marks
// padding: out[n, :] = 0. Errors: INVALID_ARGUMENT if index[n] >= rows
// (CPU checks all; CUDA checks too and synchronizes to report it).
absl::Status EmbeddingGatherCpu(const GatherShape& s, const float* table,
                                const int32_t* index, float* out);
absl::Status EmbeddingGatherCuda(const GatherShape& s, const float* table,
                                 const int32_t* index, float* out);

// grad_table[r, :] = sum over n with index[n] == r of grad_out[n, :];
// rows never referenced get 0; negative indices contribute nothing.
// grad_table is overwritten. Errors: INVALID_ARGUMENT if index[n] >= rows,
// in both modes (CUDA checks on the device and synchronizes). The CPU twin ignores `mode`: it always sums
// each row in increasing n. CUDA kDeterministic sums each row in increasing
// n too (stable sort by index, then a sequential segment sum), so the two
// agree bit for bit.
absl::Status EmbeddingGatherBackwardCpu(const GatherShape& s,
                                        const float* grad_out,
                                        const int32_t* index, GradMode mode,
                                        float* grad_table);
absl::Status EmbeddingGatherBackwardCuda(const GatherShape& s,
                                         const float* grad_out,
                                         const int32_t* index, GradMode mode,
                                         float* grad_table);

}  // namespace mim::kernels

#endif  // MIM_KERNELS_EMBEDDING_OPS_H_
