// CPU twins of embedding_ops.h and sequence_ops.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"
#include "kernels/simd.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {
namespace cpu {
namespace {

absl::Status ValidateGather(const char* op, const GatherShape& s,
                            const int32_t* index) {
  if (s.rows < 0 || s.dim < 0 || s.num_indices < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: negative shape rows=%d dim=%d n=%d", op, s.rows,
                        s.dim, s.num_indices));
  }
  if (s.num_indices > 0 && index == nullptr) return NullArg(op, "index");
  for (int64_t n = 0; n < s.num_indices; ++n) {
    if (index[n] >= s.rows) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: index[%d] = %d >= rows %d", op, n, index[n], s.rows));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePositions(const char* op, const SeqShape& s,
                               const int32_t* positions, int k) {
  if (k < 0) return absl::InvalidArgumentError(absl::StrFormat("%s: k=%d < 0", op, k));
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: negative shape B=%d L=%d d=%d", op, s.batch, s.max_len, s.dim));
  }
  if (s.batch * k > 0 && positions == nullptr) return NullArg(op, "positions");
  for (int64_t j = 0; j < s.batch * k; ++j) {
    if (positions[j] >= s.max_len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: positions[%d] = %d >= max_len %d", op, j, positions[j],
          s.max_len));
    }
  }
  return absl::OkStatus();
}

}  // namespace

