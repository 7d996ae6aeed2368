// BatchPipeline against a real shard: the rows each batch is pulled with,
// and when the pushes handed over with PushAfter reach the shard.
//
// Contract under test (worker/trainer_pipeline.h): batch k+1's rows are
// pulled while batch k computes, so they miss batch k's push (exactly that
// one, with prefetch on and off alike) and include every earlier one; every
// push is applied once Next has returned false.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "tests/process.h"
#include "worker/data/feature_key.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/model/batch.h"
#include "worker/trainer_pipeline.h"

namespace mim {
namespace {

using ::mim::testing::ShardProcess;

constexpr int kDim = 4;
constexpr int kBatches = 5;
constexpr char kTable[] = "pipeline_id";

class TrainerPipelineTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    static int test_number = 0;  // each test gets a fresh shard
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/pipeline_",
                        test_number++);
    std::filesystem::create_directories(dir_);
    ShardProcess::Flags flags;
    flags.data_dir = dir_ + "/shard";
    absl::StatusOr<std::unique_ptr<ShardProcess>> shard =
        ShardProcess::Start(flags);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = std::move(*shard);
    absl::StatusOr<std::unique_ptr<ps::PsClient>> client =
        ps::PsClient::Create({shard_->address()});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    // SGD with learning rate 1 on zero rows: a row's value is minus the sum
    // of the gradients pushed to it, so it tells which pushes arrived.
    ps::TableConfig config;
    config.set_name(kTable);
    config.set_kind(ps::ID);
    config.set_dim(kDim);
    config.mutable_optimizer()->set_name("sgd");
    config.mutable_optimizer()->set_learning_rate(1.0f);
    config.mutable_initializer()->set_name("zeros");
    ASSERT_TRUE(client_->CreateTable(config, false).ok());

    // One sample per batch, all with the same user, item and side features.
    path_ = dir_ + "/samples.tsv";
    absl::StatusOr<std::unique_ptr<data::SampleWriter>> writer =
        data::SampleWriter::Open(path_);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int i = 0; i < kBatches; ++i) {
      data::Sample s;
      s.timestamp = 1000 + i;
      s.user_id = 7;
      s.item_id = 42;
      s.label = i % 2;
      ASSERT_TRUE((*writer)->Write(s).ok());
    }
    ASSERT_TRUE((*writer)->Close().ok());
  }

  // The value every row of the item key holds on the shard right now.
  float ShardValue() {
    const uint64_t key = data::FeatureKey(data::FeatureField::kItem, 42);
    absl::StatusOr<ps::PsClient::GetRowsResult> rows =
        client_->GetRows(kTable, {key});
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? rows->values[0] : -1.0f;
  }

  // One sample per batch; prefetch as the test parameter says; targets
  // dropped as Options::target_id_dropout says.
  absl::StatusOr<std::unique_ptr<worker::BatchPipeline>> StartPipeline(
      double target_id_dropout = 0.0, uint64_t dropout_seed = 0) {
    worker::BatchPipeline::Options options;
    options.path = path_;
    options.batch_size = 1;
    options.id_table = kTable;
    options.id_dim = kDim;
    options.prefetch = GetParam();
    options.target_id_dropout = target_id_dropout;
    options.dropout_seed = dropout_seed;
    return worker::BatchPipeline::Start(client_.get(), options);
  }

  std::string dir_, path_;
  std::unique_ptr<ShardProcess> shard_;
  std::unique_ptr<ps::PsClient> client_;
};

