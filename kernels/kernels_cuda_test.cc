// CUDA twins vs CPU twins on seeded random inputs of awkward shapes
// (L = 1, 50, 1000; rows with lens 0; B = 1; d = 7, 33, 64). Skips with
// "no CUDA device: <reason>" when no device is usable. Also built on the
// CUDA grid emulator (kernels/testing/README.md), where it runs in every
// `bazel test //...` without a GPU.
//
// Tolerance (all float ops): |cuda - cpu| <= kAtol * max(1, max|cpu|) +
// kRtol * |cpu|, kAtol = 2e-4, kRtol = 1e-3: the twins sum in different
// orders (cuBLAS vs OpenBLAS, FMA on the GPU) over up to 1000 terms.
// Exact equality where the order is the same by construction: gather,
// deterministic segment sum, top-K, select.
#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/attention_ops.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/cpu_test_util.h"
#include "kernels/csft_ops.h"
#include "kernels/dense_ops.h"
#include "kernels/device_buffer.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {
namespace {

using testing::RandomVec;

constexpr double kAtol = 2e-4, kRtol = 1e-3;

template <typename T>
DeviceBuffer<T> Up(const std::vector<T>& v) {
  auto b = DeviceBuffer<T>::FromHost(absl::MakeConstSpan(v));
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(b).value();
}
template <typename T>
DeviceBuffer<T> Zeros(size_t n) {
  auto b = DeviceBuffer<T>::Allocate(n);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(b).value();
}
template <typename T>
std::vector<T> Down(const DeviceBuffer<T>& b) {
  EXPECT_TRUE(CudaSynchronize().ok());
  std::vector<T> v(b.size());
  EXPECT_TRUE(b.CopyToHost(absl::MakeSpan(v)).ok());
  return v;
}

void ExpectClose(const std::vector<float>& cpu, const std::vector<float>& gpu,
                 const std::string& what) {
  ASSERT_EQ(cpu.size(), gpu.size()) << what;
  double scale = 1;
  for (float x : cpu) scale = std::max(scale, double(std::abs(x)));
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_NEAR(cpu[i], gpu[i], kAtol * scale + kRtol * std::abs(cpu[i]))
        << what << " element " << i;
  }
}

struct Case {
  int64_t B, L, d;
};
std::string Name(const Case& c) {
  return absl::StrFormat("B=%d L=%d d=%d", c.B, c.L, c.d);
}
// Lengths: row 0 full, row 1 empty (if B > 1), the rest random.
std::vector<int32_t> Lens(const Case& c, uint32_t seed) {
  std::vector<int32_t> lens(c.B);
  auto r = RandomVec<double>(c.B, seed, 0, 1);
  for (int64_t b = 0; b < c.B; ++b) lens[b] = static_cast<int32_t>(r[b] * (c.L + 1)) % (c.L + 1);
  if (c.B > 0) lens[0] = c.L;
  if (c.B > 1) lens[1] = 0;
  return lens;
}

// Smallest |pre-activation| of either hidden layer (DIN's default 80-40
// MLP) over a row's n valid behaviours, in double. Where it is tiny, float
// rounding (cuBLAS vs OpenBLAS) can put the twins on opposite sides of a
// ReLU kink, and their gradients then differ by a whole term, far beyond
// kAtol: a property of the inputs, not a bug.
double MinAbsPreActivation(int64_t d, int64_t n, const float* hb, const float* ht,
                           const std::vector<float>& w1, const std::vector<float>& b1,
                           const std::vector<float>& w2, const std::vector<float>& b2) {
  constexpr int64_t h1 = 80, h2 = 40;
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> a1(h1);
  for (int64_t i = 0; i < n; ++i) {
    const float* hi = hb + i * d;
    for (int64_t j = 0; j < h1; ++j) {
      double z = b1[j];
      for (int64_t k = 0; k < d; ++k) {
        const double x = hi[k], t = ht[k];
        z += x * w1[k * h1 + j] + t * w1[(d + k) * h1 + j] + (x - t) * w1[(2 * d + k) * h1 + j] +
             x * t * w1[(3 * d + k) * h1 + j];
      }
      best = std::min(best, std::abs(z));
      a1[j] = std::max(z, 0.0);
    }
    for (int64_t j = 0; j < h2; ++j) {
      double z = b2[j];
      for (int64_t q = 0; q < h1; ++q) z += a1[q] * w2[q * h2 + j];
      best = std::min(best, std::abs(z));
    }
  }
  return best;
}

class CudaVsCpuTest : public ::testing::TestWithParam<Case> {};

TEST_P(CudaVsCpuTest, DinAttentionForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const SeqShape s{c.B, c.L, c.d};
  const AttentionMlpShape m;
  const auto lens = Lens(c, 1);
  auto h = RandomVec<float>(c.B * c.L * c.d, 2), ht = RandomVec<float>(c.B * c.d, 3);
  auto w1 = RandomVec<float>(4 * c.d * 80, 4, -0.2, 0.2), b1 = RandomVec<float>(80, 5, 0, 0.2),
       w2 = RandomVec<float>(3200, 6, -0.2, 0.2), b2 = RandomVec<float>(40, 7, 0, 0.2),
       w3 = RandomVec<float>(40, 8), b3 = RandomVec<float>(1, 9),
       go = RandomVec<float>(c.B * c.d, 10);
  // Redraw a row's target until its pre-activations all sit >= 1e-5 from
  // the ReLU kink (50x the twins' float disagreement), so both twins take
  // the same ReLU branches.
  for (int64_t b = 0; b < c.B; ++b) {
    for (int tries = 0; MinAbsPreActivation(c.d, lens[b], &h[b * c.L * c.d], &ht[b * c.d], w1,
                                            b1, w2, b2) < 1e-5;) {
      ASSERT_LT(++tries, 500) << "row " << b << " " << Name(c);
      const auto t = RandomVec<float>(c.d, 1000 + 7919 * b + tries);
      std::copy(t.begin(), t.end(), ht.begin() + b * c.d);
    }
  }
  std::vector<float> out(c.B * c.d), sc(c.B * c.L), gh(h.size()), ght(ht.size()),
      gw1(w1.size()), gb1(80), gw2(3200), gb2(40), gw3(40), gb3(1);
  const AttentionMlpParams p{w1.data(), b1.data(), w2.data(), b2.data(), w3.data(), b3.data()};
  ASSERT_TRUE(DinAttentionForwardCpu(s, m, h.data(), ht.data(), lens.data(), p, sc.data(), out.data()).ok());
  ASSERT_TRUE(DinAttentionBackwardCpu(s, m, h.data(), ht.data(), lens.data(), p, go.data(), gh.data(),
                                      ght.data(), {gw1.data(), gb1.data(), gw2.data(), gb2.data(),
                                                   gw3.data(), gb3.data()}).ok());
  auto dh = Up(h), dht = Up(ht), dw1 = Up(w1), db1 = Up(b1), dw2 = Up(w2), db2 = Up(b2),
       dw3 = Up(w3), db3 = Up(b3), dgo = Up(go);
  auto dlens = Up(lens);
  auto dout = Zeros<float>(out.size()), dsc = Zeros<float>(sc.size()), dgh = Zeros<float>(gh.size()),
       dght = Zeros<float>(ght.size()), dgw1 = Zeros<float>(gw1.size()), dgb1 = Zeros<float>(80),
       dgw2 = Zeros<float>(3200), dgb2 = Zeros<float>(40), dgw3 = Zeros<float>(40), dgb3 = Zeros<float>(1);
  const AttentionMlpParams dp{dw1.data(), db1.data(), dw2.data(), db2.data(), dw3.data(), db3.data()};
  ASSERT_TRUE(DinAttentionForwardCuda(s, m, dh.data(), dht.data(), dlens.data(), dp, dsc.data(),
                                      dout.data()).ok());
  ASSERT_TRUE(DinAttentionBackwardCuda(s, m, dh.data(), dht.data(), dlens.data(), dp, dgo.data(),
                                       dgh.data(), dght.data(),
                                       {dgw1.data(), dgb1.data(), dgw2.data(), dgb2.data(),
                                        dgw3.data(), dgb3.data()}).ok());
  ExpectClose(out, Down(dout), "out " + Name(c));
  ExpectClose(sc, Down(dsc), "scores " + Name(c));
  ExpectClose(gh, Down(dgh), "grad_h " + Name(c));
  ExpectClose(ght, Down(dght), "grad_h_t " + Name(c));
  ExpectClose(gw1, Down(dgw1), "grad_w1 " + Name(c));
  ExpectClose(gb1, Down(dgb1), "grad_b1 " + Name(c));
  ExpectClose(gw2, Down(dgw2), "grad_w2 " + Name(c));
  ExpectClose(gb2, Down(dgb2), "grad_b2 " + Name(c));
  ExpectClose(gw3, Down(dgw3), "grad_w3 " + Name(c));
  ExpectClose(gb3, Down(dgb3), "grad_b3 " + Name(c));
}

