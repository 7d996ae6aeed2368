// CUDA twins of embedding_ops.h, sequence_ops.h, content_ops.h and
// dense_ops.h. Reductions run in a fixed order (no float atomics except in
// GradMode::kAtomic), so results are bit-identical run to run.
#include <cub/device/device_radix_sort.cuh>

#include <cmath>

#include "kernels/content_ops.h"
#include "kernels/cuda_util.cuh"
#include "kernels/dense_ops.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {
using cuda::Blocks;
using cuda::CheckLaunch;
using cuda::SeqStr;

namespace {

std::string GatherStr(const GatherShape& s) {
  return absl::StrFormat("rows=%d dim=%d n=%d", s.rows, s.dim, s.num_indices);
}

// ---- embedding gather ----
__global__ void GatherKernel(GatherShape s, const float* table,
                             const int32_t* index, float* out,
                             unsigned long long* bad) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.num_indices * s.dim) return;
  const int64_t n = e / s.dim, k = e % s.dim;
  const int32_t r = index[n];
  if (r >= s.rows) {
    atomicMin(bad, static_cast<unsigned long long>(n));
    out[e] = 0.f;
    return;
  }
  out[e] = r < 0 ? 0.f : table[int64_t{r} * s.dim + k];
}

__global__ void SegmentSumKernel(GatherShape s, const int32_t* sorted_idx,
                                 const int32_t* perm, const float* grad_out,
                                 float* grad_table) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.rows * s.dim) return;
  const int64_t r = e / s.dim, k = e % s.dim;
  // lower_bound of r and r+1 in the sorted keys.
  int64_t lo = 0, hi = s.num_indices;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (sorted_idx[mid] < r) lo = mid + 1; else hi = mid;
  }
  float acc = 0.f;
  // perm is ascending within a key (stable sort): the CPU's order.
  for (int64_t j = lo; j < s.num_indices && sorted_idx[j] == r; ++j) {
    acc += grad_out[int64_t{perm[j]} * s.dim + k];
  }
  grad_table[e] = acc;
}

__global__ void AtomicScatterKernel(GatherShape s, const int32_t* index,
                                    const float* grad_out, float* grad_table) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.num_indices * s.dim) return;
  const int64_t n = e / s.dim, k = e % s.dim;
  const int32_t r = index[n];
  if (r >= 0 && r < s.rows) atomicAdd(&grad_table[int64_t{r} * s.dim + k], grad_out[e]);
}

__global__ void IotaKernel(int64_t n, int32_t* v) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) v[i] = static_cast<int32_t>(i);
}

// Host-side checks in the CPU twin's order (ValidateGather); the index
// values are checked on the device by the caller.
absl::Status ValidGather(const char* op, const GatherShape& s,
                         const int32_t* index) {
  if (s.rows < 0 || s.dim < 0 || s.num_indices < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: negative shape %s", op, GatherStr(s)));
  }
  if (s.num_indices > 0 && index == nullptr) return cuda::NullArg(op, "index");
  if (s.num_indices > INT32_MAX) {  // cub's sort counts items in int
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %s: more than 2^31-1 indices is not supported on CUDA", op, GatherStr(s)));
  }
  return absl::OkStatus();
}

// ---- sequences ----
__global__ void MeanPoolKernel(SeqShape s, const float* x, const int32_t* lens,
                               float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.dim) return;
  const int64_t b = e / s.dim, k = e % s.dim;
  const int n = lens[b];
  float acc = 0.f;
  for (int i = 0; i < n; ++i) acc += x[(b * s.max_len + i) * s.dim + k];
  out[e] = n > 0 ? acc * (1.f / static_cast<float>(n)) : 0.f;
}

__global__ void MeanPoolBackwardKernel(SeqShape s, const float* g,
                                       const int32_t* lens, float* gx) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len * s.dim) return;
  const int64_t k = e % s.dim, bi = e / s.dim, b = bi / s.max_len,
                i = bi % s.max_len;
  const int n = lens[b];
  gx[e] = i < n ? g[b * s.dim + k] * (1.f / static_cast<float>(n)) : 0.f;
}