template <typename T>
absl::Status Gather(const GatherShape& s, const T* table, const int32_t* index,
                    T* out) {
  absl::Status st = ValidateGather("EmbeddingGatherCpu", s, index);
  if (!st.ok()) return st;
  const int64_t n = s.num_indices * s.dim;
  st = RequireNonNull("EmbeddingGatherCpu",
                      {{"table", table, n > 0 && s.rows > 0}, {"out", out, n > 0}});
  if (!st.ok()) return st;
  ParallelForBalanced(s.num_indices, [&](int64_t lo, int64_t hi) {
    // Locals, not the closure's references: the byte copies below may alias
    // anything, and would make the compiler reload every captured value.
    const int64_t d = s.dim;
    const int32_t* const idx = index;
    const T* const tbl = table;
    T* const o = out;
    // 16-byte copies inline (rows are short, 32-64 floats): a memcpy call
    // per row, or 32-byte vectors on SSE2 (spilled to the stack), cost as
    // much as the copy itself.
    constexpr int64_t kStep = 16 / sizeof(T);
    for (int64_t n = lo; n < hi; ++n) {
      T* dst = o + n * d;
      if (idx[n] < 0) {
        std::fill_n(dst, d, T(0));
        continue;
      }
      const T* src = tbl + int64_t{idx[n]} * d;
      int64_t k = 0;
      for (; k + kStep <= d; k += kStep) std::memcpy(dst + k, src + k, 16);
      for (; k < d; ++k) dst[k] = src[k];
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status GatherBackward(const GatherShape& s, const T* grad_out,
                            const int32_t* index, T* grad_table) {
  absl::Status st = ValidateGather("EmbeddingGatherBackwardCpu", s, index);
  if (!st.ok()) return st;
  st = RequireNonNull(
      "EmbeddingGatherBackwardCpu",
      {{"grad_out", grad_out, s.num_indices * s.dim > 0 && s.rows > 0},
       {"grad_table", grad_table, s.rows * s.dim > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim;
  std::fill_n(grad_table, s.rows * d, T(0));
  // Sequential in n: each row's sum runs in increasing n (the documented
  // order the CUDA deterministic mode reproduces). Memory-bound scatter;
  // splitting it by rows would need a sort, which costs more than it saves.
  for (int64_t n = 0; n < s.num_indices; ++n) {
    if (index[n] < 0) continue;
    T* dst = grad_table + int64_t{index[n]} * d;
    const T* src = grad_out + n * d;
    for (int64_t k = 0; k < d; ++k) dst[k] += src[k];
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status MeanPoolForward(const SeqShape& s, const T* x,
                             const int32_t* lens, T* out) {
  absl::Status st = ValidateSeq("MaskedMeanPoolForwardCpu", s, lens);
  if (!st.ok()) return st;
  st = RequireNonNull("MaskedMeanPoolForwardCpu",
                      {{"x", x, s.batch * s.max_len * s.dim > 0},
                       {"out", out, s.batch * s.dim > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim, L = s.max_len;
  ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      T* o = out + b * d;
      std::fill_n(o, d, T(0));
      const int64_t n = lens[b];
      for (int64_t i = 0; i < n; ++i) {
        const T* xi = x + (b * L + i) * d;
        for (int64_t k = 0; k < d; ++k) o[k] += xi[k];
      }
      if (n > 0) {
        const T inv = T(1) / T(n);
        for (int64_t k = 0; k < d; ++k) o[k] *= inv;
      }
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status MeanPoolBackward(const SeqShape& s, const T* grad_out,
                              const int32_t* lens, T* grad_x) {
  absl::Status st = ValidateSeq("MaskedMeanPoolBackwardCpu", s, lens);
  if (!st.ok()) return st;
  const int64_t total = s.batch * s.max_len * s.dim;
  st = RequireNonNull("MaskedMeanPoolBackwardCpu",
                      {{"grad_out", grad_out, total > 0}, {"grad_x", grad_x, total > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim, L = s.max_len;
  ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n = lens[b];
      const T inv = n > 0 ? T(1) / T(n) : T(0);
      for (int64_t i = 0; i < L; ++i) {
        T* gx = grad_x + (b * L + i) * d;
        if (i >= n) {
          std::fill_n(gx, d, T(0));
          continue;
        }
        for (int64_t k = 0; k < d; ++k) gx[k] = grad_out[b * d + k] * inv;
      }
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status SelectRowsForward(const SeqShape& s, const T* x,
                               const int32_t* positions, int k, T* out) {
  absl::Status st = ValidatePositions("SelectRowsForwardCpu", s, positions, k);
  if (!st.ok()) return st;
  const int64_t n = s.batch * k * s.dim;
  st = RequireNonNull("SelectRowsForwardCpu",
                      {{"x", x, n > 0 && s.max_len > 0}, {"out", out, n > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim, L = s.max_len;
  ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t j = 0; j < k; ++j) {
        const int32_t p = positions[b * k + j];
        T* o = out + (b * k + j) * d;
        if (p < 0) {
          std::fill_n(o, d, T(0));
        } else {
          std::memcpy(o, x + (b * L + p) * d, d * sizeof(T));
        }
      }
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status SelectRowsBackward(const SeqShape& s, const T* grad_out,
                                const int32_t* positions, int k, T* grad_x) {
  absl::Status st =
      ValidatePositions("SelectRowsBackwardCpu", s, positions, k);
  if (!st.ok()) return st;
  st = RequireNonNull(
      "SelectRowsBackwardCpu",
      {{"grad_out", grad_out, s.batch * k * s.dim > 0 && s.max_len > 0},
       {"grad_x", grad_x, s.batch * s.max_len * s.dim > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim, L = s.max_len;
  ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      std::fill_n(grad_x + b * L * d, L * d, T(0));
      for (int64_t j = 0; j < k; ++j) {
        const int32_t p = positions[b * k + j];
        if (p < 0) continue;
        T* gx = grad_x + (b * L + p) * d;
        const T* g = grad_out + (b * k + j) * d;
        for (int64_t c = 0; c < d; ++c) gx[c] += g[c];
      }
    }
  });
  return absl::OkStatus();
}

#define MIM_INSTANTIATE(T)                                                    \
  template absl::Status Gather<T>(const GatherShape&, const T*,             \
                                  const int32_t*, T*);                       \
  template absl::Status GatherBackward<T>(const GatherShape&, const T*,     \
                                          const int32_t*, T*);               \
  template absl::Status MeanPoolForward<T>(const SeqShape&, const T*,       \
                                           const int32_t*, T*);              \
  template absl::Status MeanPoolBackward<T>(const SeqShape&, const T*,      \
                                            const int32_t*, T*);             \
  template absl::Status SelectRowsForward<T>(const SeqShape&, const T*,     \
                                             const int32_t*, int, T*);       \
  template absl::Status SelectRowsBackward<T>(const SeqShape&, const T*,    \
                                              const int32_t*, int, T*);
MIM_INSTANTIATE(float)
MIM_INSTANTIATE(double)
#undef MIM_INSTANTIATE

}  // namespace cpu

absl::Status EmbeddingGatherCpu(const GatherShape& s, const float* table,
                                const int32_t* index, float* out) {
  return cpu::Gather<float>(s, table, index, out);
}
absl::Status EmbeddingGatherBackwardCpu(const GatherShape& s,
                                        const float* grad_out,
                                        const int32_t* index, GradMode,
                                        float* grad_table) {
  return cpu::GatherBackward<float>(s, grad_out, index, grad_table);
}
absl::Status MaskedMeanPoolForwardCpu(const SeqShape& s, const float* x,
                                      const int32_t* lens, float* out) {
  return cpu::MeanPoolForward<float>(s, x, lens, out);
}
absl::Status MaskedMeanPoolBackwardCpu(const SeqShape& s,
                                       const float* grad_out,
                                       const int32_t* lens, float* grad_x) {
  return cpu::MeanPoolBackward<float>(s, grad_out, lens, grad_x);
}
absl::Status SelectRowsForwardCpu(const SeqShape& s, const float* x,
                                  const int32_t* positions, int k,
                                  float* out) {
  return cpu::SelectRowsForward<float>(s, x, positions, k, out);
}
absl::Status SelectRowsBackwardCpu(const SeqShape& s, const float* grad_out,
                                   const int32_t* positions, int k,
                                   float* grad_x) {
  return cpu::SelectRowsBackward<float>(s, grad_out, positions, k, grad_x);
}

absl::Status TopKSelectCpu(const SeqShape& s, const float* x,
                           const float* target, const int32_t* lens, int k,
                           int32_t* positions, int32_t* new_lens) {
  absl::Status st = cpu::ValidateSeq("TopKSelectCpu", s, lens);
  if (!st.ok()) return st;
  if (k < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("TopKSelectCpu: k=%d, expected >= 1", k));
  }
  const int64_t cells = s.batch * s.max_len * s.dim;
  st = cpu::RequireNonNull("TopKSelectCpu",
                           {{"x", x, cells > 0}, {"target", target, cells > 0},
                            {"positions", positions, s.batch > 0},
                            {"new_lens", new_lens, s.batch > 0}});
  if (!st.ok()) return st;
  const int64_t d = s.dim, L = s.max_len;
  cpu::ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    std::vector<float> score(L);
    std::vector<int32_t> order(L);
    for (int64_t b = lo; b < hi; ++b) {
      const int32_t n = lens[b];
      const float* t = target + b * d;
      for (int32_t i = 0; i < n; ++i) {
        // Plain sequential sum: the CUDA twin reproduces this order without
        // FMA, so both pick the same behaviours bit for bit.
        const float* xi = x + (b * L + i) * d;
        float acc = 0.f;
        for (int64_t c = 0; c < d; ++c) acc += xi[c] * t[c];
        score[i] = acc;
      }
      // a ranks before b: higher score; NaN lowest; ties -> lower position.
      auto better = [&](int32_t a, int32_t c) {
        const float sa = score[a], sc = score[c];
        const bool na = std::isnan(sa), nc = std::isnan(sc);
        if (na != nc) return nc;
        if (!na && sa != sc) return sa > sc;
        return a < c;
      };
      std::iota(order.begin(), order.begin() + n, 0);
      const int32_t kept = std::min<int32_t>(n, k);
      if (kept < n) {
        std::nth_element(order.begin(), order.begin() + kept,
                         order.begin() + n, better);
      }
      std::sort(order.begin(), order.begin() + kept);
      int32_t* pos = positions + b * k;
      for (int32_t j = 0; j < k; ++j) pos[j] = j < kept ? order[j] : -1;
      new_lens[b] = kept;
    }
  });
  return absl::OkStatus();
}

}  // namespace mim::kernels
