#include "tests/planted_samples.h"

#include "gtest/gtest.h"
#include "worker/data/sample_io.h"

namespace mim::testing {

PlantedSamples::PlantedSamples(uint64_t seed, int num_users)
    : rng_(seed), history_(num_users) {}

data::Sample PlantedSamples::Next(int num_items) {
  data::Sample s;
  s.timestamp = timestamp_++;
  s.user_id = static_cast<int64_t>(rng_() % history_.size());
  s.item_id = static_cast<int64_t>(rng_() % num_items);
  s.label = uniform_(rng_) < (Good(s.item_id) ? 0.85 : 0.15) ? 1 : 0;
  s.age_bucket = 1 + static_cast<int32_t>(s.user_id % 5);
  s.gender = 1 + static_cast<int32_t>(s.user_id % 2);
  s.occupation = 1 + static_cast<int32_t>(s.user_id % 7);
  s.genres = {Good(s.item_id) ? 1 : 2, 3 + static_cast<int32_t>(s.item_id % 3)};
  std::vector<int64_t>& h = history_[s.user_id];
  s.behavior = h;
  if (s.label == 1) {
    h.push_back(s.item_id);
    if (h.size() > 10) h.erase(h.begin());
  }
  return s;
}

void WriteSamples(const std::string& path,
                  const std::vector<data::Sample>& samples) {
  auto writer = data::SampleWriter::Open(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const data::Sample& s : samples) {
    ASSERT_TRUE((*writer)->Write(s).ok()) << path;
  }
  ASSERT_TRUE((*writer)->Close().ok()) << path;
}

}  // namespace mim::testing
