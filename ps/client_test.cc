// PsClient against three in-process shards: the real ParameterServerService
// over real EmbeddingStores (each in its own directory under TEST_TMPDIR),
// served by gRPC on loopback. Checks routing, deduplication, reassembly and
// the client-side checks; tests/ covers the server as a separate process.
#include "ps/client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "embedding/embedding_store.h"
#include "embedding/sharding.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/ps.grpc.pb.h"
#include "ps/service.h"

namespace mim::ps {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
      ParameterServerService::Options service_options{s, kShards, 1 << 16};
      service_options.data_dir = options.data_dir;
      shard.service = std::make_unique<ParameterServerService>(
          shard.store.get(), service_options);
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
    const absl::Status created = client_->CreateTable(id, false);
    ASSERT_TRUE(created.ok()) << created;
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

  // A stub straight to shard `s`, bypassing PsClient.
  std::unique_ptr<ParameterServer::Stub> RawStub(uint32_t s) {
    return ParameterServer::NewStub(grpc::CreateChannel(
        addresses_[s], grpc::InsecureChannelCredentials()));
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
  // The pull stored nothing; a push of zero gradients (SGD) creates the
  // rows from the very values pulled (initializer values, uniform(0.5)).
  auto unstored = client_->GetRows("user", keys);
  ASSERT_TRUE(unstored.ok()) << unstored.status();
  EXPECT_EQ(unstored->missing.size(), keys.size());
  ASSERT_TRUE(
      client_->Push("user", keys, std::vector<float>(keys.size() * 2, 0.0f))
          .ok());
  auto rows = client_->GetRows("user", keys);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(rows->missing.empty());
  EXPECT_EQ(rows->values, result->values);
  for (float v : result->values) {
    EXPECT_LE(std::abs(v), 0.5f);
  }
}

TEST_F(PsClientTest, EveryCallNumbersItsOwnKeysAfresh) {
  // The client's table of distinct keys is kept per thread from call to
  // call (and a call over 65536 keys gets its own): a key seen by an
  // earlier call must not count as seen in the next one. Each call sends
  // every shard exactly its distinct keys, and a repeated key gets the row
  // its first position got.
  const auto pulled_on_all = [&] {
    uint64_t sum = 0;
    for (uint32_t s = 0; s < kShards; ++s) sum += KeysPulledOn(s);
    return sum;
  };
  const auto check = [&](const std::vector<uint64_t>& distinct,
                         size_t repeats) {
    std::vector<uint64_t> keys;
    for (size_t r = 0; r < repeats; ++r) {
      keys.insert(keys.end(), distinct.rbegin(), distinct.rend());
    }
    const uint64_t before = pulled_on_all();
    auto each = client_->Pull("user", distinct);
    ASSERT_TRUE(each.ok()) << each.status();
    auto repeated = client_->Pull("user", keys);
    ASSERT_TRUE(repeated.ok()) << repeated.status();
    EXPECT_EQ(pulled_on_all() - before, 2 * distinct.size());
    ASSERT_EQ(repeated->values.size(), keys.size() * 2);
    size_t wrong = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      const size_t d = distinct.size() - 1 - i % distinct.size();
      wrong += repeated->values[2 * i] != each->values[2 * d] ||
               repeated->values[2 * i + 1] != each->values[2 * d + 1];
    }
    EXPECT_EQ(wrong, 0u) << distinct.size() << " keys x " << repeats;
  };
  std::vector<uint64_t> first, overlapping, large;
  for (uint64_t k = 0; k < 100; ++k) first.push_back(k);
  for (uint64_t k = 50; k < 150; ++k) overlapping.push_back(k);
  for (uint64_t k = 0; k < 70000; ++k) large.push_back(k * 3 + 1);
  check(first, 3);
  check(overlapping, 2);
  check(large, 2);
  check(first, 1);
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

TEST_F(PsClientTest, SplitPullsReturnTheBytesOfOneCall) {
  // Content rows for every third key, so that each call has missing keys.
  std::vector<uint64_t> stored;
  std::vector<float> values;
  for (uint64_t k = 0; k < 3000; k += 3) {
    stored.push_back(k);
    values.push_back(0.5f * k);
    values.push_back(-1.0f - k);
  }
  ASSERT_TRUE(client_->Upsert("item", stored, values, 1).ok());
  std::vector<uint64_t> distinct, repeated;
  for (uint64_t k = 0; k < 2000; ++k) distinct.push_back((k * 7919) % 3000);
  for (uint64_t k = 0; k < 2000; ++k) repeated.push_back((k * 13) % 700);
  PsClient::Options whole;
  whole.pull_keys_per_call = 0;
  auto one_call = PsClient::Create(addresses_, whole);
  ASSERT_TRUE(one_call.ok());
  // Split by size, in waves (more calls than max_calls_per_shard), and by
  // a message-size cap on top.
  std::vector<PsClient::Options> splits(3);
  splits[0].pull_keys_per_call = 50;
  splits[0].max_calls_per_shard = 3;
  splits[1].pull_keys_per_call = 2;
  splits[1].max_calls_per_shard = 4;
  splits[1].max_keys_per_rpc = 37;
  splits[2].pull_keys_per_call = 1000;
  for (const PsClient::Options& options : splits) {
    auto split = PsClient::Create(addresses_, options);
    ASSERT_TRUE(split.ok());
    for (const std::string table : {"item", "user"}) {
      for (const auto* keys : {&distinct, &repeated}) {
        SCOPED_TRACE(testing::Message()
                     << table << ", " << options.pull_keys_per_call
                     << " keys per call, "
                     << (keys == &distinct ? "distinct" : "repeated"));
        std::vector<float> want(keys->size() * 2, -9.0f);
        std::vector<float> got(keys->size() * 2, -7.0f);
        std::vector<uint32_t> want_missing, got_missing = {12345};
        ASSERT_TRUE((*one_call)
                        ->PullInto(table, *keys, absl::MakeSpan(want),
                                   &want_missing)
                        .ok());
        ASSERT_TRUE((*split)
                        ->PullInto(table, *keys, absl::MakeSpan(got),
                                   &got_missing)
                        .ok());
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(),
                                 got.size() * sizeof(float)));
        EXPECT_EQ(got_missing, want_missing);
        if (table == "item") {
          EXPECT_FALSE(want_missing.empty());
          for (const uint32_t i : want_missing) {
            EXPECT_NE((*keys)[i] % 3, 0u);
          }
        } else {
          EXPECT_TRUE(want_missing.empty());
        }
      }
    }
  }
  PsClient::Options negative;
  negative.pull_keys_per_call = -1;
  const auto refused = PsClient::Create(addresses_, negative);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("pull_keys_per_call must be >= 0"));
}

