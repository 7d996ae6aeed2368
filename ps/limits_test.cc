#include "ps/limits.h"

#include <string>

#include "gtest/gtest.h"
#include "proto/ps.pb.h"

namespace mim::ps {
namespace {

// The bounds are upper bounds of real encodings: every key missing (the
// largest Pull answer), RowMeta fields at their largest, a table name of
// 128 bytes.
TEST(LimitsTest, BoundsCoverTheLargestEncodings) {
  for (uint32_t dim : {1u, 8u, 64u, 4096u}) {
    for (size_t keys : {size_t{1}, size_t{1000}, size_t{70000}}) {
      PullResponse pull;
      pull.set_dim(dim);
      pull.mutable_values()->resize(sizeof(float) * dim * keys);
      GetRowsResponse get;
      get.set_dim(dim);
      get.mutable_values()->resize(sizeof(float) * dim * keys);
      PushRequest push;
      push.set_table(std::string(128, 't'));
      push.mutable_gradients()->resize(sizeof(float) * dim * keys);
      for (size_t i = 0; i < keys; ++i) {
        // Indices near 2^32 take the 5 varint bytes the bound allows.
        pull.add_missing(0xFFFFFFF0u - static_cast<uint32_t>(i));
        get.add_missing(0xFFFFFFF0u - static_cast<uint32_t>(i));
        RowMeta* m = get.add_meta();
        m->set_last_update_micros(-1);
        m->set_update_count(0xFFFFFFFFu);
        m->set_version(~uint64_t{0});
        push.add_keys(~uint64_t{0} - i);
      }
      EXPECT_LE(pull.ByteSizeLong(), PullResponseBytes(keys, dim))
          << keys << " x " << dim;
      EXPECT_LE(get.ByteSizeLong(), GetRowsResponseBytes(keys, dim))
          << keys << " x " << dim;
      EXPECT_LE(push.ByteSizeLong(), RowsRequestBytes(keys, dim))
          << keys << " x " << dim;
    }
  }
}

TEST(LimitsTest, MaxKeysIsTheLargestCountThatFits) {
  for (uint32_t dim : {1u, 64u, 4096u}) {
    const size_t limit = kDefaultMaxMessageBytes;
    const size_t pull = MaxKeysForResponse(limit, dim, /*get_rows=*/false);
    EXPECT_LE(PullResponseBytes(pull, dim), limit);
    EXPECT_GT(PullResponseBytes(pull + 1, dim), limit);
    const size_t get = MaxKeysForResponse(limit, dim, /*get_rows=*/true);
    EXPECT_LE(GetRowsResponseBytes(get, dim), limit);
    EXPECT_GT(GetRowsResponseBytes(get + 1, dim), limit);
    const size_t push = MaxKeysForRowsRequest(limit, dim);
    EXPECT_LE(RowsRequestBytes(push, dim), limit);
    EXPECT_GT(RowsRequestBytes(push + 1, dim), limit);
  }
  // A limit too small for one row still allows one key per call (which
  // the shard then refuses, naming its limit).
  EXPECT_EQ(MaxKeysForResponse(100, 4096, false), 1u);
  EXPECT_EQ(MaxKeysForRowsRequest(100, 4096), 1u);
}

TEST(LimitsTest, WriteReservationCountsTheOptimizerState) {
  EXPECT_EQ(WriteReservationBytes(1000, 0), 4000u);    // SGD, content
  EXPECT_EQ(WriteReservationBytes(1000, 1), 7000u);    // Adagrad
  EXPECT_EQ(WriteReservationBytes(1000, 2), 10000u);   // Adam, FTRL
}

TEST(InflightBytesTest, AdmitsWithinTheLimitAndAnyCallAlone) {
  InflightBytes budget(100);
  EXPECT_TRUE(budget.TryAcquire(250));  // alone: admitted whatever its size
  EXPECT_FALSE(budget.TryAcquire(1));   // over the limit while it runs
  EXPECT_EQ(budget.in_flight(), 250u);
  budget.Release(250);
  EXPECT_TRUE(budget.TryAcquire(60));
  EXPECT_TRUE(budget.TryAcquire(40));   // exactly the limit
  EXPECT_FALSE(budget.TryAcquire(1));
  budget.Release(40);
  EXPECT_TRUE(budget.TryAcquire(30));
  EXPECT_EQ(budget.in_flight(), 90u);

  InflightBytes unlimited(0);
  EXPECT_TRUE(unlimited.TryAcquire(size_t{1} << 40));
  EXPECT_TRUE(unlimited.TryAcquire(size_t{1} << 40));
}

}  // namespace
}  // namespace mim::ps
