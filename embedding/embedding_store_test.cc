#include "embedding/embedding_store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "embedding/push_log.h"
#include "embedding/storage/storage.h"
#include "embedding/store_with_storage.h"
#include "embedding/store_test_util.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

using testing::AdamTable;
using testing::ContentTable;
using testing::Dump;
using testing::DumpTable;
using testing::FreshDir;
using testing::Ramp;

// Names of the store's checkpoints, in the order ListCheckpoints gives.
std::vector<std::string> CheckpointNames(const EmbeddingStore& store) {
  std::vector<std::string> out;
  for (const CheckpointEntry& c : store.ListCheckpoints()) {
    out.push_back(c.name);
  }
  return out;
}

class EmbeddingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.data_dir = FreshDir("store");
    Reopen();
    ASSERT_TRUE(store_->CreateTable(AdamTable(), false).ok());
    ASSERT_TRUE(store_->CreateTable(ContentTable(), false).ok());
  }
  void Reopen() {
    store_.reset();
    auto s = EmbeddingStore::Open(options_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(s).value();
  }
  // Pushes to 50 ID keys and upserts 20 content keys, varying with `round`.
  void Write(int round) {
    std::vector<uint64_t> ids, items;
    for (uint64_t k = 0; k < 50; ++k) ids.push_back(k * 1000003 + round % 3);
    for (uint64_t k = 0; k < 20; ++k) items.push_back(k + 7 * round);
    ASSERT_TRUE(store_->Push("user_id", ids, Ramp(50 * 8, 0.1f * round)).ok());
    ASSERT_TRUE(
        store_->Upsert("item_mm", items, Ramp(20 * 4, round), round + 1).ok());
  }

  EmbeddingStore::Options options_;
  std::unique_ptr<EmbeddingStore> store_;
};

