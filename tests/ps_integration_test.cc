// Two real parameter-server shards (the //ps:server binary as child
// processes on loopback, each with its own data_dir), driven through
// PsClient, raw gRPC stubs and the ps_admin binary.
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "embedding/sharding.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/ps.grpc.pb.h"
#include "ps/client.h"
#include "tests/process.h"
#include "tests/ps_tables.h"

namespace mim::ps {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::ContentTable;
using ::mim::testing::IdTable;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kShards = 2;
constexpr size_t kMaxKeys = 4096;

// The first key >= start owned by `shard`.
uint64_t KeyOfShard(uint32_t shard, uint64_t start = 1) {
  for (uint64_t k = start;; ++k) {
    if (embedding::ShardOf(k, kShards) == shard) return k;
  }
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()),
                     v.size() * sizeof(float));
}

class PsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    base_dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
    auto shards = ShardProcess::StartCluster(
        base_dir_, kShards, {absl::StrCat("--max_keys_per_request=", kMaxKeys)});
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ = std::move(*shards);
    PsClient::Options options;
    options.timeout = absl::Seconds(20);
    options.max_attempts = 8;
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(500);
    auto client = PsClient::Create(Addresses(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  std::vector<std::string> Addresses() const {
    std::vector<std::string> out;
    for (const auto& s : shards_) out.push_back(s->address());
    return out;
  }

  // Kills shard `s` with SIGKILL and starts it again on the same port and
  // data_dir.
  void CrashAndRestart(uint32_t s) {
    const int status = shards_[s]->Kill(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    const absl::Status restarted = ShardProcess::Restart(&shards_[s]);
    ASSERT_TRUE(restarted.ok()) << restarted;
  }

  std::unique_ptr<ParameterServer::Stub> RawStub(uint32_t s) {
    return ParameterServer::NewStub(grpc::CreateChannel(
        shards_[s]->address(), grpc::InsecureChannelCredentials()));
  }

  CommandResult Admin(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {Runfile("tools/ps_admin"),
                                     "--ps=" + absl::StrJoin(Addresses(), ",")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = RunCommand(argv);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : CommandResult();
  }

  std::string base_dir_;
  std::vector<std::unique_ptr<ShardProcess>> shards_;
  std::unique_ptr<PsClient> client_;
};

TEST_F(PsClusterTest, HealthAndTablesOnEveryShard) {
  for (const absl::Status& s : client_->Health()) EXPECT_TRUE(s.ok()) << s;
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  ASSERT_TRUE(client_->CreateTable(ContentTable("item_text", 8), false).ok());
  // Same config again with if_not_exists: fine; without: ALREADY_EXISTS.
  EXPECT_TRUE(client_->CreateTable(IdTable("user", 4), true).ok());
  EXPECT_EQ(client_->CreateTable(IdTable("user", 4), false).code(),
            absl::StatusCode::kAlreadyExists);
  auto tables = client_->ListTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 2u);
  std::vector<std::string> names = {(*tables)[0].name(), (*tables)[1].name()};
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("user", "item_text"));
}

TEST_F(PsClusterTest, PushAndPullAcrossShardsWithDuplicates) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  const uint64_t a = KeyOfShard(0), b = KeyOfShard(1), c = KeyOfShard(1, b + 1);
  const std::vector<uint64_t> keys = {a, b, a, c};
  auto first = client_->Pull("user", keys);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->dim, 4u);
  EXPECT_EQ(first->values, std::vector<float>(16, 0.0f));  // zeros initializer
  EXPECT_TRUE(first->missing.empty());

  // a appears twice: its gradients are summed before the shard applies SGD.
  const std::vector<float> grads = {1, 2, 3, 4,  0.5f, 0.5f, 0.5f, 0.5f,
                                    1, 1, 1, 1,  -2, 0, 2, 4};
  auto updated = client_->Push("user", keys, grads);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(*updated, 3u);

  auto after = client_->Pull("user", {c, a, b, a});
  ASSERT_TRUE(after.ok()) << after.status();
  const float lr = 0.5f;
  const std::vector<float> expected = {
      -lr * -2, -lr * 0,  -lr * 2,  -lr * 4,   // c
      -lr * 2,  -lr * 3,  -lr * 4,  -lr * 5,   // a: (1,2,3,4)+(1,1,1,1)
      -lr * .5f, -lr * .5f, -lr * .5f, -lr * .5f,  // b
      -lr * 2,  -lr * 3,  -lr * 4,  -lr * 5};  // a again, same row
  ASSERT_EQ(after->values.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(after->values[i], expected[i], 1e-6) << "index " << i;
  }

  // Rows live on their own shards: shard 0 has a, shard 1 has b and c.
  auto stats = client_->Stats("user");
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->size(), 2u);
  EXPECT_EQ((*stats)[0].stats.shard_index(), 0u);
  EXPECT_EQ((*stats)[0].stats.tables(0).rows(), 1u);
  EXPECT_EQ((*stats)[1].stats.tables(0).rows(), 2u);
  EXPECT_EQ(TotalStats(*stats)[0].rows(), 3u);
}

