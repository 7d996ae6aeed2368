// Small fixtures shared by the C-SFT tests (csft_test, and
// tests/csft_workers_test against real shards). Test-only.
#ifndef MIM_WORKER_CSFT_CSFT_TEST_UTIL_H_
#define MIM_WORKER_CSFT_CSFT_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "worker/csft/csft_trainer.h"
#include "worker/csft/pairs.h"

namespace mim::csft::testing {

// 40 items 100..139: i < 20 genre {1}, the rest {2, 3 + i % 3}; random
// vectors of `input_dim` whose first `dim` floats are unit length.
inline Catalog TestCatalog(int input_dim = 6, int dim = 6) {
  Catalog c;
  c.dim = dim;
  c.input_dim = input_dim;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (int i = 0; i < 40; ++i) {
    c.ids.push_back(100 + i);
    c.index[100 + i] = i;
    double ss = 0;
    std::vector<float> v(input_dim);
    for (float& x : v) x = normal(rng);
    for (int k = 0; k < dim; ++k) ss += double(v[k]) * v[k];
    for (int k = 0; k < dim; ++k) v[k] = float(v[k] / std::sqrt(ss));
    c.features.insert(c.features.end(), v.begin(), v.end());
    c.genres.push_back(i < 20 ? std::vector<int32_t>{1}
                              : std::vector<int32_t>{2, 3 + i % 3});
  }
  c.num_genres = 6;
  return c;
}

// 4 distinct pairs: queries 120+offset+i, positives 100+offset+i (genre 1
// for offset + 3 < 20).
inline std::vector<InterestPair> Batch(int offset) {
  std::vector<InterestPair> b;
  for (int i = 0; i < 4; ++i) b.push_back({120 + offset + i, 100 + offset + i});
  return b;
}

}  // namespace mim::csft::testing

#endif  // MIM_WORKER_CSFT_CSFT_TEST_UTIL_H_
