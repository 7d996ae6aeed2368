// The store over the real RocksDB backend with storage faults injected
// (RocksDbStorageOptions::fault_injector): a Push, Upsert or CreateTable
// whose WAL write fails is refused, leaves every in-memory row bit for bit
// as it was, and is absent after a reopen, which brings back every
// acknowledged write exactly; the store also opens through
// EmbeddingStore::Open and reports a start that accepted data loss.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "embedding/embedding_store.h"
#include "embedding/storage/scripted_fault_injector.h"
#include "embedding/storage/storage.h"
#include "embedding/store_with_storage.h"
#include "gmock/gmock.h"
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

namespace fs = std::filesystem;
using Op = StorageFaultInjector::Op;
using ::testing::HasSubstr;

class StoreFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    faults_ = std::make_shared<ScriptedFaultInjector>();
    storage_options_.data_dir = FreshDir("storefaults");
    storage_options_.fault_injector = faults_;
    Reopen();
    ASSERT_TRUE(store_->CreateTable(AdamTable(), false).ok());
    ASSERT_TRUE(store_->CreateTable(ContentTable(), false).ok());
  }

  void Reopen() {
    store_.reset();
    auto storage = OpenRocksDbStorage(storage_options_);
    ASSERT_TRUE(storage.ok()) << storage.status();
    auto s = OpenEmbeddingStoreWithStorage(std::move(*storage),
                                           EmbeddingStore::Options());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  std::map<std::string, Dump> DumpAll() {
    return {{"user_id", DumpTable(*store_, "user_id")},
            {"item_mm", DumpTable(*store_, "item_mm")}};
  }

  std::shared_ptr<ScriptedFaultInjector> faults_;
  RocksDbStorageOptions storage_options_;
  std::unique_ptr<EmbeddingStore> store_;
};

// Pushes and upserts run until the WAL write number `fail_at` (counted from
// the arming) fails, torn or not. Every acknowledged one is in memory and,
// after a reopen, on disk bit for bit; the failed one in neither.
TEST_F(StoreFaultTest, FailedWritesAreNeverAcknowledgedAndReopenRestores) {
  int round = 0;
  for (int fail_at : {0, 3, 8}) {
    for (size_t torn : {size_t{0}, size_t{20}}) {
      SCOPED_TRACE(absl::StrCat("fail_at ", fail_at, " torn ", torn));
      faults_->FailFrom(Op::kWrite, ScriptedFaultInjector::Contains(
                                        {"/db/", ".log"}),
                        fail_at, torn);
      std::map<std::string, Dump> before = DumpAll();
      absl::Status failed;
      for (int i = 0; i < 20 && failed.ok(); ++i, ++round) {
        // Each round updates row 1 and creates a new one: both show.
        const uint64_t fresh = 100 + static_cast<uint64_t>(round);
        if (round % 2 == 0) {
          failed = store_
                       ->Push("user_id", {1, fresh},
                              Ramp(16, static_cast<float>(round)))
                       .status();
        } else {
          failed = store_
                       ->Upsert("item_mm", {1, fresh},
                                Ramp(8, static_cast<float>(round)),
                                static_cast<uint64_t>(round))
                       .status();
        }
        if (failed.ok()) before = DumpAll();
      }
      EXPECT_EQ(failed.code(), absl::StatusCode::kInternal) << failed;
      EXPECT_THAT(failed.message(), HasSubstr("injected write fault"));
      EXPECT_EQ(DumpAll(), before);  // the refused write changed nothing
      // The storage takes no more writes; the store says so and stays put.
      TableConfig extra = ContentTable();
      extra.name = "extra";
      EXPECT_EQ(store_->CreateTable(extra, false).code(),
                absl::StatusCode::kInternal);
      EXPECT_EQ(store_->ListTables().size(), 2u);
      EXPECT_EQ(DumpAll(), before);
      faults_->Clear();
      Reopen();
      EXPECT_EQ(DumpAll(), before);
      EXPECT_EQ(store_->ListTables().size(), 2u);
    }
  }
}

// A failed CreateTable leaves no table, in memory or after a reopen.
TEST_F(StoreFaultTest, FailedCreateTableLeavesNoTable) {
  faults_->FailFrom(Op::kWrite,
                    ScriptedFaultInjector::Contains({"/db/", ".log"}));
  TableConfig extra = ContentTable();
  extra.name = "extra";
  EXPECT_EQ(store_->CreateTable(extra, false).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(store_->Dim("extra").status().code(), absl::StatusCode::kNotFound);
  faults_->Clear();
  Reopen();
  EXPECT_EQ(store_->Dim("extra").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->CreateTable(extra, false).ok());
}

// EmbeddingStore::Open refuses a data dir that lost its database, and with
// accept_data_loss starts empty and says so in Recovery().
TEST(StoreRecoveryTest, OpenRefusesALostDatabaseUnlessAccepted) {
  EmbeddingStore::Options options;
  options.data_dir = FreshDir("lostdb");
  {
    auto s = EmbeddingStore::Open(options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_FALSE((*s)->Recovery().data_loss_accepted);
    ASSERT_TRUE((*s)->CreateTable(AdamTable(), false).ok());
    ASSERT_TRUE((*s)->Checkpoint("c1").ok());
  }
  fs::remove_all(options.data_dir + "/db");
  auto s = EmbeddingStore::Open(options);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("db/ is missing"));
  options.accept_data_loss = true;
  s = EmbeddingStore::Open(options);
  ASSERT_TRUE(s.ok()) << s.status();
  const StartupRecovery r = (*s)->Recovery();
  EXPECT_TRUE(r.data_loss_accepted);
  EXPECT_TRUE(r.started_empty);
  EXPECT_EQ(r.files, std::vector<std::string>{"db/"});
  EXPECT_THAT(r.detail, HasSubstr("started with an empty database"));
  EXPECT_TRUE((*s)->ListTables().empty());
  ASSERT_TRUE((*s)->Restore("c1").ok());
  EXPECT_EQ((*s)->ListTables().size(), 1u);
}

}  // namespace
}  // namespace mim::embedding