TEST_F(PsClusterTest, ContentUpsertVersionsAndMissingKeys) {
  ASSERT_TRUE(client_->CreateTable(ContentTable("item_text", 3), false).ok());
  const uint64_t a = KeyOfShard(0), b = KeyOfShard(1);
  const uint64_t unknown0 = KeyOfShard(0, a + 1), unknown1 = KeyOfShard(1, b + 1);
  const std::vector<float> rows = {0.1f, -0.2f, 3e-8f, 7.0f, 8.5f, -1e6f};
  auto written = client_->Upsert("item_text", {a, b}, rows, 5);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->rows_written, 2u);
  EXPECT_EQ(written->rows_stale, 0u);

  auto pulled = client_->Pull("item_text", {unknown1, b, a, unknown0, b});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->missing, (std::vector<uint32_t>{0, 3}));
  const std::vector<float> expected = {0, 0, 0,  7.0f, 8.5f, -1e6f,
                                       0.1f, -0.2f, 3e-8f,  0, 0, 0,
                                       7.0f, 8.5f, -1e6f};
  EXPECT_EQ(Bytes(pulled->values), Bytes(expected));  // bit-exact

  // An older version leaves the row alone; a newer one replaces it.
  auto stale = client_->Upsert("item_text", {a}, {9, 9, 9}, 4);
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(stale->rows_written, 0u);
  EXPECT_EQ(stale->rows_stale, 1u);
  auto newer = client_->Upsert("item_text", {a}, {1, 2, 3}, 6);
  ASSERT_TRUE(newer.ok()) << newer.status();
  EXPECT_EQ(newer->rows_written, 1u);

  auto rows_now = client_->GetRows("item_text", {a, unknown0});
  ASSERT_TRUE(rows_now.ok()) << rows_now.status();
  EXPECT_EQ(rows_now->values, (std::vector<float>{1, 2, 3, 0, 0, 0}));
  EXPECT_EQ(rows_now->missing, (std::vector<uint32_t>{1}));
  EXPECT_EQ(rows_now->meta[0].version(), 6u);
  EXPECT_EQ(rows_now->meta[0].update_count(), 2u);

  // Pull never creates content rows.
  auto stats = client_->Stats("item_text");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(TotalStats(*stats)[0].rows(), 2u);
  EXPECT_EQ(TotalStats(*stats)[0].max_version(), 6u);
}

TEST_F(PsClusterTest, ValidationErrorsCarryExactCodesAndChangeNothing) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  const uint64_t k = KeyOfShard(0);
  ASSERT_TRUE(client_->Push("user", {k}, {1, 1, 1, 1}).ok());
  auto before = client_->GetRows("user", {k});
  ASSERT_TRUE(before.ok());
  auto stub = RawStub(0);

  {  // Unknown table.
    grpc::ClientContext ctx;
    PullRequest req;
    req.set_table("nope");
    req.add_keys(k);
    PullResponse resp;
    const grpc::Status s = stub->Pull(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("nope"));
  }
  {  // Gradient bytes do not match dim 4.
    grpc::ClientContext ctx;
    PushRequest req;
    req.set_table("user");
    req.add_keys(k);
    req.set_gradients(Bytes({1, 2, 3}));
    PushResponse resp;
    const grpc::Status s = stub->Push(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("12 bytes"));
  }
  {  // NaN gradient.
    grpc::ClientContext ctx;
    PushRequest req;
    req.set_table("user");
    req.add_keys(k);
    req.set_gradients(
        Bytes({1, std::numeric_limits<float>::quiet_NaN(), 0, 0}));
    PushResponse resp;
    const grpc::Status s = stub->Push(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // Too many keys.
    grpc::ClientContext ctx;
    PullRequest req;
    req.set_table("user");
    for (uint64_t i = 0; req.keys_size() < static_cast<int>(kMaxKeys) + 1;
         ++i) {
      if (embedding::ShardOf(i, kShards) == 0) req.add_keys(i);
    }
    PullResponse resp;
    const grpc::Status s = stub->Pull(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("4097 keys"));
  }
  // Through the client: Inf is refused before anything is sent, and an
  // unknown table names the shard that said so.
  const absl::Status inf =
      client_->Push("user", {k}, {std::numeric_limits<float>::infinity(), 0,
                                  0, 0})
          .status();
  EXPECT_EQ(inf.code(), absl::StatusCode::kInvalidArgument);
  const absl::Status missing = client_->Pull("nope", {k}).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()),
              HasSubstr(shards_[0]->address()));
  EXPECT_EQ(client_->Upsert("user", {k}, {1, 2, 3, 4}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);  // ID table

  auto after = client_->GetRows("user", {k});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(Bytes(after->values), Bytes(before->values));
  EXPECT_EQ(after->meta[0].update_count(), 1u);
}