TEST(PsClientSplitTest, AnErrorOfOneCallNamesTheShard) {
  // One shard that accepts at most 3 keys per request; a Pull of 6 keys
  // split into calls of 4 and 2: the first call is refused, the second
  // answered, and the Pull fails with the shard's error, naming it.
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  embedding::EmbeddingStore::Options store_options;
  store_options.data_dir =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
  auto store = embedding::EmbeddingStore::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  ParameterServerService::Options service_options{0, 1, 3};
  service_options.data_dir = store_options.data_dir;
  ParameterServerService service(store->get(), service_options);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  auto plain = PsClient::Create({address});
  ASSERT_TRUE(plain.ok());
  TableConfig id;
  id.set_name("user");
  id.set_kind(ID);
  id.set_dim(2);
  id.mutable_optimizer()->set_name("sgd");
  id.mutable_initializer()->set_name("uniform");
  id.mutable_initializer()->set_scale(0.5f);
  ASSERT_TRUE((*plain)->CreateTable(id, false).ok());

  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6};
  PsClient::Options options;
  options.pull_keys_per_call = 4;
  auto split = PsClient::Create({address}, options);
  ASSERT_TRUE(split.ok());
  std::vector<float> out(keys.size() * 2, -7.0f);
  const absl::Status refused =
      (*split)->PullInto("user", keys, absl::MakeSpan(out), nullptr);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr(absl::StrCat("shard 0/1 (", address,
                                     "): request has 4 keys; shard 0/1 "
                                     "accepts at most 3 per request")));
  EXPECT_EQ(FailedShard(refused), std::optional<uint32_t>(0));
  // Capped to what the shard accepts (max_keys_per_rpc), the same split
  // Pull succeeds, with the rows of 1-key calls.
  options.max_keys_per_rpc = 3;
  auto capped = PsClient::Create({address}, options);
  ASSERT_TRUE(capped.ok());
  ASSERT_TRUE(
      (*capped)->PullInto("user", keys, absl::MakeSpan(out), nullptr).ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto row = (*plain)->Pull("user", {keys[i]});
    ASSERT_TRUE(row.ok()) << row.status();
    EXPECT_EQ(row->values[0], out[2 * i]);
    EXPECT_EQ(row->values[1], out[2 * i + 1]);
  }
  server->Shutdown();
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
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(client_->Pull("user", keys).ok());
  // A pull of unseen keys stores nothing; their first push creates them.
  auto pulled_only = client_->Stats("user");
  ASSERT_TRUE(pulled_only.ok());
  EXPECT_EQ(TotalStats(*pulled_only)[0].rows(), 0u);
  ASSERT_TRUE(
      client_->Push("user", keys, std::vector<float>(keys.size() * 2, 0.5f))
          .ok());
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