TEST_F(EmbeddingStoreTest, CreateListAndDim) {
  EXPECT_EQ(store_->ListTables().size(), 2u);
  EXPECT_EQ(*store_->Dim("item_mm"), 4u);
  EXPECT_EQ(store_->Dim("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->CreateTable(AdamTable(), /*if_not_exists=*/true).ok());
  EXPECT_EQ(store_->CreateTable(AdamTable(), false).code(),
            absl::StatusCode::kAlreadyExists);
  TableConfig other = AdamTable();
  other.dim = 16;
  EXPECT_EQ(store_->CreateTable(other, true).code(),
            absl::StatusCode::kAlreadyExists);
  other.name = "bad/name";
  EXPECT_EQ(store_->CreateTable(other, false).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingStoreTest, RejectedRequestsHaveExactCodesAndChangeNothing) {
  Write(1);
  const Dump ids = DumpTable(*store_, "user_id");
  const Dump items = DumpTable(*store_, "item_mm");
  std::vector<float> out(8);
  std::vector<uint32_t> missing;

  EXPECT_EQ(store_->Pull("nope", {1}, out.data(), &missing).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Push("nope", {1}, Ramp(8, 0)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Upsert("nope", {1}, Ramp(4, 0), 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Push("item_mm", {1}, Ramp(4, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Upsert("user_id", {1}, Ramp(8, 0), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Push("user_id", {1, 2}, Ramp(15, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> grads = Ramp(16, 0);
  grads[13] = std::numeric_limits<float>::infinity();
  absl::Status st = store_->Push("user_id", {0, 1000003}, grads).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("key 1000003"), std::string::npos) << st;
  EXPECT_NE(st.message().find("position 1"), std::string::npos) << st;

  options_.max_keys_per_request = 4;
  Reopen();
  std::vector<uint64_t> five = {0, 1, 2, 3, 4};
  EXPECT_EQ(store_->Push("user_id", five, Ramp(40, 0)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->Upsert("item_mm", five, Ramp(20, 0), 9).status().code(),
            absl::StatusCode::kResourceExhausted);
  std::vector<float> big(40);
  EXPECT_EQ(store_->Pull("user_id", five, big.data(), nullptr).code(),
            absl::StatusCode::kResourceExhausted);

  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);
}

// DropTable removes one table from memory and disk: the other table and
// its rows are untouched, the drop holds through a reopen (no orphaned row
// makes Open fail), a table of that name created again starts empty with
// its own config, and a checkpoint taken before the drop restores it whole.
TEST_F(EmbeddingStoreTest, DropTableRemovesOneTableDurably) {
  for (int round = 0; round < 3; ++round) Write(round);
  const Dump ids = DumpTable(*store_, "user_id");
  const Dump items = DumpTable(*store_, "item_mm");
  ASSERT_TRUE(store_->Checkpoint("before-drop").ok());

  absl::StatusOr<uint64_t> dropped = store_->DropTable("user_id");
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, ids.size());
  ASSERT_EQ(store_->ListTables().size(), 1u);
  EXPECT_EQ(store_->ListTables()[0].name, "item_mm");
  std::vector<float> row(8);
  EXPECT_EQ(store_->Pull("user_id", {1}, row.data(), nullptr).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Push("user_id", {1}, Ramp(8, 0)).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<uint64_t> again = store_->DropTable("user_id");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(again.status().message().find("no table named 'user_id'"),
            std::string::npos)
      << again.status();
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);

  Reopen();
  ASSERT_EQ(store_->ListTables().size(), 1u);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);

  // The same name again, another dim: empty, and it reopens as created.
  TableConfig wider = AdamTable();
  wider.dim = 16;
  ASSERT_TRUE(store_->CreateTable(wider, false).ok());
  EXPECT_EQ(store_->Stats("user_id")->front().rows, 0u);
  ASSERT_TRUE(store_->Push("user_id", {5}, Ramp(16, 0)).ok());
  Reopen();
  EXPECT_EQ(*store_->Dim("user_id"), 16u);
  EXPECT_EQ(store_->Stats("user_id")->front().rows, 1u);

  ASSERT_TRUE(store_->Restore("before-drop").ok());
  EXPECT_EQ(*store_->Dim("user_id"), 8u);
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
}

// A table whose name is a prefix of another's ("user" of "user_id", and
// "user_id" of "user_id2") takes none of the other's rows with it.
TEST_F(EmbeddingStoreTest, DropTableLeavesTablesWithLongerNamesAlone) {
  Write(1);
  const Dump ids = DumpTable(*store_, "user_id");
  TableConfig shorter = AdamTable();
  shorter.name = "user";
  TableConfig longer = AdamTable();
  longer.name = "user_id2";
  ASSERT_TRUE(store_->CreateTable(shorter, false).ok());
  ASSERT_TRUE(store_->CreateTable(longer, false).ok());
  ASSERT_TRUE(store_->Push("user", {1, 2}, Ramp(16, 0)).ok());
  ASSERT_TRUE(store_->Push("user_id2", {3}, Ramp(8, 0)).ok());
  const Dump longer_rows = DumpTable(*store_, "user_id2");
  ASSERT_TRUE(store_->DropTable("user").ok());
  ASSERT_TRUE(store_->DropTable("user_id2").ok());
  Reopen();
  ASSERT_EQ(store_->ListTables().size(), 2u);
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  ASSERT_TRUE(store_->CreateTable(longer, false).ok());
  EXPECT_EQ(store_->Stats("user_id2")->front().rows, 0u);
  EXPECT_NE(longer_rows.size(), 0u);
}

TEST_F(EmbeddingStoreTest, ReopenRecoversEverythingBitIdentical) {
  for (int round = 0; round < 4; ++round) Write(round);
  const Dump ids = DumpTable(*store_, "user_id");
  const Dump items = DumpTable(*store_, "item_mm");
  ASSERT_EQ(ids.size(), 150u);  // 3 distinct key sets of 50
  const auto stats_before = *store_->Stats("item_mm");
  Reopen();
  ASSERT_EQ(store_->ListTables().size(), 2u);
  EXPECT_TRUE(store_->ListTables()[1] == AdamTable());
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);
  EXPECT_EQ(store_->Stats("item_mm")->front().max_version,
            stats_before.front().max_version);

  // Pull-created rows are not stored but come back identical after reopen.
  std::vector<float> a(8), b(8);
  ASSERT_TRUE(store_->Pull("user_id", {424242}, a.data(), nullptr).ok());
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id").count(424242), 0u);
  ASSERT_TRUE(store_->Pull("user_id", {424242}, b.data(), nullptr).ok());
  EXPECT_EQ(a, b);
}

// Pulls of unseen ID keys store nothing: the shard's rows and memory stay
// as they were, and a checkpoint and its restore hold every row the shard
// reported (pull-created rows used to be counted but never persisted).
TEST_F(EmbeddingStoreTest, PullOfUnseenKeysLeavesRowsMemoryAndCheckpointsAlone) {
  Write(0);
  Write(1);
  const TableStats before = store_->Stats("user_id")->front();
  const Dump ids = DumpTable(*store_, "user_id");
  ASSERT_EQ(before.rows, ids.size());

  constexpr size_t kKeys = 100000;
  std::vector<uint64_t> keys(kKeys);
  for (size_t i = 0; i < kKeys; ++i) keys[i] = (uint64_t{1} << 40) + i;
  std::vector<float> values(kKeys * 8);
  ASSERT_TRUE(store_->Pull("user_id", keys, values.data(), nullptr).ok());
  const TableStats after = store_->Stats("user_id")->front();
  EXPECT_EQ(after.rows, before.rows);
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);

  uint64_t rows = 0;
  // Held by name: `*store_->Stats("")` in the loop would point into a
  // temporary destroyed before the loop runs.
  const auto all = store_->Stats("");
  ASSERT_TRUE(all.ok()) << all.status();
  for (const TableStats& t : *all) rows += t.rows;
  auto info = store_->Checkpoint("after-pulls");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->rows, rows);
  Write(2);
  auto restored = store_->Restore("after-pulls");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->rows, rows);
  EXPECT_EQ(store_->Stats("user_id")->front().rows, before.rows);
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
}

// Exactly-once pushes: a tag applied before is acknowledged and not applied
// again, in any order, after a reopen (the log is durable with the rows),
// and a restore brings back the log of its checkpoint.
// A tagged push without keys changes no row, but its sequence is marked
// durably like any push's: after a reopen its resend is a duplicate.
TEST_F(EmbeddingStoreTest, AnEmptyTaggedPushIsMarkedDurably) {
  auto empty = store_->PushOnce("user_id", {}, {}, PushTag{11, 1});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_FALSE(empty->duplicate);
  EXPECT_EQ(empty->rows_updated, 0u);
  Reopen();
  auto resent = store_->PushOnce("user_id", {}, {}, PushTag{11, 1});
  ASSERT_TRUE(resent.ok()) << resent.status();
  EXPECT_TRUE(resent->duplicate);
  // Still checked like a push with keys: gradients without keys.
  EXPECT_EQ(store_->PushOnce("user_id", {}, {1.0f}, PushTag{11, 2})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingStoreTest, PushOnceAppliesEachTagOnce) {
  const std::vector<uint64_t> keys = {5, 6, 5};
  const std::vector<float> grad = Ramp(3 * 8, 0.5f);
  auto push = [&](uint64_t client, uint64_t seq) {
    return store_->PushOnce("user_id", keys, grad, PushTag{client, seq});
  };
  auto first = push(7, 3);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rows_updated, 2u);
  EXPECT_FALSE(first->duplicate);
  const Dump once = DumpTable(*store_, "user_id");
  auto again = push(7, 3);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->rows_updated, 2u);
  EXPECT_EQ(DumpTable(*store_, "user_id"), once);
  EXPECT_EQ(store_->Stats("user_id")->front().rows, 2u);

  // An older sequence of the same client is new (calls arrive out of
  // order); another client's sequence 3 is its own.
  ASSERT_FALSE(push(7, 2)->duplicate);
  ASSERT_FALSE(push(8, 3)->duplicate);
  const Dump three = DumpTable(*store_, "user_id");
  // Three pushes applied: update_count 3.
  EXPECT_EQ(three.at(5).substr(8, 4), std::string("\x03\0\0\0", 4));

  ASSERT_TRUE(store_->Checkpoint("after-three").ok());
  Reopen();
  for (auto [client, seq] : {std::pair<uint64_t, uint64_t>{7, 3}, {7, 2},
                             {8, 3}}) {
    auto resent = push(client, seq);
    ASSERT_TRUE(resent.ok()) << resent.status();
    EXPECT_TRUE(resent->duplicate) << client << "/" << seq;
  }
  EXPECT_EQ(DumpTable(*store_, "user_id"), three);
  ASSERT_FALSE(push(7, 4)->duplicate);
  ASSERT_TRUE(store_->Restore("after-three").ok());
  EXPECT_EQ(DumpTable(*store_, "user_id"), three);
  EXPECT_FALSE(push(7, 4)->duplicate);  // the checkpoint had not seen it
  EXPECT_TRUE(push(7, 4)->duplicate);

  // Refusals: sequence 0 with a client, a sequence below the window. An
  // untagged push (client 0) is always applied.
  EXPECT_EQ(push(7, 0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_FALSE(push(9, 5000)->duplicate);
  auto old = push(9, 5000 - ClientWindow::kWindow);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(old.status().message().find("cannot tell whether it was applied"),
            std::string::npos);
  EXPECT_FALSE(push(0, 0)->duplicate);
  EXPECT_FALSE(push(0, 0)->duplicate);
}

// The log remembers at most max_push_clients clients, least recently used
// out first, and drops the evicted record from storage too.
TEST_F(EmbeddingStoreTest, PushLogIsBounded) {
  options_.max_push_clients = 2;
  Reopen();
  const std::vector<float> grad = Ramp(8, 0.5f);
  // Client 2 is the least recently used when 3 arrives.
  for (auto [client, seq] : {std::pair<uint64_t, uint64_t>{1, 1}, {2, 1},
                             {1, 2}, {3, 1}}) {
    ASSERT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{client, seq})
                    .ok());
  }
  Reopen();
  EXPECT_TRUE(
      store_->PushOnce("user_id", {1}, grad, PushTag{1, 1})->duplicate);
  EXPECT_TRUE(
      store_->PushOnce("user_id", {1}, grad, PushTag{3, 1})->duplicate);
  EXPECT_FALSE(
      store_->PushOnce("user_id", {1}, grad, PushTag{2, 1})->duplicate);
}

// A new client's push that is refused (here a NaN gradient) writes
// nothing, so it evicts nobody: the least recently used client keeps its
// protection, in memory and after a reopen.
TEST_F(EmbeddingStoreTest, ARefusedPushEvictsNoClient) {
  options_.max_push_clients = 2;
  Reopen();
  const std::vector<float> grad = Ramp(8, 0.5f);
  ASSERT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{1, 1}).ok());
  ASSERT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{2, 1}).ok());
  std::vector<float> bad = grad;
  bad[3] = std::nanf("");
  const Dump before = DumpTable(*store_, "user_id");
  EXPECT_EQ(store_->PushOnce("user_id", {1}, bad, PushTag{3, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DumpTable(*store_, "user_id"), before);
  EXPECT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{1, 1})->duplicate);
  EXPECT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{2, 1})->duplicate);
  Reopen();
  EXPECT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{1, 1})->duplicate);
  EXPECT_TRUE(store_->PushOnce("user_id", {1}, grad, PushTag{2, 1})->duplicate);
}