__global__ void TopKScoreKernel(SeqShape s, const float* x, const float* t,
                                const int32_t* lens, float* score) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len) return;
  const int64_t b = e / s.max_len, i = e % s.max_len;
  if (i >= lens[b]) return;
  float acc = 0.f;
  // No FMA contraction, same order as the CPU twin: identical bits.
  for (int64_t c = 0; c < s.dim; ++c) {
    acc = __fadd_rn(acc, __fmul_rn(x[e * s.dim + c], t[b * s.dim + c]));
  }
  score[e] = acc;
}

__device__ bool Better(float sa, int64_t a, float sc, int64_t c) {
  const bool na = isnan(sa), nc = isnan(sc);
  if (na != nc) return nc;
  if (!na && sa != sc) return sa > sc;
  return a < c;
}

__global__ void TopKRankKernel(SeqShape s, const float* score,
                               const int32_t* lens, int k, uint8_t* keep) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.max_len) return;
  const int64_t b = e / s.max_len, i = e % s.max_len;
  const int n = lens[b];
  if (i >= n) {
    keep[e] = 0;
    return;
  }
  const float si = score[e];
  int rank = 0;
  for (int j = 0; j < n && rank < k; ++j) {
    if (j != i && Better(score[b * s.max_len + j], j, si, i)) ++rank;
  }
  keep[e] = rank < k ? 1 : 0;
}

__global__ void TopKCompactKernel(SeqShape s, const uint8_t* keep,
                                  const int32_t* lens, int k, int32_t* pos,
                                  int32_t* new_lens) {
  const int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (b >= s.batch) return;
  int j = 0;
  for (int i = 0; i < lens[b]; ++i) {
    if (keep[b * s.max_len + i]) pos[b * k + j++] = i;
  }
  new_lens[b] = j;
  for (; j < k; ++j) pos[b * k + j] = -1;
}

__global__ void SelectRowsKernel(SeqShape s, const float* x,
                                 const int32_t* pos, int k, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * k * s.dim) return;
  const int64_t c = e % s.dim, bj = e / s.dim, b = bj / k;
  const int32_t p = pos[bj];
  out[e] = (p < 0 || p >= s.max_len) ? 0.f : x[(b * s.max_len + p) * s.dim + c];
}

__global__ void SelectRowsBackwardKernel(SeqShape s, const float* g,
                                         const int32_t* pos, int k,
                                         float* gx) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.dim) return;
  const int64_t b = e / s.dim, c = e % s.dim;
  for (int j = 0; j < k; ++j) {  // increasing j, one thread per (b, c)
    const int32_t p = pos[b * k + j];
    if (p >= 0 && p < s.max_len) {
      gx[(b * s.max_len + p) * s.dim + c] += g[(b * k + j) * s.dim + c];
    }
  }
}

// ---- content fusion ----
__device__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per (b, i): alpha, and for backward the per-behaviour grads.
__global__ void ContentAlphaKernel(ContentShape s, const float* m,
                                   const float* mt, const float* h,
                                   const int32_t* lens, const float* gmm,
                                   const float* gfu, float* alpha,
                                   float* coef_a, float* coef_b, float* gm,
                                   float* gh) {
  const int64_t L = s.content.max_len, dm = s.content.dim, d = s.id_dim;
  const int64_t w = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= s.content.batch * L) return;
  const int64_t b = w / L, i = w % L;
  const bool valid = i < lens[b];
  const float* mi = m + w * dm;
  const float* t = mt + b * dm;
  float tt = 0, mm = 0, tm = 0, da = 0;
  if (valid) {
    for (int64_t k = lane; k < dm; k += 32) {
      tt += t[k] * t[k];
      mm += mi[k] * mi[k];
      tm += t[k] * mi[k];
      if (gmm != nullptr) da += gmm[b * dm + k] * mi[k];
    }
    if (gfu != nullptr) {
      for (int64_t k = lane; k < d; k += 32) da += gfu[b * d + k] * h[w * d + k];
    }
  }
  tt = WarpSum(tt);
  mm = WarpSum(mm);
  tm = WarpSum(tm);
  da = WarpSum(da);
  const float nt = sqrtf(tt + kContentCosineEps), nm = sqrtf(mm + kContentCosineEps);
  const float inv = 1.f / (nt * nm);
  const float a = valid ? tm * inv : 0.f;
  if (lane == 0) {
    if (alpha != nullptr) alpha[w] = a;
    if (coef_a != nullptr) coef_a[w] = valid ? da * inv : 0.f;
    if (coef_b != nullptr) coef_b[w] = valid ? da * a : 0.f;
  }
  if (gm != nullptr) {
    const float cm = da * a / (nm * nm);
    for (int64_t k = lane; k < dm; k += 32) {
      gm[w * dm + k] = valid ? a * gmm[b * dm + k] + da * inv * t[k] - cm * mi[k] : 0.f;
    }
  }
  if (gh != nullptr) {
    for (int64_t k = lane; k < d; k += 32) gh[w * d + k] = valid ? a * gfu[b * d + k] : 0.f;
  }
}

