// CPU twin of attention_ops.h. Per target row: build W_eff and c once, then
// three small GEMMs over the row's valid behaviours (see the header for the
// algebra). Weight gradients accumulate per thread chunk and are reduced in
// chunk order, so results are deterministic for a given thread count.
#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/attention_ops.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"

namespace mim::kernels {

int64_t AttentionW1Size(int64_t dim, const AttentionMlpShape& m) {
  return 4 * dim * m.hidden1;
}

namespace cpu {
namespace {

// Same checks, order and names as the CUDA twin's ValidateDin. `g` is null
// for the forward; `io` is out (forward) or grad_out (backward).
template <typename T>
absl::Status ValidateAttention(const char* op, const SeqShape& s,
                               const AttentionMlpShape& m, const int32_t* lens,
                               const T* h, const T* h_t,
                               const MlpParams<T>& p, const MlpGrads<T>* g,
                               const T* io) {
  absl::Status st = ValidateSeq(op, s, lens);
  if (!st.ok()) return st;
  if (m.hidden1 < 1 || m.hidden2 < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: hidden sizes %d-%d, expected >= 1", op, m.hidden1, m.hidden2));
  }
  const int64_t B = s.batch, L = s.max_len, d = s.dim, rows = B * L;
  // Pointers to empty tensors (d = 0, or h with L = 0) may be null.
  const bool inputs = B > 0 && d > 0;
  st = RequireNonNull(op, {{"h", h, inputs && L > 0},
                           {"h_t", h_t, inputs},
                           {"w1", p.w1, inputs}});
  if (!st.ok()) return st;
  if (g != nullptr) {
    st = RequireNonNull(op, {{"grads.w1", g->w1, d > 0},
                             {"grads.b1", g->b1, true},
                             {"grads.w2", g->w2, true},
                             {"grads.b2", g->b2, true},
                             {"grads.w3", g->w3, true},
                             {"grads.b3", g->b3, true}});
    if (!st.ok()) return st;
  }
  return RequireNonNull(
      op, {{"b1", p.b1, rows > 0},
           {"w2", p.w2, rows > 0},
           {"b2", p.b2, rows > 0},
           {"w3", p.w3, rows > 0},
           {"b3", p.b3, rows > 0},
           {g == nullptr ? "out" : "grad_out", io,
            g == nullptr ? B * d > 0 : rows * d > 0}});
}

// Per-thread scratch for one target row.
template <typename T>
struct RowScratch {
  RowScratch(int64_t L, int64_t d, int64_t h1, int64_t h2)
      : weff(d * h1), c(h1), a1(L * h1), a2(L * h2), score(L) {}
  std::vector<T> weff, c, a1, a2, score;
};

// Wac = Wa + Wc, Wbc = Wb - Wc (both d x h1), computed once per call.
template <typename T>
void FoldW1(const T* w1, int64_t d, int64_t h1, std::vector<T>* wac,
            std::vector<T>* wbc) {
  const T* wa = w1;
  const T* wb = w1 + d * h1;
  const T* wc = w1 + 2 * d * h1;
  wac->resize(d * h1);
  wbc->resize(d * h1);
  for (int64_t i = 0; i < d * h1; ++i) {
    (*wac)[i] = wa[i] + wc[i];
    (*wbc)[i] = wb[i] - wc[i];
  }
}

// Forward for one row with n >= 1 valid behaviours: fills r.weff, r.a1
// (post-ReLU), r.a2 (post-ReLU) and r.score[0..n).
template <typename T>
void RowForward(int64_t n, int64_t d, const AttentionMlpShape& m,
                const T* hb, const T* ht, const MlpParams<T>& p,
                const std::vector<T>& wac, const std::vector<T>& wbc,
                RowScratch<T>& r) {
  const int64_t h1 = m.hidden1, h2 = m.hidden2;
  const T* wd = p.w1 + 3 * d * h1;
  for (int64_t k = 0; k < d; ++k) {
    const T* src_ac = wac.data() + k * h1;
    const T* src_d = wd + k * h1;
    T* dst = r.weff.data() + k * h1;
    const T t = ht[k];
    for (int64_t j = 0; j < h1; ++j) dst[j] = src_ac[j] + t * src_d[j];
  }
  // c = h_t Wbc + b1
  std::copy_n(p.b1, h1, r.c.data());
  Gemm(false, false, 1, h1, d, T(1), ht, d, wbc.data(), h1, T(1), r.c.data(),
       h1);
  for (int64_t i = 0; i < n; ++i) std::copy_n(r.c.data(), h1, &r.a1[i * h1]);
  Gemm(false, false, n, h1, d, T(1), hb, d, r.weff.data(), h1, T(1),
       r.a1.data(), h1);
  for (int64_t i = 0; i < n * h1; ++i) r.a1[i] = std::max(r.a1[i], T(0));
  for (int64_t i = 0; i < n; ++i) std::copy_n(p.b2, h2, &r.a2[i * h2]);
  Gemm(false, false, n, h2, h1, T(1), r.a1.data(), h1, p.w2, h2, T(1),
       r.a2.data(), h2);
  for (int64_t i = 0; i < n * h2; ++i) r.a2[i] = std::max(r.a2[i], T(0));
  for (int64_t i = 0; i < n; ++i) {
    const T* a2 = &r.a2[i * h2];
    T acc = p.b3[0];
    for (int64_t j = 0; j < h2; ++j) acc += a2[j] * p.w3[j];
    r.score[i] = acc;
  }
}

}  // namespace

template <typename T>
absl::Status DinForward(const SeqShape& s, const AttentionMlpShape& m,
                        const T* h, const T* h_t, const int32_t* lens,
                        const MlpParams<T>& p, T* scores, T* out) {
  absl::Status st = ValidateAttention<T>("DinAttentionForwardCpu", s, m, lens,
                                         h, h_t, p, nullptr, out);
  if (!st.ok()) return st;
  const int64_t L = s.max_len, d = s.dim;
  std::vector<T> wac, wbc;
  FoldW1(p.w1, d, m.hidden1, &wac, &wbc);
  ParallelForBalanced(s.batch, [&](int64_t lo, int64_t hi) {
    RowScratch<T> r(L, d, m.hidden1, m.hidden2);
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n = lens[b];
      T* o = out + b * d;
      std::fill_n(o, d, T(0));
      if (scores != nullptr) std::fill_n(scores + b * L, L, T(0));
      if (n == 0) continue;
      const T* hb = h + b * L * d;
      RowForward(n, d, m, hb, h_t + b * d, p, wac, wbc, r);
      // out = h_b^T score
      Gemm(true, false, d, 1, n, T(1), hb, d, r.score.data(), 1, T(0), o, 1);
      if (scores != nullptr) std::copy_n(r.score.data(), n, scores + b * L);
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status DinBackward(const SeqShape& s, const AttentionMlpShape& m,
                         const T* h, const T* h_t, const int32_t* lens,
                         const MlpParams<T>& p, const T* grad_out, T* grad_h,
                         T* grad_h_t, const MlpGrads<T>& g) {
  absl::Status st = ValidateAttention<T>("DinAttentionBackwardCpu", s, m, lens,
                                         h, h_t, p, &g, grad_out);
  if (!st.ok()) return st;
  const int64_t L = s.max_len, d = s.dim, h1 = m.hidden1, h2 = m.hidden2;
  const int64_t dh1 = d * h1;
  std::vector<T> wac, wbc;
  FoldW1(p.w1, d, h1, &wac, &wbc);
  const T* wd = p.w1 + 3 * dh1;

  // With M = h_b^T dZ1 and S = colsum(dZ1) per row, the first layer's
  // gradient is dWa = sum M, dWb = sum h_t (x) S, dWc = dWa - dWb,
  // dWd = sum diag(h_t) M; chunks accumulate those three sums.
  struct Acc {
    std::vector<T> m, hs, dm, b1, w2, b2, w3;
    T b3 = 0;
  };
  // Several chunks per thread: a thread that starts late leaves its share
  // to the others.
  const int chunks = NumChunks(s.batch, kSplitsPerThread);
  std::vector<Acc> acc(chunks);
  for (Acc& a : acc) {
    a.m.assign(dh1, 0);
    a.hs.assign(dh1, 0);
    a.dm.assign(dh1, 0);
    a.b1.assign(h1, 0);
    a.w2.assign(h1 * h2, 0);
    a.b2.assign(h2, 0);
    a.w3.assign(h2, 0);
  }
  ParallelForChunks(s.batch, chunks, [&](int64_t lo, int64_t hi, int chunk) {
    Acc& a = acc[chunk];
    RowScratch<T> r(L, d, h1, h2);
    std::vector<T> ds(L), dz2(L * h2), dz1(L * h1), sum1(h1), mrow(dh1);
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t n = lens[b];
      const T* hb = h + b * L * d;
      const T* ht = h_t + b * d;
      const T* go = grad_out + b * d;
      if (grad_h != nullptr) {
        std::fill_n(grad_h + (b * L + n) * d, (L - n) * d, T(0));
      }
      if (grad_h_t != nullptr) std::fill_n(grad_h_t + b * d, d, T(0));
      if (n == 0) continue;
      RowForward(n, d, m, hb, ht, p, wac, wbc, r);
      // ds_i = h_i . grad_out
      Gemm(false, false, n, 1, d, T(1), hb, d, go, 1, T(0), ds.data(), 1);
      for (int64_t i = 0; i < n; ++i) {
        const T* a2 = &r.a2[i * h2];
        T* z2 = &dz2[i * h2];
        a.b3 += ds[i];
        for (int64_t j = 0; j < h2; ++j) {
          a.w3[j] += a2[j] * ds[i];
          z2[j] = a2[j] > T(0) ? ds[i] * p.w3[j] : T(0);
        }
      }
      // dW2 += A1^T dZ2; dZ1 = (dZ2 W2^T) * (A1 > 0)
      Gemm(true, false, h1, h2, n, T(1), r.a1.data(), h1, dz2.data(), h2,
           T(1), a.w2.data(), h2);
      Gemm(false, true, n, h1, h2, T(1), dz2.data(), h2, p.w2, h2, T(0),
           dz1.data(), h1);
      std::fill(sum1.begin(), sum1.end(), T(0));
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < h2; ++j) a.b2[j] += dz2[i * h2 + j];
        T* z1 = &dz1[i * h1];
        const T* a1 = &r.a1[i * h1];
        for (int64_t j = 0; j < h1; ++j) {
          if (!(a1[j] > T(0))) z1[j] = T(0);
          sum1[j] += z1[j];
        }
      }
      // M = h_b^T dZ1 (d x h1)
      Gemm(true, false, d, h1, n, T(1), hb, d, dz1.data(), h1, T(0),
           mrow.data(), h1);
      for (int64_t k = 0; k < d; ++k) {
        const T t = ht[k];
        T dht = 0;
        for (int64_t j = 0; j < h1; ++j) {
          const int64_t kj = k * h1 + j;
          a.m[kj] += mrow[kj];
          a.hs[kj] += t * sum1[j];
          a.dm[kj] += t * mrow[kj];
          dht += wbc[kj] * sum1[j] + wd[kj] * mrow[kj];
        }
        if (grad_h_t != nullptr) grad_h_t[b * d + k] = dht;
      }
      for (int64_t j = 0; j < h1; ++j) a.b1[j] += sum1[j];
      if (grad_h != nullptr) {
        // dh_i = score_i * grad_out + dZ1_i W_eff^T
        T* gh = grad_h + b * L * d;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t k = 0; k < d; ++k) gh[i * d + k] = r.score[i] * go[k];
        }
        Gemm(false, true, n, d, h1, T(1), dz1.data(), h1, r.weff.data(), h1,
             T(1), gh, d);
      }
    }
  });
  // Reduce in chunk order.
  T* ga = g.w1;
  T* gb = g.w1 + dh1;
  T* gc = g.w1 + 2 * dh1;
  T* gd = g.w1 + 3 * dh1;
  std::fill_n(g.w1, 4 * dh1, T(0));
  std::fill_n(g.b1, h1, T(0));
  std::fill_n(g.w2, h1 * h2, T(0));
  std::fill_n(g.b2, h2, T(0));
  std::fill_n(g.w3, h2, T(0));
  g.b3[0] = 0;
  for (const Acc& a : acc) {
    for (int64_t i = 0; i < dh1; ++i) {
      ga[i] += a.m[i];
      gb[i] += a.hs[i];
      gc[i] += a.m[i] - a.hs[i];
      gd[i] += a.dm[i];
    }
    for (int64_t j = 0; j < h1; ++j) g.b1[j] += a.b1[j];
    for (int64_t j = 0; j < h1 * h2; ++j) g.w2[j] += a.w2[j];
    for (int64_t j = 0; j < h2; ++j) {
      g.b2[j] += a.b2[j];
      g.w3[j] += a.w3[j];
    }
    g.b3[0] += a.b3;
  }
  return absl::OkStatus();
}

