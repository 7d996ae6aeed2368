#include "worker/model/modules.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/model_test_util.h"

namespace mim::model {
namespace {

using testing::DotD;
using testing::ExpectGradMatchesFd;
using testing::RandomFloats;

TEST(ConcatColumnsTest, LaysOutBlocksSideBySideAndSplitInverts) {
  const std::vector<float> a = {1, 2, 3, 4};        // 2 x 2
  const std::vector<float> b = {5, 6};              // 2 x 1
  const std::vector<float> c = {7, 8, 9, 10, 11, 12};  // 2 x 3
  std::vector<float> out(12);
  const ColumnBlock in[] = {{a.data(), 2}, {b.data(), 1}, {c.data(), 3}};
  ASSERT_TRUE(ConcatColumns(kernels::CpuBackend(), 2, in, out.data()).ok());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 5, 7, 8, 9, 3, 4, 6, 10, 11, 12}));

  std::vector<float> a2(4, -1), c2(6, -1);
  const MutableColumnBlock split[] = {
      {a2.data(), 2}, {nullptr, 1}, {c2.data(), 3}};
  ASSERT_TRUE(SplitColumns(kernels::CpuBackend(), 2, out.data(), split).ok());
  EXPECT_EQ(a2, a);
  EXPECT_EQ(c2, c);
}

// Shapes for the module checks: B rows, L positions (lens cover 0 and L).
constexpr int kB = 3, kL = 5, kD = 4, kDm = 6;
const std::vector<int32_t> kLens = {5, 0, 3};

class IdInterestTest : public ::testing::TestWithParam<Backbone> {};

TEST_P(IdInterestTest, BackwardMatchesFiniteDifferences) {
  kernels::AttentionMlpShape att{6, 3};
  IdInterestModule mod(kernels::CpuBackend(), GetParam(), kD, att, /*sim_k=*/2);
  const kernels::SeqShape s{kB, kL, kD};
  std::vector<float> h = RandomFloats(kB * kL * kD, 1);
  std::vector<float> ht = RandomFloats(kB * kD, 2);
  std::vector<float> params = RandomFloats(mod.num_params(), 3, -0.5f, 0.5f);
  const std::vector<float> proj = RandomFloats(kB * kD, 4);
  std::vector<float> out(kB * kD);
  auto f = [&]() {
    EXPECT_TRUE(mod.Forward(s, h.data(), ht.data(), kLens.data(),
                            params.data(), out.data())
                    .ok());
    return DotD(out.data(), proj.data(), out.size());
  };
  f();
  std::vector<float> gh(h.size()), ght(ht.size()), gp(params.size());
  ASSERT_TRUE(mod.Backward(proj.data(), gh.data(), ght.data(), gp.data()).ok());
  ExpectGradMatchesFd("h", &h, f, gh);
  if (GetParam() != Backbone::kAvgPool) {
    ExpectGradMatchesFd("h_t", &ht, f, ght);
    ExpectGradMatchesFd("params", &params, f, gp);
  } else {
    EXPECT_EQ(mod.num_params(), 0);
    for (float g : ght) EXPECT_EQ(g, 0.0f);
  }
}

