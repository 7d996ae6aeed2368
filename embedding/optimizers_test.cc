#include "embedding/optimizers.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

// Expected numbers below were worked out by hand (and double-checked in
// double precision); float32 arithmetic agrees to well within 1e-6.
constexpr float kTol = 1e-6f;

TEST(OptimizersTest, SgdTwoSteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.learning_rate = 0.1f;
  float w[2] = {1.0f, -2.0f};
  const float g1[2] = {0.5f, -1.0f};
  ApplyOptimizer(c, 2, g1, 1, w, nullptr);
  // 1 - 0.1*0.5 = 0.95; -2 + 0.1 = -1.9
  EXPECT_NEAR(w[0], 0.95f, kTol);
  EXPECT_NEAR(w[1], -1.9f, kTol);
  const float g2[2] = {1.0f, 2.0f};
  ApplyOptimizer(c, 2, g2, 2, w, nullptr);
  EXPECT_NEAR(w[0], 0.85f, kTol);
  EXPECT_NEAR(w[1], -2.1f, kTol);
}

TEST(OptimizersTest, AdagradTwoSteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdagrad;
  c.learning_rate = 0.1f;
  c.initial_accumulator = 0.1f;
  c.epsilon = 0.0f;
  float w = 1.0f;
  float acc;
  InitOptimizerState(c, 1, &acc);
  EXPECT_EQ(acc, 0.1f);
  float g = 0.3f;
  ApplyOptimizer(c, 1, &g, 1, &w, &acc);
  // acc = 0.1 + 0.09 = 0.19; w = 1 - 0.1*0.3/sqrt(0.19) = 0.93117528
  EXPECT_NEAR(acc, 0.19f, kTol);
  EXPECT_NEAR(w, 0.93117528f, kTol);
  g = -0.4f;
  ApplyOptimizer(c, 1, &g, 2, &w, &acc);
  // acc = 0.35; w = 0.93117528 + 0.04/sqrt(0.35) = 0.99878762
  EXPECT_NEAR(acc, 0.35f, kTol);
  EXPECT_NEAR(w, 0.99878762f, kTol);
}

TEST(OptimizersTest, AdamTwoStepsWithBiasCorrection) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdam;
  c.learning_rate = 0.1f;
  c.beta1 = 0.9f;
  c.beta2 = 0.999f;
  c.epsilon = 1e-8f;
  float w = 1.0f;
  float state[2];  // m, v
  InitOptimizerState(c, 1, state);
  EXPECT_EQ(state[0], 0.0f);
  EXPECT_EQ(state[1], 0.0f);
  float g = 0.5f;
  ApplyOptimizer(c, 1, &g, 1, &w, state);
  // m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25; w = 1 - 0.1*0.5/0.5 = 0.9
  EXPECT_NEAR(state[0], 0.05f, kTol);
  EXPECT_NEAR(state[1], 0.00025f, kTol);
  EXPECT_NEAR(w, 0.9f, kTol);
  g = -1.0f;
  ApplyOptimizer(c, 1, &g, 2, &w, state);
  // m = 0.045 - 0.1 = -0.055; v = 0.00024975 + 0.001 = 0.00124975
  // m^ = -0.055/0.19 = -0.28947368; v^ = 0.00124975/0.001999 = 0.62518759
  // w = 0.9 + 0.1*0.28947368/0.79068805 = 0.93661035
  EXPECT_NEAR(state[0], -0.055f, kTol);
  EXPECT_NEAR(state[1], 0.00124975f, kTol);
  EXPECT_NEAR(w, 0.93661035f, kTol);
}

TEST(OptimizersTest, AdamUsesTheRowsOwnStep) {
  // The same gradient applied at step 1 and at step 100 moves the row by
  // different amounts because of bias correction.
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdam;
  c.learning_rate = 0.1f;
  float w1 = 0, w100 = 0, s1[2] = {0, 0}, s100[2] = {0, 0};
  float g = 1.0f;
  AdamUpdate(c, 1, &g, 1, &w1, s1);
  AdamUpdate(c, 1, &g, 100, &w100, s100);
  EXPECT_NEAR(w1, -0.1f, kTol);
  // step 100: m^ = 0.1/(1-0.9^100) = 0.10000266,
  // sqrt(v^) = sqrt(0.001/(1-0.999^100)) = 0.10248578, w = -0.09757709
  EXPECT_NEAR(w100, -0.09757709f, kTol);
}

