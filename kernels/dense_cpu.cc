// CPU twin of dense_ops.h on CBLAS. Rows are split across threads; each
// thread runs single-threaded BLAS on its slab.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"
#include "kernels/dense_ops.h"

namespace mim::kernels {
namespace cpu {
namespace {

absl::Status ValidateDense(const char* op, const DenseShape& s) {
  if (s.rows < 0 || s.in < 0 || s.out < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: negative shape rows=%d in=%d out=%d", op, s.rows, s.in, s.out));
  }
  return absl::OkStatus();
}

}  // namespace

template <typename T>
absl::Status DenseForward(const DenseShape& s, const T* x, const T* w,
                          const T* b, Activation act, T* y) {
  absl::Status st = ValidateDense("DenseForwardCpu", s);
  if (!st.ok()) return st;
  const int64_t n = s.rows * s.out;
  st = RequireNonNull("DenseForwardCpu", {{"x", x, n * s.in > 0},
                                          {"w", w, n * s.in > 0},
                                          {"b", b, n > 0},
                                          {"y", y, n > 0}});
  if (!st.ok()) return st;
  ParallelFor(s.rows, [&](int64_t lo, int64_t hi, int) {
    for (int64_t r = lo; r < hi; ++r) std::copy_n(b, s.out, y + r * s.out);
    Gemm(false, false, hi - lo, s.out, s.in, T(1), x + lo * s.in, s.in, w,
         s.out, T(1), y + lo * s.out, s.out);
    if (act == Activation::kRelu) {
      for (int64_t i = lo * s.out; i < hi * s.out; ++i) {
        y[i] = std::max(y[i], T(0));
      }
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status DenseBackward(const DenseShape& s, const T* x, const T* w,
                           const T* y, const T* grad_y, Activation act,
                           T* grad_x, T* grad_w, T* grad_b) {
  absl::Status st = ValidateDense("DenseBackwardCpu", s);
  if (!st.ok()) return st;
  const int64_t n = s.rows * s.out;
  st = RequireNonNull("DenseBackwardCpu",
                      {{"x", x, n * s.in > 0},
                       {"w", w, grad_x != nullptr && n * s.in > 0},
                       {"y", y, act == Activation::kRelu && n > 0},
                       {"grad_y", grad_y, n > 0},
                       {"grad_w", grad_w, s.in * s.out > 0},
                       {"grad_b", grad_b, s.out > 0}});
  if (!st.ok()) return st;
  // Chunk 0 writes straight into grad_w / grad_b; only the other chunks
  // need partial sums, added in chunk order (deterministic).
  const int chunks = NumChunks(s.rows);
  std::vector<std::vector<T>> gw(chunks), gb(chunks);
  ParallelForChunks(s.rows, chunks, [&](int64_t lo, int64_t hi, int chunk) {
    const T* dz = grad_y + lo * s.out;
    std::vector<T> masked;
    if (act == Activation::kRelu) {
      masked.resize((hi - lo) * s.out);
      for (int64_t i = 0; i < (hi - lo) * s.out; ++i) {
        masked[i] = y[lo * s.out + i] > T(0) ? dz[i] : T(0);
      }
      dz = masked.data();
    }
    T* cw = grad_w;
    T* cb = grad_b;
    if (chunk > 0) {
      gw[chunk].resize(s.in * s.out);
      gb[chunk].resize(s.out);
      cw = gw[chunk].data();
      cb = gb[chunk].data();
    }
    // beta = 0 overwrites cw (also when the chunk has no rows).
    Gemm(true, false, s.in, s.out, hi - lo, T(1), x + lo * s.in, s.in, dz,
         s.out, T(0), cw, s.out);
    std::fill_n(cb, s.out, T(0));
    for (int64_t r = 0; r < hi - lo; ++r) {
      for (int64_t j = 0; j < s.out; ++j) cb[j] += dz[r * s.out + j];
    }
    if (grad_x != nullptr) {
      Gemm(false, true, hi - lo, s.in, s.out, T(1), dz, s.out, w, s.out, T(0),
           grad_x + lo * s.in, s.in);
    }
  });
  for (int c = 1; c < chunks; ++c) {
    for (int64_t i = 0; i < s.in * s.out; ++i) grad_w[i] += gw[c][i];
    for (int64_t j = 0; j < s.out; ++j) grad_b[j] += gb[c][j];
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status SigmoidXentForward(int64_t n, const T* z, const T* y, T* loss) {
  if (n < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("SigmoidCrossEntropyForwardCpu: n=%d, expected >= 1", n));
  }
  absl::Status st = RequireNonNull(
      "SigmoidCrossEntropyForwardCpu",
      {{"logits", z, true}, {"labels", y, true}, {"loss", loss, true}});
  if (!st.ok()) return st;
  // Sum in double: the mean of a large batch loses bits in float.
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc += std::max(z[i], T(0)) - z[i] * y[i] + std::log1p(std::exp(-std::abs(z[i])));
  }
  *loss = static_cast<T>(acc / static_cast<double>(n));
  return absl::OkStatus();
}

template <typename T>
absl::Status SigmoidXentBackward(int64_t n, const T* z, const T* y, T* g) {
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SigmoidCrossEntropyBackwardCpu: n=%d, expected >= 1", n));
  }
  absl::Status st = RequireNonNull(
      "SigmoidCrossEntropyBackwardCpu",
      {{"logits", z, true}, {"labels", y, true}, {"grad_logits", g, true}});
  if (!st.ok()) return st;
  const T inv = T(1) / T(n);
  for (int64_t i = 0; i < n; ++i) {
    const T sig = T(1) / (T(1) + std::exp(-z[i]));
    g[i] = (sig - y[i]) * inv;
  }
  return absl::OkStatus();
}

#define MIM_INSTANTIATE(T)                                                   \
  template absl::Status DenseForward<T>(const DenseShape&, const T*,         \
                                        const T*, const T*, Activation, T*); \
  template absl::Status DenseBackward<T>(const DenseShape&, const T*,        \
                                         const T*, const T*, const T*,       \
                                         Activation, T*, T*, T*);            \
  template absl::Status SigmoidXentForward<T>(int64_t, const T*, const T*,   \
                                              T*);                            \
  template absl::Status SigmoidXentBackward<T>(int64_t, const T*, const T*,  \
                                               T*);
MIM_INSTANTIATE(float)
MIM_INSTANTIATE(double)
#undef MIM_INSTANTIATE

}  // namespace cpu

absl::Status DenseForwardCpu(const DenseShape& s, const float* x,
                             const float* w, const float* b, Activation act,
                             float* y) {
  return cpu::DenseForward<float>(s, x, w, b, act, y);
}
absl::Status DenseBackwardCpu(const DenseShape& s, const float* x,
                              const float* w, const float* y,
                              const float* grad_y, Activation act,
                              float* grad_x, float* grad_w, float* grad_b) {
  return cpu::DenseBackward<float>(s, x, w, y, grad_y, act, grad_x, grad_w,
                                   grad_b);
}
absl::Status SigmoidCrossEntropyForwardCpu(int64_t n, const float* logits,
                                           const float* labels, float* loss) {
  return cpu::SigmoidXentForward<float>(n, logits, labels, loss);
}
absl::Status SigmoidCrossEntropyBackwardCpu(int64_t n, const float* logits,
                                            const float* labels,
                                            float* grad_logits) {
  return cpu::SigmoidXentBackward<float>(n, logits, labels, grad_logits);
}

absl::Status AdamUpdateCpu(const AdamConfig& c, int64_t step, int64_t n,
                           const float* grad, float* param, float* m,
                           float* v) {
  if (step < 1 || n < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "AdamUpdateCpu: step=%d (expected >= 1), n=%d", step, n));
  }
  if (n == 0) return absl::OkStatus();
  absl::Status st = cpu::RequireNonNull(
      "AdamUpdateCpu",
      {{"grad", grad, true}, {"param", param, true}, {"m", m, true}, {"v", v, true}});
  if (!st.ok()) return st;
  const double bc1 = 1.0 - std::pow(double{c.beta1}, double(step));
  const double bc2 = 1.0 - std::pow(double{c.beta2}, double(step));
  // lr_t folds both bias corrections: p -= lr_t * m / (sqrt(v) + eps_t).
  const float lr_t = static_cast<float>(c.learning_rate * std::sqrt(bc2) / bc1);
  const float eps_t = static_cast<float>(c.epsilon * std::sqrt(bc2));
  for (int64_t i = 0; i < n; ++i) {
    m[i] = c.beta1 * m[i] + (1.f - c.beta1) * grad[i];
    v[i] = c.beta2 * v[i] + (1.f - c.beta2) * grad[i] * grad[i];
    param[i] -= lr_t * m[i] / (std::sqrt(v[i]) + eps_t);
  }
  return absl::OkStatus();
}

}  // namespace mim::kernels
