#include "worker/csft/pairs.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/sample_io.h"

namespace mim::csft {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double Unit(uint64_t h) { return double(h >> 11) * (1.0 / 9007199254740992.0); }

}  // namespace

absl::StatusOr<std::vector<InterestPair>> MinePairs(
    const std::vector<data::Sample>& samples, const PairOptions& options) {
  if (options.window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair window ", options.window, "; expected >= 1"));
  }
  std::vector<InterestPair> pairs;
  for (const data::Sample& s : samples) {
    if (s.label != 1) continue;
    int taken = 0;
    for (auto it = s.behavior.rbegin();
         it != s.behavior.rend() && taken < options.window; ++it, ++taken) {
      if (*it == s.item_id) continue;
      pairs.push_back({*it, s.item_id});
    }
  }
  return pairs;
}

absl::StatusOr<std::vector<data::Sample>> ReadSamples(const std::string& path) {
  auto reader = data::SampleReader::Open(path);
  if (!reader.ok()) return reader.status();
  std::vector<data::Sample> all, batch;
  while (true) {
    auto n = (*reader)->ReadBatch(4096, &batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    all.insert(all.end(), batch.begin(), batch.end());
  }
  return all;
}

absl::flat_hash_set<int64_t> ItemsSeen(const std::vector<data::Sample>& s) {
  absl::flat_hash_set<int64_t> seen;
  for (const data::Sample& x : s) {
    seen.insert(x.item_id);
    seen.insert(x.behavior.begin(), x.behavior.end());
  }
  return seen;
}

void CollectGenres(const std::vector<data::Sample>& samples,
                   absl::flat_hash_map<int64_t, std::vector<int32_t>>* genres) {
  for (const data::Sample& s : samples) genres->try_emplace(s.item_id, s.genres);
}

absl::StatusOr<PairSplit> SplitPairs(const std::vector<InterestPair>& pairs,
                                     double holdout_fraction,
                                     double warm_fraction, uint64_t seed) {
  if (!(holdout_fraction >= 0 && holdout_fraction < 1) ||
      !(warm_fraction >= 0 && warm_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holdout fraction ", holdout_fraction, " and warm fraction ",
        warm_fraction, "; expected both in [0, 1)"));
  }
  PairSplit split;
  auto held = [&](int64_t item) {
    return Unit(Mix(uint64_t(item) ^ Mix(seed))) < holdout_fraction;
  };
  for (const InterestPair& p : pairs) {
    if (held(p.query)) split.held_out_items.insert(p.query);
    if (held(p.item)) split.held_out_items.insert(p.item);
  }
  uint64_t index = 0;
  for (const InterestPair& p : pairs) {
    ++index;
    if (split.held_out_items.contains(p.query)) continue;
    if (split.held_out_items.contains(p.item)) {
      split.valid_new.push_back(p);
    } else if (Unit(Mix(index ^ Mix(seed + 1))) < warm_fraction) {
      split.valid_warm.push_back(p);
    } else {
      split.train.push_back(p);
    }
  }
  return split;
}

}  // namespace mim::csft