TEST_P(CudaVsCpuTest, ContentFusionForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const int64_t dm = c.d + 5;  // content dim differs from the ID dim
  const ContentShape s{{c.B, c.L, dm}, c.d};
  const auto lens = Lens(c, 11);
  auto m = RandomVec<float>(c.B * c.L * dm, 12), mt = RandomVec<float>(c.B * dm, 13),
       h = RandomVec<float>(c.B * c.L * c.d, 14), gmm = RandomVec<float>(c.B * dm, 15),
       gfu = RandomVec<float>(c.B * c.d, 16);
  std::fill_n(m.begin(), dm, 0.f);  // a zero content vector
  std::vector<float> al(c.B * c.L), hmm(c.B * dm), hfu(c.B * c.d), gm(m.size()), gmt(mt.size()),
      gh(h.size());
  ASSERT_TRUE(ContentFusionForwardCpu(s, m.data(), mt.data(), h.data(), lens.data(), al.data(),
                                      hmm.data(), hfu.data()).ok());
  ASSERT_TRUE(ContentFusionBackwardCpu(s, m.data(), mt.data(), h.data(), lens.data(), gmm.data(),
                                       gfu.data(), gm.data(), gmt.data(), gh.data()).ok());
  auto dm_ = Up(m), dmt = Up(mt), dh = Up(h), dgmm = Up(gmm), dgfu = Up(gfu);
  auto dlens = Up(lens);
  auto dal = Zeros<float>(al.size()), dhmm = Zeros<float>(hmm.size()), dhfu = Zeros<float>(hfu.size()),
       dgm = Zeros<float>(gm.size()), dgmt = Zeros<float>(gmt.size()), dgh = Zeros<float>(gh.size());
  ASSERT_TRUE(ContentFusionForwardCuda(s, dm_.data(), dmt.data(), dh.data(), dlens.data(), dal.data(),
                                       dhmm.data(), dhfu.data()).ok());
  ASSERT_TRUE(ContentFusionBackwardCuda(s, dm_.data(), dmt.data(), dh.data(), dlens.data(),
                                        dgmm.data(), dgfu.data(), dgm.data(), dgmt.data(),
                                        dgh.data()).ok());
  ExpectClose(al, Down(dal), "alpha " + Name(c));
  ExpectClose(hmm, Down(dhmm), "h_mm " + Name(c));
  ExpectClose(hfu, Down(dhfu), "h_fusion " + Name(c));
  ExpectClose(gm, Down(dgm), "grad_m " + Name(c));
  ExpectClose(gmt, Down(dgmt), "grad_m_t " + Name(c));
  ExpectClose(gh, Down(dgh), "grad_h " + Name(c));
}

TEST_P(CudaVsCpuTest, PoolTopKSelect) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const SeqShape s{c.B, c.L, c.d};
  const auto lens = Lens(c, 21);
  auto x = RandomVec<float>(c.B * c.L * c.d, 22), t = RandomVec<float>(c.B * c.d, 23),
       g = RandomVec<float>(c.B * c.d, 24);
  const int k = 7;
  auto gk = RandomVec<float>(c.B * k * c.d, 25);
  std::vector<float> pool(c.B * c.d), gx(x.size()), sel(c.B * k * c.d), gsel(x.size());
  std::vector<int32_t> pos(c.B * k), nl(c.B);
  ASSERT_TRUE(MaskedMeanPoolForwardCpu(s, x.data(), lens.data(), pool.data()).ok());
  ASSERT_TRUE(MaskedMeanPoolBackwardCpu(s, g.data(), lens.data(), gx.data()).ok());
  ASSERT_TRUE(TopKSelectCpu(s, x.data(), t.data(), lens.data(), k, pos.data(), nl.data()).ok());
  ASSERT_TRUE(SelectRowsForwardCpu(s, x.data(), pos.data(), k, sel.data()).ok());
  ASSERT_TRUE(SelectRowsBackwardCpu(s, gk.data(), pos.data(), k, gsel.data()).ok());
  auto dx = Up(x), dt = Up(t), dg = Up(g), dgk = Up(gk);
  auto dlens = Up(lens);
  auto dpool = Zeros<float>(pool.size()), dgx = Zeros<float>(gx.size()),
       dsel = Zeros<float>(sel.size()), dgsel = Zeros<float>(gsel.size());
  auto dpos = Zeros<int32_t>(pos.size()), dnl = Zeros<int32_t>(nl.size());
  ASSERT_TRUE(MaskedMeanPoolForwardCuda(s, dx.data(), dlens.data(), dpool.data()).ok());
  ASSERT_TRUE(MaskedMeanPoolBackwardCuda(s, dg.data(), dlens.data(), dgx.data()).ok());
  ASSERT_TRUE(TopKSelectCuda(s, dx.data(), dt.data(), dlens.data(), k, dpos.data(), dnl.data()).ok());
  EXPECT_EQ(pos, Down(dpos)) << Name(c);
  EXPECT_EQ(nl, Down(dnl)) << Name(c);
  ASSERT_TRUE(SelectRowsForwardCuda(s, dx.data(), dpos.data(), k, dsel.data()).ok());
  ASSERT_TRUE(SelectRowsBackwardCuda(s, dgk.data(), dpos.data(), k, dgsel.data()).ok());
  ExpectClose(pool, Down(dpool), "pool " + Name(c));
  ExpectClose(gx, Down(dgx), "pool grad " + Name(c));
  EXPECT_EQ(sel, Down(dsel)) << Name(c);
  EXPECT_EQ(gsel, Down(dgsel)) << Name(c);
}

