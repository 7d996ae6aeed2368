// CUDA twin of attention_ops.h, written as whole-batch cuBLAS GEMMs over
// all B*L behaviour rows plus small elementwise kernels. The 4d-wide input
// is never built: z1 = Hm Wac + (Hm o h_t) Wd + c_b with Hm the masked
// behaviours (padding rows zeroed so garbage there cannot leak in), only
// d-wide tensors. Every reduction is a GEMM (deterministic in cuBLAS) or a
// fixed-order loop, so results are bit-identical run to run.
#include "kernels/attention_ops.h"
#include "kernels/cuda_util.cuh"

namespace mim::kernels {
using cuda::Blocks;
using cuda::CheckLaunch;
using cuda::SeqStr;

namespace {

// Hm = h masked; X = Hm o h_t (broadcast over the row).
__global__ void MaskAndScaleKernel(SeqShape s, const float* h, const float* ht,
                                   const int32_t* lens, float* hm, float* x) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len * s.dim) return;
  const int64_t k = e % s.dim, bi = e / s.dim, b = bi / s.max_len,
                i = bi % s.max_len;
  // Padding is never read (the CPU twin never reads it either), so NaN or
  // Inf garbage there cannot leak into the GEMMs.
  const bool valid = i < lens[b];
  hm[e] = valid ? h[e] : 0.f;
  x[e] = valid ? h[e] * ht[b * s.dim + k] : 0.f;
}

__global__ void FoldW1Kernel(int64_t dh1, const float* w1, float* wac, float* wbc) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= dh1) return;
  wac[e] = w1[e] + w1[2 * dh1 + e];
  wbc[e] = w1[dh1 + e] - w1[2 * dh1 + e];
}

// a1[bi, j] = relu(z1[bi, j] + c[b, j]) for valid rows, 0 for padding.
__global__ void AddRowBiasReluKernel(SeqShape s, int64_t h1, const float* c,
                                     const int32_t* lens, float* z1) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len * h1) return;
  const int64_t j = e % h1, bi = e / h1, b = bi / s.max_len, i = bi % s.max_len;
  if (i >= lens[b]) {
    z1[e] = 0.f;
    return;
  }
  const float z = z1[e] + c[b * h1 + j];
  z1[e] = z < 0.f ? 0.f : z;  // std::max(z, 0), as the CPU twin (NaN stays)
}

__global__ void BiasReluKernel(int64_t rows, int64_t n, const float* bias, float* z) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= rows * n) return;
  const float v = z[e] + bias[e % n];
  z[e] = v < 0.f ? 0.f : v;  // std::max(v, 0), as the CPU twin
}

__global__ void BroadcastRowsKernel(int64_t rows, int64_t n, const float* v, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < rows * n) out[e] = v[e % n];
}

// score = a2 . w3 + b3, 0 at padding.
__global__ void ScoreKernel(SeqShape s, int64_t h2, const float* a2, const float* w3,
                            const float* b3, const int32_t* lens, float* score) {
  const int64_t bi = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (bi >= s.batch * s.max_len) return;
  const int64_t b = bi / s.max_len, i = bi % s.max_len;
  if (i >= lens[b]) {
    score[bi] = 0.f;
    return;
  }
  float acc = b3[0];
  for (int64_t j = 0; j < h2; ++j) acc += a2[bi * h2 + j] * w3[j];
  score[bi] = acc;
}

// out[b, k] = sum_{i<len} w[b, i] * v[b, i, k], increasing i.
__global__ void RowWeightedSumKernel(SeqShape s, const float* w, const float* v,
                                     const int32_t* lens, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.dim) return;
  const int64_t b = e / s.dim, k = e % s.dim;
  float acc = 0.f;
  for (int i = 0; i < lens[b]; ++i) {
    acc += w[b * s.max_len + i] * v[(b * s.max_len + i) * s.dim + k];
  }
  out[e] = acc;
}

