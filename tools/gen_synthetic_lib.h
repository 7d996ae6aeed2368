// Synthetic CTR stream with planted structure in which both item IDs and item
// content carry signal, and new items keep arriving (so the test period is
// rich in cold items). The generative story is in docs/DATA_FORMAT.md
// ("Synthetic data"); in short:
//   item j: topic k_j, quality q_j ~ N(0, quality_std) (ID-only signal),
//           content vector = topic centre + noise (content-visible signal),
//           arrival time spread over the stream after an initial catalogue;
//   user u: topic preferences z_u, drifting by N(0, drift_std) per visit;
//   impression: a fresh item, an item of a topic the user likes, or any
//           arrived item; click ~ Bernoulli(sigmoid(bias +
//           affinity_weight * log(K * softmax(z_u)[k_j]) + q_j)).
// Output streams to disk; memory is O(items + users * (K + 50)).
#ifndef MIM_TOOLS_GEN_SYNTHETIC_LIB_H_
#define MIM_TOOLS_GEN_SYNTHETIC_LIB_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace mim::tools {

struct SyntheticOptions {
  std::string output_dir;  // Must exist.
  int64_t num_samples = 300000;
  int64_t num_items = 10000;
  int64_t num_users = 5000;
  int num_topics = 16;
  int content_dim = 64;
  uint64_t seed = 1;
  double test_fraction = 0.2;      // Last fraction of the stream is test.
  double initial_items = 0.3;      // Fraction of items present at t0.
  double fresh_exposure = 0.25;    // P(impression is a recently arrived item).
  double topic_exposure = 0.45;    // P(impression from a liked topic).
  double quality_std = 0.8;
  double affinity_weight = 1.0;
  double bias = -1.0;
  double drift_std = 0.05;
  double content_noise = 0.8;      // Noise norm relative to the topic centre.
  int64_t start_time = 1000000000; // Unix seconds of the first sample.
};

struct SyntheticStats {
  int64_t train_samples = 0;
  int64_t test_samples = 0;
  int64_t positives = 0;
  int64_t test_start = 0;        // First test timestamp.
  int64_t test_items = 0;        // Distinct items with a test sample.
  int64_t cold_test_items = 0;   // ... with no train sample.
  int64_t cold_test_samples = 0;
};

// Writes, under options.output_dir: train.tsv, test.tsv (mim-samples v1),
// item_vectors.tsv (mim-vectors v1, modality=synthetic, L2-normalised),
// item_text.tsv (mim-item-text v1, topic-flavoured pseudo-words, for
// tools/content_vectors) and item_truth.tsv (item, arrival ts, topic,
// quality: the planted truth, for analysis only).
// Deterministic given the options (for one build of the standard library).
// `progress`, if set, is called with the number of samples written every
// 1M samples. Errors: INVALID_ARGUMENT for bad options; INTERNAL on write
// failures.
absl::StatusOr<SyntheticStats> GenerateSynthetic(
    const SyntheticOptions& options,
    const std::function<void(int64_t)>& progress = nullptr);

}  // namespace mim::tools

#endif  // MIM_TOOLS_GEN_SYNTHETIC_LIB_H_