TEST_P(CudaVsCpuTest, EmbeddingGatherBothModes) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const GatherShape s{c.L, c.d, c.B * c.L};  // U = L unique rows
  auto r = RandomVec<double>(s.num_indices, 31, 0, 1);
  std::vector<int32_t> idx(s.num_indices);
  for (int64_t n = 0; n < s.num_indices; ++n) {
    idx[n] = static_cast<int32_t>(r[n] * (s.rows + 1)) - 1;  // -1 = padding
  }
  auto table = RandomVec<float>(s.rows * s.dim, 32), go = RandomVec<float>(s.num_indices * s.dim, 33);
  std::vector<float> out(go.size()), gt(table.size());
  ASSERT_TRUE(EmbeddingGatherCpu(s, table.data(), idx.data(), out.data()).ok());
  ASSERT_TRUE(EmbeddingGatherBackwardCpu(s, go.data(), idx.data(), GradMode::kDeterministic, gt.data()).ok());
  auto dtable = Up(table), dgo = Up(go);
  auto didx = Up(idx);
  auto dout = Zeros<float>(out.size()), dgt = Zeros<float>(gt.size()), dgt2 = Zeros<float>(gt.size());
  ASSERT_TRUE(EmbeddingGatherCuda(s, dtable.data(), didx.data(), dout.data()).ok());
  EXPECT_EQ(out, Down(dout));
  ASSERT_TRUE(EmbeddingGatherBackwardCuda(s, dgo.data(), didx.data(), GradMode::kDeterministic, dgt.data()).ok());
  const auto det1 = Down(dgt);
  EXPECT_EQ(gt, det1) << "deterministic mode sums in the CPU's order " << Name(c);
  ASSERT_TRUE(EmbeddingGatherBackwardCuda(s, dgo.data(), didx.data(), GradMode::kDeterministic, dgt.data()).ok());
  EXPECT_EQ(det1, Down(dgt)) << "bit-identical run to run";
  ASSERT_TRUE(EmbeddingGatherBackwardCuda(s, dgo.data(), didx.data(), GradMode::kAtomic, dgt2.data()).ok());
  ExpectClose(gt, Down(dgt2), "atomic " + Name(c));
  // Out-of-range index is reported (into its own 2 x dim output: dout may
  // hold a single row, and compute-sanitizer checks this case).
  std::vector<int32_t> bad = {0, static_cast<int32_t>(s.rows)};
  auto dbad = Up(bad);
  auto dout2 = Zeros<float>(2 * s.dim);
  EXPECT_EQ(EmbeddingGatherCuda({s.rows, s.dim, 2}, dtable.data(), dbad.data(), dout2.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EmbeddingGatherBackwardCuda({s.rows, s.dim, 2}, dout2.data(), dbad.data(),
                                        GradMode::kDeterministic, dgt.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(CudaVsCpuTest, DenseLossAdam) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  const DenseShape s{c.B * std::min<int64_t>(c.L, 50), c.d, 33};
  auto x = RandomVec<float>(s.rows * s.in, 41), w = RandomVec<float>(s.in * s.out, 42),
       b = RandomVec<float>(s.out, 43), gy = RandomVec<float>(s.rows * s.out, 44),
       lab = RandomVec<float>(s.rows, 45, 0, 1);
  for (auto& l : lab) l = l > 0.5f ? 1.f : 0.f;
  for (Activation act : {Activation::kNone, Activation::kRelu}) {
    std::vector<float> y(s.rows * s.out), gx(x.size()), gw(w.size()), gb(s.out);
    ASSERT_TRUE(DenseForwardCpu(s, x.data(), w.data(), b.data(), act, y.data()).ok());
    ASSERT_TRUE(DenseBackwardCpu(s, x.data(), w.data(), y.data(), gy.data(), act, gx.data(),
                                 gw.data(), gb.data()).ok());
    auto dx = Up(x), dw = Up(w), db = Up(b), dgy = Up(gy);
    auto dy = Zeros<float>(y.size()), dgx = Zeros<float>(gx.size()), dgw = Zeros<float>(gw.size()),
         dgb = Zeros<float>(gb.size());
    ASSERT_TRUE(DenseForwardCuda(s, dx.data(), dw.data(), db.data(), act, dy.data()).ok());
    // Feed the CPU y so the ReLU mask is identical on both sides.
    auto dycpu = Up(y);
    ASSERT_TRUE(DenseBackwardCuda(s, dx.data(), dw.data(), dycpu.data(), dgy.data(), act,
                                  dgx.data(), dgw.data(), dgb.data()).ok());
    ExpectClose(y, Down(dy), "dense y " + Name(c));
    ExpectClose(gx, Down(dgx), "dense grad_x " + Name(c));
    ExpectClose(gw, Down(dgw), "dense grad_w " + Name(c));
    ExpectClose(gb, Down(dgb), "dense grad_b " + Name(c));
  }
  const int64_t n = s.rows;
  auto z = RandomVec<float>(n, 46, -5, 5);
  float loss = 0;
  std::vector<float> gz(n);
  ASSERT_TRUE(SigmoidCrossEntropyForwardCpu(n, z.data(), lab.data(), &loss).ok());
  ASSERT_TRUE(SigmoidCrossEntropyBackwardCpu(n, z.data(), lab.data(), gz.data()).ok());
  auto dz = Up(z), dlab = Up(lab);
  auto dloss = Zeros<float>(1), dgz = Zeros<float>(n);
  ASSERT_TRUE(SigmoidCrossEntropyForwardCuda(n, dz.data(), dlab.data(), dloss.data()).ok());
  ASSERT_TRUE(SigmoidCrossEntropyBackwardCuda(n, dz.data(), dlab.data(), dgz.data()).ok());
  ExpectClose({loss}, Down(dloss), "loss");
  ExpectClose(gz, Down(dgz), "grad_logits");
  auto p = RandomVec<float>(n, 47);
  std::vector<float> mm(n, 0.f), vv(n, 0.f);
  auto dp = Up(p), dmm = Up(mm), dvv = Up(vv);
  for (int t = 1; t <= 3; ++t) {
    ASSERT_TRUE(AdamUpdateCpu(AdamConfig{}, t, n, z.data(), p.data(), mm.data(), vv.data()).ok());
    ASSERT_TRUE(AdamUpdateCuda(AdamConfig{}, t, n, dz.data(), dp.data(), dmm.data(), dvv.data()).ok());
  }
  ExpectClose(p, Down(dp), "adam param");
}

INSTANTIATE_TEST_SUITE_P(AwkwardShapes, CudaVsCpuTest,
                         ::testing::Values(Case{1, 1, 7}, Case{5, 50, 33}, Case{3, 1000, 64},
                                           Case{8, 50, 32}, Case{2, 1000, 7}));

// TF32 for the cuBLAS GEMMs (SetCudaMath, dense_ops.h): every output of a
// dense layer's forward and backward stays within the TF32 error bound of
// the exact (double) product, and that error is really TF32's (larger than
// strict fp32's). Bound per output, S = sum_k |a_k b_k| (+ |bias|): each
// operand rounded to a 10-bit mantissa is off by at most 2^-10 relative
// (2^-11 to nearest; 2^-10 allows truncating hardware), so a product by
// 2^-9; fp32 accumulation of K terms adds at most (K + 1) 2^-23 S.
class CudaMathScope {
 public:
  explicit CudaMathScope(CudaMath m) { SetCudaMath(m); }
  ~CudaMathScope() { SetCudaMath(CudaMath::kFp32); }
};

// max over outputs of |got - exact| / S, each GEMM output with its S.
struct GemmError {
  double worst = 0;  // of |err| / S
  void Add(double got, double exact, double s) {
    if (s > 0) worst = std::max(worst, std::abs(got - exact) / s);
  }
};

TEST(CudaTf32Test, DenseLayersStayWithinTheTf32Bound) {
  SKIP_WITHOUT_CUDA();
  // An MLP layer of the default din_mim at batch 256: 352 inputs, 200 out.
  const DenseShape s{256, 352, 200};
  const auto x = RandomVec<float>(s.rows * s.in, 61), w = RandomVec<float>(s.in * s.out, 62),
             b = RandomVec<float>(s.out, 63), gy = RandomVec<float>(s.rows * s.out, 64);
  auto dx = Up(x), dw = Up(w), db = Up(b), dgy = Up(gy);
  GemmError fwd[2], gx_err[2], gw_err[2];
  for (int mode = 0; mode < 2; ++mode) {
    CudaMathScope scope(mode == 0 ? CudaMath::kFp32 : CudaMath::kTf32);
    auto dy = Zeros<float>(s.rows * s.out), dgx = Zeros<float>(s.rows * s.in),
         dgw = Zeros<float>(s.in * s.out), dgb = Zeros<float>(s.out);
    ASSERT_TRUE(DenseForwardCuda(s, dx.data(), dw.data(), db.data(), Activation::kNone,
                                 dy.data()).ok());
    ASSERT_TRUE(DenseBackwardCuda(s, dx.data(), dw.data(), dy.data(), dgy.data(),
                                  Activation::kNone, dgx.data(), dgw.data(), dgb.data()).ok());
    const std::vector<float> y = Down(dy), gx = Down(dgx), gw = Down(dgw);
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t o = 0; o < s.out; ++o) {
        double exact = b[o], sum = std::abs(b[o]);
        for (int64_t k = 0; k < s.in; ++k) {
          exact += double(x[r * s.in + k]) * w[k * s.out + o];
          sum += std::abs(double(x[r * s.in + k]) * w[k * s.out + o]);
        }
        fwd[mode].Add(y[r * s.out + o], exact, sum);
      }
      for (int64_t k = 0; k < s.in; ++k) {
        double exact = 0, sum = 0;
        for (int64_t o = 0; o < s.out; ++o) {
          exact += double(gy[r * s.out + o]) * w[k * s.out + o];
          sum += std::abs(double(gy[r * s.out + o]) * w[k * s.out + o]);
        }
        gx_err[mode].Add(gx[r * s.in + k], exact, sum);
      }
    }
    for (int64_t k = 0; k < s.in; ++k) {
      for (int64_t o = 0; o < s.out; ++o) {
        double exact = 0, sum = 0;
        for (int64_t r = 0; r < s.rows; ++r) {
          exact += double(x[r * s.in + k]) * gy[r * s.out + o];
          sum += std::abs(double(x[r * s.in + k]) * gy[r * s.out + o]);
        }
        gw_err[mode].Add(gw[k * s.out + o], exact, sum);
      }
    }
  }
  const double accumulate = std::ldexp(1.0, -23);
  const double tf32 = std::ldexp(1.0, -9);
  struct Check {
    const char* what;
    const GemmError* err;
    int64_t k;
  } checks[] = {{"y", fwd, s.in + 1}, {"grad_x", gx_err, s.out}, {"grad_w", gw_err, s.rows}};
  for (const Check& c : checks) {
    SCOPED_TRACE(c.what);
    std::cout << c.what << ": worst |err| / sum|a b|: fp32 " << c.err[0].worst << ", tf32 "
              << c.err[1].worst << "\n";
    EXPECT_LE(c.err[0].worst, (c.k + 1) * accumulate);
    EXPECT_LE(c.err[1].worst, tf32 + (c.k + 1) * accumulate);
    // The operands really were rounded: TF32's error is of its own order.
    EXPECT_GT(c.err[1].worst, 4 * c.err[0].worst);
    EXPECT_GT(c.err[1].worst, std::ldexp(1.0, -16));
  }
}

