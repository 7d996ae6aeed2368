// Sparse optimizers: pure functions that update one embedding row in place.
//
// Each function takes the row's `dim` values, its optimizer state (laid out
// as StateFloatsPerDim(config) consecutive blocks of `dim` floats) and the
// summed gradient for the row. They touch nothing else, so they can be
// checked against hand-computed numbers and applied under a row's lock by
// EmbeddingTable.
//
// Thread-safety: the functions are reentrant; callers serialize access to a
// given row.
#ifndef MIM_EMBEDDING_OPTIMIZERS_H_
#define MIM_EMBEDDING_OPTIMIZERS_H_

#include <cstdint>
#include <string>

#include "embedding/table_config.h"

namespace mim::embedding {

// Sets the state of a new row: Adagrad's accumulator to
// config.initial_accumulator, everything else to zero.
void InitOptimizerState(const OptimizerConfig& config, uint32_t dim,
                        float* state);

// w -= lr * g.
void SgdUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
               float* row);

// state = [accumulator]. acc += g^2; w -= lr * g / (sqrt(acc) + epsilon).
void AdagradUpdate(const OptimizerConfig& config, uint32_t dim,
                   const float* grad, float* row, float* state);

// state = [m, v]; `step` is the row's own update count including this one
// (1 on the first push), used for bias correction:
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// w -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + epsilon).
void AdamUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
                uint32_t step, float* row, float* state);

// FTRL-proximal (McMahan et al. 2013, in TensorFlow's formulation with
// learning_rate_power p = lr_power), state = [z, n]:
// n' = n + g^2; sigma = (n'^-p - n^-p) / lr; z += g - sigma w;
// w = |z| <= l1 ? 0 : (sign(z) l1 - z) / (n'^-p / lr + 2 l2).
void FtrlUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
                float* row, float* state);

// Checks a row's optimizer state read back from storage: every float must
// be finite, and those an update takes a square root or power of (Adagrad's
// accumulator, Adam's v, FTRL's n) >= 0, as every update leaves them.
// Returns "" when the state is valid, otherwise what is wrong with the
// first bad float, e.g. "adam v[3] is -1, must be finite and >= 0".
std::string CheckOptimizerState(const OptimizerConfig& config, uint32_t dim,
                                const float* state);

// Dispatches on config.kind.
void ApplyOptimizer(const OptimizerConfig& config, uint32_t dim,
                    const float* grad, uint32_t step, float* row, float* state);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_OPTIMIZERS_H_