// Thread per (b, k): out[b, k] = sum_{i < len} w[b, i] * v[b, i, k] in
// increasing i (deterministic).
__global__ void WeightedSumKernel(int64_t B, int64_t L, int64_t d,
                                  const float* w, const float* v,
                                  const int32_t* lens, float* out) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= B * d) return;
  const int64_t b = e / d, k = e % d;
  float acc = 0.f;
  for (int i = 0; i < lens[b]; ++i) acc += w[b * L + i] * v[(b * L + i) * d + k];
  out[e] = acc;
}

__global__ void ContentGradTargetKernel(ContentShape s, const float* mt,
                                        const float* coef_b,
                                        const int32_t* lens, float* gt) {
  const int64_t dm = s.content.dim, L = s.content.max_len;
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.content.batch * dm) return;
  const int64_t b = e / dm;
  float tt = 0.f, cb = 0.f;
  for (int64_t k = 0; k < dm; ++k) tt += mt[b * dm + k] * mt[b * dm + k];
  for (int i = 0; i < lens[b]; ++i) cb += coef_b[b * L + i];
  gt[e] -= cb / (tt + kContentCosineEps) * mt[e];
}

// ---- dense ----
__global__ void BiasRowsKernel(int64_t rows, int64_t n, const float* b, float* y) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < rows * n) y[e] = b[e % n];
}
__global__ void ReluKernel(int64_t n, float* y) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < n && y[e] < 0.f) y[e] = 0.f;  // std::max(y, 0), as the CPU twin
}
__global__ void ReluMaskKernel(int64_t n, const float* y, const float* g, float* dz) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < n) dz[e] = y[e] > 0.f ? g[e] : 0.f;
}
// Column sums in increasing row order: thread per column.
__global__ void ColSumKernel(int64_t rows, int64_t n, const float* x, float* out) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= n) return;
  float acc = 0.f;
  for (int64_t r = 0; r < rows; ++r) acc += x[r * n + j];
  out[j] = acc;
}

__global__ void XentKernel(int64_t n, const float* z, const float* y, float* loss) {
  __shared__ double part[1024];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double zi = z[i];
    acc += fmax(zi, 0.0) - zi * y[i] + log1p(exp(-fabs(zi)));
  }
  acc = cuda::BlockReduce<1024>(acc, part, cuda::SumOp<double>());
  if (threadIdx.x == 0) *loss = static_cast<float>(acc / static_cast<double>(n));
}
__global__ void XentBackwardKernel(int64_t n, const float* z, const float* y, float* g) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) g[i] = (1.f / (1.f + expf(-z[i])) - y[i]) * (1.f / static_cast<float>(n));
}
__global__ void AdamKernel(int64_t n, float b1, float b2, float lr_t, float eps_t,
                           const float* g, float* p, float* m, float* v) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i];
  const float mi = b1 * m[i] + (1.f - b1) * gi;
  const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] -= lr_t * mi / (sqrtf(vi) + eps_t);
}