// ds[bi] = hm[bi] . g[b]; dz2 = ds * w3 o (a2 > 0); both 0 at padding
// (grad_out of a row with no behaviours is never read, as on the CPU).
__global__ void ScoreGradKernel(SeqShape s, int64_t h2, const float* hm,
                                const float* g, const float* a2, const float* w3,
                                const int32_t* lens, float* ds, float* dz2) {
  const int64_t bi = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (bi >= s.batch * s.max_len) return;
  const int64_t b = bi / s.max_len, i = bi % s.max_len;
  if (i >= lens[b]) {
    ds[bi] = 0.f;
    for (int64_t j = 0; j < h2; ++j) dz2[bi * h2 + j] = 0.f;
    return;
  }
  float acc = 0.f;
  for (int64_t k = 0; k < s.dim; ++k) acc += hm[bi * s.dim + k] * g[b * s.dim + k];
  ds[bi] = acc;
  for (int64_t j = 0; j < h2; ++j) {
    dz2[bi * h2 + j] = a2[bi * h2 + j] > 0.f ? acc * w3[j] : 0.f;
  }
}

__global__ void ReluGradKernel(int64_t n, const float* a, float* dz) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < n && !(a[e] > 0.f)) dz[e] = 0.f;
}

// S[b, j] = sum_i dz1[b, i, j]; fixed order.
__global__ void RowColSumKernel(int64_t B, int64_t L, int64_t n, const float* x, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= B * n) return;
  const int64_t b = e / n, j = e % n;
  float acc = 0.f;
  for (int64_t i = 0; i < L; ++i) acc += x[(b * L + i) * n + j];
  out[e] = acc;
}

__global__ void ColSumKernel(int64_t rows, int64_t n, const float* x, float* out) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= n) return;
  float acc = 0.f;
  for (int64_t r = 0; r < rows; ++r) acc += x[r * n + j];
  out[j] = acc;
}

__global__ void SubKernel(int64_t n, const float* a, const float* b, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < n) out[e] = a[e] - b[e];
}

// dh = score * g + P + h_t o Q (0 at padding).
__global__ void GradHKernel(SeqShape s, const float* score, const float* g,
                            const float* p, const float* q, const float* ht,
                            const int32_t* lens, float* gh) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len * s.dim) return;
  const int64_t k = e % s.dim, bi = e / s.dim, b = bi / s.max_len,
                i = bi % s.max_len;
  gh[e] = i < lens[b]
              ? score[bi] * g[b * s.dim + k] + p[e] + ht[b * s.dim + k] * q[e]
              : 0.f;
}

// dh_t[b, k] += sum_i hm[b, i, k] * Q[b, i, k].
__global__ void GradHtKernel(SeqShape s, const float* hm, const float* q,
                             const int32_t* lens, float* ght) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.dim) return;
  const int64_t b = e / s.dim, k = e % s.dim;
  float acc = 0.f;
  for (int i = 0; i < lens[b]; ++i) {
    const int64_t idx = (b * s.max_len + i) * s.dim + k;
    acc += hm[idx] * q[idx];
  }
  ght[e] += acc;
}

struct Fwd {
  float *hm = nullptr, *x = nullptr, *wac = nullptr, *wbc = nullptr, *c = nullptr,
        *a1 = nullptr, *a2 = nullptr, *score = nullptr;
};

std::string DinStr(const SeqShape& s, const AttentionMlpShape& m) {
  return SeqStr(s) + absl::StrFormat(" mlp=%d-%d", m.hidden1, m.hidden2);
}

