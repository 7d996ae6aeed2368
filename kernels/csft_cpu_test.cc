// C-SFT kernels: forward values by hand, every backward against central
// finite differences in double (the shipped templates instantiated for
// double), masking and negative counts of InfoNCE, and the float twins
// against the double ones.
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cpu_test_util.h"
#include "kernels/csft_cpu.h"
#include "kernels/csft_ops.h"

namespace mim::kernels {
namespace {

using testing::ExpectGradMatchesFiniteDiff;
using testing::RandomVec;

TEST(TensorFusionTest, ForwardIsFlattenedOuterProductWithOnes) {
  const TensorFusionShape s{1, 2, 1};
  const std::vector<float> a = {2, 3}, b = {5};
  std::vector<float> out(s.out_dim());
  ASSERT_TRUE(TensorFusionForwardCpu(s, a.data(), b.data(), out.data()).ok());
  // [2;3;1] outer [5;1]
  EXPECT_EQ(out, (std::vector<float>{10, 2, 15, 3, 5, 1}));
}

TEST(TensorFusionTest, BackwardMatchesFiniteDifferences) {
  const TensorFusionShape s{3, 4, 3};
  std::vector<double> a = RandomVec<double>(s.rows * s.dim_a, 1);
  std::vector<double> b = RandomVec<double>(s.rows * s.dim_b, 2);
  const std::vector<double> w = RandomVec<double>(s.rows * s.out_dim(), 3);
  std::vector<double> out(w.size());
  auto loss = [&]() {
    EXPECT_TRUE(cpu::TensorFusionForward<double>(s, a.data(), b.data(),
                                                 out.data())
                    .ok());
    return testing::Dot(out, w);
  };
  std::vector<double> ga(a.size()), gb(b.size());
  ASSERT_TRUE(cpu::TensorFusionBackward<double>(s, a.data(), b.data(),
                                                w.data(), ga.data(), gb.data())
                  .ok());
  ExpectGradMatchesFiniteDiff("grad_a", &a, loss, ga);
  ExpectGradMatchesFiniteDiff("grad_b", &b, loss, gb);
}

TEST(L2NormalizeTest, ForwardUnitNormAndZeroRowStaysZero) {
  const std::vector<float> x = {3, 4, 0, 0};
  std::vector<float> y(4);
  ASSERT_TRUE(L2NormalizeForwardCpu(2, 2, x.data(), y.data()).ok());
  EXPECT_NEAR(y[0], 0.6f, 1e-7);
  EXPECT_NEAR(y[1], 0.8f, 1e-7);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(L2NormalizeTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 5;
  std::vector<double> x = RandomVec<double>(rows * dim, 4);
  const std::vector<double> w = RandomVec<double>(rows * dim, 5);
  std::vector<double> y(x.size());
  auto loss = [&]() {
    EXPECT_TRUE(cpu::L2NormalizeForward<double>(rows, dim, x.data(), y.data())
                    .ok());
    return testing::Dot(y, w);
  };
  std::vector<double> gx(x.size());
  ASSERT_TRUE(
      cpu::L2NormalizeBackward<double>(rows, dim, x.data(), w.data(), gx.data())
          .ok());
  ExpectGradMatchesFiniteDiff("grad_x", &x, loss, gx);
}

TEST(InfoNceTest, TwoCandidatesGiveLogisticLoss) {
  // One query, positive c0, negative c1: loss = log(1 + exp((z1 - z0))).
  const InfoNceShape s{1, 2, 2};
  const std::vector<float> q = {1, 0}, c = {0.5f, 0, -0.5f, 0};
  float loss = 0;
  std::vector<float> prob(2);
  int32_t negatives = -1;
  ASSERT_TRUE(InfoNceForwardCpu(s, 0.5f, q.data(), c.data(), nullptr, nullptr,
                                &loss, prob.data(), &negatives)
                  .ok());
  EXPECT_NEAR(loss, std::log1p(std::exp(-2.0)), 1e-6);
  EXPECT_EQ(negatives, 1);
}

TEST(InfoNceTest, MasksRepeatedPositiveAndQueryItem) {
  // Batch of 3: rows 0 and 2 share positive item 7; row 1's query is item 9,
  // which is candidate 3 (an extra negative).
  const InfoNceShape s{3, 4, 2};
  const std::vector<float> q = RandomVec<float>(6, 6);
  const std::vector<float> c = RandomVec<float>(8, 7);
  const std::vector<int64_t> query_ids = {1, 9, 3};
  const std::vector<int64_t> cand_ids = {7, 8, 7, 9};
  float loss = 0;
  std::vector<float> prob(12);
  std::vector<int32_t> negatives(3);
  ASSERT_TRUE(InfoNceForwardCpu(s, 0.1f, q.data(), c.data(), query_ids.data(),
                                cand_ids.data(), &loss, prob.data(),
                                negatives.data())
                  .ok());
  EXPECT_EQ(negatives, (std::vector<int32_t>{2, 2, 2}));  // 4 - 1 - 1 each
  EXPECT_EQ(prob[0 * 4 + 2], 0.0f);  // row 0: item 7 again
  EXPECT_EQ(prob[1 * 4 + 3], 0.0f);  // row 1: its own query item
  EXPECT_EQ(prob[2 * 4 + 0], 0.0f);  // row 2: item 7 again
  for (int b = 0; b < 3; ++b) {
    double sum = 0;
    for (int j = 0; j < 4; ++j) sum += prob[b * 4 + j];
    EXPECT_NEAR(sum, 1.0, 1e-6) << "row " << b;
  }
}

TEST(InfoNceTest, BackwardMatchesFiniteDifferencesWithMask) {
  const InfoNceShape s{4, 7, 3};
  std::vector<double> q = RandomVec<double>(s.batch * s.dim, 8);
  std::vector<double> c = RandomVec<double>(s.candidates * s.dim, 9);
  const std::vector<int64_t> query_ids = {100, 101, 102, 5};
  const std::vector<int64_t> cand_ids = {1, 2, 1, 4, 5, 6, 7};
  const double tau = 0.3, weight = 0.7;
  std::vector<double> prob(s.batch * s.candidates);
  auto loss = [&]() {
    double l = 0;
    EXPECT_TRUE(cpu::InfoNceForward<double>(s, tau, q.data(), c.data(),
                                            query_ids.data(), cand_ids.data(),
                                            &l, prob.data(), nullptr)
                    .ok());
    return weight * l;
  };
  loss();
  std::vector<double> gq(q.size()), gc(c.size());
  ASSERT_TRUE(cpu::InfoNceBackward<double>(s, tau, q.data(), c.data(),
                                           prob.data(), weight, gq.data(),
                                           gc.data())
                  .ok());
  ExpectGradMatchesFiniteDiff("grad_q", &q, loss, gq);
  ExpectGradMatchesFiniteDiff("grad_c", &c, loss, gc);
}

TEST(InfoNceTest, FloatTwinMatchesDouble) {
  const InfoNceShape s{8, 20, 16};
  const std::vector<float> qf = RandomVec<float>(s.batch * s.dim, 10);
  const std::vector<float> cf = RandomVec<float>(s.candidates * s.dim, 11);
  const std::vector<double> qd(qf.begin(), qf.end()), cd(cf.begin(), cf.end());
  float lf = 0;
  double ld = 0;
  std::vector<float> pf(s.batch * s.candidates), gqf(qf.size());
  std::vector<double> pd(pf.size()), gqd(qd.size());
  ASSERT_TRUE(InfoNceForwardCpu(s, 0.2f, qf.data(), cf.data(), nullptr,
                                nullptr, &lf, pf.data(), nullptr)
                  .ok());
  ASSERT_TRUE(cpu::InfoNceForward<double>(s, 0.2f, qd.data(), cd.data(),
                                          nullptr, nullptr, &ld, pd.data(),
                                          nullptr)
                  .ok());
  EXPECT_NEAR(lf, ld, 1e-5);
  ASSERT_TRUE(InfoNceBackwardCpu(s, 0.2f, qf.data(), cf.data(), pf.data(), 1,
                                 gqf.data(), nullptr)
                  .ok());
  ASSERT_TRUE(cpu::InfoNceBackward<double>(s, 0.2f, qd.data(), cd.data(),
                                           pd.data(), 1, gqd.data(), nullptr)
                  .ok());
  for (size_t i = 0; i < gqf.size(); ++i) {
    ASSERT_NEAR(gqf[i], gqd[i], 1e-5) << "grad_q element " << i;
  }
}

TEST(CsftKernelsTest, BadShapesAreInvalidArgument) {
  float loss = 0, prob = 0, x = 0;
  EXPECT_EQ(InfoNceForwardCpu({2, 1, 1}, 0.1f, &x, &x, nullptr, nullptr, &loss,
                              &prob, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InfoNceForwardCpu({1, 1, 1}, 0.0f, &x, &x, nullptr, nullptr, &loss,
                              &prob, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TensorFusionForwardCpu({-1, 1, 1}, &x, &x, &x).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(L2NormalizeForwardCpu(1, 1, nullptr, &x).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CsftKernelsTest, CudaTwinsAreUnimplemented) {
  float x = 0;
  EXPECT_EQ(L2NormalizeForwardCuda(1, 1, &x, &x).code(),
            absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace mim::kernels