// Values a shard used to take: an initializer scale of 3e38 (non-finite
// rows), a learning rate of 3e38, a content version of 2^64-1 (a row that
// could never be updated again). Each is refused naming its bound, and
// nothing changes.
TEST_F(PsClientTest, AbsurdValuesAreRefusedNamingTheBound) {
  TableConfig t;
  t.set_name("absurd");
  t.set_kind(ID);
  t.set_dim(2);
  t.mutable_optimizer()->set_name("sgd");
  t.mutable_initializer()->set_name("normal");
  t.mutable_initializer()->set_scale(3e38f);
  absl::Status st = client_->CreateTable(t, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("initializer.scale must be in [0, 1000], got 3e+38"));
  t.mutable_initializer()->set_scale(0.1f);
  t.mutable_optimizer()->set_learning_rate(3e38f);
  st = client_->CreateTable(t, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("optimizer.learning_rate must be in (0, 1000], got "
                        "3e+38"));
  for (auto& shard : shards_) EXPECT_EQ(shard.store->ListTables().size(), 2u);

  auto upserted = client_->Upsert("item", {1, 2}, {1, 2, 3, 4},
                                  std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(upserted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(upserted.status().message()),
              HasSubstr("version 18446744073709551615 is above the largest a "
                        "content row may have, 2^53 = 9007199254740992"));
  auto rows = client_->GetRows("item", {1, 2});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->missing.size(), 2u);
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
              HasSubstr("table 'bad': optimizer.learning_rate must be in "
                        "(0, 1000], got 0"));
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

// Restore("") takes the most recently created checkpoint, even when name
// order says otherwise, and only one that every shard has: a checkpoint
// taken on one shard alone (straight through its own Checkpoint RPC) is
// never picked, so the shards never end up on different checkpoints.
TEST_F(PsClientTest, RestoreNewestPicksNewestCheckpointOnEveryShard) {
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (uint32_t s = 0; s < kShards; ++s) {
    ASSERT_TRUE(std::any_of(keys.begin(), keys.end(), [s](uint64_t k) {
      return embedding::ShardOf(k, kShards) == s;
    })) << "no key on shard " << s;
  }
  const std::vector<float> grad(2 * keys.size(), 1);
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(client_->Checkpoint("zz-first").ok());
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(client_->Checkpoint("before-migration").ok());
  auto at_migration = client_->GetRows("user", keys);
  ASSERT_TRUE(at_migration.ok()) << at_migration.status();
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());

  auto restored = client_->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_EQ(restored->size(), kShards);
  for (const auto& r : *restored) {
    EXPECT_EQ(r.restore.name(), "before-migration") << r.address;
  }
  auto back = client_->GetRows("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, at_migration->values);

  // A newer checkpoint on shard 1 only: shard 1's own newest, but not on
  // every shard, so Restore("") still takes before-migration everywhere.
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  CheckpointRequest only_on_one;
  only_on_one.set_name("only-on-one");
  CheckpointResponse made;
  grpc::ClientContext context;
  ASSERT_TRUE(RawStub(1)->Checkpoint(&context, only_on_one, &made).ok());
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  restored = client_->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  for (const auto& r : *restored) {
    EXPECT_EQ(r.restore.name(), "before-migration") << r.address;
  }
  back = client_->GetRows("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, at_migration->values);

  // A checkpoint taken on every shard after it is the newest common one.
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(client_->Checkpoint("a-later").ok());
  auto at_later = client_->GetRows("user", keys);
  ASSERT_TRUE(at_later.ok()) << at_later.status();
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  restored = client_->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  for (const auto& r : *restored) {
    EXPECT_EQ(r.restore.name(), "a-later") << r.address;
  }
  back = client_->GetRows("user", keys);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, at_later->values);

  // What the shards list: creation order, sequences, paths and times.
  auto lists = client_->ListCheckpoints();
  ASSERT_TRUE(lists.ok()) << lists.status();
  ASSERT_EQ(lists->size(), kShards);
  for (uint32_t s = 0; s < kShards; ++s) {
    const ListCheckpointsResponse& list = (*lists)[s].list;
    EXPECT_EQ((*lists)[s].address, addresses_[s]);
    EXPECT_EQ(list.shard_index(), s);
    EXPECT_EQ(list.num_shards(), kShards);
    std::vector<std::string> names;
    for (const CheckpointEntry& c : list.checkpoints()) {
      names.push_back(c.name());
      EXPECT_GT(c.sequence(), 0u) << c.name();
      EXPECT_GT(c.created_micros(), 0) << c.name();
      // Relative to the shard's data dir: a shard sends no absolute path.
      EXPECT_EQ(c.path(), "checkpoints/" + c.name());
    }
    for (int i = 1; i < list.checkpoints_size(); ++i) {
      EXPECT_GT(list.checkpoints(i).sequence(),
                list.checkpoints(i - 1).sequence());
    }
    const std::vector<std::string> expected =
        s == 1 ? std::vector<std::string>{"zz-first", "before-migration",
                                          "only-on-one", "a-later"}
               : std::vector<std::string>{"zz-first", "before-migration",
                                          "a-later"};
    EXPECT_EQ(names, expected) << "shard " << s;
  }
  EXPECT_EQ(CommonCheckpoints(*lists),
            (std::vector<std::string>{"zz-first", "before-migration",
                                      "a-later"}));
}