std::string DenseStr(const DenseShape& s) {
  return absl::StrFormat("rows=%d in=%d out=%d", s.rows, s.in, s.out);
}

}  // namespace

absl::Status EmbeddingGatherCuda(const GatherShape& s, const float* table,
                                 const int32_t* index, float* out) {
  const char* op = "EmbeddingGatherCuda";
  MIM_RETURN_IF_ERROR(ValidGather(op, s, index));
  const int64_t n = s.num_indices * s.dim;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"table", table, n > 0 && s.rows > 0}, {"out", out, n > 0}}));
  if (s.num_indices == 0) return absl::OkStatus();
  // d = 0 copies nothing, but the CPU twin still rejects bad indices.
  if (n == 0) return cuda::ValidateIndices(op, "index", s.num_indices, index, s.rows, "rows");
  const std::string shape = GatherStr(s);
  unsigned long long* flag = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ResetBadFlag(op, shape, &flag));
  GatherKernel<<<Blocks(n), 256>>>(s, table, index, out, flag);
  MIM_RETURN_IF_ERROR(CheckLaunch("GatherKernel", shape));
  int64_t bad = -1;
  MIM_RETURN_IF_ERROR(cuda::ReadBadFlag("GatherKernel", shape, flag, &bad));
  if (bad >= 0) {
    int32_t v = 0;
    MIM_RETURN_IF_ERROR(cuda::Check(
        cudaMemcpy(&v, index + bad, sizeof(v), cudaMemcpyDeviceToHost), op, shape));
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: index[%d] = %d >= rows %d", op, bad, v, s.rows));
  }
  return absl::OkStatus();
}

absl::Status EmbeddingGatherBackwardCuda(const GatherShape& s,
                                         const float* grad_out,
                                         const int32_t* index, GradMode mode,
                                         float* grad_table) {
  const char* op = "EmbeddingGatherBackwardCuda";
  MIM_RETURN_IF_ERROR(ValidGather(op, s, index));
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"grad_out", grad_out, s.num_indices * s.dim > 0 && s.rows > 0},
           {"grad_table", grad_table, s.rows * s.dim > 0}}));
  // Same contract as the CPU twin: an index >= rows is an error in both
  // modes (it was silently dropped before). Synchronizes.
  MIM_RETURN_IF_ERROR(cuda::ValidateIndices(op, "index", s.num_indices, index, s.rows, "rows"));
  const std::string shape = GatherStr(s);
  if (s.rows * s.dim == 0) return absl::OkStatus();
  if (mode == GradMode::kAtomic) {
    MIM_RETURN_IF_ERROR(cuda::MemsetZero(grad_table, s.rows * s.dim * sizeof(float),
                                         "EmbeddingGatherBackwardCuda memset", shape));
    if (s.num_indices == 0) return absl::OkStatus();
    AtomicScatterKernel<<<Blocks(s.num_indices * s.dim), 256>>>(s, index, grad_out, grad_table);
    return CheckLaunch("AtomicScatterKernel", shape);
  }
  // kDeterministic: no atomics. Stable radix sort of (index, n), then one
  // thread per (row, column) sums its segment in increasing n.
  const int64_t n = s.num_indices;
  int32_t *keys = nullptr, *iota = nullptr, *perm = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, n, &keys));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 2, n, &iota));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 3, n, &perm));
  if (n > 0) {
    IotaKernel<<<Blocks(n), 256>>>(n, iota);
    MIM_RETURN_IF_ERROR(CheckLaunch("IotaKernel", shape));
    size_t temp_bytes = 0;
    MIM_RETURN_IF_ERROR(cuda::Check(
        cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, index, keys, iota,
                                        perm, static_cast<int>(n)),
        "SortPairs(size)", shape));
    void* temp = nullptr;
    MIM_RETURN_IF_ERROR(cuda::Scratch(op, 4, temp_bytes + 16, &temp));
    // LSD radix sort is stable: equal keys keep increasing n.
    MIM_RETURN_IF_ERROR(cuda::Check(
        cub::DeviceRadixSort::SortPairs(temp, temp_bytes, index, keys, iota,
                                        perm, static_cast<int>(n)),
        "SortPairs", shape));
  }
  SegmentSumKernel<<<Blocks(s.rows * s.dim), 256>>>(s, keys, perm, grad_out, grad_table);
  return CheckLaunch("SegmentSumKernel", shape);
}

