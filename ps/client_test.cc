// PsClient against three in-process shards: the real ParameterServerService
// over real EmbeddingStores (each in its own directory under TEST_TMPDIR),
// served by gRPC on loopback. Checks routing, deduplication, reassembly and
// the client-side checks; tests/ covers the server as a separate process.
#include "ps/client.h"

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "embedding/embedding_store.h"
#include "embedding/sharding.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "ps/service.h"

namespace mim::ps {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kShards = 3;

struct InProcessShard {
  std::unique_ptr<embedding::EmbeddingStore> store;
  std::unique_ptr<ParameterServerService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

class PsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    grpc::EnableDefaultHealthCheckService(true);
    for (uint32_t s = 0; s < kShards; ++s) {
      InProcessShard shard;
      embedding::EmbeddingStore::Options options;
      options.data_dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                                      info->name(), "/shard", s);
      auto store = embedding::EmbeddingStore::Open(options);
      ASSERT_TRUE(store.ok()) << store.status();
      shard.store = std::move(*store);
      shard.service = std::make_unique<ParameterServerService>(
          shard.store.get(),
          ParameterServerService::Options{s, kShards, 1 << 16});
      grpc::ServerBuilder builder;
      builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                               &shard.port);
      builder.RegisterService(shard.service.get());
      shard.server = builder.BuildAndStart();
      ASSERT_NE(shard.server, nullptr);
      addresses_.push_back(absl::StrCat("127.0.0.1:", shard.port));
      shards_.push_back(std::move(shard));
    }
    auto client = PsClient::Create(addresses_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);

    TableConfig id;
    id.set_name("user");
    id.set_kind(ID);
    id.set_dim(2);
    id.mutable_optimizer()->set_name("sgd");
    id.mutable_optimizer()->set_learning_rate(1.0f);
    id.mutable_initializer()->set_name("uniform");
    id.mutable_initializer()->set_scale(0.5f);
    ASSERT_TRUE(client_->CreateTable(id, false).ok());
    TableConfig content;
    content.set_name("item");
    content.set_kind(CONTENT);
    content.set_dim(2);
    ASSERT_TRUE(client_->CreateTable(content, false).ok());
  }

  void TearDown() override {
    client_.reset();
    for (auto& shard : shards_) shard.server->Shutdown();
  }

  uint64_t KeysPulledOn(uint32_t shard) {
    auto stats = client_->Stats("user");
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? (*stats)[shard].stats.tables(0).pulls() : 0;
  }

  std::vector<std::string> addresses_;
  std::vector<InProcessShard> shards_;
  std::unique_ptr<PsClient> client_;
};

TEST_F(PsClientTest, PullRoutesDistinctKeysAndRepeatsRows) {
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 60; ++k) keys.push_back(k % 20);  // 3x each
  auto result = client_->Pull("user", keys);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->dim, 2u);
  ASSERT_EQ(result->values.size(), 120u);
  for (size_t i = 20; i < 60; ++i) {
    EXPECT_EQ(result->values[2 * i], result->values[2 * (i % 20)]);
    EXPECT_EQ(result->values[2 * i + 1], result->values[2 * (i % 20) + 1]);
  }
  // Each shard was asked for its own distinct keys exactly once.
  std::vector<uint64_t> owned(kShards, 0);
  for (uint64_t k = 0; k < 20; ++k) ++owned[embedding::ShardOf(k, kShards)];
  for (uint32_t s = 0; s < kShards; ++s) {
    EXPECT_GT(owned[s], 0u);
    EXPECT_EQ(KeysPulledOn(s), owned[s]) << "shard " << s;
  }
  // Rows match what each shard stores (initializer values, uniform(0.5)).
  auto rows = client_->GetRows("user", keys);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, result->values);
  for (float v : result->values) {
    EXPECT_LE(std::abs(v), 0.5f);
  }
}

TEST_F(PsClientTest, SplitCallsReassembleLikeOneCall) {
  PsClient::Options options;
  options.max_keys_per_call = 2;
  options.max_calls_per_shard = 3;
  auto split = PsClient::Create(addresses_, options);
  ASSERT_TRUE(split.ok());
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 40; ++k) keys.push_back((k * 7) % 23);
  auto a = (*split)->Pull("user", keys);
  auto b = client_->Pull("user", keys);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->values, b->values);
  std::vector<float> grads(keys.size() * 2, 0.5f);
  auto updated = (*split)->Push("user", keys, grads);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(*updated, 23u);
  auto c = (*split)->Upsert("item", {1, 2, 3, 4, 5}, {1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rows_written, 5u);
  auto rows = (*split)->GetRows("item", {5, 4, 3, 2, 1, 6});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values,
            (std::vector<float>{5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0}));
  EXPECT_EQ(rows->missing, (std::vector<uint32_t>{5}));
}