TEST(CudaErrorsTest, BadLensAreInvalidArgument) {
  SKIP_WITHOUT_CUDA();
  const SeqShape s{2, 3, 4};
  std::vector<int32_t> lens = {1, 4};
  auto dl = Up(lens);
  auto x = Zeros<float>(24), out = Zeros<float>(8);
  EXPECT_EQ(MaskedMeanPoolForwardCuda(s, x.data(), dl.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Degenerate shapes: B = 0, L = 0, d = 0, rows that are all empty. ----
// The CPU half runs without a device too (it checks the CPU twin accepts
// the shape); the CUDA half then must match it, including which outputs
// are written: every buffer carries one extra kUnwritten slot (so empty
// tensors still have a non-null pointer and a write past the end shows),
// outputs start all kUnwritten on both sides, and every buffer, inputs
// included, is compared afterwards.

constexpr float kUnwritten = 7.f;

std::vector<float> Padded(int64_t n, uint32_t seed, double lo = -1, double hi = 1) {
  auto v = RandomVec<float>(n, seed, lo, hi);
  v.push_back(kUnwritten);
  return v;
}
std::vector<float> Unwritten(int64_t n) { return std::vector<float>(n + 1, kUnwritten); }

// Float buffers run through both twins: h(i) is the host copy, d(i) the
// device copy of the buffer's initial contents (after Upload()).
class TwinBuffers {
 public:
  TwinBuffers(std::vector<std::vector<float>> init, std::vector<std::string> names)
      : init_(init), host_(std::move(init)), names_(std::move(names)) {}
  float* h(int i) { return host_[i].data(); }
  float* d(int i) { return dev_[i].data(); }
  float* p(bool gpu, int i) { return gpu ? d(i) : h(i); }
  void Upload() {
    for (const auto& v : init_) dev_.push_back(Up(v));
  }
  void ExpectSame(const std::string& what) {
    for (size_t i = 0; i < host_.size(); ++i) {
      ExpectClose(host_[i], Down(dev_[i]), names_[i] + " " + what);
    }
  }

 private:
  std::vector<std::vector<float>> init_, host_;
  std::vector<std::string> names_;
  std::vector<DeviceBuffer<float>> dev_;
};

struct Degenerate {
  int64_t B, L, d;
  bool all_empty;  // every lens is 0
};
std::string Name(const Degenerate& c) {
  return absl::StrFormat("B=%d L=%d d=%d%s", c.B, c.L, c.d, c.all_empty ? " all-empty" : "");
}
void PrintTo(const Degenerate& c, std::ostream* os) { *os << Name(c); }

std::vector<int32_t> DegenerateLens(const Degenerate& c) {
  std::vector<int32_t> lens(c.B, 0);
  if (c.all_empty) return lens;
  for (int64_t b = 0; b < c.B; ++b) lens[b] = static_cast<int32_t>((b * 7 + c.L) % (c.L + 1));
  if (c.B > 0) lens[0] = static_cast<int32_t>(c.L);
  return lens;
}

#define ASSERT_OK(expr)                        \
  do {                                         \
    const absl::Status _st = (expr);           \
    ASSERT_TRUE(_st.ok()) << #expr << ": " << _st; \
  } while (0)

class CudaDegenerateTest : public ::testing::TestWithParam<Degenerate> {};

TEST_P(CudaDegenerateTest, DinAttention) {
  const Degenerate c = GetParam();
  const SeqShape s{c.B, c.L, c.d};
  const AttentionMlpShape m{6, 4};
  const int64_t B = c.B, L = c.L, d = c.d, h1 = 6, h2 = 4;
  const auto lens = DegenerateLens(c);
  enum { kH, kHt, kW1, kB1, kW2, kB2, kW3, kB3, kGo, kOut, kSc, kGh, kGht, kGw1, kGb1, kGw2,
         kGb2, kGw3, kGb3 };
  TwinBuffers t({Padded(B * L * d, 1), Padded(B * d, 2), Padded(4 * d * h1, 3, -.3, .3),
                 Padded(h1, 4, 0, .3), Padded(h1 * h2, 5, -.3, .3), Padded(h2, 6, 0, .3),
                 Padded(h2, 7), Padded(1, 8), Padded(B * d, 9), Unwritten(B * d),
                 Unwritten(B * L), Unwritten(B * L * d), Unwritten(B * d),
                 Unwritten(4 * d * h1), Unwritten(h1), Unwritten(h1 * h2), Unwritten(h2),
                 Unwritten(h2), Unwritten(1)},
                {"h", "h_t", "w1", "b1", "w2", "b2", "w3", "b3", "grad_out", "out", "scores",
                 "grad_h", "grad_h_t", "grad_w1", "grad_b1", "grad_w2", "grad_b2", "grad_w3",
                 "grad_b3"});
  auto run = [&](bool gpu, const int32_t* ln) {
    auto p = [&](int i) { return t.p(gpu, i); };
    const AttentionMlpParams prm{p(kW1), p(kB1), p(kW2), p(kB2), p(kW3), p(kB3)};
    const AttentionMlpGrads g{p(kGw1), p(kGb1), p(kGw2), p(kGb2), p(kGw3), p(kGb3)};
    const absl::Status f =
        gpu ? DinAttentionForwardCuda(s, m, p(kH), p(kHt), ln, prm, p(kSc), p(kOut))
            : DinAttentionForwardCpu(s, m, p(kH), p(kHt), ln, prm, p(kSc), p(kOut));
    if (!f.ok()) return f;
    return gpu ? DinAttentionBackwardCuda(s, m, p(kH), p(kHt), ln, prm, p(kGo), p(kGh), p(kGht), g)
               : DinAttentionBackwardCpu(s, m, p(kH), p(kHt), ln, prm, p(kGo), p(kGh), p(kGht), g);
  };
  ASSERT_OK(run(false, lens.data()));
  SKIP_WITHOUT_CUDA();
  t.Upload();
  auto dlens = Up(lens);
  ASSERT_OK(run(true, dlens.data()));
  t.ExpectSame(Name(c));
}

TEST_P(CudaDegenerateTest, ContentFusion) {
  const Degenerate c = GetParam();
  const auto lens = DegenerateLens(c);
  struct Dims { int64_t dm, id; };
  // d plays the content dim, then the ID dim.
  const std::vector<Dims> dims = {{c.d, 3}, {3, c.d}};
  std::vector<TwinBuffers> bufs;
  enum { kM, kMt, kH, kGmm, kGfu, kAl, kMm, kFu, kGm, kGmt, kGh };
  auto shape = [&](const Dims& x) { return ContentShape{{c.B, c.L, x.dm}, x.id}; };
  auto run = [&](TwinBuffers& t, const ContentShape& s, bool gpu, const int32_t* ln) {
    auto p = [&](int i) { return t.p(gpu, i); };
    const absl::Status f =
        gpu ? ContentFusionForwardCuda(s, p(kM), p(kMt), p(kH), ln, p(kAl), p(kMm), p(kFu))
            : ContentFusionForwardCpu(s, p(kM), p(kMt), p(kH), ln, p(kAl), p(kMm), p(kFu));
    if (!f.ok()) return f;
    return gpu ? ContentFusionBackwardCuda(s, p(kM), p(kMt), p(kH), ln, p(kGmm), p(kGfu), p(kGm),
                                           p(kGmt), p(kGh))
               : ContentFusionBackwardCpu(s, p(kM), p(kMt), p(kH), ln, p(kGmm), p(kGfu), p(kGm),
                                          p(kGmt), p(kGh));
  };
  for (const Dims& x : dims) {
    const int64_t B = c.B, L = c.L;
    bufs.emplace_back(
        std::vector<std::vector<float>>{
            Padded(B * L * x.dm, 11), Padded(B * x.dm, 12), Padded(B * L * x.id, 13),
            Padded(B * x.dm, 14), Padded(B * x.id, 15), Unwritten(B * L), Unwritten(B * x.dm),
            Unwritten(B * x.id), Unwritten(B * L * x.dm), Unwritten(B * x.dm),
            Unwritten(B * L * x.id)},
        std::vector<std::string>{"m", "m_t", "h", "grad_mm", "grad_fusion", "alpha", "h_mm",
                                 "h_fusion", "grad_m", "grad_m_t", "grad_h"});
    ASSERT_OK(run(bufs.back(), shape(x), false, lens.data()));
  }
  SKIP_WITHOUT_CUDA();
  auto dlens = Up(lens);
  for (size_t i = 0; i < dims.size(); ++i) {
    bufs[i].Upload();
    ASSERT_OK(run(bufs[i], shape(dims[i]), true, dlens.data()));
    bufs[i].ExpectSame(Name(c) + absl::StrFormat(" d_m=%d d_id=%d", dims[i].dm, dims[i].id));
  }
}

TEST_P(CudaDegenerateTest, PoolTopKSelect) {
  const Degenerate c = GetParam();
  const SeqShape s{c.B, c.L, c.d};
  const int64_t B = c.B, L = c.L, d = c.d;
  const int k = 3;
  const auto lens = DegenerateLens(c);
  enum { kX, kT, kG, kGk, kPool, kGx, kSel, kGsel };
  TwinBuffers t({Padded(B * L * d, 21), Padded(B * d, 22), Padded(B * d, 23), Padded(B * k * d, 24),
                 Unwritten(B * d), Unwritten(B * L * d), Unwritten(B * k * d), Unwritten(B * L * d)},
                {"x", "target", "grad_out", "grad_sel", "pool", "pool grad_x", "select",
                 "select grad_x"});
  std::vector<int32_t> pos(B * k + 1, -7), nl(B + 1, -7);
  ASSERT_OK(MaskedMeanPoolForwardCpu(s, t.h(kX), lens.data(), t.h(kPool)));
  ASSERT_OK(MaskedMeanPoolBackwardCpu(s, t.h(kG), lens.data(), t.h(kGx)));
  ASSERT_OK(TopKSelectCpu(s, t.h(kX), t.h(kT), lens.data(), k, pos.data(), nl.data()));
  ASSERT_OK(SelectRowsForwardCpu(s, t.h(kX), pos.data(), k, t.h(kSel)));
  ASSERT_OK(SelectRowsBackwardCpu(s, t.h(kGk), pos.data(), k, t.h(kGsel)));
  SKIP_WITHOUT_CUDA();
  t.Upload();
  auto dlens = Up(lens);
  auto dpos = Up(std::vector<int32_t>(B * k + 1, -7)), dnl = Up(std::vector<int32_t>(B + 1, -7));
  ASSERT_OK(MaskedMeanPoolForwardCuda(s, t.d(kX), dlens.data(), t.d(kPool)));
  ASSERT_OK(MaskedMeanPoolBackwardCuda(s, t.d(kG), dlens.data(), t.d(kGx)));
  ASSERT_OK(TopKSelectCuda(s, t.d(kX), t.d(kT), dlens.data(), k, dpos.data(), dnl.data()));
  EXPECT_EQ(pos, Down(dpos)) << Name(c);
  EXPECT_EQ(nl, Down(dnl)) << Name(c);
  ASSERT_OK(SelectRowsForwardCuda(s, t.d(kX), dpos.data(), k, t.d(kSel)));
  ASSERT_OK(SelectRowsBackwardCuda(s, t.d(kGk), dpos.data(), k, t.d(kGsel)));
  t.ExpectSame(Name(c));
}

TEST_P(CudaDegenerateTest, EmbeddingGather) {
  const Degenerate c = GetParam();
  // rows = L (0: every index must be padding), 3 lookups per batch row.
  const GatherShape s{c.L, c.d, 3 * c.B};
  std::vector<int32_t> idx(s.num_indices);
  for (int64_t n = 0; n < s.num_indices; ++n) {
    idx[n] = c.all_empty || s.rows == 0 ? -1 : static_cast<int32_t>((n * 5) % (s.rows + 1)) - 1;
  }
  enum { kTable, kGo, kOut, kGt, kGt2 };
  TwinBuffers t({Padded(s.rows * s.dim, 31), Padded(s.num_indices * s.dim, 32),
                 Unwritten(s.num_indices * s.dim), Unwritten(s.rows * s.dim),
                 Unwritten(s.rows * s.dim)},
                {"table", "grad_out", "out", "grad_table", "grad_table atomic"});
  ASSERT_OK(EmbeddingGatherCpu(s, t.h(kTable), idx.data(), t.h(kOut)));
  ASSERT_OK(EmbeddingGatherBackwardCpu(s, t.h(kGo), idx.data(), GradMode::kDeterministic, t.h(kGt)));
  ASSERT_OK(EmbeddingGatherBackwardCpu(s, t.h(kGo), idx.data(), GradMode::kAtomic, t.h(kGt2)));
  SKIP_WITHOUT_CUDA();
  t.Upload();
  auto didx = Up(idx);
  ASSERT_OK(EmbeddingGatherCuda(s, t.d(kTable), didx.data(), t.d(kOut)));
  ASSERT_OK(EmbeddingGatherBackwardCuda(s, t.d(kGo), didx.data(), GradMode::kDeterministic, t.d(kGt)));
  ASSERT_OK(EmbeddingGatherBackwardCuda(s, t.d(kGo), didx.data(), GradMode::kAtomic, t.d(kGt2)));
  t.ExpectSame(Name(c));
}

TEST_P(CudaDegenerateTest, DenseLossAdam) {
  const Degenerate c = GetParam();
  // rows = B, in = L, out = d: covers rows = 0, in = 0 (a GEMM with K = 0)
  // and out = 0.
  const DenseShape s{c.B, c.L, c.d};
  enum { kX, kW, kB, kGy, kY, kGx, kGw, kGb };
  const std::vector<Activation> acts = {Activation::kNone, Activation::kRelu};
  std::vector<TwinBuffers> bufs;
  for (Activation act : acts) {
    bufs.emplace_back(
        std::vector<std::vector<float>>{
            Padded(s.rows * s.in, 41), Padded(s.in * s.out, 42), Padded(s.out, 43),
            Padded(s.rows * s.out, 44), Unwritten(s.rows * s.out), Unwritten(s.rows * s.in),
            Unwritten(s.in * s.out), Unwritten(s.out)},
        std::vector<std::string>{"x", "w", "b", "grad_y", "y", "grad_x", "grad_w", "grad_b"});
    TwinBuffers& t = bufs.back();
    ASSERT_OK(DenseForwardCpu(s, t.h(kX), t.h(kW), t.h(kB), act, t.h(kY)));
    // Backward reads y (the ReLU mask) from the forward.
    ASSERT_OK(DenseBackwardCpu(s, t.h(kX), t.h(kW), t.h(kY), t.h(kGy), act, t.h(kGx), t.h(kGw),
                               t.h(kGb)));
  }
  // Adam over n = B * d parameters (n = 0 is a no-op on both); m, v start at 0.
  const int64_t n = c.B * c.d;
  std::vector<float> zeros(n + 1, 0.f);
  zeros.back() = kUnwritten;
  TwinBuffers a({Padded(n, 45), Padded(n, 46), zeros, zeros},
                {"adam grad", "adam param", "adam m", "adam v"});
  ASSERT_OK(AdamUpdateCpu(AdamConfig{}, 1, n, a.h(0), a.h(1), a.h(2), a.h(3)));
  SKIP_WITHOUT_CUDA();
  for (size_t i = 0; i < acts.size(); ++i) {
    TwinBuffers& t = bufs[i];
    t.Upload();
    ASSERT_OK(DenseForwardCuda(s, t.d(kX), t.d(kW), t.d(kB), acts[i], t.d(kY)));
    ASSERT_OK(DenseBackwardCuda(s, t.d(kX), t.d(kW), t.d(kY), t.d(kGy), acts[i], t.d(kGx),
                                t.d(kGw), t.d(kGb)));
    t.ExpectSame(Name(c) + (acts[i] == Activation::kRelu ? " relu" : " linear"));
  }
  a.Upload();
  ASSERT_OK(AdamUpdateCuda(AdamConfig{}, 1, n, a.d(0), a.d(1), a.d(2), a.d(3)));
  a.ExpectSame(Name(c));
}

INSTANTIATE_TEST_SUITE_P(Degenerate, CudaDegenerateTest,
                         ::testing::Values(Degenerate{0, 5, 7, false}, Degenerate{3, 0, 7, false},
                                           Degenerate{3, 5, 0, false}, Degenerate{3, 5, 7, true},
                                           Degenerate{0, 0, 0, false}, Degenerate{2, 1, 0, true},
                                           Degenerate{4, 6, 5, false}));

// ---- Error contracts: the CUDA twin rejects what the CPU twin rejects,
// with the same code and naming the same argument. ----

// Small valid operands (512 floats each, more than any op here reads);
// each check breaks one argument. Runs the CPU half without a device.
struct ContractCheck {
  std::string what;
  std::function<absl::Status(bool gpu)> call;
  std::string mentions;  // expected in both messages
};

TEST(CudaErrorsTest, InvalidArgumentsMatchCpu) {
  std::vector<std::vector<float>> init;
  for (uint32_t i = 0; i < 8; ++i) init.push_back(Padded(511, 100 + i));
  TwinBuffers t(init, std::vector<std::string>(8, "buffer"));
  const std::vector<int32_t> lens = {3, 1}, bad_lens = {1, 4}, idx = {0, 2, 9, -1},
                             pos = {0, 3, -1, 1};
  DeviceBuffer<int32_t> dlens, dbad_lens, didx, dpos;
  auto I = [&](bool gpu, const std::vector<int32_t>& host, DeviceBuffer<int32_t>& dev) {
    return gpu ? dev.data() : host.data();
  };
  const SeqShape s{2, 3, 4};
  const ContentShape cs{{2, 3, 4}, 5};
  const AttentionMlpShape m{6, 4};
  auto P = [&](bool gpu, int i) { return t.p(gpu, i); };
  auto din_params = [&](bool gpu) {
    return AttentionMlpParams{P(gpu, 1), P(gpu, 2), P(gpu, 3), P(gpu, 4), P(gpu, 5), P(gpu, 6)};
  };
  const std::vector<ContractCheck> checks = {
      {"content forward, m_t null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, P(g, 0), nullptr, P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4))
                  : ContentFusionForwardCpu(cs, P(g, 0), nullptr, P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4));
       },
       "m_t"},
      {"content forward, h_mm null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), nullptr, P(g, 4))
                  : ContentFusionForwardCpu(cs, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), nullptr, P(g, 4));
       },
       "h_mm"},
      {"content forward, h_fusion null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), nullptr, P(g, 3), nullptr)
                  : ContentFusionForwardCpu(cs, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), nullptr, P(g, 3), nullptr);
       },
       "h_fusion"},
      {"content forward, h null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, P(g, 0), P(g, 5), nullptr, I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4))
                  : ContentFusionForwardCpu(cs, P(g, 0), P(g, 5), nullptr, I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4));
       },
       "'h'"},
      {"content forward, m null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, nullptr, P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4))
                  : ContentFusionForwardCpu(cs, nullptr, P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4));
       },
       "'m'"},
      {"content forward, lens null",
       [&](bool g) {
         return g ? ContentFusionForwardCuda(cs, P(g, 0), P(g, 5), P(g, 1), nullptr, P(g, 2), P(g, 3), P(g, 4))
                  : ContentFusionForwardCpu(cs, P(g, 0), P(g, 5), P(g, 1), nullptr, P(g, 2), P(g, 3), P(g, 4));
       },
       "lens"},
      {"content backward, id_dim < 0",
       [&](bool g) {
         const ContentShape neg{{2, 3, 4}, -1};
         return g ? ContentFusionBackwardCuda(neg, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4), P(g, 6), P(g, 7))
                  : ContentFusionBackwardCpu(neg, P(g, 0), P(g, 5), P(g, 1), I(g, lens, dlens), P(g, 2), P(g, 3), P(g, 4), P(g, 6), P(g, 7));
       },
       "id_dim"},
      {"DIN forward, h_t null",
       [&](bool g) {
         return g ? DinAttentionForwardCuda(s, m, P(g, 0), nullptr, I(g, lens, dlens), din_params(g), nullptr, P(g, 7))
                  : DinAttentionForwardCpu(s, m, P(g, 0), nullptr, I(g, lens, dlens), din_params(g), nullptr, P(g, 7));
       },
       "h_t"},
      {"DIN forward, hidden size 0",
       [&](bool g) {
         const AttentionMlpShape zero{0, 4};
         return g ? DinAttentionForwardCuda(s, zero, P(g, 0), P(g, 7), I(g, lens, dlens), din_params(g), nullptr, P(g, 7))
                  : DinAttentionForwardCpu(s, zero, P(g, 0), P(g, 7), I(g, lens, dlens), din_params(g), nullptr, P(g, 7));
       },
       "hidden"},
      {"DIN backward, a gradient pointer null",
       [&](bool g) {
         const AttentionMlpGrads gr{P(g, 7), nullptr, P(g, 7), P(g, 7), P(g, 7), P(g, 7)};
         return g ? DinAttentionBackwardCuda(s, m, P(g, 0), P(g, 7), I(g, lens, dlens), din_params(g), P(g, 7), nullptr, nullptr, gr)
                  : DinAttentionBackwardCpu(s, m, P(g, 0), P(g, 7), I(g, lens, dlens), din_params(g), P(g, 7), nullptr, nullptr, gr);
       },
       "grads.b1"},
      {"DIN forward, lens[1] > max_len",
       [&](bool g) {
         return g ? DinAttentionForwardCuda(s, m, P(g, 0), P(g, 7), I(g, bad_lens, dbad_lens), din_params(g), nullptr, P(g, 7))
                  : DinAttentionForwardCpu(s, m, P(g, 0), P(g, 7), I(g, bad_lens, dbad_lens), din_params(g), nullptr, P(g, 7));
       },
       "lens[1] = 4"},
      {"mean pool, negative batch",
       [&](bool g) {
         const SeqShape neg{-1, 3, 4};
         return g ? MaskedMeanPoolForwardCuda(neg, P(g, 0), I(g, lens, dlens), P(g, 1))
                  : MaskedMeanPoolForwardCpu(neg, P(g, 0), I(g, lens, dlens), P(g, 1));
       },
       "negative"},
      {"top-K, k = 0",
       [&](bool g) {
         std::vector<int32_t> hp(4), hn(2);
         return g ? TopKSelectCuda(s, P(g, 0), P(g, 1), I(g, lens, dlens), 0, nullptr, nullptr)
                  : TopKSelectCpu(s, P(g, 0), P(g, 1), I(g, lens, dlens), 0, hp.data(), hn.data());
       },
       "k=0"},
      {"gather, index null",
       [&](bool g) {
         return g ? EmbeddingGatherCuda({4, 4, 4}, P(g, 0), nullptr, P(g, 1))
                  : EmbeddingGatherCpu({4, 4, 4}, P(g, 0), nullptr, P(g, 1));
       },
       "index"},
      {"gather, index[2] >= rows",
       [&](bool g) {
         return g ? EmbeddingGatherCuda({4, 4, 4}, P(g, 0), I(g, idx, didx), P(g, 1))
                  : EmbeddingGatherCpu({4, 4, 4}, P(g, 0), I(g, idx, didx), P(g, 1));
       },
       "index[2] = 9"},
      {"gather with dim 0, index[2] >= rows",
       [&](bool g) {
         return g ? EmbeddingGatherCuda({4, 0, 4}, P(g, 0), I(g, idx, didx), P(g, 1))
                  : EmbeddingGatherCpu({4, 0, 4}, P(g, 0), I(g, idx, didx), P(g, 1));
       },
       "index[2] = 9"},
      {"gather backward (deterministic), index[2] >= rows",
       [&](bool g) {
         return g ? EmbeddingGatherBackwardCuda({4, 4, 4}, P(g, 0), I(g, idx, didx), GradMode::kDeterministic, P(g, 1))
                  : EmbeddingGatherBackwardCpu({4, 4, 4}, P(g, 0), I(g, idx, didx), GradMode::kDeterministic, P(g, 1));
       },
       "index[2] = 9"},
      {"gather backward (atomic), index[2] >= rows",
       [&](bool g) {
         return g ? EmbeddingGatherBackwardCuda({4, 4, 4}, P(g, 0), I(g, idx, didx), GradMode::kAtomic, P(g, 1))
                  : EmbeddingGatherBackwardCpu({4, 4, 4}, P(g, 0), I(g, idx, didx), GradMode::kAtomic, P(g, 1));
       },
       "index[2] = 9"},
      {"select rows forward, positions[1] >= max_len",
       [&](bool g) {
         return g ? SelectRowsForwardCuda(s, P(g, 0), I(g, pos, dpos), 2, P(g, 1))
                  : SelectRowsForwardCpu(s, P(g, 0), I(g, pos, dpos), 2, P(g, 1));
       },
       "positions[1] = 3"},
      {"select rows backward, positions[1] >= max_len",
       [&](bool g) {
         return g ? SelectRowsBackwardCuda(s, P(g, 0), I(g, pos, dpos), 2, P(g, 1))
                  : SelectRowsBackwardCpu(s, P(g, 0), I(g, pos, dpos), 2, P(g, 1));
       },
       "positions[1] = 3"},
      {"select rows, k < 0",
       [&](bool g) {
         return g ? SelectRowsForwardCuda(s, P(g, 0), I(g, pos, dpos), -1, P(g, 1))
                  : SelectRowsForwardCpu(s, P(g, 0), I(g, pos, dpos), -1, P(g, 1));
       },
       "k=-1"},
      {"cross-entropy, n = 0",
       [&](bool g) {
         return g ? SigmoidCrossEntropyForwardCuda(0, P(g, 0), P(g, 1), P(g, 2))
                  : SigmoidCrossEntropyForwardCpu(0, P(g, 0), P(g, 1), P(g, 2));
       },
       "n=0"},
      {"Adam, step 0",
       [&](bool g) {
         return g ? AdamUpdateCuda(AdamConfig{}, 0, 4, P(g, 0), P(g, 1), P(g, 2), P(g, 3))
                  : AdamUpdateCpu(AdamConfig{}, 0, 4, P(g, 0), P(g, 1), P(g, 2), P(g, 3));
       },
       "step=0"},
  };
  auto expect_invalid = [](const absl::Status& st, const ContractCheck& c, const char* twin) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << twin << ": " << c.what << ": " << st;
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(c.mentions)) << twin << ": " << c.what;
  };
  for (const ContractCheck& c : checks) expect_invalid(c.call(false), c, "CPU");
  SKIP_WITHOUT_CUDA();
  t.Upload();
  dlens = Up(lens);
  dbad_lens = Up(bad_lens);
  didx = Up(idx);
  dpos = Up(pos);
  for (const ContractCheck& c : checks) expect_invalid(c.call(true), c, "CUDA");
  // None of them queued a faulting kernel: the context is still healthy.
  EXPECT_TRUE(CudaSynchronize().ok());
}