TEST_F(EmbeddingStoreTest, DeleteCheckpointAndRetention) {
  Write(0);
  ASSERT_TRUE(store_->Checkpoint("c1").ok());
  EXPECT_EQ(store_->DeleteCheckpoint("nope").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteCheckpoint("../db").code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(store_->DeleteCheckpoint("c1").ok());
  EXPECT_TRUE(CheckpointNames(*store_).empty());
  EXPECT_EQ(store_->Restore("c1").status().code(), absl::StatusCode::kNotFound);

  // Keep the newest two: each checkpoint beyond deletes the oldest, by
  // creation order (not name order).
  options_.keep_checkpoints = 2;
  Reopen();
  const Dump before = DumpTable(*store_, "user_id");
  std::vector<std::vector<std::string>> deleted;
  for (const char* name : {"z", "y", "x", "w"}) {
    auto info = store_->Checkpoint(name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_TRUE(info->retention_error.empty()) << info->retention_error;
    deleted.push_back(info->deleted);
  }
  EXPECT_EQ(deleted, (std::vector<std::vector<std::string>>{
                         {}, {}, {"z"}, {"y"}}));
  EXPECT_EQ(CheckpointNames(*store_), (std::vector<std::string>{"x", "w"}));
  EXPECT_EQ(DumpTable(*store_, "user_id"), before);  // live rows untouched
  ASSERT_TRUE(store_->Restore("x").ok());
  EXPECT_EQ(DumpTable(*store_, "user_id"), before);
}

// Rows are loaded a page (4096) at a time; pages end inside one table and
// at the border of two.
TEST_F(EmbeddingStoreTest, ReopenLoadsMoreRowsThanOnePage) {
  std::vector<uint64_t> ids(9000), items(4100);
  for (uint64_t k = 0; k < ids.size(); ++k) ids[k] = k * 7919;
  for (uint64_t k = 0; k < items.size(); ++k) items[k] = k;
  ASSERT_TRUE(store_->Push("user_id", ids, Ramp(ids.size() * 8, 0.5f)).ok());
  ASSERT_TRUE(
      store_->Upsert("item_mm", items, Ramp(items.size() * 4, 1.0f), 1).ok());
  const Dump before_ids = DumpTable(*store_, "user_id");
  const Dump before_items = DumpTable(*store_, "item_mm");
  ASSERT_EQ(before_ids.size(), 9000u);
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id"), before_ids);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), before_items);
}

TEST_F(EmbeddingStoreTest, ContentPullReportsMissingAndGetRowsMeta) {
  Write(1);
  std::vector<float> out(3 * 4, -1);
  std::vector<uint32_t> missing;
  ASSERT_TRUE(store_->Pull("item_mm", {7, 999, 8}, out.data(), &missing).ok());
  EXPECT_EQ(missing, std::vector<uint32_t>{1});
  EXPECT_EQ(std::vector<float>(out.begin() + 4, out.begin() + 8),
            std::vector<float>(4, 0.0f));
  std::vector<float> values;
  std::vector<RowMeta> meta;
  missing.clear();
  ASSERT_TRUE(store_->GetRows("item_mm", {7, 999}, &values, &meta, &missing)
                  .ok());
  EXPECT_EQ(meta[0].version, 2u);
  EXPECT_EQ(meta[0].update_count, 1u);
  EXPECT_GT(meta[0].last_update_micros, 0);
  EXPECT_EQ(missing, std::vector<uint32_t>{1});
}

TEST_F(EmbeddingStoreTest, CheckpointRestoreIsBitIdenticalAndDurable) {
  Write(0);
  Write(1);
  const Dump ids = DumpTable(*store_, "user_id");
  const Dump items = DumpTable(*store_, "item_mm");
  auto info = store_->Checkpoint("c1");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name, "c1");
  EXPECT_EQ(info->path, options_.data_dir + "/checkpoints/c1");
  EXPECT_EQ(info->rows, ids.size() + items.size());
  EXPECT_EQ(store_->Checkpoint("c1").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->Checkpoint("../x").status().code(),
            absl::StatusCode::kInvalidArgument);

  Write(2);
  Write(3);
  TableConfig extra = ContentTable();
  extra.name = "later";
  ASSERT_TRUE(store_->CreateTable(extra, false).ok());
  ASSERT_NE(DumpTable(*store_, "user_id"), ids);

  auto restored = store_->Restore("c1");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  EXPECT_EQ(DumpTable(*store_, "item_mm"), items);
  EXPECT_EQ(store_->Dim("later").status().code(), absl::StatusCode::kNotFound);

  // Durable: survives reopening, and writes after the restore persist too.
  Write(5);
  const Dump after = DumpTable(*store_, "user_id");
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id"), after);
  EXPECT_EQ(CheckpointNames(*store_), std::vector<std::string>{"c1"});
}

TEST_F(EmbeddingStoreTest, RestoreOfMissingCheckpointLeavesLiveStateAlone) {
  Write(1);
  const Dump ids = DumpTable(*store_, "user_id");
  EXPECT_EQ(store_->Restore("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Restore("").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(DumpTable(*store_, "user_id"), ids);
  Write(2);  // still writable
  // Empty name: timestamped checkpoint, and Restore("") picks the newest.
  auto a = store_->Checkpoint("");
  ASSERT_TRUE(a.ok()) << a.status();
  const Dump at_a = DumpTable(*store_, "user_id");
  Write(3);
  auto r = store_->Restore("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, a->name);
  EXPECT_EQ(DumpTable(*store_, "user_id"), at_a);
}

// Restore("") means the most recently created checkpoint: names chosen so
// that name order disagrees (the greatest name is the oldest checkpoint,
// the automatic ckpt-<time> name sorts after "before-migration" and "a").
TEST_F(EmbeddingStoreTest, RestoreEmptyNamePicksLastCreatedNotGreatestName) {
  Write(1);
  ASSERT_TRUE(store_->Checkpoint("zz-first").ok());
  Write(2);
  auto automatic = store_->Checkpoint("");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  Write(3);
  ASSERT_TRUE(store_->Checkpoint("before-migration").ok());
  const Dump at_migration = DumpTable(*store_, "user_id");
  Write(4);
  ASSERT_NE(DumpTable(*store_, "user_id"), at_migration);

  auto r = store_->Restore("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "before-migration");
  EXPECT_EQ(DumpTable(*store_, "user_id"), at_migration);

  // The order is on disk: same answer after reopening, and after restoring
  // an older checkpoint by name.
  Reopen();
  ASSERT_TRUE(store_->Restore("zz-first").ok());
  r = store_->Restore("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "before-migration");
  EXPECT_EQ(DumpTable(*store_, "user_id"), at_migration);

  Write(5);
  auto a = store_->Checkpoint("a");
  ASSERT_TRUE(a.ok()) << a.status();
  const Dump at_a = DumpTable(*store_, "user_id");
  Write(6);
  r = store_->Restore("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "a");
  EXPECT_EQ(DumpTable(*store_, "user_id"), at_a);
  EXPECT_EQ(CheckpointNames(*store_),
            (std::vector<std::string>{"zz-first", automatic->name,
                                      "before-migration", "a"}));
  // Each entry says where it lives and carries its creation sequence.
  const std::vector<CheckpointEntry> listed = store_->ListCheckpoints();
  ASSERT_EQ(listed.size(), 4u);
  EXPECT_EQ(listed[1].path, automatic->path);
  EXPECT_EQ(listed[3].path, a->path);
  for (size_t i = 1; i < listed.size(); ++i) {
    EXPECT_GT(listed[i].sequence, listed[i - 1].sequence) << listed[i].name;
    EXPECT_GE(listed[i].created_micros, listed[i - 1].created_micros);
  }
  EXPECT_GT(listed[0].sequence, 0u);
  EXPECT_GT(listed[0].created_micros, 0);
}

// Overwrites the first stored row of `table` through the storage layer.
void GarbleFirstRow(const std::string& data_dir, const std::string& prefix,
                    const std::function<std::string(std::string)>& garble) {
  RocksDbStorageOptions o;
  o.data_dir = data_dir;
  auto storage = OpenRocksDbStorage(o);
  ASSERT_TRUE(storage.ok()) << storage.status();
  std::string key, value;
  ASSERT_TRUE((*storage)
                  ->Scan(prefix,
                         [&](absl::string_view k, absl::string_view v) {
                           key = std::string(k);
                           value = std::string(v);
                           return absl::CancelledError("first only");
                         })
                  .code() == absl::StatusCode::kCancelled);
  StorageBatch b;
  b.puts.emplace_back(key, garble(value));
  ASSERT_TRUE((*storage)->Write(b).ok());
}

TEST_F(EmbeddingStoreTest, CorruptRecordsGiveDataLossNotACrash) {
  Write(1);
  store_.reset();
  const std::vector<std::function<std::string(std::string)>> garblers = {
      [](std::string v) { return v.substr(0, v.size() / 2); },  // truncated
      [](std::string v) { v.at(v.size() / 2) ^= 0x40; return v; },  // flip
      [](std::string) { return std::string(); },                // empty
  };
  for (const auto& g : garblers) {
    GarbleFirstRow(options_.data_dir, "r/user_id/", g);
    auto s = EmbeddingStore::Open(options_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    EXPECT_NE(s.status().message().find("user_id"), std::string::npos);
    EXPECT_NE(s.status().message().find("key"), std::string::npos);
  }
  GarbleFirstRow(options_.data_dir, "t/item_mm",
                 [](std::string v) { v[3] ^= 1; return v; });
  auto s = EmbeddingStore::Open(options_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
}

// Every stored record, raw.
std::map<std::string, std::string> ScanStorage(const std::string& data_dir) {
  RocksDbStorageOptions o;
  o.data_dir = data_dir;
  auto storage = OpenRocksDbStorage(o);
  EXPECT_TRUE(storage.ok()) << storage.status();
  std::map<std::string, std::string> out;
  if (!storage.ok()) return out;
  EXPECT_TRUE((*storage)
                  ->Scan("",
                         [&](absl::string_view k, absl::string_view v) {
                           out.emplace(std::string(k), std::string(v));
                           return absl::OkStatus();
                         })
                  .ok());
  return out;
}

void PutRecord(const std::string& data_dir, const std::string& key,
               const std::string& value) {
  RocksDbStorageOptions o;
  o.data_dir = data_dir;
  auto storage = OpenRocksDbStorage(o);
  ASSERT_TRUE(storage.ok()) << storage.status();
  StorageBatch b;
  b.puts.emplace_back(key, value);
  ASSERT_TRUE((*storage)->Write(b).ok());
}

// The row format of embedding_store.cc: a 29-byte header (format, dim,
// state floats, meta), dim values, the state, then FNV-1a of all that.
constexpr size_t kRowHeader = 1 + 4 + 4 + 8 + 4 + 8;

uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return h;
}

// `row` with state float `index` set to `f` and a valid checksum, so that
// only the state check can object to it.
std::string WithStateFloat(std::string row, uint32_t dim, size_t index,
                           float f) {
  row.resize(row.size() - 4);
  std::memcpy(&row[kRowHeader + 4 * (dim + index)], &f, 4);
  const uint32_t sum = Fnv1a(row);
  row.append(reinterpret_cast<const char*>(&sum), 4);
  return row;
}

// Every stored row is in the documented format with its FNV-1a, whatever
// the size of the batch that wrote it (rows are checksummed several at a
// time, so batches of 1 to 19 rows cover full and partial groups).
TEST_F(EmbeddingStoreTest, StoredRowsHaveTheDocumentedFormatAndChecksum) {
  std::vector<uint64_t> all_ids, all_items;
  uint64_t next = 1;
  for (size_t n = 1; n <= 19; ++n) {
    std::vector<uint64_t> ids, items;
    for (size_t i = 0; i < n; ++i) ids.push_back(next++ * 0x0102030405ull);
    for (size_t i = 0; i < n; ++i) items.push_back(next++);
    ASSERT_TRUE(store_->Push("user_id", ids, Ramp(n * 8, 0.5f)).ok());
    ASSERT_TRUE(store_->Upsert("item_mm", items, Ramp(n * 4, 1), n).ok());
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    all_items.insert(all_items.end(), items.begin(), items.end());
  }
  store_.reset();
  const std::map<std::string, std::string> stored =
      ScanStorage(options_.data_dir);
  Reopen();
  struct Case {
    std::string table;
    const std::vector<uint64_t>* keys;
    uint32_t dim, state_floats;
  };
  for (const Case& c : {Case{"user_id", &all_ids, 8, 16},
                        Case{"item_mm", &all_items, 4, 0}}) {
    std::vector<float> values;
    std::vector<RowMeta> meta;
    std::vector<uint32_t> missing;
    ASSERT_TRUE(store_->GetRows(c.table, *c.keys, &values, &meta, &missing)
                    .ok());
    ASSERT_TRUE(missing.empty());
    for (size_t i = 0; i < c.keys->size(); ++i) {
      std::string key = "r/" + c.table + "/";
      for (int shift = 56; shift >= 0; shift -= 8) {
        key.push_back(static_cast<char>(((*c.keys)[i] >> shift) & 0xff));
      }
      auto it = stored.find(key);
      ASSERT_NE(it, stored.end()) << c.table << " " << (*c.keys)[i];
      const std::string& row = it->second;
      ASSERT_EQ(row.size(), kRowHeader + 4 * (c.dim + c.state_floats) + 4);
      std::string want_header(kRowHeader, '\0');
      char* h = &want_header[0];
      h[0] = 1;  // format
      std::memcpy(h + 1, &c.dim, 4);
      std::memcpy(h + 5, &c.state_floats, 4);
      std::memcpy(h + 9, &meta[i].last_update_micros, 8);
      std::memcpy(h + 17, &meta[i].update_count, 4);
      std::memcpy(h + 21, &meta[i].version, 8);
      EXPECT_EQ(row.substr(0, kRowHeader), want_header) << key;
      EXPECT_EQ(std::memcmp(row.data() + kRowHeader, &values[i * c.dim],
                            4 * c.dim),
                0)
          << key;
      const std::string checked = row.substr(0, row.size() - 4);
      uint32_t sum;
      std::memcpy(&sum, row.data() + row.size() - 4, 4);
      EXPECT_EQ(sum, Fnv1a(checked)) << key;
    }
  }
}

// A row whose optimizer state is NaN, infinite or out of its domain, stored
// with a valid checksum, makes Open (and Restore) fail with DATA_LOSS naming
// the table, key and float, and changes nothing.
TEST_F(EmbeddingStoreTest, CorruptOptimizerStateIsRefusedOnOpen) {
  TableConfig ada = AdamTable();
  ada.name = "ada";
  ada.dim = 4;
  ada.optimizer.kind = OptimizerKind::kAdagrad;
  TableConfig ftrl = ada;
  ftrl.name = "ftrl";
  ftrl.optimizer.kind = OptimizerKind::kFtrl;
  ASSERT_TRUE(store_->CreateTable(ada, false).ok());
  ASSERT_TRUE(store_->CreateTable(ftrl, false).ok());
  const uint64_t key = 77;
  ASSERT_TRUE(store_->Push("user_id", {key}, Ramp(8, 0.5f)).ok());
  ASSERT_TRUE(store_->Push("ada", {key}, Ramp(4, 0.5f)).ok());
  ASSERT_TRUE(store_->Push("ftrl", {key}, Ramp(4, 0.5f)).ok());
  std::map<std::string, Dump> dumps;
  for (const char* t : {"user_id", "ada", "ftrl"}) {
    dumps[t] = DumpTable(*store_, t);
  }
  store_.reset();
  const std::map<std::string, std::string> stored =
      ScanStorage(options_.data_dir);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string table;
    uint32_t dim;
    size_t index;  // into the row's state floats
    float value;
    std::string what;  // expected in the message
  };
  const std::vector<Case> cases = {
      {"user_id", 8, 2, nan, "adam m[2] is nan"},
      {"user_id", 8, 8 + 5, inf, "adam v[5] is inf"},
      {"user_id", 8, 8, -1.0f, "adam v[0] is -1"},
      {"ada", 4, 3, -inf, "adagrad accumulator[3] is -inf"},
      {"ada", 4, 0, -0.25f, "adagrad accumulator[0] is -0.25"},
      {"ftrl", 4, 1, nan, "ftrl z[1] is nan"},
      {"ftrl", 4, 4 + 2, -3.0f, "ftrl n[2] is -3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string row_key = absl::StrCat(
        "r/", c.table, "/", std::string("\0\0\0\0\0\0\0", 7),
        std::string(1, static_cast<char>(key)));
    ASSERT_EQ(stored.count(row_key), 1u);
    const std::string bad =
        WithStateFloat(stored.at(row_key), c.dim, c.index, c.value);
    PutRecord(options_.data_dir, row_key, bad);
    auto s = EmbeddingStore::Open(options_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    const std::string msg(s.status().message());
    EXPECT_NE(msg.find(absl::StrCat("table '", c.table, "' key 77")),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
    // Nothing changed: every record as it was, the bad one included.
    std::map<std::string, std::string> now = ScanStorage(options_.data_dir);
    EXPECT_EQ(now.at(row_key), bad);
    now[row_key] = stored.at(row_key);
    EXPECT_EQ(now, stored);
    PutRecord(options_.data_dir, row_key, stored.at(row_key));
  }
  // A negative Adam m or FTRL z is legitimate state: it loads.
  const std::string adam_key = absl::StrCat(
      "r/user_id/", std::string("\0\0\0\0\0\0\0", 7),
      std::string(1, static_cast<char>(key)));
  PutRecord(options_.data_dir, adam_key,
            WithStateFloat(stored.at(adam_key), 8, 0, -2.0f));
  Reopen();
  std::vector<float> state;
  ASSERT_TRUE(store_
                  ->ExportRows("user_id",
                               [&](uint64_t, const RowMeta&,
                                   absl::Span<const float>,
                                   absl::Span<const float> s) {
                                 state.assign(s.begin(), s.end());
                               })
                  .ok());
  ASSERT_EQ(state.size(), 16u);
  EXPECT_EQ(state[0], -2.0f);
  store_.reset();
  PutRecord(options_.data_dir, adam_key, stored.at(adam_key));
  Reopen();
  for (const char* t : {"user_id", "ada", "ftrl"}) {
    EXPECT_EQ(DumpTable(*store_, t), dumps[t]) << t;
  }

  // The same check guards Restore: a checkpoint holding bad state is
  // refused and the live tables stay as they are.
  store_.reset();
  PutRecord(options_.data_dir, adam_key,
            WithStateFloat(stored.at(adam_key), 8, 8 + 1, nan));
  {
    RocksDbStorageOptions o;
    o.data_dir = options_.data_dir;
    auto storage = OpenRocksDbStorage(o);
    ASSERT_TRUE(storage.ok()) << storage.status();
    ASSERT_TRUE((*storage)->CreateCheckpoint("bad-state").ok());
  }
  PutRecord(options_.data_dir, adam_key, stored.at(adam_key));
  Reopen();
  auto r = store_->Restore("bad-state");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find("adam v[1] is nan"), std::string::npos)
      << r.status();
  for (const char* t : {"user_id", "ada", "ftrl"}) {
    EXPECT_EQ(DumpTable(*store_, t), dumps[t]) << t;
  }
  Reopen();
  EXPECT_EQ(DumpTable(*store_, "user_id"), dumps["user_id"]);
}

// Storage wrapper whose writes fail on demand (fault injection).
class FlakyStorage : public Storage {
 public:
  FlakyStorage(std::unique_ptr<Storage> inner, std::atomic<bool>* fail)
      : inner_(std::move(inner)), fail_(fail) {}
  absl::Status Write(const StorageBatch& b) override {
    if (fail_->load()) return absl::InternalError("injected I/O error");
    return inner_->Write(b);
  }
  absl::StatusOr<std::string> Get(absl::string_view k) const override {
    return inner_->Get(k);
  }
  absl::Status ScanAfter(absl::string_view p, absl::string_view a,
                         const Visitor& v) const override {
    return inner_->ScanAfter(p, a, v);
  }
  absl::Status CreateCheckpoint(const std::string& n) override {
    return inner_->CreateCheckpoint(n);
  }
  std::vector<StoredCheckpoint> ListCheckpoints() const override {
    return inner_->ListCheckpoints();
  }
  std::string CheckpointPath(const std::string& n) const override {
    return inner_->CheckpointPath(n);
  }
  absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& n) const override {
    return inner_->OpenCheckpoint(n);
  }
  absl::Status DeleteCheckpoint(const std::string& n) override {
    return inner_->DeleteCheckpoint(n);
  }
  absl::Status RestoreCheckpoint(const std::string& n) override {
    return inner_->RestoreCheckpoint(n);
  }

 private:
  std::unique_ptr<Storage> inner_;
  std::atomic<bool>* fail_;
};

// FlakyStorage whose OpenCheckpoint (where a Restore starts loading)
// announces itself and then waits to be released.
class GatedStorage : public FlakyStorage {
 public:
  GatedStorage(std::unique_ptr<Storage> inner, std::atomic<bool>* fail,
               absl::Notification* entered, absl::Notification* release)
      : FlakyStorage(std::move(inner), fail),
        entered_(entered),
        release_(release) {}
  absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& n) const override {
    if (!entered_->HasBeenNotified()) entered_->Notify();
    release_->WaitForNotification();
    return FlakyStorage::OpenCheckpoint(n);
  }

 private:
  absl::Notification* entered_;
  absl::Notification* release_;
};

// While a Restore loads its checkpoint, reads and writes go on (they see
// the tables as they were), and every other checkpoint operation is refused
// UNAVAILABLE naming the restore; the restore then replaces everything.
TEST(EmbeddingStoreAdminTest, RestoreHoldsNoReadNorWriteAndRunsAlone) {
  std::atomic<bool> fail{false};
  absl::Notification entered, release;
  auto s = OpenEmbeddingStoreWithStorage(
      std::make_unique<GatedStorage>(NewMemoryStorage(), &fail, &entered,
                                     &release),
      EmbeddingStore::Options());
  ASSERT_TRUE(s.ok()) << s.status();
  EmbeddingStore& store = **s;
  ASSERT_TRUE(store.CreateTable(AdamTable(), false).ok());
  ASSERT_TRUE(store.Push("user_id", {1, 2}, Ramp(16, 0)).ok());
  const Dump at_c1 = DumpTable(store, "user_id");
  ASSERT_TRUE(store.Checkpoint("c1").ok());
  ASSERT_TRUE(store.Push("user_id", {3}, Ramp(8, 1)).ok());

  absl::StatusOr<CheckpointInfo> restored;
  std::thread restore([&] { restored = store.Restore("c1"); });
  entered.WaitForNotification();
  std::vector<float> row(8);
  EXPECT_TRUE(store.Pull("user_id", {3}, row.data(), nullptr).ok());
  EXPECT_TRUE(store.Push("user_id", {4}, Ramp(8, 2)).ok());
  EXPECT_EQ(store.Stats("user_id")->front().rows, 4u);
  for (const absl::Status& refused :
       {store.Checkpoint("c2").status(), store.Restore("c1").status(),
        store.DeleteCheckpoint("c1")}) {
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
    EXPECT_NE(refused.message().find("busy with Restore 'c1'"),
              std::string::npos)
        << refused;
  }
  release.Notify();
  restore.join();
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->rows, 2u);
  EXPECT_EQ(DumpTable(store, "user_id"), at_c1);
  // Done: the next checkpoint operation runs.
  EXPECT_TRUE(store.Checkpoint("c2").ok());
  EXPECT_TRUE(store.DeleteCheckpoint("c1").ok());
  EXPECT_EQ(CheckpointNames(store), std::vector<std::string>{"c2"});
}

TEST(EmbeddingStoreFaultTest, FailedStorageWriteLeavesMemoryUnchanged) {
  std::atomic<bool> fail{false};
  auto s = OpenEmbeddingStoreWithStorage(
      std::make_unique<FlakyStorage>(NewMemoryStorage(), &fail),
      EmbeddingStore::Options());
  ASSERT_TRUE(s.ok()) << s.status();
  EmbeddingStore& store = **s;
  ASSERT_TRUE(store.CreateTable(AdamTable(), false).ok());
  ASSERT_TRUE(store.CreateTable(ContentTable(), false).ok());
  ASSERT_TRUE(store.Push("user_id", {1, 2}, Ramp(16, 0)).ok());
  ASSERT_TRUE(store.Upsert("item_mm", {1}, Ramp(4, 0), 1).ok());
  const Dump ids = DumpTable(store, "user_id");
  const Dump items = DumpTable(store, "item_mm");
  fail = true;
  EXPECT_EQ(store.Push("user_id", {1, 3}, Ramp(16, 1)).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(store.Upsert("item_mm", {1, 2}, Ramp(8, 1), 2).status().code(),
            absl::StatusCode::kInternal);
  TableConfig extra = ContentTable();
  extra.name = "extra";
  EXPECT_EQ(store.CreateTable(extra, false).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(store.DropTable("item_mm").status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(DumpTable(store, "user_id"), ids);
  EXPECT_EQ(DumpTable(store, "item_mm"), items);
  EXPECT_EQ(store.ListTables().size(), 2u);
  // The memory backend also checkpoints and restores.
  fail = false;
  ASSERT_TRUE(store.Checkpoint("m").ok());
  ASSERT_TRUE(store.Push("user_id", {1}, Ramp(8, 2)).ok());
  ASSERT_TRUE(store.Restore("m").ok());
  EXPECT_EQ(DumpTable(store, "user_id"), ids);
}

// An acknowledged Push survives SIGKILL of the process: a child pushes and
// reports each acknowledged round through a pipe; the parent kills it and
// reopens the store.
TEST(EmbeddingStoreCrashTest, AcknowledgedPushesSurviveSigkill) {
  EmbeddingStore::Options options;
  options.data_dir = FreshDir("crash");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto s = EmbeddingStore::Open(options);
    if (!s.ok() || !(*s)->CreateTable(AdamTable(), false).ok()) _exit(2);
    for (uint32_t round = 1;; ++round) {
      // Round r pushes key r (and re-pushes key 0).
      if (!(*s)->Push("user_id", {0, round}, Ramp(16, 1)).ok()) _exit(3);
      if (write(fds[1], &round, sizeof(round)) != sizeof(round)) _exit(4);
    }
  }
  close(fds[1]);
  uint32_t acked = 0, round = 0;
  while (acked < 200 && read(fds[0], &round, sizeof(round)) == sizeof(round)) {
    acked = round;
  }
  ASSERT_EQ(acked, 200u) << "child failed before 200 acknowledged pushes";
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  // Drain what the child acknowledged before it died.
  while (read(fds[0], &round, sizeof(round)) == sizeof(round)) acked = round;
  close(fds[0]);

  auto s = EmbeddingStore::Open(options);
  ASSERT_TRUE(s.ok()) << s.status();
  const Dump rows = DumpTable(**s, "user_id");
  for (uint32_t r = 1; r <= acked; ++r) {
    EXPECT_EQ(rows.count(r), 1u) << "acknowledged round " << r << " lost";
  }
  std::vector<float> v;
  std::vector<RowMeta> meta;
  ASSERT_TRUE((*s)->GetRows("user_id", {0}, &v, &meta, nullptr).ok());
  EXPECT_GE(meta[0].update_count, acked);
}

}  // namespace
}  // namespace mim::embedding
