#include "worker/eval/metrics.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace mim::eval {
namespace {

Prediction P(double prob, int label, int64_t user = 0, int64_t item = 0) {
  Prediction p;
  p.prob = prob;
  p.label = label;
  p.user_id = user;
  p.item_id = item;
  return p;
}

TEST(AucTest, NoTies) {
  // Pairs (pos, neg): (0.35,0.1)=1 (0.35,0.4)=0 (0.8,0.1)=1 (0.8,0.4)=1.
  absl::StatusOr<double> auc = Auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1});
  ASSERT_TRUE(auc.ok()) << auc.status();
  EXPECT_DOUBLE_EQ(*auc, 0.75);
}

TEST(AucTest, TiesCountOneHalf) {
  // pos 0.5 vs neg 0.5 (x2): 0.5 each; pos 0.9 vs both negs: 1 each.
  // (0.5 + 0.5 + 1 + 1) / (2 * 2) = 0.75.
  absl::StatusOr<double> auc = Auc({0.5, 0.5, 0.5, 0.9}, {1, 0, 0, 1});
  ASSERT_TRUE(auc.ok()) << auc.status();
  EXPECT_DOUBLE_EQ(*auc, 0.75);
}

TEST(AucTest, AllScoresEqualIsOneHalf) {
  absl::StatusOr<double> auc = Auc({0.3, 0.3, 0.3, 0.3, 0.3}, {1, 0, 1, 0, 0});
  ASSERT_TRUE(auc.ok()) << auc.status();
  EXPECT_DOUBLE_EQ(*auc, 0.5);
}

