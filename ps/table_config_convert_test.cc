// Presence semantics of incoming hyperparameters: unset takes the library
// default, set is taken as given (0 included) and validated by the store.
#include "ps/table_config_convert.h"

#include <string>

#include "embedding/table_config.h"
#include "gtest/gtest.h"
#include "proto/ps.pb.h"

namespace mim::ps {
namespace {

TableConfig Wire(const std::string& optimizer) {
  TableConfig c;
  c.set_name("t");
  c.set_kind(ID);
  c.set_dim(4);
  c.mutable_optimizer()->set_name(optimizer);
  return c;
}

TEST(TableConfigConvertTest, UnsetFieldsTakeTheLibraryDefaults) {
  auto got = FromProto(Wire(""));
  ASSERT_TRUE(got.ok()) << got.status();
  embedding::TableConfig want;
  want.name = "t";
  want.kind = embedding::TableKind::kId;
  want.dim = 4;
  EXPECT_TRUE(*got == want);
  EXPECT_EQ(got->optimizer.kind, embedding::OptimizerKind::kAdagrad);
  EXPECT_EQ(got->optimizer.beta1, 0.9f);
  EXPECT_EQ(got->optimizer.lr_power, -0.5f);
  EXPECT_EQ(got->initializer.scale, 0.01f);
  // Set, then cleared: unset again.
  TableConfig wire = Wire("adam");
  wire.mutable_optimizer()->set_beta1(0.5f);
  wire.mutable_optimizer()->clear_beta1();
  got = FromProto(wire);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->optimizer.beta1, 0.9f);
}

TEST(TableConfigConvertTest, ExplicitZeroIsZeroNotTheDefault) {
  TableConfig wire = Wire("adam");
  OptimizerConfig* o = wire.mutable_optimizer();
  o->set_beta1(0);
  o->set_beta2(0);
  o->set_initial_accumulator(0);
  o->set_lr_power(0);
  o->set_l1(0);
  wire.mutable_initializer()->set_scale(0);
  auto got = FromProto(wire);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->optimizer.beta1, 0.0f);
  EXPECT_EQ(got->optimizer.beta2, 0.0f);
  EXPECT_EQ(got->optimizer.initial_accumulator, 0.0f);
  EXPECT_EQ(got->optimizer.lr_power, 0.0f);
  EXPECT_EQ(got->optimizer.l1, 0.0f);
  EXPECT_EQ(got->initializer.scale, 0.0f);
  EXPECT_EQ(got->optimizer.epsilon, 1e-8f);  // unset
  EXPECT_TRUE(embedding::ValidateTableConfig(*got).ok());

  // An explicit 0 that is invalid is refused, not replaced by the default.
  wire = Wire("sgd");
  wire.mutable_optimizer()->set_learning_rate(0);
  got = FromProto(wire);
  ASSERT_TRUE(got.ok()) << got.status();
  const absl::Status st = embedding::ValidateTableConfig(*got);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message())
                .find("optimizer.learning_rate must be in (0, 1000], got 0"),
            std::string::npos)
      << st;
}

TEST(TableConfigConvertTest, ToProtoRoundTripsEveryFieldIncludingZeros) {
  embedding::TableConfig c;
  c.name = "t";
  c.dim = 8;
  c.optimizer.kind = embedding::OptimizerKind::kFtrl;
  c.optimizer.learning_rate = 0.25f;
  c.optimizer.beta1 = 0;
  c.optimizer.beta2 = 0.5f;
  c.optimizer.epsilon = 0;
  c.optimizer.initial_accumulator = 0;
  c.optimizer.l1 = 0.125f;
  c.optimizer.l2 = 0;
  c.optimizer.lr_power = 0;
  c.initializer.kind = embedding::InitializerKind::kUniform;
  c.initializer.scale = 0;
  c.initializer.seed = 42;
  const TableConfig wire = ToProto(c);
  EXPECT_TRUE(wire.optimizer().has_beta1());
  EXPECT_TRUE(wire.initializer().has_scale());
  // Through bytes, as ListTables -> CreateTable(if_not_exists) does.
  TableConfig parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire.SerializeAsString()));
  auto back = FromProto(parsed);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == c);
  EXPECT_EQ(back->optimizer.epsilon, 0.0f);
  EXPECT_EQ(back->optimizer.beta1, 0.0f);
}

TEST(TableConfigConvertTest, UnknownNamesAndKindNameTheField) {
  absl::StatusOr<embedding::TableConfig> got = FromProto(Wire("rmsprop"));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(got.status().message())
                .find("table 't': optimizer.name: unknown optimizer 'rmsprop'"),
            std::string::npos)
      << got.status();
  TableConfig wire = Wire("sgd");
  wire.mutable_initializer()->set_name("xavier");
  got = FromProto(wire);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(got.status().message()).find("initializer.name"),
            std::string::npos)
      << got.status();
  wire = Wire("sgd");
  wire.set_kind(TABLE_KIND_UNSPECIFIED);
  EXPECT_EQ(FromProto(wire).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim::ps