TEST_F(PsClusterTest, ShardRefusesKeysOfOtherShards) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  const uint64_t mine = KeyOfShard(0), theirs = KeyOfShard(1);
  auto stub = RawStub(0);
  grpc::ClientContext ctx;
  PullRequest req;
  req.set_table("user");
  req.add_keys(mine);
  req.add_keys(theirs);
  PullResponse resp;
  const grpc::Status s = stub->Pull(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("key ", theirs)));
  EXPECT_THAT(s.error_message(), HasSubstr("shard 0/2"));
  // Nothing was created on the shard.
  auto stats = client_->Stats("user");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)[0].stats.tables(0).rows(), 0u);
}

TEST_F(PsClusterTest, AcknowledgedUpdatesSurviveSigkill) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 8), false).ok());
  ASSERT_TRUE(client_->CreateTable(ContentTable("item", 8), false).ok());
  std::vector<uint64_t> keys;
  for (uint64_t k = 1000; k < 1200; ++k) keys.push_back(k);
  std::vector<float> grads(keys.size() * 8);
  for (size_t i = 0; i < grads.size(); ++i) {
    grads[i] = std::sin(static_cast<float>(i)) * 0.37f;
  }
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(client_->Push("user", keys, grads).ok());
  }
  ASSERT_TRUE(client_->Upsert("item", keys, grads, 3).ok());
  auto before_user = client_->Pull("user", keys);
  auto before_item = client_->Pull("item", keys);
  ASSERT_TRUE(before_user.ok() && before_item.ok());

  CrashAndRestart(1);

  // The client reconnects to the restarted shard by itself.
  auto after_user = client_->Pull("user", keys);
  ASSERT_TRUE(after_user.ok()) << after_user.status();
  auto after_item = client_->Pull("item", keys);
  ASSERT_TRUE(after_item.ok()) << after_item.status();
  EXPECT_EQ(Bytes(after_user->values), Bytes(before_user->values));
  EXPECT_EQ(Bytes(after_item->values), Bytes(before_item->values));
  EXPECT_TRUE(after_item->missing.empty());
  auto meta = client_->GetRows("user", keys);
  ASSERT_TRUE(meta.ok());
  for (const RowMeta& m : meta->meta) EXPECT_EQ(m.update_count(), 3u);
}

TEST_F(PsClusterTest, SigtermShutsDownCleanlyAndRestartRecovers) {
  ASSERT_TRUE(client_->CreateTable(ContentTable("item", 2), false).ok());
  const uint64_t k = KeyOfShard(0);
  ASSERT_TRUE(client_->Upsert("item", {k}, {0.25f, -4.0f}, 1).ok());
  const int status = shards_[0]->Kill(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const absl::Status restarted = ShardProcess::Restart(&shards_[0]);
  ASSERT_TRUE(restarted.ok()) << restarted;
  auto tables = client_->ListTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 1u);
  auto rows = client_->Pull("item", {k});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{0.25f, -4.0f}));
}

