// Samples with a planted, learnable pattern for the trainer's process-level
// tests: even items are "good" (clicked with probability 0.85, odd items
// 0.15), the genres reveal which, and a user's behaviour sequence is their
// last 10 clicked items. Seeded: the same seed gives the same samples.
#ifndef MIM_TESTS_PLANTED_SAMPLES_H_
#define MIM_TESTS_PLANTED_SAMPLES_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "worker/data/sample.h"

namespace mim::testing {

class PlantedSamples {
 public:
  PlantedSamples(uint64_t seed, int num_users);

  static bool Good(int64_t item) { return item % 2 == 0; }

  // The next sample, its target drawn from items [0, num_items); timestamps
  // count up from 1'000'000.
  data::Sample Next(int num_items);

 private:
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
  std::vector<std::vector<int64_t>> history_;
  int64_t timestamp_ = 1'000'000;
};

// Writes `samples` to `path` as mim-samples v1; a failure is a test failure.
void WriteSamples(const std::string& path,
                  const std::vector<data::Sample>& samples);

}  // namespace mim::testing

#endif  // MIM_TESTS_PLANTED_SAMPLES_H_