TEST(AucTest, PerfectAndReversed) {
  EXPECT_DOUBLE_EQ(*Auc({0.1, 0.2, 0.3}, {0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(*Auc({0.1, 0.2, 0.3}, {1, 0, 0}), 0.0);
}

TEST(AucTest, Errors) {
  EXPECT_EQ(Auc({0.1, 0.2}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Auc({0.1, 0.2}, {1, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Auc({0.1, 0.2}, {1, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Auc({}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(GaucTest, WeightsBySampleCountAndSkipsOneClassUsers) {
  std::vector<Prediction> p = {
      // User 1: AUC 1, 2 samples.
      P(0.9, 1, 1), P(0.1, 0, 1),
      // User 2: the positive scores below both negatives: AUC 0, 3 samples.
      P(0.2, 1, 2), P(0.8, 0, 2), P(0.5, 0, 2),
      // User 3: positives only, excluded.
      P(0.7, 1, 3), P(0.6, 1, 3)};
  absl::StatusOr<GaucResult> g = Gauc(p);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_DOUBLE_EQ(g->gauc, (2 * 1.0 + 3 * 0.0) / 5);
  EXPECT_EQ(g->users, 2);
  EXPECT_EQ(g->samples, 5);
}

TEST(GaucTest, TiesInsideUser) {
  // User 7: pos 0.4 ties neg 0.4 -> 0.5; pos 0.4 vs neg 0.1 -> 1. AUC 0.75.
  std::vector<Prediction> p = {P(0.4, 1, 7), P(0.4, 0, 7), P(0.1, 0, 7)};
  EXPECT_DOUBLE_EQ(Gauc(p)->gauc, 0.75);
}

TEST(GaucTest, NoEligibleUser) {
  std::vector<Prediction> p = {P(0.4, 1, 1), P(0.3, 0, 2)};
  EXPECT_EQ(Gauc(p).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LogLossTest, HandComputed) {
  std::vector<Prediction> p = {P(0.8, 1), P(0.4, 0)};
  // -(ln 0.8 + ln 0.6) / 2.
  EXPECT_NEAR(*LogLoss(p), 0.366984588, 1e-9);
}

TEST(LogLossTest, ClipsCertainMistakes) {
  std::vector<Prediction> p = {P(0.0, 1)};
  EXPECT_NEAR(*LogLoss(p), -std::log(1e-7), 1e-6);
  EXPECT_EQ(LogLoss({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ColdAucTest, OnlyItemsWithoutTrainingSamples) {
  absl::flat_hash_map<int64_t, int64_t> counts = {{10, 5}, {11, 0}};
  std::vector<Prediction> p = {
      P(0.9, 0, 1, 10),  // warm: ignored
      P(0.1, 1, 1, 10),  // warm: ignored
      P(0.7, 1, 1, 11),  // count 0: cold
      P(0.3, 0, 1, 12),  // absent: cold
      P(0.7, 0, 1, 12),  // absent: cold, ties the positive
  };
  GroupAuc cold = ColdAuc(p, counts);
  EXPECT_EQ(cold.n, 3);
  EXPECT_EQ(cold.positives, 1);
  EXPECT_EQ(cold.min_count, 0);
  EXPECT_EQ(cold.max_count, 0);
  ASSERT_TRUE(cold.auc.has_value());
  EXPECT_DOUBLE_EQ(*cold.auc, (1.0 + 0.5) / 2);
}

TEST(ColdAucTest, NoColdSamples) {
  absl::flat_hash_map<int64_t, int64_t> counts = {{10, 5}};
  GroupAuc cold = ColdAuc({P(0.5, 1, 1, 10)}, counts);
  EXPECT_EQ(cold.n, 0);
  EXPECT_FALSE(cold.auc.has_value());
}

TEST(AucByItemFrequencyTest, EqualSizeGroupsRarestFirstWithTies) {
  // Items 0..3 with train counts 0, 0, 3, 9; two test samples per item plus
  // two more for item 0 (10 samples). Sorted counts (stable):
  // 0 0 0 0 0 0 | 3 3 | 9 9  -> with 5 groups of 2: [0,0] [0,0] [0,0] [3,3]
  // [9,9]: count 0 spans three groups.
  absl::flat_hash_map<int64_t, int64_t> counts = {{1, 0}, {2, 3}, {3, 9}};
  std::vector<Prediction> p = {
      P(0.9, 1, 1, 0), P(0.1, 0, 1, 0),  // group 0: AUC 1
      P(0.2, 1, 1, 1), P(0.8, 0, 1, 1),  // group 1: AUC 0
      P(0.9, 1, 1, 3), P(0.1, 0, 1, 3),  // (count 9) group 4: AUC 1
      P(0.6, 1, 1, 2), P(0.6, 0, 1, 2),  // (count 3) group 3: tie, AUC 0.5
      P(0.5, 1, 1, 0), P(0.5, 1, 1, 0),  // group 2: positives only
  };
  absl::StatusOr<std::vector<GroupAuc>> groups =
      AucByItemFrequency(p, counts, 5);
  ASSERT_TRUE(groups.ok()) << groups.status();
  ASSERT_EQ(groups->size(), 5u);
  const std::vector<std::pair<int64_t, int64_t>> ranges = {
      {0, 0}, {0, 0}, {0, 0}, {3, 3}, {9, 9}};
  for (int g = 0; g < 5; ++g) {
    EXPECT_EQ((*groups)[g].n, 2) << g;
    EXPECT_EQ((*groups)[g].min_count, ranges[g].first) << g;
    EXPECT_EQ((*groups)[g].max_count, ranges[g].second) << g;
  }
  EXPECT_DOUBLE_EQ(*(*groups)[0].auc, 1.0);
  EXPECT_DOUBLE_EQ(*(*groups)[1].auc, 0.0);
  EXPECT_FALSE((*groups)[2].auc.has_value());
  EXPECT_EQ((*groups)[2].positives, 2);
  EXPECT_DOUBLE_EQ(*(*groups)[3].auc, 0.5);
  EXPECT_DOUBLE_EQ(*(*groups)[4].auc, 1.0);
}

TEST(AucByItemFrequencyTest, UnevenSizesAndMixedCounts) {
  // 7 samples into 3 groups: boundaries 7*g/3 = 0, 2, 4, 7 -> sizes 2, 2, 3.
  absl::flat_hash_map<int64_t, int64_t> counts;
  std::vector<Prediction> p;
  for (int i = 0; i < 7; ++i) {
    counts[i] = 10 - i;  // item i has count 10 - i: reversed order
    p.push_back(P(0.1 * i, i % 2, 1, i));
  }
  absl::StatusOr<std::vector<GroupAuc>> groups =
      AucByItemFrequency(p, counts, 3);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ((*groups)[0].n, 2);
  EXPECT_EQ((*groups)[1].n, 2);
  EXPECT_EQ((*groups)[2].n, 3);
  EXPECT_EQ((*groups)[0].min_count, 4);   // items 6, 5
  EXPECT_EQ((*groups)[0].max_count, 5);
  EXPECT_EQ((*groups)[2].min_count, 8);   // items 2, 1, 0
  EXPECT_EQ((*groups)[2].max_count, 10);
}

TEST(AucByItemFrequencyTest, FewerSamplesThanGroupsAndBadArgument) {
  absl::flat_hash_map<int64_t, int64_t> counts;
  absl::StatusOr<std::vector<GroupAuc>> groups =
      AucByItemFrequency({P(0.5, 1)}, counts, 10);
  ASSERT_TRUE(groups.ok());
  int64_t total = 0;
  for (const GroupAuc& g : *groups) total += g.n;
  EXPECT_EQ(total, 1);
  EXPECT_EQ((*groups)[9].n, 1);
  EXPECT_EQ(AucByItemFrequency({}, counts, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim::eval