TEST_F(PsClientTest, PullIntoWritesCallerBuffer) {
  const std::vector<uint64_t> keys = {5, 6, 5};
  std::vector<float> out(6, -7.0f);
  std::vector<uint32_t> missing = {99};
  ASSERT_TRUE(client_->PullInto("user", keys, absl::MakeSpan(out), &missing)
                  .ok());
  EXPECT_TRUE(missing.empty());
  auto pulled = client_->Pull("user", keys);
  ASSERT_TRUE(pulled.ok());
  EXPECT_EQ(out, pulled->values);

  std::vector<float> small(4);
  const absl::Status s =
      client_->PullInto("user", keys, absl::MakeSpan(small), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("need 6"));

  // No keys but a non-empty buffer: refused without any RPC.
  const absl::Status none =
      client_->PullInto("user", {}, absl::MakeSpan(small), nullptr);
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.message()), HasSubstr("need 0"));
}

TEST_F(PsClientTest, PushSumsRepeatedKeysBeforeSending) {
  const std::vector<uint64_t> keys = {1, 2, 1, 1};
  auto before = client_->Pull("user", {1, 2});
  ASSERT_TRUE(before.ok());
  auto updated = client_->Push("user", keys, {1, 2, 10, 20, 3, 4, 5, 6});
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(*updated, 2u);
  auto after = client_->GetRows("user", {1, 2});
  ASSERT_TRUE(after.ok());
  // SGD with lr 1: w -= sum of the key's gradients, applied once.
  EXPECT_NEAR(after->values[0], before->values[0] - 9.0f, 1e-5);
  EXPECT_NEAR(after->values[1], before->values[1] - 12.0f, 1e-5);
  EXPECT_NEAR(after->values[2], before->values[2] - 10.0f, 1e-5);
  EXPECT_NEAR(after->values[3], before->values[3] - 20.0f, 1e-5);
  EXPECT_EQ(after->meta[0].update_count(), 1u);
}

TEST_F(PsClientTest, UpsertKeepsLastRowOfRepeatedKey) {
  auto written =
      client_->Upsert("item", {7, 8, 7}, {1, 1, 2, 2, 3, 3}, /*version=*/1);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->rows_written, 2u);
  auto pulled = client_->Pull("item", {7, 8, 9});
  ASSERT_TRUE(pulled.ok());
  EXPECT_EQ(pulled->values, (std::vector<float>{3, 3, 2, 2, 0, 0}));
  EXPECT_EQ(pulled->missing, (std::vector<uint32_t>{2}));
}

