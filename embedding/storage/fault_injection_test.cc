// Fault injection into the RocksDB backend's file operations (the test-only
// seam RocksDbStorageOptions::fault_injector): a write whose WAL append,
// sync or flush fails is never acknowledged and never visible as written,
// failed checkpoint and restore renames change nothing, and once the fault
// clears, reopening brings back every acknowledged write.
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "embedding/storage/scripted_fault_injector.h"
#include "embedding/storage/storage.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

namespace fs = std::filesystem;
using Op = StorageFaultInjector::Op;
constexpr auto Contains = ScriptedFaultInjector::Contains;
constexpr auto EndsWith = ScriptedFaultInjector::EndsWith;
using ::testing::HasSubstr;

std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + tag +
                          std::to_string(counter++);
  fs::remove_all(dir);
  return dir;
}

std::string Key(int i) { return absl::StrFormat("k%06d", i); }
std::string Value(int i, int round) {
  return absl::StrFormat("row %06d round %d", i, round);
}

absl::Status Put(Storage& s, int i, int round) {
  StorageBatch b;
  b.puts.emplace_back(Key(i), Value(i, round));
  return s.Write(b);
}

std::map<std::string, std::string> Contents(const Storage& s) {
  std::map<std::string, std::string> out;
  EXPECT_TRUE(s.Scan("", [&](absl::string_view k, absl::string_view v) {
                 out.emplace(std::string(k), std::string(v));
                 return absl::OkStatus();
               }).ok());
  return out;
}

class FaultInjectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    faults_ = std::make_shared<ScriptedFaultInjector>();
    options_.data_dir = FreshDir("faults");
    options_.fault_injector = faults_;
    Reopen();
  }

  void Reopen() {
    storage_.reset();
    auto s = OpenRocksDbStorage(options_);
    ASSERT_TRUE(s.ok()) << s.status();
    storage_ = std::move(*s);
  }

  // Writes rows from..to-1 in round `round`, expecting every one to be
  // acknowledged, and records them as such.
  void Acknowledged(int from, int to, int round) {
    for (int i = from; i < to; ++i) {
      ASSERT_TRUE(Put(*storage_, i, round).ok()) << i;
      acked_[Key(i)] = Value(i, round);
    }
  }

  std::shared_ptr<ScriptedFaultInjector> faults_;
  RocksDbStorageOptions options_;
  std::unique_ptr<Storage> storage_;
  std::map<std::string, std::string> acked_;  // what was acknowledged
};

// A failed WAL append (nothing written, or a torn prefix of the record): the
// write fails, the row reads as before, the storage refuses further writes
// rather than acknowledge one after a hole, and a reopen once the fault has
// cleared has exactly the acknowledged rows.
TEST_F(FaultInjectionTest, FailedWalAppendIsNeverAcknowledged) {
  for (size_t torn : {size_t{0}, size_t{9}}) {
    SCOPED_TRACE(torn);
    Acknowledged(0, 50, static_cast<int>(torn));
    faults_->FailFrom(Op::kWrite, Contains({"/db/", ".log"}), 0, torn);
    absl::Status st = Put(*storage_, 7, 99);
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    EXPECT_THAT(st.message(), HasSubstr("injected write fault"));
    st = Put(*storage_, 1000, 99);  // a new row fails the same way
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    EXPECT_EQ(Contents(*storage_), acked_);  // not visible as written
    faults_->Clear();
    // A checkpoint would have to flush past the failed write: refused too.
    st = storage_->CreateCheckpoint(absl::StrCat("after-", torn));
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    Reopen();
    EXPECT_EQ(Contents(*storage_), acked_);
    Acknowledged(50, 60, 1);  // and it takes writes again
  }
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
}

// With sync_writes, a failed fsync of the WAL fails the write, which is not
// visible while the storage runs. Its record did reach the file, so after a
// reopen the whole batch may be there (an unacknowledged write is in doubt,
// never half-applied): exactly that is what this backend does.
TEST_F(FaultInjectionTest, FailedWalSyncFailsTheWriteWhole) {
  options_.sync_writes = true;
  Reopen();
  Acknowledged(0, 20, 0);
  faults_->FailFrom(Op::kSync, Contains({"/db/", ".log"}));
  StorageBatch b;
  b.puts = {{Key(3), "in doubt"}, {Key(500), "in doubt"}};
  absl::Status st = storage_->Write(b);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_EQ(Contents(*storage_), acked_);
  faults_->Clear();
  Reopen();
  auto expected = acked_;
  expected[Key(3)] = "in doubt";
  expected[Key(500)] = "in doubt";
  EXPECT_EQ(Contents(*storage_), expected);
}

// A failed SST write while a checkpoint flushes the memtable: no checkpoint,
// the rows stay, writes are refused until a reopen, and after that
// checkpoints and writes work again.
TEST_F(FaultInjectionTest, FailedFlushFailsTheCheckpointOnly) {
  Acknowledged(0, 30, 0);
  faults_->FailFrom(Op::kWrite, Contains({".sst"}));
  absl::Status st = storage_->CreateCheckpoint("c1");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_TRUE(storage_->ListCheckpoints().empty());
  EXPECT_FALSE(fs::exists(options_.data_dir + "/checkpoints/c1"));
  EXPECT_EQ(Contents(*storage_), acked_);
  faults_->Clear();
  // RocksDB stops taking writes after a failed flush until it is reopened;
  // reads go on.
  const absl::Status after = Put(*storage_, 500, 0);
  EXPECT_EQ(after.code(), absl::StatusCode::kInternal) << after;
  EXPECT_THAT(after.message(), HasSubstr("restart the shard"));
  EXPECT_EQ(Contents(*storage_), acked_);
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
  ASSERT_TRUE(storage_->CreateCheckpoint("c1").ok());
  Acknowledged(30, 40, 0);
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
}

