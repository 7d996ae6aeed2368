#include "embedding/table_config.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

TableConfig Valid(OptimizerKind kind) {
  TableConfig c;
  c.name = "t";
  c.dim = 4;
  c.optimizer.kind = kind;
  return c;
}

TEST(TableConfigTest, DefaultsAndBoundaryValuesAreValid) {
  for (OptimizerKind k : {OptimizerKind::kSgd, OptimizerKind::kAdagrad,
                          OptimizerKind::kAdam, OptimizerKind::kFtrl}) {
    EXPECT_TRUE(ValidateTableConfig(Valid(k)).ok()) << OptimizerName(k);
  }
  TableConfig c = Valid(OptimizerKind::kAdam);
  c.optimizer.beta1 = 0;  // no momentum
  c.optimizer.beta2 = 0;
  c.optimizer.epsilon = 1e-30f;
  c.initializer.scale = 0;
  EXPECT_TRUE(ValidateTableConfig(c).ok());
  c = Valid(OptimizerKind::kAdagrad);
  c.optimizer.epsilon = 0;  // the accumulator starts above 0
  EXPECT_TRUE(ValidateTableConfig(c).ok());
  c.optimizer.epsilon = 1e-8f;
  c.optimizer.initial_accumulator = 0;
  EXPECT_TRUE(ValidateTableConfig(c).ok());
  c = Valid(OptimizerKind::kFtrl);
  c.optimizer.lr_power = 0;  // fixed learning rate
  c.optimizer.l1 = 0.5f;
  c.optimizer.l2 = 0.5f;
  EXPECT_TRUE(ValidateTableConfig(c).ok());
  // Content tables ignore the optimizer and initializer.
  c = Valid(OptimizerKind::kAdam);
  c.kind = TableKind::kContent;
  c.optimizer.learning_rate = -1;
  EXPECT_TRUE(ValidateTableConfig(c).ok());
}

TEST(TableConfigTest, InvalidNumbersNameTheFieldAndValue) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    OptimizerKind kind;
    void (*set)(TableConfig*, float);
    float value;
    std::string want;
  };
#define MIM_FIELD(f) [](TableConfig* c, float v) { c->f = v; }
  const std::vector<Case> cases = {
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), 0,
       "table 't': optimizer.learning_rate must be in (0, 1000], got 0"},
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), -0.1f,
       "optimizer.learning_rate must be in (0, 1000], got -0.1"},
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), nan,
       "optimizer.learning_rate must be in (0, 1000], got nan"},
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), inf,
       "optimizer.learning_rate must be in (0, 1000], got inf"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.beta1), 1,
       "optimizer.beta1 must be in [0, 1), got 1"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.beta1), -0.5f,
       "optimizer.beta1 must be in [0, 1), got -0.5"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.beta1), nan,
       "optimizer.beta1 must be in [0, 1), got nan"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.beta2), 1.5f,
       "optimizer.beta2 must be in [0, 1), got 1.5"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.epsilon), -1e-8f,
       "optimizer.epsilon must be finite and >= 0, got -1e-08"},
      {OptimizerKind::kAdagrad, MIM_FIELD(optimizer.epsilon), inf,
       "optimizer.epsilon must be finite and >= 0, got inf"},
      {OptimizerKind::kAdam, MIM_FIELD(optimizer.epsilon), 0,
       "optimizer.epsilon must be > 0 for adam, got 0"},
      {OptimizerKind::kAdagrad, MIM_FIELD(optimizer.initial_accumulator), -1,
       "optimizer.initial_accumulator must be finite and >= 0, got -1"},
      {OptimizerKind::kFtrl, MIM_FIELD(optimizer.l1), -1,
       "optimizer.l1 must be finite and >= 0, got -1"},
      {OptimizerKind::kFtrl, MIM_FIELD(optimizer.l2), nan,
       "optimizer.l2 must be finite and >= 0, got nan"},
      {OptimizerKind::kFtrl, MIM_FIELD(optimizer.lr_power), 0.5f,
       "optimizer.lr_power must be finite and <= 0, got 0.5"},
      {OptimizerKind::kFtrl, MIM_FIELD(optimizer.lr_power), -inf,
       "optimizer.lr_power must be finite and <= 0, got -inf"},
      {OptimizerKind::kSgd, MIM_FIELD(initializer.scale), -1,
       "initializer.scale must be in [0, 1000], got -1"},
      {OptimizerKind::kSgd, MIM_FIELD(initializer.scale), inf,
       "initializer.scale must be in [0, 1000], got inf"},
      // Finite but absurd: rows of 3e38 overflow, steps of 3e38 too.
      {OptimizerKind::kSgd, MIM_FIELD(initializer.scale), 3e38f,
       "initializer.scale must be in [0, 1000], got 3e+38"},
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), 3e38f,
       "optimizer.learning_rate must be in (0, 1000], got 3e+38"},
      {OptimizerKind::kSgd, MIM_FIELD(optimizer.learning_rate), 1000.5f,
       "optimizer.learning_rate must be in (0, 1000], got 1000.5"},
  };
#undef MIM_FIELD
  for (const Case& t : cases) {
    TableConfig c = Valid(t.kind);
    t.set(&c, t.value);
    const absl::Status st = ValidateTableConfig(c);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << t.want;
    EXPECT_NE(std::string(st.message()).find(t.want), std::string::npos)
        << "got '" << st.message() << "', want '" << t.want << "'";
  }
  TableConfig c = Valid(OptimizerKind::kAdagrad);
  c.optimizer.epsilon = 0;
  c.optimizer.initial_accumulator = 0;
  const absl::Status st = ValidateTableConfig(c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("optimizer.initial_accumulator > 0"),
            std::string::npos)
      << st;
}

}  // namespace
}  // namespace mim::embedding
