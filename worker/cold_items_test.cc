// ColdItemImputer on hand-made rows: which neighbours it takes, how it
// weighs them, and that Fill rewrites exactly the missing rows of items.
#include "worker/cold_items.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "worker/data/feature_key.h"

namespace mim::worker {
namespace {

using data::FeatureField;
using data::FeatureKey;

// Three trained items in 2-d content space, with 2-d ID rows:
//   item 10: content (1, 0),   ID (1, 0)
//   item 20: content (1, 1),   ID (0, 1)
//   item 30: content (-1, 0),  ID (5, 5)
std::unique_ptr<ColdItemImputer> Imputer(int k) {
  auto imp = ColdItemImputer::FromRows(
      k, 2, 2, {10, 20, 30}, {1, 0, 1, 1, -1, 0}, {1, 0, 0, 1, 5, 5});
  EXPECT_TRUE(imp.ok()) << imp.status();
  return imp.ok() ? std::move(*imp) : nullptr;
}

TEST(ColdItemImputerTest, NearestNeighbourAlone) {
  auto imp = Imputer(1);
  float out[2] = {-9, -9};
  ASSERT_TRUE(imp->Impute(std::vector<float>{2, 0.1f}.data(), out));
  EXPECT_FLOAT_EQ(out[0], 1);  // item 10 only
  EXPECT_FLOAT_EQ(out[1], 0);
}

TEST(ColdItemImputerTest, SimilarityWeightedMeanOfPositiveNeighbours) {
  auto imp = Imputer(3);
  float out[2];
  // Content (1, 0): cos 1 with item 10, 1/sqrt(2) with 20, -1 with 30
  // (left out: only positive similarity counts).
  ASSERT_TRUE(imp->Impute(std::vector<float>{3, 0}.data(), out));
  const double w1 = 1, w2 = 1 / std::sqrt(2.0);
  EXPECT_NEAR(out[0], w1 / (w1 + w2), 1e-6);
  EXPECT_NEAR(out[1], w2 / (w1 + w2), 1e-6);
}

TEST(ColdItemImputerTest, NoContentOrNoPositiveNeighbourLeavesTheRow) {
  auto imp = Imputer(2);
  float out[2] = {-9, -9};
  EXPECT_FALSE(imp->Impute(std::vector<float>{0, 0}.data(), out));
  // (0, -1): cos 0 with item 10, -1/sqrt(2) with 20, 0 with 30.
  EXPECT_FALSE(imp->Impute(std::vector<float>{0, -1}.data(), out));
  EXPECT_EQ(out[0], -9);
  EXPECT_EQ(out[1], -9);
}

TEST(ColdItemImputerTest, TrainedItemsWithoutContentAreNotNeighbours) {
  auto imp = ColdItemImputer::FromRows(2, 2, 2, {10, 20}, {0, 0, 1, 0},
                                       {7, 7, 3, 4});
  ASSERT_TRUE(imp.ok());
  EXPECT_EQ((*imp)->trained_items(), 1);
  float out[2];
  ASSERT_TRUE((*imp)->Impute(std::vector<float>{1, 0}.data(), out));
  EXPECT_FLOAT_EQ(out[0], 3);
  EXPECT_FLOAT_EQ(out[1], 4);
}

TEST(ColdItemImputerTest, RefusesBadArguments) {
  EXPECT_EQ(ColdItemImputer::FromRows(0, 2, 2, {}, {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ColdItemImputer::FromRows(1, 2, 2, {1}, {1, 0, 0}, {1, 1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ColdItemImputerTest, FillRewritesOnlyMissingItemRows) {
  auto imp = Imputer(1);
  PreparedBatch b;
  // ID keys: a user key (missing: left alone), item 40 (missing: imputed),
  // item 50 (missing, no content row: left alone), item 10 (present).
  b.id_keys = {FeatureKey(FeatureField::kUser, 40),
               FeatureKey(FeatureField::kItem, 40),
               FeatureKey(FeatureField::kItem, 50),
               FeatureKey(FeatureField::kItem, 10)};
  b.batch.id_rows = {0, 0, 0, 0, 0, 0, 8, 8};
  b.missing_id_rows = {0, 1, 2};
  // Content keys are raw item ids: 40 near item 20, 50 without content.
  b.content_keys = {40, 50, 10};
  b.batch.content_rows = {0.9f, 1.1f, 0, 0, 1, 0};
  ASSERT_TRUE(imp->Fill(&b).ok());
  EXPECT_EQ(b.batch.id_rows,
            (std::vector<float>{0, 0, 0, 1, 0, 0, 8, 8}));
  // A batch whose sizes do not match the imputer's dims is refused.
  b.batch.content_rows.pop_back();
  EXPECT_EQ(imp->Fill(&b).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace mim::worker
