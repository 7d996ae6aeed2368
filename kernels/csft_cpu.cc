// CPU twins of kernels/csft_ops.h. Plain loops (the shapes are small:
// a C-SFT batch is a few hundred items); sums accumulate in double so the
// float and double instantiations differ only by the inputs' rounding.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/csft_cpu.h"
#include "kernels/csft_ops.h"

namespace mim::kernels {
namespace cpu {
namespace {

absl::Status Invalid(const std::string& op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

}  // namespace

template <typename T>
absl::Status TensorFusionForward(const TensorFusionShape& s, const T* a,
                                 const T* b, T* out) {
  if (s.rows < 0 || s.dim_a < 0 || s.dim_b < 0) {
    return Invalid("TensorFusionForward",
                   absl::StrCat("negative shape rows=", s.rows, " dim_a=",
                                s.dim_a, " dim_b=", s.dim_b));
  }
  if (s.rows == 0) return absl::OkStatus();
  if (a == nullptr || b == nullptr || out == nullptr) {
    return Invalid("TensorFusionForward", "null a, b or out");
  }
  const int64_t wb = s.dim_b + 1;
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* ar = a + r * s.dim_a;
    const T* br = b + r * s.dim_b;
    T* o = out + r * s.out_dim();
    for (int64_t i = 0; i <= s.dim_a; ++i) {
      const T ai = i < s.dim_a ? ar[i] : T(1);
      for (int64_t j = 0; j < s.dim_b; ++j) o[i * wb + j] = ai * br[j];
      o[i * wb + s.dim_b] = ai;
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status TensorFusionBackward(const TensorFusionShape& s, const T* a,
                                  const T* b, const T* grad_out, T* grad_a,
                                  T* grad_b) {
  if (s.rows < 0 || s.dim_a < 0 || s.dim_b < 0) {
    return Invalid("TensorFusionBackward",
                   absl::StrCat("negative shape rows=", s.rows, " dim_a=",
                                s.dim_a, " dim_b=", s.dim_b));
  }
  if (s.rows == 0) return absl::OkStatus();
  if (a == nullptr || b == nullptr || grad_out == nullptr) {
    return Invalid("TensorFusionBackward", "null a, b or grad_out");
  }
  const int64_t wb = s.dim_b + 1;
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* ar = a + r * s.dim_a;
    const T* br = b + r * s.dim_b;
    const T* g = grad_out + r * s.out_dim();
    if (grad_a != nullptr) {
      for (int64_t i = 0; i < s.dim_a; ++i) {
        double acc = g[i * wb + s.dim_b];
        for (int64_t j = 0; j < s.dim_b; ++j) acc += double(g[i * wb + j]) * br[j];
        grad_a[r * s.dim_a + i] = T(acc);
      }
    }
    if (grad_b != nullptr) {
      for (int64_t j = 0; j < s.dim_b; ++j) {
        double acc = g[s.dim_a * wb + j];
        for (int64_t i = 0; i < s.dim_a; ++i) acc += double(g[i * wb + j]) * ar[i];
        grad_b[r * s.dim_b + j] = T(acc);
      }
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status L2NormalizeForward(int64_t rows, int64_t dim, const T* x, T* y) {
  if (rows < 0 || dim < 0) {
    return Invalid("L2NormalizeForward",
                   absl::StrCat("negative shape rows=", rows, " dim=", dim));
  }
  if (rows == 0 || dim == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr) {
    return Invalid("L2NormalizeForward", "null x or y");
  }
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t k = 0; k < dim; ++k) ss += double(x[r * dim + k]) * x[r * dim + k];
    const double inv = 1.0 / std::sqrt(ss + kCsftNormEps);
    for (int64_t k = 0; k < dim; ++k) y[r * dim + k] = T(x[r * dim + k] * inv);
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status L2NormalizeBackward(int64_t rows, int64_t dim, const T* x,
                                 const T* grad_y, T* grad_x) {
  if (rows < 0 || dim < 0) {
    return Invalid("L2NormalizeBackward",
                   absl::StrCat("negative shape rows=", rows, " dim=", dim));
  }
  if (rows == 0 || dim == 0) return absl::OkStatus();
  if (x == nullptr || grad_y == nullptr || grad_x == nullptr) {
    return Invalid("L2NormalizeBackward", "null x, grad_y or grad_x");
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* gr = grad_y + r * dim;
    double ss = 0, xg = 0;
    for (int64_t k = 0; k < dim; ++k) {
      ss += double(xr[k]) * xr[k];
      xg += double(xr[k]) * gr[k];
    }
    const double n2 = ss + kCsftNormEps;
    const double n = std::sqrt(n2);
    for (int64_t k = 0; k < dim; ++k) {
      grad_x[r * dim + k] = T(gr[k] / n - xr[k] * xg / (n2 * n));
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status InfoNceForward(const InfoNceShape& s, T temperature, const T* q,
                            const T* c, const int64_t* query_ids,
                            const int64_t* cand_ids, T* loss, T* prob,
                            int32_t* negatives) {
  if (s.batch < 1 || s.dim < 1 || s.candidates < s.batch) {
    return Invalid("InfoNceForward",
                   absl::StrCat("shape batch=", s.batch, " candidates=",
                                s.candidates, " dim=", s.dim,
                                "; expected batch >= 1, dim >= 1 and "
                                "candidates >= batch (candidate b is query "
                                "b's positive)"));
  }
  if (!(temperature > 0)) {
    return Invalid("InfoNceForward",
                   absl::StrCat("temperature ", double(temperature),
                                "; expected > 0"));
  }
  if (q == nullptr || c == nullptr || loss == nullptr || prob == nullptr) {
    return Invalid("InfoNceForward", "null q, c, loss or prob");
  }
  const int64_t n = s.candidates;
  std::vector<double> z(n);
  std::vector<char> keep(n);
  double total = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const T* qb = q + b * s.dim;
    double zmax = -std::numeric_limits<double>::infinity();
    int32_t count = 0;
    for (int64_t j = 0; j < n; ++j) {
      bool k = true;
      if (j != b && cand_ids != nullptr) {
        if (cand_ids[j] == cand_ids[b]) k = false;
        if (query_ids != nullptr && cand_ids[j] == query_ids[b]) k = false;
      }
      keep[j] = k;
      if (!k) continue;
      if (j != b) ++count;
      double dot = 0;
      const T* cj = c + j * s.dim;
      for (int64_t d = 0; d < s.dim; ++d) dot += double(qb[d]) * cj[d];
      z[j] = dot / double(temperature);
      zmax = std::max(zmax, z[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (keep[j]) sum += std::exp(z[j] - zmax);
    }
    const double lse = zmax + std::log(sum);
    total += lse - z[b];
    for (int64_t j = 0; j < n; ++j) {
      prob[b * n + j] = keep[j] ? T(std::exp(z[j] - lse)) : T(0);
    }
    if (negatives != nullptr) negatives[b] = count;
  }
  *loss = T(total / double(s.batch));
  return absl::OkStatus();
}

template <typename T>
absl::Status InfoNceBackward(const InfoNceShape& s, T temperature, const T* q,
                             const T* c, const T* prob, T grad_loss, T* grad_q,
                             T* grad_c) {
  if (s.batch < 1 || s.dim < 1 || s.candidates < s.batch) {
    return Invalid("InfoNceBackward",
                   absl::StrCat("shape batch=", s.batch, " candidates=",
                                s.candidates, " dim=", s.dim,
                                "; expected batch >= 1, dim >= 1 and "
                                "candidates >= batch"));
  }
  if (!(temperature > 0)) {
    return Invalid("InfoNceBackward",
                   absl::StrCat("temperature ", double(temperature),
                                "; expected > 0"));
  }
  if (q == nullptr || c == nullptr || prob == nullptr) {
    return Invalid("InfoNceBackward", "null q, c or prob");
  }
  const int64_t n = s.candidates;
  const double scale = double(grad_loss) / (double(s.batch) * temperature);
  std::vector<double> gq(s.dim);
  std::vector<double> gc(grad_c != nullptr ? n * s.dim : 0, 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    std::fill(gq.begin(), gq.end(), 0.0);
    const T* qb = q + b * s.dim;
    for (int64_t j = 0; j < n; ++j) {
      const double dz = (double(prob[b * n + j]) - (j == b ? 1.0 : 0.0)) * scale;
      if (dz == 0) continue;
      const T* cj = c + j * s.dim;
      for (int64_t d = 0; d < s.dim; ++d) gq[d] += dz * cj[d];
      if (grad_c != nullptr) {
        for (int64_t d = 0; d < s.dim; ++d) gc[j * s.dim + d] += dz * qb[d];
      }
    }
    if (grad_q != nullptr) {
      for (int64_t d = 0; d < s.dim; ++d) grad_q[b * s.dim + d] = T(gq[d]);
    }
  }
  if (grad_c != nullptr) {
    for (int64_t i = 0; i < n * s.dim; ++i) grad_c[i] = T(gc[i]);
  }
  return absl::OkStatus();
}

#define MIM_CSFT_INSTANTIATE(T)                                               \
  template absl::Status TensorFusionForward<T>(const TensorFusionShape&,      \
                                               const T*, const T*, T*);       \
  template absl::Status TensorFusionBackward<T>(                              \
      const TensorFusionShape&, const T*, const T*, const T*, T*, T*);        \
  template absl::Status L2NormalizeForward<T>(int64_t, int64_t, const T*,     \
                                              T*);                            \
  template absl::Status L2NormalizeBackward<T>(int64_t, int64_t, const T*,    \
                                               const T*, T*);                 \
  template absl::Status InfoNceForward<T>(const InfoNceShape&, T, const T*,   \
                                          const T*, const int64_t*,           \
                                          const int64_t*, T*, T*, int32_t*);  \
  template absl::Status InfoNceBackward<T>(const InfoNceShape&, T, const T*,  \
                                           const T*, const T*, T, T*, T*);
MIM_CSFT_INSTANTIATE(float)
MIM_CSFT_INSTANTIATE(double)
#undef MIM_CSFT_INSTANTIATE

}  // namespace cpu

absl::Status TensorFusionForwardCpu(const TensorFusionShape& s, const float* a,
                                    const float* b, float* out) {
  return cpu::TensorFusionForward<float>(s, a, b, out);
}
absl::Status TensorFusionBackwardCpu(const TensorFusionShape& s,
                                     const float* a, const float* b,
                                     const float* grad_out, float* grad_a,
                                     float* grad_b) {
  return cpu::TensorFusionBackward<float>(s, a, b, grad_out, grad_a, grad_b);
}
absl::Status L2NormalizeForwardCpu(int64_t rows, int64_t dim, const float* x,
                                   float* y) {
  return cpu::L2NormalizeForward<float>(rows, dim, x, y);
}
absl::Status L2NormalizeBackwardCpu(int64_t rows, int64_t dim, const float* x,
                                    const float* grad_y, float* grad_x) {
  return cpu::L2NormalizeBackward<float>(rows, dim, x, grad_y, grad_x);
}
absl::Status InfoNceForwardCpu(const InfoNceShape& s, float temperature,
                               const float* q, const float* c,
                               const int64_t* query_ids,
                               const int64_t* cand_ids, float* loss,
                               float* prob, int32_t* negatives) {
  return cpu::InfoNceForward<float>(s, temperature, q, c, query_ids, cand_ids,
                                    loss, prob, negatives);
}
absl::Status InfoNceBackwardCpu(const InfoNceShape& s, float temperature,
                                const float* q, const float* c,
                                const float* prob, float grad_loss,
                                float* grad_q, float* grad_c) {
  return cpu::InfoNceBackward<float>(s, temperature, q, c, prob, grad_loss,
                                     grad_q, grad_c);
}

}  // namespace mim::kernels