// Null device pointers the CPU twins do not check (they would crash):
// the CUDA twins must refuse them before launching, because a kernel that
// faults leaves the CUDA context unusable for the whole process.
TEST(CudaErrorsTest, NullDevicePointersAreInvalidArgument) {
  SKIP_WITHOUT_CUDA();
  auto buf = Up(Padded(511, 200));
  float* x = buf.data();
  auto dlens = Up(std::vector<int32_t>{3, 1});
  const int32_t* ln = dlens.data();
  const SeqShape s{2, 3, 4};
  const ContentShape cs{{2, 3, 4}, 5};
  const AttentionMlpShape m{6, 4};
  const AttentionMlpParams p{x, x, x, x, x, x};
  const AttentionMlpParams no_b2{x, x, x, nullptr, x, x};
  const std::vector<std::pair<std::string, std::function<absl::Status()>>> calls = {
      {"grad_mm", [&] { return ContentFusionBackwardCuda(cs, x, x, x, ln, nullptr, x, x, x, x); }},
      {"grad_fusion", [&] { return ContentFusionBackwardCuda(cs, x, x, x, ln, x, nullptr, x, x, x); }},
      {"b2", [&] { return DinAttentionForwardCuda(s, m, x, x, ln, no_b2, nullptr, x); }},
      {"out", [&] { return DinAttentionForwardCuda(s, m, x, x, ln, p, nullptr, nullptr); }},
      {"grad_out", [&] {
         return DinAttentionBackwardCuda(s, m, x, x, ln, p, nullptr, x, x, {x, x, x, x, x, x});
       }},
      {"'x'", [&] { return MaskedMeanPoolForwardCuda(s, nullptr, ln, x); }},
      {"grad_x", [&] { return MaskedMeanPoolBackwardCuda(s, x, ln, nullptr); }},
      {"positions", [&] { return TopKSelectCuda(s, x, x, ln, 2, nullptr, nullptr); }},
      {"positions", [&] { return SelectRowsForwardCuda(s, x, nullptr, 2, x); }},
      {"table", [&] {
         return EmbeddingGatherCuda({4, 4, 2}, nullptr, ln, x);
       }},
      {"grad_table", [&] {
         return EmbeddingGatherBackwardCuda({4, 4, 2}, x, ln, GradMode::kDeterministic, nullptr);
       }},
      {"'w'", [&] { return DenseForwardCuda({3, 4, 5}, x, nullptr, x, Activation::kRelu, x); }},
      {"'y'", [&] { return DenseBackwardCuda({3, 4, 5}, x, x, nullptr, x, Activation::kRelu, x, x, x); }},
      {"labels", [&] { return SigmoidCrossEntropyForwardCuda(4, x, nullptr, x); }},
      {"param", [&] { return AdamUpdateCuda(AdamConfig{}, 1, 4, x, nullptr, x, x); }},
  };
  for (const auto& [name, call] : calls) {
    const absl::Status st = call();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name << ": " << st;
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(name)) << st;
  }
  EXPECT_TRUE(CudaSynchronize().ok());
}

