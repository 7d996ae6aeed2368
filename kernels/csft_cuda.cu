// CUDA twins of csft_ops.h (the C-SFT math): the CPU twins' shapes, checks
// and error wording (csft_cpu.cc), with the op named "...Cuda". Every
// pointer is device memory, the InfoNCE loss and negative counts included.
// Reductions run in a fixed order (tree reductions in shared memory, no
// float atomics), so results are bit-identical run to run. InfoNCE's
// scores and gradients are cuBLAS GEMMs (in the process's CudaMath, strict
// fp32 by default); its softmax is one block per query.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/csft_ops.h"
#include "kernels/cuda_util.cuh"

namespace mim::kernels {
using cuda::Blocks;
using cuda::BlockReduce;
using cuda::CheckLaunch;
using cuda::MaxOp;
using cuda::SumOp;

namespace {

constexpr int kRowThreads = 128;  // L2 normalisation: threads per row
constexpr int kNceThreads = 256;  // InfoNCE softmax: threads per query

absl::Status Invalid(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

std::string FusionStr(const TensorFusionShape& s) {
  return absl::StrCat("rows=", s.rows, " dim_a=", s.dim_a, " dim_b=", s.dim_b);
}
std::string NceStr(const InfoNceShape& s) {
  return absl::StrCat("batch=", s.batch, " candidates=", s.candidates,
                      " dim=", s.dim);
}

// ---- tensor fusion ----

// TensorFusionShape::out_dim on the device (the header stays host-only).
__device__ int64_t OutDim(const TensorFusionShape& s) {
  return (s.dim_a + 1) * (s.dim_b + 1);
}

// Thread per output element: out[r, i*(db+1)+j] = ah[i] * bh[j].
__global__ void TensorFusionKernel(TensorFusionShape s, const float* a,
                                   const float* b, float* out) {
  const int64_t od = OutDim(s);
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.rows * od) return;
  const int64_t wb = s.dim_b + 1;
  const int64_t r = e / od, i = (e % od) / wb, j = (e % od) % wb;
  const float ai = i < s.dim_a ? a[r * s.dim_a + i] : 1.f;
  out[e] = j < s.dim_b ? ai * b[r * s.dim_b + j] : ai;
}

// Thread per (r, i): grad_a[r, i] = g[r, i, db] + sum_j g[r, i, j] b[r, j].
__global__ void TensorFusionGradAKernel(TensorFusionShape s, const float* b,
                                        const float* g, float* grad_a) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.rows * s.dim_a) return;
  const int64_t r = e / s.dim_a, i = e % s.dim_a, wb = s.dim_b + 1;
  const float* gr = g + r * OutDim(s) + i * wb;
  const float* br = b + r * s.dim_b;
  float acc = gr[s.dim_b];
  for (int64_t j = 0; j < s.dim_b; ++j) acc += gr[j] * br[j];
  grad_a[e] = acc;
}

// Thread per (r, j): grad_b[r, j] = g[r, da, j] + sum_i g[r, i, j] a[r, i].
__global__ void TensorFusionGradBKernel(TensorFusionShape s, const float* a,
                                        const float* g, float* grad_b) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.rows * s.dim_b) return;
  const int64_t r = e / s.dim_b, j = e % s.dim_b, wb = s.dim_b + 1;
  const float* gr = g + r * OutDim(s);
  const float* ar = a + r * s.dim_a;
  float acc = gr[s.dim_a * wb + j];
  for (int64_t i = 0; i < s.dim_a; ++i) acc += gr[i * wb + j] * ar[i];
  grad_b[e] = acc;
}

// ---- L2 normalisation ----

// Block per row. Forward (gy null): y = x / n. Backward: grad_x = gy / n -
// x (x . gy) / n^3; n = sqrt(|x|^2 + eps).
__global__ void L2NormalizeKernel(int64_t dim, const float* x,
                                  const float* gy, float* out) {
  __shared__ float part[kRowThreads];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  const float* gr = gy != nullptr ? gy + r * dim : nullptr;
  float ss = 0.f, xg = 0.f;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
    ss += xr[k] * xr[k];
    if (gr != nullptr) xg += xr[k] * gr[k];
  }
  ss = BlockReduce<kRowThreads>(ss, part, SumOp<float>());
  const float n2 = ss + static_cast<float>(kCsftNormEps);
  const float n = sqrtf(n2);
  if (gr == nullptr) {
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
      out[r * dim + k] = xr[k] / n;
    }
    return;
  }
  xg = BlockReduce<kRowThreads>(xg, part, SumOp<float>());
  const float c = xg / (n2 * n);
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
    out[r * dim + k] = gr[k] / n - xr[k] * c;
  }
}

// ---- InfoNCE ----

// Candidate j takes part in query b's softmax (the CPU twin's mask).
__device__ bool Kept(int64_t b, int64_t j, const int64_t* query_ids,
                     const int64_t* cand_ids) {
  if (j == b || cand_ids == nullptr) return true;
  if (cand_ids[j] == cand_ids[b]) return false;
  return query_ids == nullptr || cand_ids[j] != query_ids[b];
}