TEST_F(PsClusterTest, DownShardIsReportedByAddress) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  shards_[1]->Kill(SIGKILL);
  PsClient::Options fast;
  fast.max_attempts = 2;
  fast.initial_backoff = absl::Milliseconds(10);
  auto client = PsClient::Create(Addresses(), fast);
  ASSERT_TRUE(client.ok());
  const absl::Status s = (*client)->Pull("user", {KeyOfShard(1)}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr(shards_[1]->address()));
  // Keys of the live shard still work.
  EXPECT_TRUE((*client)->Pull("user", {KeyOfShard(0)}).ok());
  const std::vector<absl::Status> health = (*client)->Health();
  EXPECT_TRUE(health[0].ok());
  EXPECT_EQ(health[1].code(), absl::StatusCode::kUnavailable);
}

TEST_F(PsClusterTest, CheckpointAndRestoreThroughClient) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 4), false).ok());
  const std::vector<uint64_t> keys = {KeyOfShard(0), KeyOfShard(1)};
  ASSERT_TRUE(client_->Push("user", keys, {1, 2, 3, 4, 5, 6, 7, 8}).ok());
  auto saved = client_->Pull("user", keys);
  ASSERT_TRUE(saved.ok());
  auto checkpoint = client_->Checkpoint("c1");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->size(), 2u);
  EXPECT_EQ((*checkpoint)[0].checkpoint.name(), "c1");
  EXPECT_EQ((*checkpoint)[1].checkpoint.name(), "c1");
  EXPECT_EQ(client_->Checkpoint("c1").status().code(),
            absl::StatusCode::kAlreadyExists);

  ASSERT_TRUE(client_->Push("user", keys, {9, 9, 9, 9, 9, 9, 9, 9}).ok());
  auto changed = client_->Pull("user", keys);
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(Bytes(changed->values), Bytes(saved->values));

  auto restored = client_->Restore("c1");
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto back = client_->Pull("user", keys);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(Bytes(back->values), Bytes(saved->values));
  EXPECT_EQ(client_->Restore("no-such").status().code(),
            absl::StatusCode::kNotFound);
}

