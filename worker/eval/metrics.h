// Offline evaluation metrics for CTR models: AUC (ties count one half),
// GAUC, log loss, cold-item AUC and AUC by item-frequency decile.
//
// All functions are pure; safe for concurrent use.
#ifndef MIM_WORKER_EVAL_METRICS_H_
#define MIM_WORKER_EVAL_METRICS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace mim::eval {

// One scored test sample.
struct Prediction {
  double prob = 0.0;  // Predicted click probability in [0, 1].
  int label = 0;      // 0 or 1.
  int64_t user_id = 0;
  int64_t item_id = 0;
};

// Area under the ROC curve: the probability that a random positive scores
// above a random negative, a tie counting 1/2 (Mann-Whitney U with average
// ranks). Errors: INVALID_ARGUMENT if the sizes differ or a label is not 0/1;
// FAILED_PRECONDITION if there is no positive or no negative.
absl::StatusOr<double> Auc(absl::Span<const double> scores,
                           absl::Span<const int> labels);

struct GaucResult {
  double gauc = 0.0;
  int64_t users = 0;    // Users with both labels (the ones averaged).
  int64_t samples = 0;  // Their samples (the weights' sum).
};

// Per-user AUC averaged with weight = the user's sample count, over users
// that have both a positive and a negative. FAILED_PRECONDITION if no user
// has both.
absl::StatusOr<GaucResult> Gauc(absl::Span<const Prediction> predictions);

// Mean binary cross-entropy; probabilities are clipped to [1e-7, 1 - 1e-7].
// INVALID_ARGUMENT for an empty input.
absl::StatusOr<double> LogLoss(absl::Span<const Prediction> predictions);

// AUC of a subset of the samples.
struct GroupAuc {
  int64_t min_count = 0;  // Smallest / largest training-sample count of the
  int64_t max_count = 0;  // target items in the group.
  int64_t n = 0;
  int64_t positives = 0;
  std::optional<double> auc;  // Unset when the group lacks a class.
};

// AUC over samples whose target item has no entry (or 0) in
// `train_item_counts` (items never seen in training).
GroupAuc ColdAuc(absl::Span<const Prediction> predictions,
                 const absl::flat_hash_map<int64_t, int64_t>& train_item_counts);

// Test samples sorted by their target item's training-sample count (ties
// keep input order, so the result is deterministic), then cut into
// `num_groups` contiguous groups of equal size (group g holds sorted
// positions [g*n/G, (g+1)*n/G)), rarest first. Many ties (e.g. every cold
// item has count 0) put one count value in several groups; each group
// reports its own count range. Groups are empty when n < num_groups.
// INVALID_ARGUMENT if num_groups < 1.
absl::StatusOr<std::vector<GroupAuc>> AucByItemFrequency(
    absl::Span<const Prediction> predictions,
    const absl::flat_hash_map<int64_t, int64_t>& train_item_counts,
    int num_groups = 10);

}  // namespace mim::eval

#endif  // MIM_WORKER_EVAL_METRICS_H_