// A prefix delete whose flush (CompactDeletedPrefix) fails on an SST write:
// the delete itself was acknowledged and synced before any file was
// removed, so after the reopen the prefix is gone whole and every other
// row is there; the store's writes are refused until then, as after any
// failed flush.
TEST_F(FaultInjectionTest, FailedFlushAfterAPrefixDeleteLosesNothingElse) {
  Acknowledged(0, 20, 0);
  for (int b = 0; b < 20; ++b) {
    StorageBatch batch;
    for (int i = 0; i < 200; ++i) {
      batch.puts.emplace_back(absl::StrFormat("r/t/%06d", b * 200 + i),
                              std::string(300, 'r'));
    }
    ASSERT_TRUE(storage_->Write(batch).ok());
  }
  ASSERT_TRUE(storage_->CreateCheckpoint("files").ok());  // rows in SSTs
  Acknowledged(20, 30, 0);  // and some only in the WAL and memtable
  faults_->FailFrom(Op::kWrite, Contains({".sst"}));
  StorageBatch drop;
  drop.delete_prefixes = {"r/t/"};
  ASSERT_TRUE(storage_->Write(drop).ok());
  absl::Status st = storage_->CompactDeletedPrefix("r/t/");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_EQ(Contents(*storage_), acked_);
  faults_->Clear();
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
  Acknowledged(30, 40, 1);
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
}

// The backend's own renames: the checkpoint's final rename, and the two
// directory swaps of a restore.
TEST_F(FaultInjectionTest, FailedRenamesLeaveCheckpointsAndLiveDataAlone) {
  Acknowledged(0, 10, 0);
  faults_->FailFrom(Op::kRename, EndsWith("/checkpoints/c1"));
  EXPECT_EQ(storage_->CreateCheckpoint("c1").code(),
            absl::StatusCode::kInternal);
  EXPECT_TRUE(storage_->ListCheckpoints().empty());
  EXPECT_FALSE(fs::exists(options_.data_dir + "/checkpoints/c1.tmp"));
  faults_->Clear();
  ASSERT_TRUE(storage_->CreateCheckpoint("c1").ok());

  Acknowledged(10, 20, 1);
  // The first swap (db -> db.old), then the second (db.restore -> db).
  for (const char* target : {"/db.old", "/db"}) {
    SCOPED_TRACE(target);
    faults_->FailFrom(Op::kRename, EndsWith(target));
    absl::Status st = storage_->RestoreCheckpoint("c1");
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    faults_->Clear();
    EXPECT_EQ(Contents(*storage_), acked_);
    Acknowledged(20, 25, 2);  // still writable
  }
  ASSERT_TRUE(storage_->RestoreCheckpoint("c1").ok());
  std::map<std::string, std::string> at_c1;
  for (int i = 0; i < 10; ++i) at_c1[Key(i)] = Value(i, 0);
  EXPECT_EQ(Contents(*storage_), at_c1);
  Reopen();
  EXPECT_EQ(Contents(*storage_), at_c1);
}

// The sync that makes a restore's directory swap durable failing: the swap
// is undone before the restored database takes any write, so the live
// contents are unchanged (in the running store and after a reopen) and the
// store stays writable; the next restore goes through.
TEST_F(FaultInjectionTest, FailedSyncOfTheRestoreSwapIsUndone) {
  Acknowledged(0, 10, 0);
  ASSERT_TRUE(storage_->CreateCheckpoint("c1").ok());
  Acknowledged(10, 20, 1);
  const std::string root = fs::path(options_.data_dir).string();
  faults_->FailFrom(Op::kSync,
                    [root](absl::string_view path) { return path == root; });
  absl::Status st = storage_->RestoreCheckpoint("c1");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  faults_->Clear();
  EXPECT_EQ(Contents(*storage_), acked_);
  EXPECT_FALSE(fs::exists(options_.data_dir + "/db.restore"));
  EXPECT_FALSE(fs::exists(options_.data_dir + "/db.old"));
  Acknowledged(20, 25, 2);  // still writable
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
  ASSERT_TRUE(storage_->RestoreCheckpoint("c1").ok());
  std::map<std::string, std::string> at_c1;
  for (int i = 0; i < 10; ++i) at_c1[Key(i)] = Value(i, 0);
  EXPECT_EQ(Contents(*storage_), at_c1);
}

// RocksDB's own rename (a new CURRENT at open) failing fails the open; the
// next open, fault cleared, has everything.
TEST_F(FaultInjectionTest, FailedOpenChangesNothing) {
  Acknowledged(0, 10, 0);
  storage_.reset();
  faults_->FailFrom(Op::kRename, EndsWith("/CURRENT"));
  auto s = OpenRocksDbStorage(options_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal) << s.status();
  faults_->Clear();
  Reopen();
  EXPECT_EQ(Contents(*storage_), acked_);
}

}  // namespace
}  // namespace mim::embedding