// ---- C-SFT (csft_ops.h): tensor fusion, L2 normalisation, InfoNCE ----

struct CsftCase {
  int64_t rows, dim_a, dim_b;  // tensor fusion; L2 over [rows, dim_a]
  int64_t batch, candidates, dim;  // InfoNCE
  bool masked;  // with query and candidate ids (duplicates in both)
};
std::string Name(const CsftCase& c) {
  return absl::StrFormat("rows=%d da=%d db=%d batch=%d cand=%d dim=%d%s", c.rows, c.dim_a,
                         c.dim_b, c.batch, c.candidates, c.dim, c.masked ? " masked" : "");
}
void PrintTo(const CsftCase& c, std::ostream* os) { *os << Name(c); }

class CsftCudaVsCpuTest : public ::testing::TestWithParam<CsftCase> {};

TEST_P(CsftCudaVsCpuTest, TensorFusionForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  const CsftCase c = GetParam();
  const TensorFusionShape s{c.rows, c.dim_a, c.dim_b};
  auto a = RandomVec<float>(c.rows * c.dim_a, 51), b = RandomVec<float>(c.rows * c.dim_b, 52),
       g = RandomVec<float>(c.rows * s.out_dim(), 53);
  std::vector<float> out(c.rows * s.out_dim()), ga(a.size()), gb(b.size());
  ASSERT_OK(TensorFusionForwardCpu(s, a.data(), b.data(), out.data()));
  ASSERT_OK(TensorFusionBackwardCpu(s, a.data(), b.data(), g.data(), ga.data(), gb.data()));
  auto da = Up(a), db = Up(b), dg = Up(g);
  auto dout = Zeros<float>(out.size()), dga = Zeros<float>(ga.size()), dgb = Zeros<float>(gb.size());
  ASSERT_OK(TensorFusionForwardCuda(s, da.data(), db.data(), dout.data()));
  ASSERT_OK(TensorFusionBackwardCuda(s, da.data(), db.data(), dg.data(), dga.data(), dgb.data()));
  // The products are single multiplications: the same bits on both sides.
  EXPECT_EQ(out, Down(dout)) << Name(c);
  ExpectClose(ga, Down(dga), "fusion grad_a " + Name(c));
  ExpectClose(gb, Down(dgb), "fusion grad_b " + Name(c));
  // Either gradient alone (the other null) is the same as with both.
  auto dga2 = Zeros<float>(ga.size());
  ASSERT_OK(TensorFusionBackwardCuda(s, da.data(), db.data(), dg.data(), dga2.data(), nullptr));
  EXPECT_EQ(Down(dga), Down(dga2));
}

