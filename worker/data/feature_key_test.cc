#include "worker/data/feature_key.h"

#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace mim::data {
namespace {

TEST(FeatureKeyTest, FieldInTopBits) {
  EXPECT_EQ(FeatureKeyField(FeatureKey(FeatureField::kUser, 42)),
            FeatureField::kUser);
  EXPECT_EQ(FeatureKeyField(FeatureKey(FeatureField::kGenre, 0)),
            FeatureField::kGenre);
  EXPECT_EQ(FeatureKey(FeatureField::kItem, 7) >> 56, 2u);
}

TEST(FeatureKeyTest, DeterministicAndFieldsSeparate) {
  // Same value in two fields gives two keys; same input gives same key.
  EXPECT_NE(FeatureKey(FeatureField::kUser, 5),
            FeatureKey(FeatureField::kItem, 5));
  EXPECT_EQ(FeatureKey(FeatureField::kItem, 5),
            FeatureKey(FeatureField::kItem, 5));
  // Pinned value: keys are stored in checkpoints, so the function must never
  // change. splitmix64(0) = 0xE220A8397B1DCDAF.
  EXPECT_EQ(MixFeatureValue(0), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(FeatureKey(FeatureField::kUser, 0),
            (uint64_t{1} << 56) | (0xE220A8397B1DCDAFULL & ((uint64_t{1} << 56) - 1)));
}

TEST(FeatureKeyTest, NoCollisionsOnDenseIds) {
  absl::flat_hash_set<uint64_t> keys;
  for (int64_t v = 0; v < 200000; ++v) {
    keys.insert(FeatureKey(FeatureField::kItem, v));
  }
  EXPECT_EQ(keys.size(), 200000u);
}

}  // namespace
}  // namespace mim::data