absl::Status MaskedMeanPoolForwardCuda(const SeqShape& s, const float* x,
                                       const int32_t* lens, float* out) {
  const char* op = "MaskedMeanPoolForwardCuda";
  MIM_RETURN_IF_ERROR(cuda::ValidateLens(op, s, lens));
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"x", x, s.batch * s.max_len * s.dim > 0}, {"out", out, s.batch * s.dim > 0}}));
  if (s.batch * s.dim == 0) return absl::OkStatus();
  MeanPoolKernel<<<Blocks(s.batch * s.dim), 256>>>(s, x, lens, out);
  return CheckLaunch("MeanPoolKernel", SeqStr(s));
}

absl::Status MaskedMeanPoolBackwardCuda(const SeqShape& s,
                                        const float* grad_out,
                                        const int32_t* lens, float* grad_x) {
  const char* op = "MaskedMeanPoolBackwardCuda";
  MIM_RETURN_IF_ERROR(cuda::ValidateLens(op, s, lens));
  const int64_t n = s.batch * s.max_len * s.dim;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"grad_out", grad_out, n > 0}, {"grad_x", grad_x, n > 0}}));
  if (n == 0) return absl::OkStatus();
  MeanPoolBackwardKernel<<<Blocks(n), 256>>>(s, grad_out, lens, grad_x);
  return CheckLaunch("MeanPoolBackwardKernel", SeqStr(s));
}

absl::Status TopKSelectCuda(const SeqShape& s, const float* x,
                            const float* target, const int32_t* lens, int k,
                            int32_t* positions, int32_t* new_lens) {
  const char* op = "TopKSelectCuda";
  MIM_RETURN_IF_ERROR(cuda::ValidateLens(op, s, lens));
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: k=%d, expected >= 1", op, k));
  }
  const int64_t n = s.batch * s.max_len;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"x", x, n * s.dim > 0}, {"target", target, n * s.dim > 0},
           {"positions", positions, s.batch > 0}, {"new_lens", new_lens, s.batch > 0}}));
  if (s.batch == 0) return absl::OkStatus();
  const std::string shape = SeqStr(s) + absl::StrFormat(" k=%d", k);
  float* score = nullptr;
  uint8_t* keep = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, n, &score));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 2, n, &keep));
  if (n > 0) {
    TopKScoreKernel<<<Blocks(n), 256>>>(s, x, target, lens, score);
    MIM_RETURN_IF_ERROR(CheckLaunch("TopKScoreKernel", shape));
    TopKRankKernel<<<Blocks(n), 256>>>(s, score, lens, k, keep);
    MIM_RETURN_IF_ERROR(CheckLaunch("TopKRankKernel", shape));
  }
  TopKCompactKernel<<<Blocks(s.batch), 256>>>(s, keep, lens, k, positions, new_lens);
  return CheckLaunch("TopKCompactKernel", shape);
}

absl::Status SelectRowsForwardCuda(const SeqShape& s, const float* x,
                                   const int32_t* positions, int k,
                                   float* out) {
  const char* op = "SelectRowsForwardCuda";
  if (k < 0) return absl::InvalidArgumentError(absl::StrFormat("%s: k=%d < 0", op, k));
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: negative shape %s", op, SeqStr(s)));
  }
  const int64_t n = s.batch * k * s.dim;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"positions", positions, s.batch * k > 0},
           {"x", x, n > 0 && s.max_len > 0},
           {"out", out, n > 0}}));
  // As the CPU twin: a position >= max_len is an error (synchronizes).
  MIM_RETURN_IF_ERROR(cuda::ValidateIndices(op, "positions", s.batch * k, positions,
                                            s.max_len, "max_len"));
  if (n == 0) return absl::OkStatus();
  SelectRowsKernel<<<Blocks(n), 256>>>(s, x, positions, k, out);
  return CheckLaunch("SelectRowsKernel", SeqStr(s) + absl::StrFormat(" k=%d", k));
}