// A restore resent with the same request id (its answer lost or late)
// gets the first attempt's answer and does not restore again: a push
// acknowledged in between stays. Another id restores again; id 0 (an old
// client) every time.
TEST_F(PsClientTest, ARestoreResentWithItsIdRestoresOnce) {
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<float> grad(2 * keys.size(), 1);
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(client_->Checkpoint("c").ok());
  const auto at_checkpoint = client_->GetRows("user", keys);
  ASSERT_TRUE(at_checkpoint.ok());
  auto stub = RawStub(0);
  auto restore = [&](uint64_t id, RestoreResponse* response) {
    grpc::ClientContext context;
    RestoreRequest request;
    request.set_name("c");
    request.set_request_id(id);
    return stub->Restore(&context, request, response);
  };
  RestoreResponse first;
  ASSERT_TRUE(restore(77, &first).ok());
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  const auto after_push = client_->GetRows("user", keys);
  ASSERT_TRUE(after_push.ok());
  ASSERT_NE(after_push->values, at_checkpoint->values);
  RestoreResponse resent;
  ASSERT_TRUE(restore(77, &resent).ok());
  EXPECT_EQ(resent.name(), first.name());
  EXPECT_EQ(resent.rows(), first.rows());
  EXPECT_EQ(client_->GetRows("user", keys)->values, after_push->values);
  // A refused restore is not remembered: a resend runs it again (and is
  // refused again: it changed nothing).
  {
    grpc::ClientContext context;
    RestoreRequest request;
    request.set_name("nope");
    request.set_request_id(78);
    RestoreResponse r;
    EXPECT_EQ(stub->Restore(&context, request, &r).error_code(),
              grpc::StatusCode::NOT_FOUND);
    grpc::ClientContext again;
    EXPECT_EQ(stub->Restore(&again, request, &r).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // Shard 0 only went back: its rows are the checkpoint's again.
  RestoreResponse other;
  ASSERT_TRUE(restore(79, &other).ok());
  const auto now = client_->GetRows("user", keys);
  ASSERT_TRUE(now.ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    const bool on_0 = embedding::ShardOf(keys[i], kShards) == 0;
    for (int j = 0; j < 2; ++j) {
      EXPECT_EQ(now->values[2 * i + j],
                (on_0 ? at_checkpoint : after_push)->values[2 * i + j])
          << keys[i];
    }
  }
}

// A refused restore leaves no trace in the shard's remembered answers: a
// later success of the same id is remembered for its full turn (256 newer
// ids), so its resend does not restore again over a push acknowledged
// since.
TEST_F(PsClientTest, AFailedRestoreDoesNotShortenItsIdsLaterAnswer) {
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<float> grad(2 * keys.size(), 1);
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(client_->Checkpoint("c").ok());
  auto stub = RawStub(0);
  const auto restore = [&](const std::string& name) {
    grpc::ClientContext context;
    RestoreRequest request;
    request.set_name(name);
    request.set_request_id(90);
    RestoreResponse response;
    return stub->Restore(&context, request, &response).error_code();
  };
  EXPECT_EQ(restore("nope"), grpc::StatusCode::NOT_FOUND);
  ASSERT_EQ(restore("c"), grpc::StatusCode::OK);
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  const auto after_push = client_->GetRows("user", keys);
  ASSERT_TRUE(after_push.ok());
  // 255 more answers: with the restore's, the 256 the shard remembers.
  for (uint64_t id = 1000; id < 1255; ++id) {
    grpc::ClientContext context;
    DropTableRequest drop;
    drop.set_table("absent");
    drop.set_request_id(id);
    DropTableResponse dropped;
    ASSERT_TRUE(stub->DropTable(&context, drop, &dropped).ok());
  }
  ASSERT_EQ(restore("c"), grpc::StatusCode::OK);  // the remembered answer
  EXPECT_EQ(client_->GetRows("user", keys)->values, after_push->values);
}

// No checkpoint on every shard: Restore("") restores nothing and names
// each shard's checkpoints; a name some shard lacks restores nothing
// either, not even on the shards that have it.
TEST_F(PsClientTest, RestoreChangesNothingUnlessEveryShardHasTheCheckpoint) {
  const std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<float> grad(2 * keys.size(), 1);
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  ASSERT_TRUE(shards_[0].store->Checkpoint("a").ok());
  ASSERT_TRUE(shards_[1].store->Checkpoint("b").ok());
  ASSERT_TRUE(client_->Push("user", keys, grad).ok());
  auto live = client_->GetRows("user", keys);
  ASSERT_TRUE(live.ok()) << live.status();

  const absl::Status s = client_->Restore("").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  const std::string message(s.message());
  EXPECT_THAT(message, HasSubstr("nothing was restored"));
  EXPECT_THAT(message, HasSubstr("no checkpoint is on every shard"));
  EXPECT_THAT(message,
              HasSubstr(absl::StrCat("shard 0 (", addresses_[0], ") has [a]")));
  EXPECT_THAT(message,
              HasSubstr(absl::StrCat("shard 1 (", addresses_[1], ") has [b]")));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("shard 2 (", addresses_[2],
                                              ") has no checkpoints")));
  auto after = client_->GetRows("user", keys);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->values, live->values);

  const absl::Status named = client_->Restore("a").status();
  EXPECT_EQ(named.code(), absl::StatusCode::kNotFound) << named;
  EXPECT_THAT(std::string(named.message()),
              HasSubstr(absl::StrCat("shard 1 (", addresses_[1], ") has [b]")));
  EXPECT_THAT(std::string(named.message()),
              HasSubstr(absl::StrCat("shard 2 (", addresses_[2],
                                     ") has no checkpoints")));
  EXPECT_THAT(std::string(named.message()), Not(HasSubstr("shard 0")));
  after = client_->GetRows("user", keys);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->values, live->values);  // shard 0 kept its live rows too
}