TEST_P(TrainerPipelineTest, BatchesSeeEveryPushButThePreviousOne) {
  absl::StatusOr<std::unique_ptr<worker::BatchPipeline>> pipeline =
      StartPipeline();
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  const uint64_t item = data::FeatureKey(data::FeatureField::kItem, 42);
  worker::PreparedBatch batch;
  for (int k = 0; k < kBatches; ++k) {
    absl::StatusOr<bool> got = (*pipeline)->Next(&batch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(*got) << "batch " << k;
    // Batch k pushes gradient -(k+1) to every row, so a row holds the sum
    // of (j+1) over the pushes j it has seen.
    int item_row = -1;
    for (size_t r = 0; r < batch.id_keys.size(); ++r) {
      if (batch.id_keys[r] == item) item_row = static_cast<int>(r);
    }
    ASSERT_GE(item_row, 0);
    // Pushes 0..k-2 are in and push k-1 is not (a one-step-old row), in
    // both modes and whichever thread is faster: the sum of 1..k-1.
    const float all_but_last = (k - 1) * k / 2.0f;
    EXPECT_EQ(batch.batch.id_rows[item_row * kDim], all_but_last)
        << "batch " << k;

    std::vector<float> grads(batch.id_keys.size() * kDim,
                             -static_cast<float>(k + 1));
    (*pipeline)->PushAfter(std::move(batch.id_keys), std::move(grads));
  }
  absl::StatusOr<bool> end = (*pipeline)->Next(&batch);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_FALSE(*end);
  // Every push is on the shard once the pass has ended: 1 + 2 + ... + 5.
  EXPECT_EQ(ShardValue(), 15.0f);
}

TEST_P(TrainerPipelineTest, AFailedPushEndsThePass) {
  absl::StatusOr<std::unique_ptr<worker::BatchPipeline>> pipeline =
      StartPipeline();
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  worker::PreparedBatch batch;
  absl::StatusOr<bool> got = (*pipeline)->Next(&batch);
  ASSERT_TRUE(got.ok() && *got) << got.status();
  // Wrong length: one float too few for the keys.
  std::vector<float> grads(batch.id_keys.size() * kDim - 1, 0.5f);
  (*pipeline)->PushAfter(std::move(batch.id_keys), std::move(grads));
  absl::Status status;
  for (int i = 0; i < kBatches + 1 && status.ok(); ++i) {
    got = (*pipeline)->Next(&batch);
    if (!got.ok()) status = got.status();
    else if (!*got) break;
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  // Nothing of the rejected push reached the shard.
  EXPECT_EQ(ShardValue(), 0.0f);
}

TEST_P(TrainerPipelineTest, TargetIdDropoutDrawsTheSameRowsInEveryMode) {
  absl::StatusOr<std::unique_ptr<worker::BatchPipeline>> pipeline =
      StartPipeline(/*target_id_dropout=*/0.5, /*dropout_seed=*/11);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  worker::PreparedBatch batch;
  const uint64_t item = data::FeatureKey(data::FeatureField::kItem, 42);
  int kept = 0, dropped = 0;
  for (int k = 0; k < kBatches; ++k) {
    absl::StatusOr<bool> got = (*pipeline)->Next(&batch);
    ASSERT_TRUE(got.ok() && *got) << "batch " << k;
    ASSERT_EQ(batch.batch.target_idx.size(), 1u);
    // The draw of DropTargetIds for (seed 11, batch k, row 0), whatever
    // thread built the batch.
    model::Batch expected;
    expected.target_idx = {7};
    worker::DropTargetIds(0.5, 11, k, &expected);
    const bool in_keys =
        std::find(batch.id_keys.begin(), batch.id_keys.end(), item) !=
        batch.id_keys.end();
    if (expected.target_idx[0] == -1) {
      EXPECT_EQ(batch.batch.target_idx[0], -1) << "batch " << k;
      // The item is only this sample's target (no behaviours): its row is
      // neither pulled nor pushed.
      EXPECT_FALSE(in_keys) << "batch " << k;
      ++dropped;
    } else {
      EXPECT_GE(batch.batch.target_idx[0], 0) << "batch " << k;
      EXPECT_TRUE(in_keys) << "batch " << k;
      ++kept;
    }
    EXPECT_EQ(batch.batch.num_id_rows,
              static_cast<int64_t>(batch.id_keys.size()));
    EXPECT_EQ(batch.batch.id_rows.size(), batch.id_keys.size() * kDim);
    // Gradient -1 to every row the batch pulled.
    std::vector<float> grads(batch.id_keys.size() * kDim, -1.0f);
    (*pipeline)->PushAfter(std::move(batch.id_keys), std::move(grads));
  }
  absl::StatusOr<bool> end = (*pipeline)->Next(&batch);
  ASSERT_TRUE(end.ok() && !*end);
  // Seed 11 drops some of the 5 batches and keeps some, so both branches
  // above ran; the item's row saw one push per kept batch only.
  EXPECT_GT(kept, 0);
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(ShardValue(), static_cast<float>(kept));
}

// DropUnreferencedIdRows alone: rows no index uses go, the rest keep their
// order and every index follows them.
TEST(DropUnreferencedIdRowsTest, KeepsUsedRowsInOrderAndRenumbers) {
  model::Batch b;
  b.batch_size = 2;
  b.max_len = 2;
  b.lens = {1, 0};
  // Rows: 0 user, 1 item A (row 0's target, dropped), 2 item B (row 1's
  // target, dropped, but row 0's behaviour), 3 genre, 4 user2, 5 item C
  // (row 1's ... nothing: unused from the start).
  std::vector<uint64_t> keys = {100, 101, 102, 103, 104, 105};
  b.num_id_rows = 6;
  b.id_rows.assign(6 * 3, 1.0f);
  b.user_idx = {0, 4};
  b.age_idx = {-1, -1};
  b.gender_idx = {-1, -1};
  b.occ_idx = {-1, -1};
  b.target_idx = {-1, -1};
  b.genre_offsets = {0, 1, 2};
  b.genre_rows = {3, 3};
  b.behavior_idx = {2, -1, -1, -1};
  worker::DropUnreferencedIdRows(&b, &keys);
  EXPECT_EQ(keys, (std::vector<uint64_t>{100, 102, 103, 104}));
  EXPECT_EQ(b.num_id_rows, 4);
  EXPECT_EQ(b.id_rows.size(), 4u * 3);
  EXPECT_EQ(b.user_idx, (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(b.target_idx, (std::vector<int32_t>{-1, -1}));
  EXPECT_EQ(b.genre_rows, (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(b.behavior_idx, (std::vector<int32_t>{1, -1, -1, -1}));
  EXPECT_EQ(b.age_idx, (std::vector<int32_t>{-1, -1}));

  // Nothing unused: nothing changes.
  model::Batch same = b;
  std::vector<uint64_t> same_keys = keys;
  worker::DropUnreferencedIdRows(&same, &same_keys);
  EXPECT_EQ(same_keys, keys);
  EXPECT_EQ(same.behavior_idx, b.behavior_idx);
  EXPECT_EQ(same.id_rows, b.id_rows);
}

INSTANTIATE_TEST_SUITE_P(PrefetchOnAndOff, TrainerPipelineTest,
                         ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Prefetch" : "Synchronous";
                         });

// DropTargetIds alone: a pure function of (probability, seed, batch, row)
// that touches target_idx only.
TEST(DropTargetIdsTest, DrawsAreSeededAndAtTheRequestedRate) {
  constexpr int kRows = 20000;
  auto draw = [](double p, uint64_t seed, int64_t batch_index) {
    model::Batch b;
    b.target_idx.assign(kRows, 3);
    b.user_idx.assign(kRows, 5);
    worker::DropTargetIds(p, seed, batch_index, &b);
    for (int32_t u : b.user_idx) EXPECT_EQ(u, 5);
    for (int32_t t : b.target_idx) EXPECT_TRUE(t == 3 || t == -1) << t;
    return b.target_idx;
  };
  auto dropped = [](const std::vector<int32_t>& idx) {
    int n = 0;
    for (int32_t t : idx) n += t == -1;
    return n;
  };
  EXPECT_EQ(dropped(draw(0.0, 1, 0)), 0);
  EXPECT_EQ(dropped(draw(-1.0, 1, 0)), 0);
  // Same arguments, same rows.
  EXPECT_EQ(draw(0.3, 1, 4), draw(0.3, 1, 4));
  // Another seed or batch draws other rows.
  EXPECT_NE(draw(0.3, 1, 4), draw(0.3, 2, 4));
  EXPECT_NE(draw(0.3, 1, 4), draw(0.3, 1, 5));
  // The rate: these fixed draws (no chance involved: the seeds are fixed)
  // sit within 3 standard deviations (sqrt(n p (1-p)) ~ 65) of n p.
  for (const double p : {0.1, 0.3, 0.5, 0.9}) {
    EXPECT_NEAR(dropped(draw(p, 1, 0)), p * kRows, 200) << p;
  }
  // Nested: a row dropped at 0.3 is also dropped at 0.5 (one uniform per
  // row), so raising the rate only adds rows.
  const std::vector<int32_t> low = draw(0.3, 9, 2), high = draw(0.5, 9, 2);
  for (int r = 0; r < kRows; ++r) {
    if (low[r] == -1) EXPECT_EQ(high[r], -1) << r;
  }
}

}  // namespace
}  // namespace mim