absl::Status SelectRowsBackwardCuda(const SeqShape& s, const float* grad_out,
                                    const int32_t* positions, int k,
                                    float* grad_x) {
  const char* op = "SelectRowsBackwardCuda";
  if (k < 0) return absl::InvalidArgumentError(absl::StrFormat("%s: k=%d < 0", op, k));
  if (s.batch < 0 || s.max_len < 0 || s.dim < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: negative shape %s", op, SeqStr(s)));
  }
  const int64_t total = s.batch * s.max_len * s.dim;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"grad_out", grad_out, s.batch * k * s.dim > 0 && s.max_len > 0},
           {"positions", positions, s.batch * k > 0},
           {"grad_x", grad_x, total > 0}}));
  MIM_RETURN_IF_ERROR(cuda::ValidateIndices(op, "positions", s.batch * k, positions,
                                            s.max_len, "max_len"));
  if (total == 0) return absl::OkStatus();
  const std::string shape = SeqStr(s) + absl::StrFormat(" k=%d", k);
  MIM_RETURN_IF_ERROR(cuda::MemsetZero(grad_x, total * sizeof(float),
                                       "SelectRowsBackwardCuda memset", shape));
  if (k == 0) return absl::OkStatus();
  SelectRowsBackwardKernel<<<Blocks(s.batch * s.dim), 256>>>(s, grad_out, positions, k, grad_x);
  return CheckLaunch("SelectRowsBackwardKernel", shape);
}

namespace {
// The CPU twin's ValidateContent: lens and shapes, then id_dim >= 0.
absl::Status ValidContent(const char* op, const ContentShape& s,
                          const int32_t* lens) {
  MIM_RETURN_IF_ERROR(cuda::ValidateLens(op, s.content, lens));
  if (s.id_dim < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: id_dim %d < 0", op, s.id_dim));
  }
  return absl::OkStatus();
}
std::string ContentStr(const ContentShape& s) {
  return SeqStr(s.content) + absl::StrFormat(" d_id=%d", s.id_dim);
}
}  // namespace

absl::Status ContentFusionForwardCuda(const ContentShape& s, const float* m,
                                      const float* m_t, const float* h,
                                      const int32_t* lens, float* alpha,
                                      float* h_mm, float* h_fusion) {
  const char* op = "ContentFusionForwardCuda";
  MIM_RETURN_IF_ERROR(ValidContent(op, s, lens));
  const int64_t B = s.content.batch, L = s.content.max_len, dm = s.content.dim;
  if (B == 0) return absl::OkStatus();
  // Null checks in the CPU twin's order and conditions.
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"m", m, L * dm > 0},
           {"m_t", m_t, true},
           {"h_mm", h_mm, true},
           {"h_fusion", h_fusion, true},
           {"h", h, L * s.id_dim > 0}}));
  float* a = alpha;
  if (a == nullptr) MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, B * L, &a));
  const std::string shape = ContentStr(s);
  if (B * L > 0) {
    ContentAlphaKernel<<<Blocks(B * L * 32), 256>>>(s, m, m_t, h, lens, nullptr, nullptr,
                                                    a, nullptr, nullptr, nullptr, nullptr);
    MIM_RETURN_IF_ERROR(CheckLaunch("ContentAlphaKernel", shape));
  }
  if (B * dm > 0) {
    WeightedSumKernel<<<Blocks(B * dm), 256>>>(B, L, dm, a, m, lens, h_mm);
    MIM_RETURN_IF_ERROR(CheckLaunch("WeightedSumKernel(mm)", shape));
  }
  if (B * s.id_dim > 0) {
    WeightedSumKernel<<<Blocks(B * s.id_dim), 256>>>(B, L, s.id_dim, a, h, lens, h_fusion);
    MIM_RETURN_IF_ERROR(CheckLaunch("WeightedSumKernel(fusion)", shape));
  }
  return absl::OkStatus();
}