TEST_P(CsftCudaVsCpuTest, L2NormalizeForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  const CsftCase c = GetParam();
  auto x = RandomVec<float>(c.rows * c.dim_a, 61), gy = RandomVec<float>(x.size(), 62);
  if (c.rows > 1) std::fill_n(x.begin() + c.dim_a, c.dim_a, 0.f);  // a zero row stays zero
  std::vector<float> y(x.size()), gx(x.size());
  ASSERT_OK(L2NormalizeForwardCpu(c.rows, c.dim_a, x.data(), y.data()));
  ASSERT_OK(L2NormalizeBackwardCpu(c.rows, c.dim_a, x.data(), gy.data(), gx.data()));
  auto dx = Up(x), dgy = Up(gy);
  auto dy = Zeros<float>(y.size()), dgx = Zeros<float>(gx.size());
  ASSERT_OK(L2NormalizeForwardCuda(c.rows, c.dim_a, dx.data(), dy.data()));
  ASSERT_OK(L2NormalizeBackwardCuda(c.rows, c.dim_a, dx.data(), dgy.data(), dgx.data()));
  const std::vector<float> ycuda = Down(dy);
  ExpectClose(y, ycuda, "l2 y " + Name(c));
  if (c.rows > 1) {
    for (int64_t k = 0; k < c.dim_a; ++k) EXPECT_EQ(ycuda[c.dim_a + k], 0.f) << k;
  }
  // A zero row's gradient is grad_y / sqrt(eps) = 1e6 grad_y: compared
  // relative to each element's own size rather than the buffer's largest.
  const std::vector<float> gxcuda = Down(dgx);
  for (size_t i = 0; i < gx.size(); ++i) {
    ASSERT_NEAR(gx[i], gxcuda[i], kAtol + kRtol * std::abs(gx[i])) << "l2 grad_x " << i << " "
                                                                   << Name(c);
  }
}