TEST(OptimizersTest, FtrlTwoSteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kFtrl;
  c.learning_rate = 0.1f;
  c.l1 = 0.05f;
  c.l2 = 0.1f;
  c.lr_power = -0.5f;
  float w = 0.2f;
  float state[2];  // z, n
  InitOptimizerState(c, 1, state);
  float g = 0.5f;
  ApplyOptimizer(c, 1, &g, 1, &w, state);
  // n = 0.25; sigma = (0.5 - 0)/0.1 = 5; z = 0.5 - 5*0.2 = -0.5;
  // w = (-0.05 + 0.5) / (0.5/0.1 + 0.2) = 0.45/5.2 = 0.08653846
  EXPECT_NEAR(state[0], -0.5f, kTol);
  EXPECT_NEAR(state[1], 0.25f, kTol);
  EXPECT_NEAR(w, 0.08653846f, kTol);
  g = 0.3f;
  ApplyOptimizer(c, 1, &g, 2, &w, state);
  // n = 0.34; sigma = (0.58309519 - 0.5)/0.1 = 0.8309519;
  // z = -0.5 + 0.3 - 0.8309519*0.08653846 = -0.2719093;
  // w = (-0.05 + 0.2719093)/(5.8309519 + 0.2) = 0.03679507
  EXPECT_NEAR(state[0], -0.2719093f, kTol);
  EXPECT_NEAR(state[1], 0.34f, kTol);
  EXPECT_NEAR(w, 0.03679507f, kTol);
}

TEST(OptimizersTest, FtrlL1ClampsSmallWeightsToZero) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kFtrl;
  c.learning_rate = 0.1f;
  c.l1 = 1.0f;
  float w = 0.0f;
  float state[2] = {0, 0};
  float g = 0.5f;
  FtrlUpdate(c, 1, &g, &w, state);
  // z = 0.5 <= l1 = 1: the weight is exactly zero.
  EXPECT_EQ(w, 0.0f);
  EXPECT_NEAR(state[0], 0.5f, kTol);
}

// A first gradient so small that its square rounds to 0, without l1 or l2:
// the closed form would divide by zero (inf weight); the weight stays 0.
TEST(OptimizersTest, FtrlTinyFirstGradientKeepsTheWeightFinite) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kFtrl;
  c.learning_rate = 0.1f;
  c.lr_power = -0.5f;
  float w = 0.0f;
  float state[2] = {0, 0};
  float g = 1e-30f;
  FtrlUpdate(c, 1, &g, &w, state);
  EXPECT_EQ(w, 0.0f);
  EXPECT_EQ(state[1], 0.0f);  // g * g rounded to 0
  g = 0.5f;  // a real gradient afterwards updates as usual
  FtrlUpdate(c, 1, &g, &w, state);
  EXPECT_TRUE(std::isfinite(w));
  EXPECT_NE(w, 0.0f);
}

TEST(OptimizersTest, CheckOptimizerStateNamesTheFirstBadFloat) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  OptimizerConfig c;
  struct Case {
    OptimizerKind kind;
    std::vector<float> state;  // dim 2
    std::string want;          // "" when valid
  };
  const std::vector<Case> cases = {
      {OptimizerKind::kSgd, {}, ""},
      {OptimizerKind::kAdagrad, {0.0f, 3.0f}, ""},
      {OptimizerKind::kAdagrad, {0.1f, nan}, "adagrad accumulator[1] is nan"},
      {OptimizerKind::kAdagrad, {-0.5f, 1.0f},
       "adagrad accumulator[0] is -0.5, must be finite and >= 0"},
      {OptimizerKind::kAdam, {-3.0f, 2.0f, 0.0f, 1.0f}, ""},  // m may be < 0
      {OptimizerKind::kAdam, {0.0f, -inf, 0.0f, 1.0f},
       "adam m[1] is -inf, must be finite"},
      {OptimizerKind::kAdam, {0.0f, 0.0f, 1.0f, -1e-3f}, "adam v[1] is -0.001"},
      {OptimizerKind::kAdam, {0.0f, 0.0f, inf, 0.0f}, "adam v[0] is inf"},
      {OptimizerKind::kFtrl, {-7.0f, 7.0f, 0.0f, 2.0f}, ""},  // z may be < 0
      {OptimizerKind::kFtrl, {nan, 0.0f, 0.0f, 0.0f}, "ftrl z[0] is nan"},
      {OptimizerKind::kFtrl, {0.0f, 0.0f, 1.0f, -2.0f}, "ftrl n[1] is -2"},
  };
  for (const Case& t : cases) {
    c.kind = t.kind;
    const std::string got = CheckOptimizerState(c, 2, t.state.data());
    if (t.want.empty()) {
      EXPECT_EQ(got, "") << OptimizerName(t.kind);
    } else {
      EXPECT_EQ(got.rfind(t.want, 0), 0u)
          << "got '" << got << "', want prefix '" << t.want << "'";
    }
  }
}

}  // namespace
}  // namespace mim::embedding