// Argument checks in the CPU twin's order (ValidateAttention, then the
// gradient pointers), then the pointers only the CUDA kernels need checked
// (the CPU twin would crash on those instead). `g` is null for the forward;
// `io` is out (forward) or grad_out (backward).
absl::Status ValidateDin(const char* op, const SeqShape& s, const AttentionMlpShape& m,
                         const float* h, const float* ht, const int32_t* lens,
                         const AttentionMlpParams& p, const AttentionMlpGrads* g,
                         const float* io) {
  MIM_RETURN_IF_ERROR(cuda::ValidateLens(op, s, lens));
  if (m.hidden1 < 1 || m.hidden2 < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: hidden sizes %d-%d, expected >= 1", op, m.hidden1, m.hidden2));
  }
  const int64_t B = s.batch, L = s.max_len, d = s.dim, rows = B * L;
  // Pointers to empty tensors (d = 0, or h with L = 0) may be null.
  const bool inputs = B > 0 && d > 0;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"h", h, inputs && L > 0}, {"h_t", ht, inputs}, {"w1", p.w1, inputs}}));
  if (g != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
        op, {{"grads.w1", g->w1, d > 0}, {"grads.b1", g->b1, true}, {"grads.w2", g->w2, true},
             {"grads.b2", g->b2, true}, {"grads.w3", g->w3, true}, {"grads.b3", g->b3, true}}));
  }
  return cuda::RequireNonNull(
      op, {{"b1", p.b1, rows > 0}, {"w2", p.w2, rows > 0}, {"b2", p.b2, rows > 0},
           {"w3", p.w3, rows > 0}, {"b3", p.b3, rows > 0},
           {g == nullptr ? "out" : "grad_out", io, g == nullptr ? B * d > 0 : rows * d > 0}});
}

// The MLP over all B*L rows (padding masked). Leaves f untouched when there
// are no rows. Arguments must have passed ValidateDin.
absl::Status Forward(const char* op, const SeqShape& s, const AttentionMlpShape& m,
                     const float* h, const float* ht, const int32_t* lens,
                     const AttentionMlpParams& p, float* score_out, Fwd* f) {
  const int64_t B = s.batch, L = s.max_len, d = s.dim, h1 = m.hidden1, h2 = m.hidden2;
  const int64_t rows = B * L;
  if (rows == 0) return absl::OkStatus();
  const std::string shape = DinStr(s, m);
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, rows * d, &f->hm));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 2, rows * d, &f->x));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 3, d * h1, &f->wac));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 4, d * h1, &f->wbc));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 5, B * h1, &f->c));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 6, rows * h1, &f->a1));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 7, rows * h2, &f->a2));
  f->score = score_out;
  if (f->score == nullptr) MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 8, rows, &f->score));
  cublasHandle_t hdl;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &hdl));
  if (d * h1 > 0) {
    FoldW1Kernel<<<Blocks(d * h1), 256>>>(d * h1, p.w1, f->wac, f->wbc);
    MIM_RETURN_IF_ERROR(CheckLaunch("FoldW1Kernel", shape));
  }
  // c = Ht Wbc + b1 (d = 0: c = b1; Gemm handles K = 0).
  BroadcastRowsKernel<<<Blocks(B * h1), 256>>>(B, h1, p.b1, f->c);
  MIM_RETURN_IF_ERROR(CheckLaunch("BroadcastRowsKernel", shape));
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, false, B, h1, d, 1.f, ht, d, f->wbc, h1, 1.f,
                                 f->c, h1, "DIN c = Ht Wbc"));
  if (rows * d > 0) {
    MaskAndScaleKernel<<<Blocks(rows * d), 256>>>(s, h, ht, lens, f->hm, f->x);
    MIM_RETURN_IF_ERROR(CheckLaunch("MaskAndScaleKernel", shape));
  }
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, false, rows, h1, d, 1.f, f->hm, d, f->wac, h1,
                                 0.f, f->a1, h1, "DIN z1 = Hm Wac"));
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, false, rows, h1, d, 1.f, f->x, d,
                                 p.w1 + 3 * d * h1, h1, 1.f, f->a1, h1, "DIN z1 += X Wd"));
  AddRowBiasReluKernel<<<Blocks(rows * h1), 256>>>(s, h1, f->c, lens, f->a1);
  MIM_RETURN_IF_ERROR(CheckLaunch("AddRowBiasReluKernel", shape));
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, false, rows, h2, h1, 1.f, f->a1, h1, p.w2, h2,
                                 0.f, f->a2, h2, "DIN z2 = A1 W2"));
  BiasReluKernel<<<Blocks(rows * h2), 256>>>(rows, h2, p.b2, f->a2);
  MIM_RETURN_IF_ERROR(CheckLaunch("BiasReluKernel", shape));
  ScoreKernel<<<Blocks(rows), 256>>>(s, h2, f->a2, p.w3, p.b3, lens, f->score);
  return CheckLaunch("ScoreKernel", shape);
}

}  // namespace