#define MIM_INSTANTIATE(T)                                                   \
  template absl::Status DinForward<T>(                                       \
      const SeqShape&, const AttentionMlpShape&, const T*, const T*,         \
      const int32_t*, const MlpParams<T>&, T*, T*);                          \
  template absl::Status DinBackward<T>(                                      \
      const SeqShape&, const AttentionMlpShape&, const T*, const T*,         \
      const int32_t*, const MlpParams<T>&, const T*, T*, T*,                 \
      const MlpGrads<T>&);
MIM_INSTANTIATE(float)
MIM_INSTANTIATE(double)
#undef MIM_INSTANTIATE

}  // namespace cpu

absl::Status DinAttentionForwardCpu(const SeqShape& s,
                                    const AttentionMlpShape& m,
                                    const float* h, const float* h_t,
                                    const int32_t* lens,
                                    const AttentionMlpParams& p, float* scores,
                                    float* out) {
  return cpu::DinForward<float>(
      s, m, h, h_t, lens, {p.w1, p.b1, p.w2, p.b2, p.w3, p.b3}, scores, out);
}

absl::Status DinAttentionBackwardCpu(const SeqShape& s,
                                     const AttentionMlpShape& m,
                                     const float* h, const float* h_t,
                                     const int32_t* lens,
                                     const AttentionMlpParams& p,
                                     const float* grad_out, float* grad_h,
                                     float* grad_h_t,
                                     const AttentionMlpGrads& g) {
  return cpu::DinBackward<float>(
      s, m, h, h_t, lens, {p.w1, p.b1, p.w2, p.b2, p.w3, p.b3}, grad_out,
      grad_h, grad_h_t, {g.w1, g.b1, g.w2, g.b2, g.w3, g.b3});
}

}  // namespace mim::kernels