TEST_F(PsClientTest, ClientSideChecksSendNothing) {
  EXPECT_EQ(client_->Push("user", {1, 2}, {1, 2, 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Push("user", {}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Upsert("item", {1}, {NAN, 0}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto empty = client_->Pull("user", {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->values.empty());
  for (uint32_t s = 0; s < kShards; ++s) EXPECT_EQ(KeysPulledOn(s), 0u);
  EXPECT_EQ(PsClient::Create({}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PsClient::Create({"a:1", ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PsClientTest, StatsTotalsAndHealth) {
  ASSERT_TRUE(client_->Pull("user", {1, 2, 3, 4, 5, 6, 7, 8}).ok());
  auto stats = client_->Stats("");
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), kShards);
  const std::vector<TableStats> totals = TotalStats(*stats);
  ASSERT_EQ(totals.size(), 2u);
  for (const TableStats& t : totals) {
    if (t.config().name() == "user") {
      EXPECT_EQ(t.rows(), 8u);
      EXPECT_EQ(t.pulls(), 8u);
      EXPECT_GT(t.bytes_per_row(), 8.0);  // at least the two floats
    } else {
      EXPECT_EQ(t.rows(), 0u);
    }
  }
  for (const absl::Status& h : client_->Health()) EXPECT_TRUE(h.ok()) << h;
}

// Over gRPC, a hyperparameter that is set is used as given (0 included) and
// an invalid one is refused naming the field; unset ones take the defaults.
TEST_F(PsClientTest, CreateTableHonoursExplicitValuesAndRefusesInvalidOnes) {
  TableConfig bad;
  bad.set_name("bad");
  bad.set_kind(ID);
  bad.set_dim(4);
  bad.mutable_optimizer()->set_name("sgd");
  bad.mutable_optimizer()->set_learning_rate(0);  // not "the default"
  absl::Status st = client_->CreateTable(bad, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("table 'bad': optimizer.learning_rate must be finite "
                        "and > 0, got 0"));
  bad.mutable_optimizer()->set_name("adam");
  bad.mutable_optimizer()->set_learning_rate(0.01f);
  bad.mutable_optimizer()->set_beta2(1);
  st = client_->CreateTable(bad, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("optimizer.beta2 must be in [0, 1), got 1"));
  bad.mutable_optimizer()->clear_beta2();
  bad.mutable_optimizer()->set_epsilon(NAN);
  st = client_->CreateTable(bad, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("optimizer.epsilon"));
  for (auto& shard : shards_) EXPECT_EQ(shard.store->ListTables().size(), 2u);

  TableConfig adam = bad;
  adam.set_name("adam");
  adam.mutable_optimizer()->clear_epsilon();
  adam.mutable_optimizer()->set_beta1(0);  // no momentum, on purpose
  ASSERT_TRUE(client_->CreateTable(adam, false).ok());
  auto tables = client_->ListTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  const TableConfig* listed = nullptr;
  for (const TableConfig& t : *tables) {
    if (t.name() == "adam") listed = &t;
  }
  ASSERT_NE(listed, nullptr);
  EXPECT_EQ(listed->optimizer().beta1(), 0.0f);
  EXPECT_EQ(listed->optimizer().beta2(), 0.999f);  // unset: default
  EXPECT_EQ(listed->optimizer().epsilon(), 1e-8f);
  // What ListTables reports creates the same table again.
  EXPECT_TRUE(client_->CreateTable(*listed, /*if_not_exists=*/true).ok());
}

// Restore("") takes every shard's most recently created checkpoint, even
// when name order says otherwise, and reports shards that disagree.
TEST_F(PsClientTest, RestoreNewestIsLastCreatedAndChecksShardsAgree) {
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(client_->Push("user", keys, std::vector<float>(12, 1)).ok());
  ASSERT_TRUE(client_->Checkpoint("zz-first").ok());
  ASSERT_TRUE(client_->Push("user", keys, std::vector<float>(12, 2)).ok());
  ASSERT_TRUE(client_->Checkpoint("before-migration").ok());
  auto saved = client_->GetRows("user", keys);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_TRUE(client_->Push("user", keys, std::vector<float>(12, 3)).ok());

  auto restored = client_->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_EQ(restored->size(), kShards);
  for (const auto& r : *restored) {
    EXPECT_EQ(r.restore.name(), "before-migration") << r.address;
  }
  auto back = client_->GetRows("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, saved->values);

  // A checkpoint that landed on shard 1 only: shard 1's newest differs.
  ASSERT_TRUE(shards_[1].store->Checkpoint("only-on-one").ok());
  const absl::Status s = client_->Restore("").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("shard 1 (", addresses_[1],
                                     ") 'only-on-one'")));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'before-migration'"));
  // Naming a checkpoint present everywhere brings the shards together.
  ASSERT_TRUE(client_->Restore("before-migration").ok());
  back = client_->GetRows("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, saved->values);
}

TEST_F(PsClientTest, UnreachableShardIsUnavailableNamingIt) {
  // Shard 1 stops; its address then refuses connections.
  shards_[1].server->Shutdown();
  PsClient::Options options;
  options.max_attempts = 3;
  options.initial_backoff = absl::Milliseconds(5);
  auto client = PsClient::Create(addresses_, options);
  ASSERT_TRUE(client.ok());
  uint64_t key = 0;
  while (embedding::ShardOf(key, kShards) != 1) ++key;
  const absl::Status s = (*client)->Pull("user", {key}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr(addresses_[1]));
  EXPECT_THAT(std::string(s.message()), HasSubstr("shard 1/3"));
  const std::vector<absl::Status> health = (*client)->Health();
  EXPECT_TRUE(health[0].ok());
  EXPECT_EQ(health[1].code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace mim::ps