// Block per query b. On entry prob[b, :] holds the scores z = q_b . c_j /
// tau (the GEMM); on exit the softmax over the kept candidates (0 where
// masked). row_loss[b] = logsumexp - z_b; negatives[b] = kept j != b.
__global__ void InfoNceSoftmaxKernel(InfoNceShape s, const int64_t* query_ids,
                                     const int64_t* cand_ids, float* prob,
                                     float* row_loss, int32_t* negatives) {
  __shared__ float fpart[kNceThreads];
  __shared__ int ipart[kNceThreads];
  const int64_t b = blockIdx.x, n = s.candidates;
  float* z = prob + b * n;
  float zmax = -INFINITY;
  int count = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (!Kept(b, j, query_ids, cand_ids)) continue;
    zmax = fmaxf(zmax, z[j]);
    if (j != b) ++count;
  }
  zmax = BlockReduce<kNceThreads>(zmax, fpart, MaxOp());
  count = BlockReduce<kNceThreads>(count, ipart, SumOp<int>());
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (Kept(b, j, query_ids, cand_ids)) sum += expf(z[j] - zmax);
  }
  sum = BlockReduce<kNceThreads>(sum, fpart, SumOp<float>());
  const float lse = zmax + logf(sum);
  const float zb = z[b];
  __syncthreads();  // every thread has read z[b] before it is overwritten
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    z[j] = Kept(b, j, query_ids, cand_ids) ? expf(z[j] - lse) : 0.f;
  }
  if (threadIdx.x == 0) {
    row_loss[b] = lse - zb;
    if (negatives != nullptr) negatives[b] = count;
  }
}

// One block: *loss = mean of row_loss, summed in double in a fixed order.
__global__ void MeanKernel(int64_t n, const float* v, float* out) {
  __shared__ double part[kNceThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += v[i];
  acc = BlockReduce<kNceThreads>(acc, part, SumOp<double>());
  if (threadIdx.x == 0) *out = static_cast<float>(acc / static_cast<double>(n));
}

// dz[b, j] = (prob[b, j] - [j == b]) * scale.
__global__ void InfoNceGradScoresKernel(InfoNceShape s, const float* prob,
                                        float scale, float* dz) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.candidates) return;
  const int64_t b = e / s.candidates, j = e % s.candidates;
  dz[e] = (prob[e] - (j == b ? 1.f : 0.f)) * scale;
}

