#include "serving/row_cache.h"

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace mim::serving {
namespace {

// Two tables of one cache, as the serving tier interns them.
constexpr RowCache::Table kIds = 0;
constexpr RowCache::Table kContent = 1;

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
  ASSERT_EQ(cache.TableId("ids"), kIds);
  ASSERT_EQ(cache.TableId("content"), kContent);
  ASSERT_EQ(cache.TableId("ids"), kIds);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const float row[3] = {1, 2, 3};
  cache.Insert(kIds, 7, row, 3, t0,
               cache.generation(kIds));
  float out[3] = {};
  EXPECT_EQ(cache.Lookup(kIds, 7, 3, t0 + absl::Milliseconds(500),
                         out),
            RowCache::Found::kFresh);
  EXPECT_EQ(out[2], 3.0f);
  EXPECT_EQ(cache.Lookup(kIds, 7, 3, t0 + absl::Seconds(5), out),
            RowCache::Found::kStale);
  EXPECT_EQ(cache.Lookup(kIds, 7, 3, t0 + absl::Seconds(11), out),
            RowCache::Found::kMiss);
  // Dropped once past max_stale.
  EXPECT_EQ(cache.stats().entries, 0);
  // Tables are separate key spaces; a different dim is a miss.
  cache.Insert(kIds, 7, row, 3, t0,
               cache.generation(kIds));
  EXPECT_EQ(cache.Lookup(kContent, 7, 3, t0, out),
            RowCache::Found::kMiss);
  EXPECT_EQ(cache.Lookup(kIds, 7, 2, t0, out),
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
  const uint64_t g = cache.generation(kContent);
  // ...meanwhile an upsert lands and invalidates the key...
  cache.Invalidate(kContent, 42);
  // ...and the late insert of the old row must not stick.
  cache.Insert(kContent, 42, old_row, 2, t0, g);
  float out[2];
  EXPECT_EQ(cache.Lookup(kContent, 42, 2, t0, out),
            RowCache::Found::kMiss);
  cache.Insert(kContent, 42, new_row, 2, t0,
               cache.generation(kContent));
  EXPECT_EQ(cache.Lookup(kContent, 42, 2, t0, out),
            RowCache::Found::kFresh);
  EXPECT_EQ(out[0], 2.0f);
  // The ID table's generation is untouched by content invalidations.
  const uint64_t gid = cache.generation(kIds);
  cache.InvalidateTable(kContent);
  EXPECT_EQ(cache.generation(kIds), gid);
  EXPECT_EQ(cache.Lookup(kContent, 42, 2, t0, out),
            RowCache::Found::kMiss);
}

// An upsert's Invalidate refuses late inserts only in its key's stripe:
// a request that fetched other rows of the table before it still caches
// them (with one stripe, everything is that stripe).
TEST(RowCacheTest, InvalidatingOneKeySparesTheRestOfTheTable) {
  RowCache::Options options = Opts();
  options.stripes = 16;
  RowCache cache(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const float row[2] = {3, 4};
  const uint64_t g = cache.generation(kContent);
  cache.Invalidate(kContent, 42);
  int cached = 0;
  float out[2];
  for (uint64_t key = 1000; key < 1100; ++key) {
    cache.Insert(kContent, key, row, 2, t0, g);
    if (cache.Lookup(kContent, key, 2, t0, out) == RowCache::Found::kFresh) {
      ++cached;
    }
  }
  EXPECT_GT(cached, 80);   // about 15 in 16
  EXPECT_LT(cached, 100);  // the invalidated key's stripe took none
  cache.Insert(kContent, 42, row, 2, t0, g);
  EXPECT_EQ(cache.Lookup(kContent, 42, 2, t0, out), RowCache::Found::kMiss);
  // A whole-table flush refuses every late insert.
  const uint64_t g2 = cache.generation(kContent);
  cache.InvalidateTable(kContent);
  cache.Insert(kContent, 7, row, 2, t0, g2);
  EXPECT_EQ(cache.Lookup(kContent, 7, 2, t0, out), RowCache::Found::kMiss);
}

TEST(RowCacheTest, StaysWithinItsByteBudgetEvictingLeastRecent) {
  RowCache::Options o = Opts();
  o.stripes = 1;
  o.capacity_bytes = 10 * (96 + 64 * 4);  // room for 10 rows of dim 64
  RowCache cache(o);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<float> row(64, 1.0f);
  for (uint64_t k = 0; k < 25; ++k) {
    cache.Insert(kIds, k, row.data(), 64, t0,
                 cache.generation(kIds));
  }
  const RowCache::Stats st = cache.stats();
  EXPECT_EQ(st.entries, 10);
  EXPECT_LE(st.bytes, o.capacity_bytes);
  EXPECT_EQ(st.evictions, 15);
  float out[64];
  EXPECT_EQ(cache.Lookup(kIds, 24, 64, t0, out),
            RowCache::Found::kFresh);
  EXPECT_EQ(cache.Lookup(kIds, 0, 64, t0, out),
            RowCache::Found::kMiss);
}

TEST(RowCacheTest, TablesBeyondTheLimitAreNotCached) {
  RowCache cache(Opts());
  for (int i = 0; i < RowCache::kMaxTables; ++i) {
    EXPECT_EQ(cache.TableId("t" + std::to_string(i)), i);
  }
  const RowCache::Table extra = cache.TableId("one too many");
  EXPECT_EQ(extra, RowCache::kUncached);
  const float row[1] = {1};
  cache.Insert(extra, 1, row, 1, absl::Now(), cache.generation(extra));
  // Nothing stored (a Lookup of kUncached misses whatever is stored, so
  // the entry count is what tells), and a table within the limit still is.
  EXPECT_EQ(cache.stats().entries, 0);
  EXPECT_EQ(cache.stats().bytes, 0);
  float out[1];
  EXPECT_EQ(cache.Lookup(extra, 1, 1, absl::Now(), out),
            RowCache::Found::kMiss);
  cache.Insert(0, 1, row, 1, absl::Now(), cache.generation(0));
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.Lookup(0, 1, 1, absl::Now(), out), RowCache::Found::kFresh);
  EXPECT_EQ(cache.Lookup(extra, 1, 1, absl::Now(), out),
            RowCache::Found::kMiss);
}

TEST(RowCacheTest, ZeroCapacityDisablesIt) {
  RowCache::Options o = Opts();
  o.capacity_bytes = 0;
  RowCache cache(o);
  const float row[1] = {1};
  cache.Insert(kIds, 1, row, 1, absl::Now(),
               cache.generation(kIds));
  float out[1];
  EXPECT_EQ(cache.Lookup(kIds, 1, 1, absl::Now(), out),
            RowCache::Found::kMiss);
}

}  // namespace
// The cache's clock is monotonic: it never goes back, and it advances.
TEST(RowCacheTest, ItsClockNeverGoesBack) {
  absl::Time last = RowCache::Now();
  for (int i = 0; i < 1000; ++i) {
    const absl::Time now = RowCache::Now();
    EXPECT_GE(now, last);
    last = now;
  }
  absl::SleepFor(absl::Milliseconds(5));
  EXPECT_GE(RowCache::Now() - last, absl::Milliseconds(5));
}

}  // namespace mim::serving