absl::Status ContentFusionBackwardCuda(const ContentShape& s, const float* m,
                                       const float* m_t, const float* h,
                                       const int32_t* lens,
                                       const float* grad_mm,
                                       const float* grad_fusion, float* grad_m,
                                       float* grad_m_t, float* grad_h) {
  const char* op = "ContentFusionBackwardCuda";
  MIM_RETURN_IF_ERROR(ValidContent(op, s, lens));
  const int64_t B = s.content.batch, L = s.content.max_len, dm = s.content.dim;
  if (B == 0) return absl::OkStatus();
  // Inputs as the forward requires them; the incoming gradients whenever
  // they are non-empty. grad_m, grad_m_t, grad_h may be null (skipped).
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"m", m, L * dm > 0},
           {"m_t", m_t, true},
           {"h", h, L * s.id_dim > 0},
           {"grad_mm", grad_mm, dm > 0},
           {"grad_fusion", grad_fusion, s.id_dim > 0}}));
  const std::string shape = ContentStr(s);
  float *ca = nullptr, *cb = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, B * L, &ca));
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 2, B * L, &cb));
  if (B * L > 0) {
    ContentAlphaKernel<<<Blocks(B * L * 32), 256>>>(s, m, m_t, h, lens, grad_mm, grad_fusion,
                                                    nullptr, ca, cb, grad_m, grad_h);
    MIM_RETURN_IF_ERROR(CheckLaunch("ContentAlphaKernel(backward)", shape));
  }
  if (grad_m_t != nullptr && B * dm > 0) {
    // grad_m_t = sum_i ca_i m_i - (sum_i cb_i) / nt^2 * m_t
    WeightedSumKernel<<<Blocks(B * dm), 256>>>(B, L, dm, ca, m, lens, grad_m_t);
    MIM_RETURN_IF_ERROR(CheckLaunch("WeightedSumKernel(grad_m_t)", shape));
    ContentGradTargetKernel<<<Blocks(B * dm), 256>>>(s, m_t, cb, lens, grad_m_t);
    MIM_RETURN_IF_ERROR(CheckLaunch("ContentGradTargetKernel", shape));
  }
  return absl::OkStatus();
}

absl::Status DenseForwardCuda(const DenseShape& s, const float* x,
                              const float* w, const float* b, Activation act,
                              float* y) {
  const char* op = "DenseForwardCuda";
  if (s.rows < 0 || s.in < 0 || s.out < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: negative shape %s", op, DenseStr(s)));
  }
  const int64_t n = s.rows * s.out;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"x", x, n * s.in > 0}, {"w", w, n * s.in > 0}, {"b", b, n > 0}, {"y", y, n > 0}}));
  if (n == 0) return absl::OkStatus();
  cublasHandle_t hdl;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &hdl));
  BiasRowsKernel<<<Blocks(n), 256>>>(s.rows, s.out, b, y);
  MIM_RETURN_IF_ERROR(CheckLaunch("BiasRowsKernel", DenseStr(s)));
  // in = 0 leaves y = b (K = 0 is handled in Gemm).
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, false, s.rows, s.out, s.in, 1.f, x, s.in, w,
                                 s.out, 1.f, y, s.out, "DenseForwardCuda"));
  if (act == Activation::kRelu) {
    ReluKernel<<<Blocks(n), 256>>>(n, y);
    MIM_RETURN_IF_ERROR(CheckLaunch("ReluKernel", DenseStr(s)));
  }
  return absl::OkStatus();
}