// The CPU twins' shape and temperature checks (csft_cpu.cc).
absl::Status ValidInfoNce(const char* op, const InfoNceShape& s,
                          float temperature, bool forward) {
  if (s.batch < 1 || s.dim < 1 || s.candidates < s.batch) {
    return Invalid(op, absl::StrCat(
                           "shape ", NceStr(s),
                           "; expected batch >= 1, dim >= 1 and candidates "
                           ">= batch",
                           forward ? " (candidate b is query b's positive)"
                                   : ""));
  }
  if (!(temperature > 0)) {
    return Invalid(op, absl::StrCat("temperature ", double(temperature),
                                    "; expected > 0"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TensorFusionForwardCuda(const TensorFusionShape& s,
                                     const float* a, const float* b,
                                     float* out) {
  const char* op = "TensorFusionForwardCuda";
  if (s.rows < 0 || s.dim_a < 0 || s.dim_b < 0) {
    return Invalid(op, "negative shape " + FusionStr(s));
  }
  if (s.rows == 0) return absl::OkStatus();
  if (a == nullptr || b == nullptr || out == nullptr) {
    return Invalid(op, "null a, b or out");
  }
  TensorFusionKernel<<<Blocks(s.rows * s.out_dim()), 256>>>(s, a, b, out);
  return CheckLaunch("TensorFusionKernel", FusionStr(s));
}

absl::Status TensorFusionBackwardCuda(const TensorFusionShape& s,
                                      const float* a, const float* b,
                                      const float* grad_out, float* grad_a,
                                      float* grad_b) {
  const char* op = "TensorFusionBackwardCuda";
  if (s.rows < 0 || s.dim_a < 0 || s.dim_b < 0) {
    return Invalid(op, "negative shape " + FusionStr(s));
  }
  if (s.rows == 0) return absl::OkStatus();
  if (a == nullptr || b == nullptr || grad_out == nullptr) {
    return Invalid(op, "null a, b or grad_out");
  }
  if (grad_a != nullptr && s.dim_a > 0) {
    TensorFusionGradAKernel<<<Blocks(s.rows * s.dim_a), 256>>>(s, b, grad_out,
                                                                grad_a);
    MIM_RETURN_IF_ERROR(CheckLaunch("TensorFusionGradAKernel", FusionStr(s)));
  }
  if (grad_b != nullptr && s.dim_b > 0) {
    TensorFusionGradBKernel<<<Blocks(s.rows * s.dim_b), 256>>>(s, a, grad_out,
                                                                grad_b);
    MIM_RETURN_IF_ERROR(CheckLaunch("TensorFusionGradBKernel", FusionStr(s)));
  }
  return absl::OkStatus();
}

absl::Status L2NormalizeForwardCuda(int64_t rows, int64_t dim, const float* x,
                                    float* y) {
  const char* op = "L2NormalizeForwardCuda";
  if (rows < 0 || dim < 0) {
    return Invalid(op, absl::StrCat("negative shape rows=", rows, " dim=", dim));
  }
  if (rows == 0 || dim == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr) return Invalid(op, "null x or y");
  L2NormalizeKernel<<<static_cast<unsigned>(rows), kRowThreads>>>(dim, x,
                                                                   nullptr, y);
  return CheckLaunch("L2NormalizeKernel",
                     absl::StrCat("rows=", rows, " dim=", dim));
}

absl::Status L2NormalizeBackwardCuda(int64_t rows, int64_t dim,
                                     const float* x, const float* grad_y,
                                     float* grad_x) {
  const char* op = "L2NormalizeBackwardCuda";
  if (rows < 0 || dim < 0) {
    return Invalid(op, absl::StrCat("negative shape rows=", rows, " dim=", dim));
  }
  if (rows == 0 || dim == 0) return absl::OkStatus();
  if (x == nullptr || grad_y == nullptr || grad_x == nullptr) {
    return Invalid(op, "null x, grad_y or grad_x");
  }
  L2NormalizeKernel<<<static_cast<unsigned>(rows), kRowThreads>>>(
      dim, x, grad_y, grad_x);
  return CheckLaunch("L2NormalizeKernel backward",
                     absl::StrCat("rows=", rows, " dim=", dim));
}

absl::Status InfoNceForwardCuda(const InfoNceShape& s, float temperature,
                                const float* q, const float* c,
                                const int64_t* query_ids,
                                const int64_t* cand_ids, float* loss,
                                float* prob, int32_t* negatives) {
  const char* op = "InfoNceForwardCuda";
  MIM_RETURN_IF_ERROR(ValidInfoNce(op, s, temperature, /*forward=*/true));
  if (q == nullptr || c == nullptr || loss == nullptr || prob == nullptr) {
    return Invalid(op, "null q, c, loss or prob");
  }
  cublasHandle_t h;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &h));
  // prob = q c^T / tau, then the softmax in place.
  MIM_RETURN_IF_ERROR(cuda::Gemm(h, false, true, s.batch, s.candidates, s.dim,
                                 1.f / temperature, q, s.dim, c, s.dim, 0.f,
                                 prob, s.candidates, "InfoNceForwardCuda scores"));
  float* row_loss = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, s.batch, &row_loss));
  InfoNceSoftmaxKernel<<<static_cast<unsigned>(s.batch), kNceThreads>>>(
      s, query_ids, cand_ids, prob, row_loss, negatives);
  MIM_RETURN_IF_ERROR(CheckLaunch("InfoNceSoftmaxKernel", NceStr(s)));
  MeanKernel<<<1, kNceThreads>>>(s.batch, row_loss, loss);
  return CheckLaunch("InfoNce MeanKernel", NceStr(s));
}

absl::Status InfoNceBackwardCuda(const InfoNceShape& s, float temperature,
                                 const float* q, const float* c,
                                 const float* prob, float grad_loss,
                                 float* grad_q, float* grad_c) {
  const char* op = "InfoNceBackwardCuda";
  MIM_RETURN_IF_ERROR(ValidInfoNce(op, s, temperature, /*forward=*/false));
  if (q == nullptr || c == nullptr || prob == nullptr) {
    return Invalid(op, "null q, c or prob");
  }
  if (grad_q == nullptr && grad_c == nullptr) return absl::OkStatus();
  float* dz = nullptr;
  MIM_RETURN_IF_ERROR(cuda::ScratchOf(op, 1, s.batch * s.candidates, &dz));
  const float scale = static_cast<float>(
      double(grad_loss) / (double(s.batch) * double(temperature)));
  InfoNceGradScoresKernel<<<Blocks(s.batch * s.candidates), 256>>>(s, prob,
                                                                    scale, dz);
  MIM_RETURN_IF_ERROR(CheckLaunch("InfoNceGradScoresKernel", NceStr(s)));
  cublasHandle_t h;
  MIM_RETURN_IF_ERROR(cuda::BlasHandle(op, &h));
  if (grad_q != nullptr) {  // grad_q = dz c
    MIM_RETURN_IF_ERROR(cuda::Gemm(h, false, false, s.batch, s.dim,
                                   s.candidates, 1.f, dz, s.candidates, c,
                                   s.dim, 0.f, grad_q, s.dim,
                                   "InfoNceBackwardCuda grad_q"));
  }
  if (grad_c != nullptr) {  // grad_c = dz^T q
    MIM_RETURN_IF_ERROR(cuda::Gemm(h, true, false, s.candidates, s.dim,
                                   s.batch, 1.f, dz, s.candidates, q, s.dim,
                                   0.f, grad_c, s.dim,
                                   "InfoNceBackwardCuda grad_c"));
  }
  return absl::OkStatus();
}

}  // namespace mim::kernels