TEST_P(CsftCudaVsCpuTest, InfoNceForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  const CsftCase c = GetParam();
  const InfoNceShape s{c.batch, c.candidates, c.dim};
  // Unit rows, as C-SFT feeds them, so scores / tau stay in softmax range.
  auto q = RandomVec<float>(c.batch * c.dim, 71), cand = RandomVec<float>(c.candidates * c.dim, 72);
  ASSERT_OK(L2NormalizeForwardCpu(c.batch, c.dim, q.data(), q.data()));
  ASSERT_OK(L2NormalizeForwardCpu(c.candidates, c.dim, cand.data(), cand.data()));
  // Ids with repeats: candidate j is item j % 7 (so positives repeat among
  // each other and the negatives), query b is item (b + 3) % 7.
  std::vector<int64_t> qid(c.batch), cid(c.candidates);
  for (int64_t b = 0; b < c.batch; ++b) qid[b] = (b + 3) % 7;
  for (int64_t j = 0; j < c.candidates; ++j) cid[j] = j % 7;
  const int64_t* hq = c.masked ? qid.data() : nullptr;
  const int64_t* hc = c.masked ? cid.data() : nullptr;
  const float tau = 0.1f, grad_loss = 1.7f;
  float loss = 0;
  std::vector<float> prob(c.batch * c.candidates), gq(q.size()), gc(cand.size());
  std::vector<int32_t> neg(c.batch);
  ASSERT_OK(InfoNceForwardCpu(s, tau, q.data(), cand.data(), hq, hc, &loss, prob.data(),
                              neg.data()));
  ASSERT_OK(InfoNceBackwardCpu(s, tau, q.data(), cand.data(), prob.data(), grad_loss, gq.data(),
                               gc.data()));
  auto dq = Up(q), dc = Up(cand);
  auto dqid = Up(qid), dcid = Up(cid);
  auto dloss = Zeros<float>(1), dprob = Zeros<float>(prob.size()), dgq = Zeros<float>(gq.size()),
       dgc = Zeros<float>(gc.size());
  auto dneg = Zeros<int32_t>(neg.size());
  ASSERT_OK(InfoNceForwardCuda(s, tau, dq.data(), dc.data(), c.masked ? dqid.data() : nullptr,
                               c.masked ? dcid.data() : nullptr, dloss.data(), dprob.data(),
                               dneg.data()));
  ExpectClose({loss}, Down(dloss), "infonce loss " + Name(c));
  const std::vector<float> pcuda = Down(dprob);
  ExpectClose(prob, pcuda, "infonce prob " + Name(c));
  // Masked candidates are exactly 0 on both sides; the counts are equal.
  for (size_t i = 0; i < prob.size(); ++i) {
    if (prob[i] == 0.f) {
      EXPECT_EQ(pcuda[i], 0.f) << i;
    }
  }
  EXPECT_EQ(neg, Down(dneg)) << Name(c);
  // Backward from the CPU's prob, so only the backward is compared.
  auto dprob_cpu = Up(prob);
  ASSERT_OK(InfoNceBackwardCuda(s, tau, dq.data(), dc.data(), dprob_cpu.data(), grad_loss,
                                dgq.data(), dgc.data()));
  ExpectClose(gq, Down(dgq), "infonce grad_q " + Name(c));
  ExpectClose(gc, Down(dgc), "infonce grad_c " + Name(c));
  // Run to run: the same bits (fixed-order reductions).
  auto dprob2 = Zeros<float>(prob.size()), dloss2 = Zeros<float>(1);
  ASSERT_OK(InfoNceForwardCuda(s, tau, dq.data(), dc.data(), c.masked ? dqid.data() : nullptr,
                               c.masked ? dcid.data() : nullptr, dloss2.data(), dprob2.data(),
                               nullptr));
  EXPECT_EQ(pcuda, Down(dprob2));
  EXPECT_EQ(Down(dloss), Down(dloss2));
}

// 1 x 1 everything; C-SFT's own sizes (64-d text + 20 genres fused, batch
// 256 with a hard negative each and a queue); odd sizes past one block.
INSTANTIATE_TEST_SUITE_P(
    CsftShapes, CsftCudaVsCpuTest,
    ::testing::Values(CsftCase{1, 1, 1, 1, 1, 1, false}, CsftCase{1, 1, 1, 1, 1, 1, true},
                      CsftCase{37, 64, 20, 37, 79, 64, true},
                      CsftCase{256, 64, 16, 256, 1024, 65, true},
                      CsftCase{5, 300, 3, 3, 300, 129, false}));

// Shapes and null pointers the CPU twins refuse are refused alike (same
// code, the same words after the op's name), before any launch; empty
// shapes are no-ops on both.
TEST(CsftCudaErrorsTest, RefusalsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  auto buf = Up(Padded(511, 300));
  float* x = buf.data();
  std::vector<float> host = Padded(511, 300);
  float* hx = host.data();
  auto dloss = Zeros<float>(1);
  float hloss = 0;
  auto after_op = [](const absl::Status& st) {
    const std::string m(st.message());
    return m.substr(m.find(':'));
  };
  struct Pair {
    std::string name;
    std::function<absl::Status()> cpu, cuda;
  };
  const TensorFusionShape neg_fusion{-1, 2, 2}, fusion{2, 2, 2};
  const InfoNceShape nce{2, 3, 4}, bad_nce{3, 2, 4};
  const std::vector<Pair> pairs = {
      {"fusion negative shape", [&] { return TensorFusionForwardCpu(neg_fusion, hx, hx, hx); },
       [&] { return TensorFusionForwardCuda(neg_fusion, x, x, x); }},
      {"fusion null out", [&] { return TensorFusionForwardCpu(fusion, hx, hx, nullptr); },
       [&] { return TensorFusionForwardCuda(fusion, x, x, nullptr); }},
      {"fusion backward null grad_out",
       [&] { return TensorFusionBackwardCpu(fusion, hx, hx, nullptr, hx, hx); },
       [&] { return TensorFusionBackwardCuda(fusion, x, x, nullptr, x, x); }},
      {"l2 negative", [&] { return L2NormalizeForwardCpu(-2, 3, hx, hx); },
       [&] { return L2NormalizeForwardCuda(-2, 3, x, x); }},
      {"l2 null y", [&] { return L2NormalizeForwardCpu(2, 3, hx, nullptr); },
       [&] { return L2NormalizeForwardCuda(2, 3, x, nullptr); }},
      {"l2 backward null grad_x", [&] { return L2NormalizeBackwardCpu(2, 3, hx, hx, nullptr); },
       [&] { return L2NormalizeBackwardCuda(2, 3, x, x, nullptr); }},
      {"infonce candidates < batch",
       [&] { return InfoNceForwardCpu(bad_nce, 0.1f, hx, hx, nullptr, nullptr, &hloss, hx, nullptr); },
       [&] { return InfoNceForwardCuda(bad_nce, 0.1f, x, x, nullptr, nullptr, dloss.data(), x, nullptr); }},
      {"infonce temperature 0",
       [&] { return InfoNceForwardCpu(nce, 0.f, hx, hx, nullptr, nullptr, &hloss, hx, nullptr); },
       [&] { return InfoNceForwardCuda(nce, 0.f, x, x, nullptr, nullptr, dloss.data(), x, nullptr); }},
      {"infonce null loss",
       [&] { return InfoNceForwardCpu(nce, 0.1f, hx, hx, nullptr, nullptr, nullptr, hx, nullptr); },
       [&] { return InfoNceForwardCuda(nce, 0.1f, x, x, nullptr, nullptr, nullptr, x, nullptr); }},
      {"infonce backward NaN temperature",
       [&] { return InfoNceBackwardCpu(nce, std::nanf(""), hx, hx, hx, 1.f, hx, hx); },
       [&] { return InfoNceBackwardCuda(nce, std::nanf(""), x, x, x, 1.f, x, x); }},
      {"infonce backward null prob",
       [&] { return InfoNceBackwardCpu(nce, 0.1f, hx, hx, nullptr, 1.f, hx, hx); },
       [&] { return InfoNceBackwardCuda(nce, 0.1f, x, x, nullptr, 1.f, x, x); }},
  };
  for (const Pair& p : pairs) {
    const absl::Status cpu = p.cpu(), gpu = p.cuda();
    EXPECT_EQ(cpu.code(), absl::StatusCode::kInvalidArgument) << p.name << ": " << cpu;
    EXPECT_EQ(gpu.code(), absl::StatusCode::kInvalidArgument) << p.name << ": " << gpu;
    EXPECT_EQ(after_op(cpu), after_op(gpu)) << p.name;
    EXPECT_THAT(std::string(gpu.message()), ::testing::HasSubstr("Cuda: ")) << gpu;
  }
  // Empty shapes: OK without touching (null) buffers.
  EXPECT_TRUE(TensorFusionForwardCuda({0, 3, 4}, nullptr, nullptr, nullptr).ok());
  EXPECT_TRUE(L2NormalizeForwardCuda(0, 3, nullptr, nullptr).ok());
  EXPECT_TRUE(L2NormalizeBackwardCuda(3, 0, nullptr, nullptr, nullptr).ok());
  EXPECT_TRUE(CudaSynchronize().ok());
}

}  // namespace
}  // namespace mim::kernels