// A checkpoint taken on one shard alone (through that shard's own
// Checkpoint RPC, as a checkpoint that failed on the other shard would
// leave it): restore without a name skips it for the newest checkpoint on
// every shard, and `ps_admin checkpoints` marks which names every shard has.
TEST_F(PsClusterTest, RestoreNewestSkipsCheckpointOfOneShard) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 2), false).ok());
  const std::vector<uint64_t> keys = {KeyOfShard(0), KeyOfShard(1)};
  ASSERT_TRUE(client_->Push("user", keys, {1, 2, 3, 4}).ok());
  ASSERT_TRUE(client_->Checkpoint("c1").ok());
  auto at_c1 = client_->Pull("user", keys);
  ASSERT_TRUE(at_c1.ok()) << at_c1.status();
  ASSERT_TRUE(client_->Push("user", keys, {1, 1, 1, 1}).ok());
  {
    CheckpointRequest request;
    request.set_name("only-on-1");
    CheckpointResponse response;
    grpc::ClientContext context;
    const grpc::Status st = RawStub(1)->Checkpoint(&context, request, &response);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  ASSERT_TRUE(client_->Push("user", keys, {1, 1, 1, 1}).ok());

  CommandResult r = Admin({"checkpoints"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("shard 0 (", shards_[0]->address(),
                                            "): 1 checkpoint, oldest first")));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("shard 1 (", shards_[1]->address(),
                                            "): 2 checkpoints, oldest first")));
  EXPECT_THAT(r.out, HasSubstr("  * c1 "));
  EXPECT_THAT(r.out, HasSubstr("    only-on-1 "));
  EXPECT_THAT(r.out, HasSubstr("restore without a name takes c1"));

  r = Admin({"--json", "checkpoints"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json listed = nlohmann::json::parse(r.out);
  EXPECT_EQ(listed["ok"], true);
  EXPECT_EQ(listed["on_every_shard"], nlohmann::json::array({"c1"}));
  EXPECT_EQ(listed["restore_default"], "c1");
  ASSERT_EQ(listed["shards"].size(), 2u);
  EXPECT_EQ(listed["shards"][1]["address"], shards_[1]->address());
  const nlohmann::json& on1 = listed["shards"][1]["checkpoints"];
  ASSERT_EQ(on1.size(), 2u);
  EXPECT_EQ(on1[0]["name"], "c1");
  EXPECT_EQ(on1[0]["on_every_shard"], true);
  EXPECT_EQ(on1[1]["name"], "only-on-1");
  EXPECT_EQ(on1[1]["on_every_shard"], false);
  EXPECT_GT(on1[1]["sequence"].get<uint64_t>(),
            on1[0]["sequence"].get<uint64_t>());
  EXPECT_GT(on1[1]["created_micros"].get<int64_t>(), 0);
  EXPECT_EQ(on1[1]["path"], "checkpoints/only-on-1");

  r = Admin({"restore"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("shard 0 (", shards_[0]->address(),
                                            "): restored c1")));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("shard 1 (", shards_[1]->address(),
                                            "): restored c1")));
  auto back = client_->Pull("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Bytes(back->values), Bytes(at_c1->values));

  // Once every shard has a newer checkpoint, that one is taken.
  ASSERT_TRUE(client_->Push("user", keys, {1, 1, 1, 1}).ok());
  ASSERT_TRUE(client_->Checkpoint("c2").ok());
  auto at_c2 = client_->Pull("user", keys);
  ASSERT_TRUE(at_c2.ok()) << at_c2.status();
  ASSERT_TRUE(client_->Push("user", keys, {1, 1, 1, 1}).ok());
  auto restored = client_->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  for (const auto& shard : *restored) {
    EXPECT_EQ(shard.restore.name(), "c2") << shard.address;
  }
  back = client_->Pull("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Bytes(back->values), Bytes(at_c2->values));
}

// No checkpoint on both shards: restore without a name fails naming each
// shard's checkpoints, and no shard changes.
TEST_F(PsClusterTest, RestoreWithoutCommonCheckpointChangesNothing) {
  ASSERT_TRUE(client_->CreateTable(IdTable("user", 2), false).ok());
  const std::vector<uint64_t> keys = {KeyOfShard(0), KeyOfShard(1)};
  ASSERT_TRUE(client_->Push("user", keys, {1, 2, 3, 4}).ok());
  for (uint32_t s = 0; s < kShards; ++s) {
    CheckpointRequest request;
    request.set_name(absl::StrCat("only-on-", s));
    CheckpointResponse response;
    grpc::ClientContext context;
    const grpc::Status st = RawStub(s)->Checkpoint(&context, request, &response);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  ASSERT_TRUE(client_->Push("user", keys, {1, 1, 1, 1}).ok());
  auto live = client_->Pull("user", keys);
  ASSERT_TRUE(live.ok()) << live.status();

  CommandResult r = Admin({"checkpoints"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("    only-on-0 "));
  EXPECT_THAT(r.out, HasSubstr("    only-on-1 "));
  EXPECT_THAT(r.out, Not(HasSubstr(" * ")));
  EXPECT_THAT(r.out, HasSubstr("no checkpoint is on every shard"));
  r = Admin({"--json", "checkpoints"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json listed = nlohmann::json::parse(r.out);
  EXPECT_TRUE(listed["on_every_shard"].empty());
  EXPECT_TRUE(listed["restore_default"].is_null());

  const absl::Status s = client_->Restore("").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  for (uint32_t i = 0; i < kShards; ++i) {
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("shard ", i, " (",
                                       shards_[i]->address(), ") has [only-on-",
                                       i, "]")));
  }
  r = Admin({"restore"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.err, HasSubstr("nothing was restored"));
  // A name on one shard only is refused before any shard restores it.
  r = Admin({"restore", "only-on-0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat(
                         "shard 1 (", shards_[1]->address(),
                         ") has [only-on-1]")));
  auto after = client_->Pull("user", keys);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Bytes(after->values), Bytes(live->values));
}

// ingest_content checks the whole file before it creates the table or
// writes a row: a bad row after the first batch leaves nothing behind; a
// good file is written whole.
TEST_F(PsClusterTest, IngestContentWritesAllOrNothing) {
  const std::string path = base_dir_ + "/vectors.tsv";
  const auto write_file = [&](const std::string& bad_row) {
    std::ofstream f(path, std::ios::trunc);
    f << "#mim-vectors v1\tdim=2\tmodality=text\n";
    for (int i = 1; i <= 10; ++i) {
      if (i == 8) f << bad_row;
      f << i << "\t" << i << " 1\n";
    }
  };
  const auto ingest = [&] {
    auto r = RunCommand({Runfile("tools/ingest_content"),
                         "--ps=" + absl::StrJoin(Addresses(), ","),
                         "--vectors=" + path, "--table=content",
                         "--content_version=5", "--batch=3"});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult();
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"99\tnan 1\n", "not a finite float"},
      {"99\t1\n", "99"},
      {"3\t3 3\n", "item 3 appears again in data row 8"}};
  for (const auto& [row, what] : bad) {
    write_file(row);
    CommandResult r = ingest();
    EXPECT_EQ(r.exit_code, 1) << row;
    EXPECT_THAT(r.err, HasSubstr("nothing written")) << r.err;
    EXPECT_THAT(r.err, HasSubstr(what)) << r.err;
    auto tables = client_->ListTables();
    ASSERT_TRUE(tables.ok()) << tables.status();
    EXPECT_TRUE(tables->empty()) << "the table was created for " << row;
  }
  write_file("");
  CommandResult r = ingest();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = client_->GetRows("content", {1, 10});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->missing.size(), 0u);
  EXPECT_EQ(rows->meta[1].version(), 5u);
}