PsClient::ShardCheckpoints Listing(const std::vector<std::string>& names) {
  PsClient::ShardCheckpoints shard;
  uint64_t sequence = 0;
  for (const std::string& name : names) {
    CheckpointEntry* c = shard.list.add_checkpoints();
    c->set_name(name);
    c->set_sequence(++sequence);
  }
  return shard;
}

// The order rule of CommonCheckpoints, including shards that disagree on
// the order of the checkpoints they share.
TEST(CommonCheckpointsTest, NewestOnEveryShardByEachShardsOrder) {
  EXPECT_TRUE(CommonCheckpoints({}).empty());
  EXPECT_EQ(NewestCommonCheckpoint({}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // One shard: its own order, names not sorted.
  EXPECT_EQ(CommonCheckpoints({Listing({"zz", "b", "a"})}),
            (std::vector<std::string>{"zz", "b", "a"}));
  // Checkpoints on some shards only are left out, wherever they are.
  EXPECT_EQ(CommonCheckpoints({Listing({"x", "a", "new0", "b"}),
                               Listing({"a", "b", "new1"}),
                               Listing({"a", "y", "b"})}),
            (std::vector<std::string>{"a", "b"}));
  // Disagreeing order: a is newest on shard 1 but oldest on shard 0, d is
  // late on both, so d is the newest common one; b (ranks 1 and 0) comes
  // before a (ranks 0 and 3).
  const std::vector<PsClient::ShardCheckpoints> disagree = {
      Listing({"a", "b", "c", "d"}), Listing({"b", "c", "d", "a"})};
  EXPECT_EQ(CommonCheckpoints(disagree),
            (std::vector<std::string>{"b", "a", "c", "d"}));
  auto newest = NewestCommonCheckpoint(disagree);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_EQ(*newest, "d");
  // A full tie (two shards, swapped): the greater name, deterministically.
  EXPECT_EQ(*NewestCommonCheckpoint({Listing({"p", "q"}), Listing({"q", "p"})}),
            "q");
  // Nothing in common: the message lists each shard's checkpoints.
  std::vector<PsClient::ShardCheckpoints> apart = {Listing({"a"}),
                                                   Listing({})};
  apart[0].address = "h0:1";
  apart[1].address = "h1:2";
  const absl::Status s = NewestCommonCheckpoint(apart).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("shard 0 (h0:1) has [a]; shard 1 (h1:2) has no "
                        "checkpoints"));
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
  EXPECT_EQ(FailedShard(s), std::optional<uint32_t>(1));
  // A pull over every shard names the one that failed too, as GetRows does.
  std::vector<uint64_t> all_shards;
  for (uint64_t k = 0; all_shards.size() < 30; ++k) all_shards.push_back(k);
  EXPECT_EQ(FailedShard((*client)->Pull("user", all_shards).status()),
            std::optional<uint32_t>(1));
  EXPECT_EQ(FailedShard((*client)->GetRows("user", all_shards).status()),
            std::optional<uint32_t>(1));
  EXPECT_EQ(FailedShard(absl::OkStatus()), std::nullopt);
  EXPECT_EQ(FailedShard(absl::UnavailableError("not from a shard")),
            std::nullopt);
  const std::vector<absl::Status> health = (*client)->Health();
  EXPECT_TRUE(health[0].ok());
  EXPECT_EQ(health[1].code(), absl::StatusCode::kUnavailable);
}

// Serves `shard` again on its port after `delay`, on a thread to join.
std::thread RestartLater(InProcessShard* shard, absl::Duration delay) {
  return std::thread([shard, delay] {
    absl::SleepFor(delay);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", shard->port),
                             grpc::InsecureServerCredentials());
    builder.RegisterService(shard->service.get());
    shard->server = builder.BuildAndStart();
  });
}