absl::Status DinAttentionForwardCuda(const SeqShape& s,
                                     const AttentionMlpShape& m,
                                     const float* h, const float* h_t,
                                     const int32_t* lens,
                                     const AttentionMlpParams& p,
                                     float* scores, float* out) {
  const char* op = "DinAttentionForwardCuda";
  MIM_RETURN_IF_ERROR(ValidateDin(op, s, m, h, h_t, lens, p, nullptr, out));
  Fwd f;
  MIM_RETURN_IF_ERROR(Forward(op, s, m, h, h_t, lens, p, scores, &f));
  if (s.batch * s.dim == 0) return absl::OkStatus();
  // L = 0: every lens is 0, so out = 0 and f.score is never read.
  RowWeightedSumKernel<<<Blocks(s.batch * s.dim), 256>>>(s, f.score, f.hm, lens, out);
  return CheckLaunch("RowWeightedSumKernel", DinStr(s, m));
}

absl::Status DinAttentionBackwardCuda(const SeqShape& s,
                                      const AttentionMlpShape& m,
                                      const float* h, const float* h_t,
                                      const int32_t* lens,
                                      const AttentionMlpParams& p,
                                      const float* grad_out, float* grad_h,
                                      float* grad_h_t,
                                      const AttentionMlpGrads& g) {
  const char* op = "DinAttentionBackwardCuda";
  MIM_RETURN_IF_ERROR(ValidateDin(op, s, m, h, h_t, lens, p, &g, grad_out));
  const int64_t B = s.batch, L = s.max_len, d = s.dim, h1 = m.hidden1, h2 = m.hidden2;
  const int64_t rows = B * L, dh1 = d * h1;
  const std::string shape = DinStr(s, m);
  // Zero everything first so empty shapes still give zero gradients.
  const char* ms = "DinAttentionBackwardCuda memset";
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.w1, 4 * dh1 * sizeof(float), ms, shape));
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.b1, h1 * sizeof(float), ms, shape));
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.w2, h1 * h2 * sizeof(float), ms, shape));
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.b2, h2 * sizeof(float), ms, shape));
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.w3, h2 * sizeof(float), ms, shape));
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(g.b3, sizeof(float), ms, shape));
  if (grad_h != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::MemsetZero(grad_h, rows * d * sizeof(float), ms, shape));
  }
  if (grad_h_t != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::MemsetZero(grad_h_t, B * d * sizeof(float), ms, shape));
  }
  if (rows == 0) return absl::OkStatus();
  Fwd f;
  MIM_RETURN_IF_ERROR(Forward(op, s, m, h, h_t, lens, p, nullptr, &f));
  float *ds, *dz2, *dz1, *sum1, *pbuf, *qbuf;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 9, rows, &ds));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 10, rows * h2, &dz2));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 11, rows * h1, &dz1));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 12, B * h1, &sum1));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 13, rows * d, &pbuf));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 14, rows * d, &qbuf));
  float* gwa = g.w1;
  float* gwb = g.w1 + dh1;
  cublasHandle_t hdl;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &hdl));
  ScoreGradKernel<<<Blocks(rows), 256>>>(s, h2, f.hm, grad_out, f.a2, p.w3, lens, ds, dz2);
  MIM_RETURN_IF_ERROR(CheckLaunch("ScoreGradKernel", shape));
  // dw3 = A2^T ds; db3 = sum ds; dW2 = A1^T dZ2; db2 = colsum dZ2.
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, h2, 1, rows, 1.f, f.a2, h2, ds, 1, 0.f,
                                 g.w3, 1, "DIN dw3"));
  ColSumKernel<<<1, 32>>>(rows, 1, ds, g.b3);
  MIM_RETURN_IF_ERROR(CheckLaunch("ColSumKernel(b3)", shape));
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, h1, h2, rows, 1.f, f.a1, h1, dz2, h2, 0.f,
                                 g.w2, h2, "DIN dW2"));
  ColSumKernel<<<Blocks(h2), 256>>>(rows, h2, dz2, g.b2);
  MIM_RETURN_IF_ERROR(CheckLaunch("ColSumKernel(b2)", shape));
  // dZ1 = (dZ2 W2^T) o (A1 > 0); padding rows are 0 because dZ2 is.
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, true, rows, h1, h2, 1.f, dz2, h2, p.w2, h2, 0.f,
                                 dz1, h1, "DIN dZ1"));
  ReluGradKernel<<<Blocks(rows * h1), 256>>>(rows * h1, f.a1, dz1);
  MIM_RETURN_IF_ERROR(CheckLaunch("ReluGradKernel", shape));
  RowColSumKernel<<<Blocks(B * h1), 256>>>(B, L, h1, dz1, sum1);
  MIM_RETURN_IF_ERROR(CheckLaunch("RowColSumKernel", shape));
  ColSumKernel<<<Blocks(h1), 256>>>(B, h1, sum1, g.b1);
  MIM_RETURN_IF_ERROR(CheckLaunch("ColSumKernel(b1)", shape));
  // dWa = Hm^T dZ1; dWb = Ht^T S; dWc = dWa - dWb; dWd = X^T dZ1 (all
  // no-ops for d = 0).
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, d, h1, rows, 1.f, f.hm, d, dz1, h1, 0.f,
                                 gwa, h1, "DIN dWa"));
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, d, h1, B, 1.f, h_t, d, sum1, h1, 0.f,
                                 gwb, h1, "DIN dWb"));
  if (dh1 > 0) {
    SubKernel<<<Blocks(dh1), 256>>>(dh1, gwa, gwb, g.w1 + 2 * dh1);
    MIM_RETURN_IF_ERROR(CheckLaunch("SubKernel", shape));
  }
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, d, h1, rows, 1.f, f.x, d, dz1, h1, 0.f,
                                 g.w1 + 3 * dh1, h1, "DIN dWd"));
  if ((grad_h == nullptr && grad_h_t == nullptr) || d == 0) return absl::OkStatus();
  // Q = dZ1 Wd^T, P = dZ1 Wac^T.
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, true, rows, d, h1, 1.f, dz1, h1,
                                 p.w1 + 3 * dh1, h1, 0.f, qbuf, d, "DIN Q"));
  if (grad_h != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, true, rows, d, h1, 1.f, dz1, h1, f.wac, h1,
                                   0.f, pbuf, d, "DIN P"));
    GradHKernel<<<Blocks(rows * d), 256>>>(s, f.score, grad_out, pbuf, qbuf, h_t, lens, grad_h);
    MIM_RETURN_IF_ERROR(CheckLaunch("GradHKernel", shape));
  }
  if (grad_h_t != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, true, B, d, h1, 1.f, sum1, h1, f.wbc, h1, 0.f,
                                   grad_h_t, d, "DIN dh_t"));
    GradHtKernel<<<Blocks(B * d), 256>>>(s, f.hm, qbuf, lens, grad_h_t);
    MIM_RETURN_IF_ERROR(CheckLaunch("GradHtKernel", shape));
  }
  return absl::OkStatus();
}

}  // namespace mim::kernels