TEST_F(PsClusterTest, AdminCliAgainstLiveShards) {
  CommandResult r = Admin({"create-table", "user", "--kind=id", "--dim=4",
                           "--optimizer=sgd", "--lr=0.5", "--init=zeros"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("created table user on 2 shards"));
  r = Admin({"create-table", "item", "--kind=content", "--dim=2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  const uint64_t k = KeyOfShard(1);
  ASSERT_TRUE(client_->Push("user", {k}, {2, 0, 0, -2}).ok());

  r = Admin({"tables"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("user"));
  EXPECT_THAT(r.out, HasSubstr("optimizer=sgd"));

  r = Admin({"--json", "stats", "user"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json stats = nlohmann::json::parse(r.out);
  EXPECT_EQ(stats["total"]["rows"], 1);
  EXPECT_EQ(stats["total"]["dim"], 4);
  EXPECT_EQ(stats["total"]["optimizer"], "sgd");
  EXPECT_EQ(stats["shards"].size(), 2u);

  r = Admin({"stats", "user"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("total"));
  EXPECT_THAT(r.out, HasSubstr(shards_[1]->address()));

  r = Admin({"--json", "get", "user", absl::StrCat(k)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json got = nlohmann::json::parse(r.out);
  EXPECT_EQ(got["rows"][0]["values"],
            nlohmann::json::array({-1.0, 0.0, 0.0, 1.0}));
  EXPECT_EQ(got["rows"][0]["update_count"], 1);

  r = Admin({"checkpoint", "cli"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("checkpoint cli"));
  r = Admin({"restore", "cli"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Admin({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));

  r = Admin({"stats", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  // An explicit --lr=0 is refused, not read as "the default".
  r = Admin({"create-table", "zero_lr", "--kind=id", "--dim=4", "--lr=0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(r.err,
              HasSubstr("optimizer.learning_rate must be in (0, 1000], got 0"));
  // The other hyperparameters reach the shard when given, and are checked
  // there: beta1 = 0 is a valid Adam setting, beta2 = 1 is not.
  r = Admin({"create-table", "adam_b0", "--kind=id", "--dim=4",
             "--optimizer=adam", "--beta1=0", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Admin({"create-table", "adam_b2", "--kind=id", "--dim=4",
             "--optimizer=adam", "--beta2=1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("optimizer.beta2 must be in [0, 1), got 1"));
  // A value beyond float's range is named as typed, not sent as inf.
  r = Admin({"create-table", "huge_lr", "--kind=id", "--dim=4", "--lr=1e39"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--lr=1e+39"));
  EXPECT_THAT(r.err, HasSubstr("outside float's range"));
  r = Admin({"create-table", "huge_l2", "--kind=id", "--dim=4",
             "--optimizer=ftrl", "--l2=-1e40"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--l2=-1e+40"));
  r = Admin({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  // With --json, bad usage is a JSON document on stdout too.
  r = Admin({"--json", "get", "user", "not-a-key"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("\"ok\": false"));
  EXPECT_THAT(r.out, HasSubstr("\"usage\": true"));
  EXPECT_THAT(r.out,
              HasSubstr("key 'not-a-key' is not an unsigned 64-bit integer"));

  const std::string down = shards_[1]->address();
  shards_[1]->Kill(SIGKILL);
  r = Admin({"health"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(down));
  r = Admin({"stats", "user"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(r.err, HasSubstr(down));
}

}  // namespace
}  // namespace mim::ps
