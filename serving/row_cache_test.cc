#include "serving/row_cache.h"

#include <vector>

#include "gtest/gtest.h"

namespace mim::serving {
namespace {

RowCache::Options Opts() {
  RowCache::Options o;
  o.capacity_bytes = 1 << 20;
  o.ttl = absl::Seconds(1);
  o.max_stale = absl::Seconds(10);
  o.stripes = 4;
  return o;
}

TEST(RowCacheTest, FreshThenStaleThenGone) {
  RowCache cache(Opts());
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const float row[3] = {1, 2, 3};
  cache.Insert(RowCache::kIdTable, 7, row, 3, t0,
               cache.generation(RowCache::kIdTable));
  float out[3] = {};
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 7, 3, t0 + absl::Milliseconds(500),
                         out),
            RowCache::Found::kFresh);
  EXPECT_EQ(out[2], 3.0f);
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 7, 3, t0 + absl::Seconds(5), out),
            RowCache::Found::kStale);
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 7, 3, t0 + absl::Seconds(11), out),
            RowCache::Found::kMiss);
  // Dropped once past max_stale.
  EXPECT_EQ(cache.stats().entries, 0);
  // Tables are separate key spaces; a different dim is a miss.
  cache.Insert(RowCache::kIdTable, 7, row, 3, t0,
               cache.generation(RowCache::kIdTable));
  EXPECT_EQ(cache.Lookup(RowCache::kContentTable, 7, 3, t0, out),
            RowCache::Found::kMiss);
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 7, 2, t0, out),
            RowCache::Found::kMiss);
  const RowCache::Stats st = cache.stats();
  EXPECT_EQ(st.hits, 1);
  EXPECT_EQ(st.stale_hits, 1);
  EXPECT_EQ(st.misses, 3);
}

TEST(RowCacheTest, InsertAfterInvalidateOfAnEarlierFetchIsRefused) {
  RowCache cache(Opts());
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const float old_row[2] = {1, 1};
  const float new_row[2] = {2, 2};
  // A request takes the generation, then fetches the old row...
  const uint64_t g = cache.generation(RowCache::kContentTable);
  // ...meanwhile an upsert lands and invalidates the key...
  cache.Invalidate(RowCache::kContentTable, 42);
  // ...and the late insert of the old row must not stick.
  cache.Insert(RowCache::kContentTable, 42, old_row, 2, t0, g);
  float out[2];
  EXPECT_EQ(cache.Lookup(RowCache::kContentTable, 42, 2, t0, out),
            RowCache::Found::kMiss);
  cache.Insert(RowCache::kContentTable, 42, new_row, 2, t0,
               cache.generation(RowCache::kContentTable));
  EXPECT_EQ(cache.Lookup(RowCache::kContentTable, 42, 2, t0, out),
            RowCache::Found::kFresh);
  EXPECT_EQ(out[0], 2.0f);
  // The ID table's generation is untouched by content invalidations.
  const uint64_t gid = cache.generation(RowCache::kIdTable);
  cache.InvalidateTable(RowCache::kContentTable);
  EXPECT_EQ(cache.generation(RowCache::kIdTable), gid);
  EXPECT_EQ(cache.Lookup(RowCache::kContentTable, 42, 2, t0, out),
            RowCache::Found::kMiss);
}

TEST(RowCacheTest, StaysWithinItsByteBudgetEvictingLeastRecent) {
  RowCache::Options o = Opts();
  o.stripes = 1;
  o.capacity_bytes = 10 * (96 + 64 * 4);  // room for 10 rows of dim 64
  RowCache cache(o);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<float> row(64, 1.0f);
  for (uint64_t k = 0; k < 25; ++k) {
    cache.Insert(RowCache::kIdTable, k, row.data(), 64, t0,
                 cache.generation(RowCache::kIdTable));
  }
  const RowCache::Stats st = cache.stats();
  EXPECT_EQ(st.entries, 10);
  EXPECT_LE(st.bytes, o.capacity_bytes);
  EXPECT_EQ(st.evictions, 15);
  float out[64];
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 24, 64, t0, out),
            RowCache::Found::kFresh);
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 0, 64, t0, out),
            RowCache::Found::kMiss);
}

TEST(RowCacheTest, ZeroCapacityDisablesIt) {
  RowCache::Options o = Opts();
  o.capacity_bytes = 0;
  RowCache cache(o);
  const float row[1] = {1};
  cache.Insert(RowCache::kIdTable, 1, row, 1, absl::Now(),
               cache.generation(RowCache::kIdTable));
  float out[1];
  EXPECT_EQ(cache.Lookup(RowCache::kIdTable, 1, 1, absl::Now(), out),
            RowCache::Found::kMiss);
}

}  // namespace
}  // namespace mim::serving