TEST_P(IdInterestTest, PaddingNeverAffectsOutputOrGetsGradient) {
  kernels::AttentionMlpShape att{6, 3};
  IdInterestModule mod(kernels::CpuBackend(), GetParam(), kD, att, /*sim_k=*/2);
  const kernels::SeqShape s{kB, kL, kD};
  std::vector<float> h = RandomFloats(kB * kL * kD, 5);
  const std::vector<float> ht = RandomFloats(kB * kD, 6);
  const std::vector<float> params =
      RandomFloats(mod.num_params(), 7, -0.5f, 0.5f);
  std::vector<float> out1(kB * kD), out2(kB * kD);
  ASSERT_TRUE(mod.Forward(s, h.data(), ht.data(), kLens.data(), params.data(),
                          out1.data())
                  .ok());
  for (int b = 0; b < kB; ++b) {
    for (int i = kLens[b]; i < kL; ++i) {
      for (int k = 0; k < kD; ++k) h[(b * kL + i) * kD + k] = 1e3f * (k + 1);
    }
  }
  ASSERT_TRUE(mod.Forward(s, h.data(), ht.data(), kLens.data(), params.data(),
                          out2.data())
                  .ok());
  EXPECT_EQ(out1, out2);
  for (int k = 0; k < kD; ++k) EXPECT_EQ(out2[1 * kD + k], 0.0f);  // lens 0
  std::vector<float> gh(h.size(), 7.0f), ght(ht.size()), gp(params.size());
  const std::vector<float> go = RandomFloats(kB * kD, 8);
  ASSERT_TRUE(mod.Backward(go.data(), gh.data(), ght.data(), gp.data()).ok());
  for (int b = 0; b < kB; ++b) {
    for (int i = kLens[b]; i < kL; ++i) {
      for (int k = 0; k < kD; ++k) {
        EXPECT_EQ(gh[(b * kL + i) * kD + k], 0.0f) << b << "," << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backbones, IdInterestTest,
                         ::testing::Values(Backbone::kAvgPool, Backbone::kDin,
                                           Backbone::kSim));

TEST(IdInterestSimTest, KeepsOnlyTopKBehaviours) {
  // Target e0; behaviours e0*3, e1, e0*2, e1: top-2 by dot product are
  // positions 0 and 2, so positions 1 and 3 get no gradient.
  kernels::AttentionMlpShape att{4, 2};
  IdInterestModule mod(kernels::CpuBackend(), Backbone::kSim, 2, att, /*sim_k=*/2);
  const kernels::SeqShape s{1, 4, 2};
  const std::vector<float> h = {3, 0, 0, 1, 2, 0, 0, 1};
  const std::vector<float> ht = {1, 0};
  const std::vector<int32_t> lens = {4};
  const std::vector<float> params =
      RandomFloats(mod.num_params(), 9, -0.5f, 0.5f);
  std::vector<float> out(2);
  ASSERT_TRUE(
      mod.Forward(s, h.data(), ht.data(), lens.data(), params.data(), out.data())
          .ok());
  std::vector<float> gh(8), ght(2), gp(params.size());
  const std::vector<float> go = {1, 1};
  ASSERT_TRUE(mod.Backward(go.data(), gh.data(), ght.data(), gp.data()).ok());
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(gh[1 * 2 + k], 0.0f);
    EXPECT_EQ(gh[3 * 2 + k], 0.0f);
  }
  EXPECT_NE(gh[0], 0.0f);
  EXPECT_NE(gh[4], 0.0f);
}

TEST(ContentInterestTest, ForwardValuesAndZeroVectors) {
  // One row, 3 behaviours, dm = 2, d = 1. m_t = (1, 0).
  // m = (1,0) -> alpha 1; (0,1) -> 0; (0,0) zero vector -> 0.
  ContentInterestModule mod(kernels::CpuBackend(), /*id_dim=*/1, /*content_dim=*/2);
  const kernels::SeqShape s{1, 3, 1};
  const std::vector<float> m = {1, 0, 0, 1, 0, 0};
  const std::vector<float> mt = {1, 0};
  const std::vector<float> h = {2, 5, 7};
  const std::vector<int32_t> lens = {3};
  std::vector<float> hmm(2), hf(1);
  ASSERT_TRUE(mod.Forward(s, m.data(), mt.data(), h.data(), lens.data(),
                          hmm.data(), hf.data())
                  .ok());
  EXPECT_NEAR(hmm[0], 1.0f, 1e-6);
  EXPECT_NEAR(hmm[1], 0.0f, 1e-6);
  EXPECT_NEAR(hf[0], 2.0f, 1e-5);
  EXPECT_TRUE(std::isfinite(hmm[0]) && std::isfinite(hf[0]));
}

TEST(ContentInterestTest, FusionBackwardMatchesFiniteDifferences) {
  ContentInterestModule mod(kernels::CpuBackend(), kD, kDm);
  const kernels::SeqShape s{kB, kL, kD};
  const std::vector<float> m = RandomFloats(kB * kL * kDm, 11);
  const std::vector<float> mt = RandomFloats(kB * kDm, 12);
  std::vector<float> h = RandomFloats(kB * kL * kD, 13);
  const std::vector<float> pm = RandomFloats(kB * kDm, 14);
  const std::vector<float> pf = RandomFloats(kB * kD, 15);
  std::vector<float> hmm(kB * kDm), hf(kB * kD);
  auto f = [&]() {
    EXPECT_TRUE(mod.Forward(s, m.data(), mt.data(), h.data(), kLens.data(),
                            hmm.data(), hf.data())
                    .ok());
    return DotD(hmm.data(), pm.data(), hmm.size()) +
           DotD(hf.data(), pf.data(), hf.size());
  };
  f();
  std::vector<float> gh(h.size());
  ASSERT_TRUE(mod.Backward(pm.data(), pf.data(), gh.data()).ok());
  ExpectGradMatchesFd("h", &h, f, gh);
  // h_MM does not depend on h: with only grad_mm, grad_h is zero.
  std::vector<float> gh_mm_only(h.size(), 1.0f);
  f();
  ASSERT_TRUE(mod.Backward(pm.data(), nullptr, gh_mm_only.data()).ok());
  for (float g : gh_mm_only) EXPECT_EQ(g, 0.0f);
}

TEST(MlpTowerTest, BackwardMatchesFiniteDifferences) {
  MlpTower mlp(kernels::CpuBackend(), 7, {6, 4});
  EXPECT_EQ(mlp.num_params(), 7 * 6 + 6 + 6 * 4 + 4 + 4 * 1 + 1);
  EXPECT_EQ(mlp.widths(), (std::vector<int64_t>{7, 6, 4, 1}));
  const int rows = 5;
  std::vector<float> x = RandomFloats(rows * 7, 21);
  std::vector<float> params = RandomFloats(mlp.num_params(), 22, -0.6f, 0.6f);
  const std::vector<float> proj = RandomFloats(rows, 23);
  std::vector<float> logits(rows);
  auto f = [&]() {
    EXPECT_TRUE(mlp.Forward(rows, x.data(), params.data(), logits.data()).ok());
    return DotD(logits.data(), proj.data(), rows);
  };
  f();
  std::vector<float> gx(x.size()), gp(params.size());
  ASSERT_TRUE(mlp.Backward(proj.data(), gx.data(), gp.data()).ok());
  ExpectGradMatchesFd("x", &x, f, gx);
  ExpectGradMatchesFd("params", &params, f, gp);
}

TEST(MlpTowerTest, NoHiddenLayersIsLogisticRegression) {
  MlpTower mlp(kernels::CpuBackend(), 3, {});
  const std::vector<float> x = {1, 2, 3};
  const std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.25f};  // w then b
  float logit = 0;
  ASSERT_TRUE(mlp.Forward(1, x.data(), p.data(), &logit).ok());
  EXPECT_FLOAT_EQ(logit, 0.5f - 2.0f + 6.0f + 0.25f);
}

}  // namespace
}  // namespace mim::model