TEST_F(PsClientTest, RetryBudgetBoundsTheWaitForADownShard) {
  shards_[1].server->Shutdown();
  PsClient::Options options;
  options.max_attempts = std::numeric_limits<int>::max();
  options.retry_budget = absl::Milliseconds(400);
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(100);
  int retries = 0;
  options.on_retry = [&retries](const absl::Status& error, int attempt) {
    EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(attempt, retries + 1);
    ++retries;
  };
  auto client = PsClient::Create(addresses_, options);
  ASSERT_TRUE(client.ok());
  uint64_t key = 0;
  while (embedding::ShardOf(key, kShards) != 1) ++key;

  absl::Time start = absl::Now();
  const absl::Status pulled = (*client)->Pull("user", {key}).status();
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(pulled.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(pulled.message()), HasSubstr(addresses_[1]));
  EXPECT_THAT(std::string(pulled.message()), HasSubstr("retry budget 400ms"));
  EXPECT_GE(took, absl::Milliseconds(400));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_GT(retries, 3);

  // A push to the down shard is never sent: unavailable, not in doubt.
  retries = 0;
  start = absl::Now();
  const absl::Status pushed = (*client)->Push("user", {key}, {1, 1}).status();
  took = absl::Now() - start;
  EXPECT_EQ(pushed.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(IsPushInDoubt(pushed)) << pushed;
  EXPECT_THAT(std::string(pushed.message()), HasSubstr("nothing was sent"));
  EXPECT_GE(took, absl::Milliseconds(400));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_GT(retries, 3);

  // No budget: one attempt each.
  options.retry_budget = absl::ZeroDuration();
  options.on_retry = nullptr;
  auto once = PsClient::Create(addresses_, options);
  ASSERT_TRUE(once.ok());
  EXPECT_EQ((*once)->Pull("user", {key}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(IsPushInDoubt((*once)->Push("user", {key}, {1, 1}).status()));

  options.retry_budget = absl::Seconds(-1);
  EXPECT_EQ(PsClient::Create(addresses_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PsClientTest, PullAndPushRideThroughAShardRestart) {
  uint64_t key = 0;
  while (embedding::ShardOf(key, kShards) != 1) ++key;
  auto before = client_->Pull("user", {key});
  ASSERT_TRUE(before.ok()) << before.status();
  PsClient::Options options;
  options.max_attempts = std::numeric_limits<int>::max();
  options.retry_budget = absl::Seconds(20);
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(100);
  int retries = 0;
  options.on_retry = [&retries](const absl::Status&, int) { ++retries; };
  auto client = PsClient::Create(addresses_, options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Pull("user", {key}).ok());  // connected

  // Down for 300 ms; the push waits for it and is applied exactly once
  // (SGD, learning rate 1: row - gradient).
  shards_[1].server->Shutdown();
  shards_[1].server.reset();
  std::thread restart = RestartLater(&shards_[1], absl::Milliseconds(300));
  const absl::StatusOr<uint64_t> pushed =
      (*client)->Push("user", {key}, {1.0f, 2.0f});
  restart.join();
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(*pushed, 1u);
  EXPECT_GT(retries, 0);
  auto after = (*client)->GetRows("user", {key});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->values, (std::vector<float>{before->values[0] - 1.0f,
                                               before->values[1] - 2.0f}));
  EXPECT_EQ(after->meta[0].update_count(), 1u);

  // A pull as well.
  retries = 0;
  shards_[1].server->Shutdown();
  shards_[1].server.reset();
  restart = RestartLater(&shards_[1], absl::Milliseconds(300));
  auto pulled = (*client)->Pull("user", {key});
  restart.join();
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, after->values);
  EXPECT_GT(retries, 0);
}

// A shard whose Push and Pull answer a fixed status (after `delay`),
// counting the calls.
class ScriptedShard : public ParameterServer::Service {
 public:
  ScriptedShard(grpc::Status answer, absl::Duration delay)
      : answer_(std::move(answer)), delay_(delay) {}
  grpc::Status Push(grpc::ServerContext*, const PushRequest* request,
                    PushResponse*) override {
    const int n = pushes++;
    {
      absl::MutexLock lock(&mu);
      tags.emplace_back(request->client_id(), request->sequence());
    }
    absl::SleepFor(delay_);
    return n < ok_first_pushes ? grpc::Status::OK : answer_;
  }
  grpc::Status Pull(grpc::ServerContext*, const PullRequest*,
                    PullResponse*) override {
    ++pulls;
    absl::SleepFor(delay_);
    return answer_;
  }
  std::atomic<int> pushes{0};
  std::atomic<int> pulls{0};
  // The first this many pushes are answered OK, the rest `answer`.
  std::atomic<int> ok_first_pushes{0};
  absl::Mutex mu;
  // (client_id, sequence) of every push attempt, in arrival order.
  std::vector<std::pair<uint64_t, uint64_t>> tags ABSL_GUARDED_BY(mu);

 private:
  const grpc::Status answer_;
  const absl::Duration delay_;
};

struct ScriptedServer {
  ScriptedServer(grpc::Status answer, absl::Duration delay)
      : service(std::move(answer), delay) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    address = absl::StrCat("127.0.0.1:", port);
  }
  ~ScriptedServer() { server->Shutdown(); }
  ScriptedShard service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

// A push sent in waves whose second wave is refused: the first wave's call
// was acknowledged, so the error says the push was applied in part instead
// of reading as "not applied".
TEST(PsClientPushRetryTest, AWaveRefusedAfterAnAppliedOneSaysSo) {
  ScriptedServer shard(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no"),
                       absl::ZeroDuration());
  shard.service.ok_first_pushes = 1;
  PsClient::Options options;
  options.max_keys_per_rpc = 1;
  options.max_calls_per_shard = 1;
  auto client = PsClient::Create({shard.address}, options);
  ASSERT_TRUE(client.ok());
  const absl::Status s =
      (*client)->Push("t", {1, 2, 3}, {1.0f, 2.0f, 3.0f}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(IsPushInDoubt(s));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("at least 1 of the push's 3 calls (those of the "
                        "earlier waves) were applied, so it was applied in "
                        "part"));
  EXPECT_EQ(shard.service.pushes, 2);  // the third wave was not sent
}

TEST(PsClientPushRetryTest, ASentPushIsNotResentAndIsInDoubt) {
  using PushRetry = PsClient::Options::PushRetry;
  for (const PushRetry retry :
       {PushRetry::kNever, PushRetry::kUnsent, PushRetry::kAlways}) {
    // The shard answers UNAVAILABLE itself: the push reached it.
    ScriptedServer shard(grpc::Status(grpc::StatusCode::UNAVAILABLE, "busy"),
                         absl::ZeroDuration());
    PsClient::Options options;
    options.max_attempts = 3;
    options.initial_backoff = absl::Milliseconds(1);
    options.push_retry = retry;
    auto client = PsClient::Create({shard.address}, options);
    ASSERT_TRUE(client.ok());
    const absl::Status s = (*client)->Push("t", {1}, {1.0f}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
    EXPECT_TRUE(IsPushInDoubt(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("may or may not"));
    EXPECT_EQ(shard.service.pushes, retry == PushRetry::kAlways ? 3 : 1);
    // Pulls are idempotent: always retried; never "in doubt".
    const absl::Status p = (*client)->Pull("t", {1}).status();
    EXPECT_EQ(p.code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(IsPushInDoubt(p));
    EXPECT_EQ(shard.service.pulls, 3);
  }
  // A push past its deadline may have been applied too; a refused one was
  // not.
  ScriptedServer slow(grpc::Status::OK, absl::Milliseconds(300));
  PsClient::Options options;
  options.timeout = absl::Milliseconds(50);
  auto client = PsClient::Create({slow.address}, options);
  ASSERT_TRUE(client.ok());
  const absl::Status late = (*client)->Push("t", {1}, {1.0f}).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(IsPushInDoubt(late)) << late;
  ScriptedServer refusing(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no"),
      absl::ZeroDuration());
  auto refused_client = PsClient::Create({refusing.address});
  ASSERT_TRUE(refused_client.ok());
  const absl::Status refused =
      (*refused_client)->Push("t", {1}, {1.0f}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsPushInDoubt(refused));
  EXPECT_FALSE(IsPushInDoubt(absl::OkStatus()));
  // A shard whose storage failed while writing (e.g. the WAL's fsync) may
  // have the record in its log, replayed at its next open: in doubt, and
  // kept for resending, not reported as certainly not applied.
  for (const grpc::StatusCode code :
       {grpc::StatusCode::INTERNAL, grpc::StatusCode::DATA_LOSS}) {
    ScriptedServer failing(grpc::Status(code, "fsync failed"),
                           absl::ZeroDuration());
    auto failing_client = PsClient::Create({failing.address});
    ASSERT_TRUE(failing_client.ok());
    const absl::Status failed =
        (*failing_client)->Push("t", {1}, {1.0f}).status();
    EXPECT_EQ(static_cast<int>(failed.code()), static_cast<int>(code));
    EXPECT_TRUE(IsPushInDoubt(failed)) << failed;
    EXPECT_EQ((*failing_client)->pushes_held_in_doubt(), 1u);
    EXPECT_EQ(failing.service.pushes, 1);  // not resent within the call
  }
}

// The first key from 0 up that belongs to `shard` of `num_shards`.
uint64_t KeyOnShard(uint32_t shard, uint32_t num_shards, uint64_t from = 0) {
  uint64_t key = from;
  while (embedding::ShardOf(key, num_shards) != shard) ++key;
  return key;
}

TEST(PsClientPushRetryTest, SequencesCountPerShard) {
  // Each shard sees 1, 2, 3, ... of this client's push calls to it, so its
  // window of 1024 remembered sequences covers 1024 of them whatever the
  // number of shards.
  ScriptedServer a(grpc::Status::OK, absl::ZeroDuration());
  ScriptedServer b(grpc::Status::OK, absl::ZeroDuration());
  auto client = PsClient::Create({a.address, b.address});
  ASSERT_TRUE(client.ok());
  const uint64_t on_a = KeyOnShard(0, 2), on_b = KeyOnShard(1, 2);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*client)->Push("t", {on_a, on_b}, {1.0f, 2.0f}).ok());
  }
  ASSERT_TRUE((*client)->Push("t", {on_b}, {1.0f}).ok());
  absl::MutexLock la(&a.service.mu);
  absl::MutexLock lb(&b.service.mu);
  ASSERT_EQ(a.service.tags.size(), 3u);
  ASSERT_EQ(b.service.tags.size(), 4u);
  const uint64_t id = a.service.tags[0].first;
  EXPECT_NE(id, 0u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a.service.tags[i], std::make_pair(id, uint64_t{i + 1}));
  }
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(b.service.tags[i], std::make_pair(id, uint64_t{i + 1}));
  }
}

TEST(PsClientPushRetryTest, RepeatedKeysSummingPastFloatRangeSendNothing) {
  ScriptedServer shard(grpc::Status::OK, absl::ZeroDuration());
  auto client = PsClient::Create({shard.address});
  ASSERT_TRUE(client.ok());
  // Each gradient is finite; their sum is not.
  const absl::Status s =
      (*client)->Push("t", {7, 8, 7}, {3e38f, 1.0f, 3e38f}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("gradients of key 7, repeated in the push, sum to a "
                        "value that is not finite at dimension 0"));
  EXPECT_EQ(shard.service.pushes, 0);
  // Repeats that stay in range go out as one summed row.
  EXPECT_TRUE((*client)->Push("t", {7, 7}, {1e38f, 1e38f}).ok());
  EXPECT_EQ(shard.service.pushes, 1);
}

TEST(PsClientPushRetryTest, AFailedPartWinsOverAPartInDoubt) {
  // One shard refuses its part outright, the other's part ends in doubt:
  // the caller gets the refusal (what it must act on: that part certainly
  // failed), not marked in doubt, and is told about the other part.
  ScriptedServer refusing(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no"),
      absl::ZeroDuration());
  ScriptedServer cut(grpc::Status(grpc::StatusCode::UNAVAILABLE, "cut"),
                     absl::ZeroDuration());
  PsClient::Options options;
  options.max_attempts = 2;
  options.initial_backoff = absl::Milliseconds(1);
  auto client = PsClient::Create({refusing.address, cut.address}, options);
  ASSERT_TRUE(client.ok());
  const absl::Status s =
      (*client)
          ->Push("t", {KeyOnShard(0, 2), KeyOnShard(1, 2)}, {1.0f, 1.0f})
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(IsPushInDoubt(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(refusing.address));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("another part of the push may or may not have been "
                        "applied"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(cut.address));
}

TEST(PsClientPushRetryTest, ACancelledPushIsResentAndInDoubt) {
  // gRPC ends calls CANCELLED itself (a server's shutdown grace, its memory
  // quota) after the handler may have run: resent like a cut connection,
  // and in doubt if no answer comes.
  ScriptedServer shard(grpc::Status(grpc::StatusCode::CANCELLED, "gone"),
                       absl::ZeroDuration());
  PsClient::Options options;
  options.max_attempts = 3;
  options.initial_backoff = absl::Milliseconds(1);
  auto client = PsClient::Create({shard.address}, options);
  ASSERT_TRUE(client.ok());
  const absl::Status s = (*client)->Push("t", {1}, {1.0f}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_TRUE(IsPushInDoubt(s)) << s;
  EXPECT_EQ(shard.service.pushes, 3);
  absl::MutexLock lock(&shard.service.mu);
  for (const auto& tag : shard.service.tags) {
    EXPECT_EQ(tag, shard.service.tags[0]);  // one call, resent as it was
  }
}

}  // namespace
}  // namespace mim::ps
