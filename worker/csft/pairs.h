// C-SFT inputs: interest pairs mined from training interactions, the item
// catalogue (content vectors and genres), and the split that holds items
// out of training so every choice is made on items training never saw.
#ifndef MIM_WORKER_CSFT_PAIRS_H_
#define MIM_WORKER_CSFT_PAIRS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "worker/data/sample.h"

namespace mim::csft {

// (query item, positive item): both engaged positively by one user.
// Plain value type.
struct InterestPair {
  int64_t query = 0;
  int64_t item = 0;
  friend bool operator==(const InterestPair& a, const InterestPair& b) {
    return a.query == b.query && a.item == b.item;
  }
};

// The pair rule. Plain value type.
struct PairOptions {
  // A positive sample (label 1) on item p gives (b, p) for each of the last
  // `window` items b of its behaviour column (the user's earlier positives,
  // strictly earlier in time, most recent last), skipping b == p. So a pair
  // is two items the same user liked, the query before the item, at most
  // `window` positives apart.
  int window = 5;
};

// Pairs of every positive sample of `samples`, in sample order, behaviour
// most recent first. INVALID_ARGUMENT if window < 1.
absl::StatusOr<std::vector<InterestPair>> MinePairs(
    const std::vector<data::Sample>& samples, const PairOptions& options);

// Every sample of a mim-samples file. Errors as data::SampleReader.
absl::StatusOr<std::vector<data::Sample>> ReadSamples(const std::string& path);

// Items a sample set mentions (targets and behaviours).
absl::flat_hash_set<int64_t> ItemsSeen(const std::vector<data::Sample>& s);

// item -> genre ids (the samples' genres column, first row wins).
void CollectGenres(const std::vector<data::Sample>& samples,
                   absl::flat_hash_map<int64_t, std::vector<int32_t>>* genres);

// Training pairs and the held-out validation pairs. Plain value type.
struct PairSplit {
  std::vector<InterestPair> train;
  // Positive item held out (never in a training pair), query warm.
  std::vector<InterestPair> valid_new;
  // Both items warm; left out of training.
  std::vector<InterestPair> valid_warm;
  absl::flat_hash_set<int64_t> held_out_items;
};

// Holds out about `holdout_fraction` of the items of `pairs` (a seeded hash
// of the item id decides, so the choice does not depend on pair order) and
// `warm_fraction` of the remaining warm pairs. A pair with a held-out query
// is dropped. INVALID_ARGUMENT for a fraction outside [0, 1).
absl::StatusOr<PairSplit> SplitPairs(const std::vector<InterestPair>& pairs,
                                     double holdout_fraction,
                                     double warm_fraction, uint64_t seed);

}  // namespace mim::csft

#endif  // MIM_WORKER_CSFT_PAIRS_H_
