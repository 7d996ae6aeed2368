#include "embedding/optimizers.h"

#include <cmath>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"

namespace mim::embedding {
namespace {

// One block of `dim` state floats: its name and whether it must be >= 0.
struct StateBlock {
  const char* name;
  bool non_negative;
};

std::string CheckBlocks(const char* optimizer,
                        std::initializer_list<StateBlock> blocks, uint32_t dim,
                        const float* state) {
  size_t i = 0;
  for (const StateBlock& block : blocks) {
    for (uint32_t d = 0; d < dim; ++d, ++i) {
      const float f = state[i];
      if (!std::isfinite(f) || (block.non_negative && f < 0)) {
        return absl::StrCat(optimizer, " ", block.name, "[", d, "] is ", f,
                            block.non_negative ? ", must be finite and >= 0"
                                               : ", must be finite");
      }
    }
  }
  return "";
}

}  // namespace

std::string CheckOptimizerState(const OptimizerConfig& config, uint32_t dim,
                                const float* state) {
  switch (config.kind) {
    case OptimizerKind::kSgd:
      return "";
    case OptimizerKind::kAdagrad:
      return CheckBlocks("adagrad", {{"accumulator", true}}, dim, state);
    case OptimizerKind::kAdam:
      return CheckBlocks("adam", {{"m", false}, {"v", true}}, dim, state);
    case OptimizerKind::kFtrl:
      return CheckBlocks("ftrl", {{"z", false}, {"n", true}}, dim, state);
  }
  return "unknown optimizer kind";
}

void InitOptimizerState(const OptimizerConfig& config, uint32_t dim,
                        float* state) {
  switch (config.kind) {
    case OptimizerKind::kSgd:
      return;
    case OptimizerKind::kAdagrad:
      for (uint32_t i = 0; i < dim; ++i) state[i] = config.initial_accumulator;
      return;
    case OptimizerKind::kAdam:
    case OptimizerKind::kFtrl:
      for (uint32_t i = 0; i < 2 * dim; ++i) state[i] = 0.0f;
      return;
  }
}

void SgdUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
               float* row) {
  const float lr = config.learning_rate;
  for (uint32_t i = 0; i < dim; ++i) row[i] -= lr * grad[i];
}

void AdagradUpdate(const OptimizerConfig& config, uint32_t dim,
                   const float* grad, float* row, float* state) {
  const float lr = config.learning_rate;
  const float eps = config.epsilon;
  for (uint32_t i = 0; i < dim; ++i) {
    const float g = grad[i];
    state[i] += g * g;
    row[i] -= lr * g / (std::sqrt(state[i]) + eps);
  }
}

void AdamUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
                uint32_t step, float* row, float* state) {
  const float b1 = config.beta1, b2 = config.beta2;
  const double t = step == 0 ? 1.0 : static_cast<double>(step);
  // Corrections in double: b^t for large t underflows gracefully to 0.
  const float c1 = static_cast<float>(1.0 - std::pow(double{b1}, t));
  const float c2 = static_cast<float>(1.0 - std::pow(double{b2}, t));
  const float lr = config.learning_rate;
  const float eps = config.epsilon;
  float* m = state;
  float* v = state + dim;
  for (uint32_t i = 0; i < dim; ++i) {
    const float g = grad[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * g * g;
    const float m_hat = m[i] / c1;
    const float v_hat = v[i] / c2;
    row[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

void FtrlUpdate(const OptimizerConfig& config, uint32_t dim, const float* grad,
                float* row, float* state) {
  const float lr = config.learning_rate;
  const float l1 = config.l1, l2 = config.l2;
  const float p = -config.lr_power;  // >= 0
  float* z = state;
  float* n = state + dim;
  for (uint32_t i = 0; i < dim; ++i) {
    const float g = grad[i];
    const float n_new = n[i] + g * g;
    const float pow_new = p == 0.5f ? std::sqrt(n_new) : std::pow(n_new, p);
    const float pow_old = p == 0.5f ? std::sqrt(n[i]) : std::pow(n[i], p);
    const float sigma = (pow_new - pow_old) / lr;
    z[i] += g - sigma * row[i];
    n[i] = n_new;
    const float denominator = pow_new / lr + 2.0f * l2;
    if (std::fabs(z[i]) <= l1 || !(denominator > 0.0f)) {
      // The second case: no squared gradient has accumulated yet (a first
      // gradient so small that g * g rounds to 0) and no l2, where the
      // closed form divides by zero; the weight stays 0, as before any
      // gradient.
      row[i] = 0.0f;
    } else {
      const float sign = z[i] < 0 ? -1.0f : 1.0f;
      row[i] = (sign * l1 - z[i]) / denominator;
    }
  }
}

void ApplyOptimizer(const OptimizerConfig& config, uint32_t dim,
                    const float* grad, uint32_t step, float* row,
                    float* state) {
  switch (config.kind) {
    case OptimizerKind::kSgd:
      SgdUpdate(config, dim, grad, row);
      return;
    case OptimizerKind::kAdagrad:
      AdagradUpdate(config, dim, grad, row, state);
      return;
    case OptimizerKind::kAdam:
      AdamUpdate(config, dim, grad, step, row, state);
      return;
    case OptimizerKind::kFtrl:
      FtrlUpdate(config, dim, grad, row, state);
      return;
  }
}

}  // namespace mim::embedding