absl::Status DenseBackwardCuda(const DenseShape& s, const float* x,
                               const float* w, const float* y,
                               const float* grad_y, Activation act,
                               float* grad_x, float* grad_w, float* grad_b) {
  const char* op = "DenseBackwardCuda";
  if (s.rows < 0 || s.in < 0 || s.out < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: negative shape %s", op, DenseStr(s)));
  }
  const int64_t n = s.rows * s.out;
  const bool relu = act == Activation::kRelu;
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"x", x, n * s.in > 0},
           {"w", w, grad_x != nullptr && n * s.in > 0},
           {"y", y, relu && n > 0},
           {"grad_y", grad_y, n > 0},
           {"grad_w", grad_w, s.in * s.out > 0},
           {"grad_b", grad_b, s.out > 0}}));
  const std::string shape = DenseStr(s);
  cublasHandle_t hdl;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &hdl));
  const float* dz = grad_y;
  if (relu && n > 0) {
    float* masked = nullptr;
    MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, n, &masked));
    ReluMaskKernel<<<Blocks(n), 256>>>(n, y, grad_y, masked);
    MIM_RETURN_IF_ERROR(CheckLaunch("ReluMaskKernel", shape));
    dz = masked;
  }
  // rows = 0 gives grad_w = 0 and grad_b = 0; out = 0 gives grad_x = 0
  // (K = 0 in Gemm), as the CPU twin.
  MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, true, false, s.in, s.out, s.rows, 1.f, x, s.in, dz,
                                 s.out, 0.f, grad_w, s.out, "DenseBackwardCuda dW"));
  if (s.out > 0) {
    ColSumKernel<<<Blocks(s.out), 256>>>(s.rows, s.out, dz, grad_b);
    MIM_RETURN_IF_ERROR(CheckLaunch("ColSumKernel", shape));
  }
  if (grad_x != nullptr) {
    MIM_RETURN_IF_ERROR(cuda::Gemm(hdl, false, true, s.rows, s.in, s.out, 1.f, dz, s.out, w,
                                   s.out, 0.f, grad_x, s.in, "DenseBackwardCuda dX"));
  }
  return absl::OkStatus();
}

absl::Status SigmoidCrossEntropyForwardCuda(int64_t n, const float* logits,
                                            const float* labels, float* loss) {
  const char* op = "SigmoidCrossEntropyForwardCuda";
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: n=%d, expected >= 1", op, n));
  }
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"logits", logits, true}, {"labels", labels, true}, {"loss", loss, true}}));
  XentKernel<<<1, 1024>>>(n, logits, labels, loss);
  return CheckLaunch("XentKernel", absl::StrFormat("n=%d", n));
}

absl::Status SigmoidCrossEntropyBackwardCuda(int64_t n, const float* logits,
                                             const float* labels,
                                             float* grad_logits) {
  const char* op = "SigmoidCrossEntropyBackwardCuda";
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: n=%d, expected >= 1", op, n));
  }
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"logits", logits, true}, {"labels", labels, true},
           {"grad_logits", grad_logits, true}}));
  XentBackwardKernel<<<Blocks(n), 256>>>(n, logits, labels, grad_logits);
  return CheckLaunch("XentBackwardKernel", absl::StrFormat("n=%d", n));
}

absl::Status AdamUpdateCuda(const AdamConfig& c, int64_t step, int64_t n,
                            const float* grad, float* param, float* m,
                            float* v) {
  const char* op = "AdamUpdateCuda";
  if (step < 1 || n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: step=%d (expected >= 1), n=%d", op, step, n));
  }
  if (n == 0) return absl::OkStatus();
  MIM_RETURN_IF_ERROR(cuda::RequireNonNull(
      op, {{"grad", grad, true}, {"param", param, true}, {"m", m, true}, {"v", v, true}}));
  // Same folding of the bias corrections as the CPU twin.
  const double bc1 = 1.0 - std::pow(double{c.beta1}, double(step));
  const double bc2 = 1.0 - std::pow(double{c.beta2}, double(step));
  const float lr_t = static_cast<float>(c.learning_rate * std::sqrt(bc2) / bc1);
  const float eps_t = static_cast<float>(c.epsilon * std::sqrt(bc2));
  AdamKernel<<<Blocks(n), 256>>>(n, c.beta1, c.beta2, lr_t, eps_t, grad, param, m, v);
  return CheckLaunch("AdamKernel", absl::StrFormat("n=%d", n));
}

}  // namespace mim::kernels
