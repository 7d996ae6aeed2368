// Bounded resources of a real shard (the //ps:server binary on loopback):
// message size, keys per request and PsClient's splitting of calls that
// exceed them; reads during a long Restore; checkpoint retention and
// deletion; dropping a table.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/ps.grpc.pb.h"
#include "ps/client.h"
#include "ps/limits.h"
#include "tests/process.h"

namespace mim::ps {
namespace {

using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using ::testing::HasSubstr;

TableConfig IdTable(const std::string& name, uint32_t dim) {
  TableConfig c;
  c.set_name(name);
  c.set_kind(ID);
  c.set_dim(dim);
  c.mutable_optimizer()->set_name("sgd");
  c.mutable_optimizer()->set_learning_rate(0.5f);
  c.mutable_initializer()->set_name("uniform");
  c.mutable_initializer()->set_scale(0.1f);
  return c;
}

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
}

std::unique_ptr<ShardProcess> StartShard(const std::vector<std::string>& extra) {
  ShardProcess::Flags f;
  f.data_dir = TestDir() + "/shard";
  f.extra = extra;
  auto shard = ShardProcess::Start(f);
  EXPECT_TRUE(shard.ok()) << shard.status();
  return shard.ok() ? *std::move(shard) : nullptr;
}

std::unique_ptr<ParameterServer::Stub> RawStub(const ShardProcess& shard) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);  // let the shard be the one that refuses
  args.SetMaxReceiveMessageSize(-1);
  return ParameterServer::NewStub(grpc::CreateCustomChannel(
      shard.address(), grpc::InsecureChannelCredentials(), args));
}

std::unique_ptr<PsClient> Client(const ShardProcess& shard,
                                 PsClient::Options options = {}) {
  options.timeout = absl::Seconds(60);
  auto client = PsClient::Create({shard.address()}, options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::vector<uint64_t> Keys(size_t n, uint64_t first = 1) {
  std::vector<uint64_t> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = first + i;
  return keys;
}

// Each limit answers RESOURCE_EXHAUSTED naming it, and changes nothing.
TEST(ShardLimitsTest, OversizedCallsAreRefusedNamingTheLimit) {
  auto shard = StartShard({"--max_keys_per_request=1000", "--max_message_mb=1"});
  ASSERT_NE(shard, nullptr);
  auto client = Client(*shard);
  ASSERT_TRUE(client->CreateTable(IdTable("t", 512), false).ok());
  auto stub = RawStub(*shard);

  // Keys per request.
  PullRequest pull;
  pull.set_table("t");
  for (uint64_t k : Keys(1001)) pull.add_keys(k);
  PullResponse pulled;
  grpc::ClientContext c1;
  grpc::Status s = stub->Pull(&c1, pull, &pulled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("request has 1001 keys"));
  EXPECT_THAT(s.error_message(), HasSubstr("at most 1000"));
  EXPECT_THAT(s.error_message(), HasSubstr("--max_keys_per_request"));

  // An answer larger than the message limit: 600 x 512-d rows are 1.2 MB.
  pull.clear_keys();
  for (uint64_t k : Keys(600)) pull.add_keys(k);
  grpc::ClientContext c2;
  s = stub->Pull(&c2, pull, &pulled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("sends at most 1048576"));
  EXPECT_THAT(s.error_message(), HasSubstr("--max_message_mb=1"));

  // A request larger than the message limit: gRPC refuses it before any
  // handler runs, naming both sizes.
  PushRequest push;
  push.set_table("t");
  for (uint64_t k : Keys(600)) push.add_keys(k);
  push.mutable_gradients()->assign(600 * 512 * sizeof(float), '\0');
  PushResponse pushed;
  grpc::ClientContext c3;
  s = stub->Push(&c3, push, &pushed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("larger than max"));
  EXPECT_THAT(s.error_message(), HasSubstr("1048576"));

  auto stats = client->Stats("t");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(TotalStats(*stats)[0].rows(), 0u);
  EXPECT_EQ(TotalStats(*stats)[0].pushes(), 0u);
}

// PsClient splits what a shard would refuse: by keys (4x the shard's
// limit) and by bytes (rows of 2 KiB under a 1 MiB message limit, before
// and after it has learned the table's dim).
TEST(ShardLimitsTest, ClientSplitsCallsToFitTheShardsLimits) {
  auto shard = StartShard({"--max_keys_per_request=1000", "--max_message_mb=1"});
  ASSERT_NE(shard, nullptr);
  PsClient::Options options;
  options.max_keys_per_rpc = 1000;
  options.max_message_bytes = 1 << 20;
  auto client = Client(*shard, options);
  ASSERT_TRUE(client->CreateTable(IdTable("small", 8), false).ok());
  ASSERT_TRUE(client->CreateTable(IdTable("wide", 512), false).ok());

  const std::vector<uint64_t> keys = Keys(4000);
  for (const char* table : {"small", "wide"}) {
    const uint32_t dim = std::string(table) == "small" ? 8 : 512;
    SCOPED_TRACE(table);
    auto first = client->Pull(table, keys);  // dim not known yet
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ(first->values.size(), keys.size() * dim);
    auto pushed =
        client->Push(table, keys, std::vector<float>(keys.size() * dim, 0.0f));
    ASSERT_TRUE(pushed.ok()) << pushed.status();
    EXPECT_EQ(*pushed, keys.size());
    auto again = client->Pull(table, keys);  // dim known
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->values, first->values);  // SGD, zero gradients
    auto rows = client->GetRows(table, keys);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->values, first->values);
    EXPECT_TRUE(rows->missing.empty());
    auto stats = client->Stats(table);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(TotalStats(*stats)[0].rows(), keys.size());
    EXPECT_EQ(TotalStats(*stats)[0].pulls(), 2 * keys.size());
  }
}

// A client and a shard with default settings: a pull of 4x the keys a
// shard takes per request succeeds by splitting.
TEST(ShardLimitsTest, DefaultClientNeverMeetsDefaultShardLimits) {
  auto shard = StartShard({});
  ASSERT_NE(shard, nullptr);
  auto client = Client(*shard);
  ASSERT_TRUE(client->CreateTable(IdTable("t", 8), false).ok());
  const std::vector<uint64_t> keys = Keys(4 * kDefaultMaxKeysPerRequest);
  auto pulled = client->Pull("t", keys);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values.size(), keys.size() * 8);
  auto pushed =
      client->Push("t", keys, std::vector<float>(keys.size() * 8, 0.0f));
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(*pushed, keys.size());
}

// A Restore of 200k rows with 300 pulls sent right behind it on the same
// connection, to a shard with 4 threads: every pull is answered OK (reads
// do not wait for a restore, and calls beyond the threads wait in the
// queue; the sync server answered 238 of 300 "Server Threadpool
// Exhausted"), and so is the restore.
TEST(ShardThreadsTest, PullsDuringARestoreAllSucceed) {
  auto shard = StartShard({"--threads=4"});
  ASSERT_NE(shard, nullptr);
  auto client = Client(*shard);
  ASSERT_TRUE(client->CreateTable(IdTable("t", 64), false).ok());
  constexpr size_t kRows = 200000;
  for (size_t first = 0; first < kRows; first += 20000) {
    const std::vector<uint64_t> keys = Keys(20000, first);
    ASSERT_TRUE(
        client->Push("t", keys, std::vector<float>(keys.size() * 64, 0.5f))
            .ok());
  }
  ASSERT_TRUE(client->Checkpoint("big").ok());

  auto stub = RawStub(*shard);
  grpc::CompletionQueue cq;
  const auto deadline =
      absl::ToChronoTime(absl::Now() + absl::Seconds(120));
  RestoreRequest restore_request;
  restore_request.set_name("big");
  RestoreResponse restore_response;
  grpc::Status restore_status;
  grpc::ClientContext restore_context;
  restore_context.set_deadline(deadline);
  auto restore = stub->AsyncRestore(&restore_context, restore_request, &cq);
  restore->Finish(&restore_response, &restore_status, nullptr);

  constexpr int kPulls = 300;
  std::vector<PullRequest> requests(kPulls);
  std::vector<PullResponse> responses(kPulls);
  std::vector<grpc::Status> status(kPulls);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<PullResponse>>>
      readers;
  for (int i = 0; i < kPulls; ++i) {
    requests[i].set_table("t");
    for (uint64_t k : Keys(100, 1 + 500 * static_cast<uint64_t>(i))) {
      requests[i].add_keys(k);
    }
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(deadline);
    readers.push_back(stub->AsyncPull(contexts.back().get(), requests[i], &cq));
    readers.back()->Finish(&responses[i], &status[i],
                           reinterpret_cast<void*>(uintptr_t{1} + i));
  }
  int pulls_before_restore = 0;
  bool restore_done = false;
  for (int done = 0; done < kPulls + 1; ++done) {
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    if (tag == nullptr) {
      restore_done = true;
    } else if (!restore_done) {
      ++pulls_before_restore;
    }
  }
  cq.Shutdown();
  std::cout << pulls_before_restore << " of " << kPulls
            << " pulls were answered before the restore\n";
  EXPECT_TRUE(restore_status.ok()) << restore_status.error_message();
  EXPECT_EQ(restore_response.rows(), kRows);
  int failed = 0;
  for (int i = 0; i < kPulls; ++i) {
    if (status[i].ok()) {
      EXPECT_EQ(responses[i].values().size(), 100u * 64 * sizeof(float));
      continue;
    }
    if (++failed <= 3) {
      ADD_FAILURE() << "pull " << i << ": " << status[i].error_code() << " "
                    << status[i].error_message();
    }
  }
  EXPECT_EQ(failed, 0);
}

// --keep_checkpoints: each checkpoint deletes the oldest beyond N, files
// and all; DeleteCheckpoint (ps_admin delete-checkpoint) deletes one on
// every shard that has it.
TEST(ShardCheckpointsTest, RetentionAndDeleteCheckpoint) {
  auto shards = ShardProcess::StartCluster(TestDir(), 2,
                                           {"--keep_checkpoints=2"});
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrJoin(ShardProcess::Addresses(*shards), ",");
  auto client = PsClient::Create(ShardProcess::Addresses(*shards));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CreateTable(IdTable("t", 4), false).ok());
  ASSERT_TRUE(
      (*client)->Push("t", Keys(10), std::vector<float>(40, 1.0f)).ok());
  std::vector<std::vector<std::string>> deleted;
  for (const char* name : {"c", "b", "a"}) {
    auto made = (*client)->Checkpoint(name);
    ASSERT_TRUE(made.ok()) << made.status();
    for (const auto& shard : *made) {
      deleted.push_back({shard.checkpoint.deleted().begin(),
                         shard.checkpoint.deleted().end()});
    }
  }
  EXPECT_EQ(deleted, (std::vector<std::vector<std::string>>{
                         {}, {}, {}, {}, {"c"}, {"c"}}));
  auto lists = (*client)->ListCheckpoints();
  ASSERT_TRUE(lists.ok()) << lists.status();
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ((*lists)[s].list.checkpoints_size(), 2);
    EXPECT_EQ((*lists)[s].list.checkpoints(0).name(), "b");
    EXPECT_EQ((*lists)[s].list.checkpoints(1).name(), "a");
    EXPECT_FALSE(std::filesystem::exists(
        absl::StrCat(TestDir(), "/shard", s, "/checkpoints/c")));
  }

  // Shard 1 loses "b" first: the delete takes it where it is.
  DeleteCheckpointRequest request;
  request.set_name("b");
  DeleteCheckpointResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(RawStub(*(*shards)[1])
                  ->DeleteCheckpoint(&context, request, &response)
                  .ok());
  EXPECT_TRUE(response.deleted());
  auto run = RunCommand({Runfile("tools/ps_admin"), "--ps=" + ps,
                         "delete-checkpoint", "b"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->err;
  EXPECT_THAT(run->out, HasSubstr(absl::StrCat("shard 0 (",
                                               (*shards)[0]->address(),
                                               "): deleted b")));
  EXPECT_THAT(run->out, HasSubstr(absl::StrCat("shard 1 (",
                                               (*shards)[1]->address(),
                                               "): had no b")));
  run = RunCommand({Runfile("tools/ps_admin"), "--ps=" + ps,
                    "delete-checkpoint", "b"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_THAT(run->err, HasSubstr("no shard has checkpoint 'b'"));
  EXPECT_THAT(run->err, HasSubstr("has [a]"));
  lists = (*client)->ListCheckpoints();
  ASSERT_TRUE(lists.ok()) << lists.status();
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ((*lists)[s].list.checkpoints_size(), 1) << s;
    EXPECT_EQ((*lists)[s].list.checkpoints(0).name(), "a");
  }
  // The newest left still restores.
  auto restored = (*client)->Restore("");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)[0].restore.name(), "a");
}

// A shard with --auth_tokens (a read and an admin token) and a client of
// each role.
struct TokenShard {
  std::unique_ptr<ShardProcess> shard;
  std::unique_ptr<PsClient> admin, reader;
};
TokenShard StartTokenShard() {
  const std::string tokens = TestDir() + "-tokens";
  {
    std::ofstream out(tokens);
    out << "read read-token-0123456789abcdef\n"
        << "admin admin-token-0123456789abcdef\n";
  }
  EXPECT_EQ(chmod(tokens.c_str(), 0600), 0);
  TokenShard t;
  t.shard = StartShard({"--auth_tokens=" + tokens});
  if (t.shard == nullptr) return t;
  PsClient::Options admin_options, read_options;
  admin_options.auth_token = "admin-token-0123456789abcdef";
  read_options.auth_token = "read-token-0123456789abcdef";
  t.admin = Client(*t.shard, admin_options);
  t.reader = Client(*t.shard, read_options);
  return t;
}

// DeleteCheckpoint needs the admin role; a read token changes nothing.
TEST(ShardCheckpointsTest, DeleteCheckpointNeedsAnAdminToken) {
  TokenShard t = StartTokenShard();
  ASSERT_NE(t.shard, nullptr);
  PsClient* admin = t.admin.get();
  PsClient* reader = t.reader.get();
  ASSERT_TRUE(admin->Checkpoint("c1").ok());
  auto refused = reader->DeleteCheckpoint("c1");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("DeleteCheckpoint"));
  auto lists = reader->ListCheckpoints();
  ASSERT_TRUE(lists.ok()) << lists.status();
  EXPECT_EQ((*lists)[0].list.checkpoints_size(), 1);
  auto deleted = admin->DeleteCheckpoint("c1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_TRUE((*deleted)[0].deleted.deleted());
}

// ps_admin drop-table on a cluster of two real shards: without --yes it
// only says what it would drop; with it the table goes on every shard while
// another client pulls it (each pull OK or NOT_FOUND, nothing else), the
// other table is untouched, the drop holds through kill -9 and a restart,
// the name can be created again with another dim (a client that knew the
// old dim pulls the new one), and a checkpoint taken before brings the old
// table back bit for bit.
TEST(ShardDropTableTest, DropTableOnEveryShardSurvivesKillAndRestores) {
  auto shards = ShardProcess::StartCluster(TestDir(), 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::vector<std::string> addresses = ShardProcess::Addresses(*shards);
  const std::string ps = absl::StrJoin(addresses, ",");
  auto client = PsClient::Create(addresses);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CreateTable(IdTable("t", 4), false).ok());
  ASSERT_TRUE((*client)->CreateTable(IdTable("keep", 4), false).ok());
  std::vector<float> grads(400);
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = 0.001f * i;
  ASSERT_TRUE((*client)->Push("t", Keys(100), grads).ok());
  ASSERT_TRUE((*client)->Push("keep", Keys(100), grads).ok());
  auto t_before = (*client)->Pull("t", Keys(100));
  auto keep_before = (*client)->Pull("keep", Keys(100));
  ASSERT_TRUE(t_before.ok() && keep_before.ok());
  ASSERT_TRUE((*client)->Checkpoint("before").ok());

  auto run = RunCommand({Runfile("tools/ps_admin"), "--ps=" + ps, "--json",
                         "drop-table", "t"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->err;
  EXPECT_THAT(run->out, HasSubstr("\"dry_run\": true"));
  EXPECT_THAT(run->out, HasSubstr("\"has_table\": true"));
  EXPECT_THAT(run->out, HasSubstr("\"shards_with_table\": 2"));
  EXPECT_THAT(run->err,
              HasSubstr("would drop table 't' (100 rows on 2 of 2 shards"));
  EXPECT_THAT(run->err, HasSubstr("repeat with --yes"));
  ASSERT_TRUE((*client)->Pull("t", Keys(1)).ok());

  // Another client pulls the table while it is dropped.
  auto puller = PsClient::Create(addresses);
  ASSERT_TRUE(puller.ok()) << puller.status();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, not_found{0};
  std::vector<std::string> other;
  std::thread pulls([&] {
    while (!stop.load()) {
      auto got = (*puller)->Pull("t", Keys(100));
      if (got.ok()) {
        ++ok;
      } else if (got.status().code() == absl::StatusCode::kNotFound) {
        ++not_found;
      } else {
        other.push_back(got.status().ToString());
      }
    }
  });
  // Waits (up to a minute) for the pulls to have seen `count` grow.
  auto await = [](const std::atomic<int>& count) {
    for (int i = 0; i < 6000 && count.load() == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  };
  await(ok);
  run = RunCommand(
      {Runfile("tools/ps_admin"), "--ps=" + ps, "drop-table", "t", "--yes"});
  await(not_found);
  stop = true;
  pulls.join();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->err;
  EXPECT_THAT(run->out, HasSubstr(absl::StrCat("shard 0 (", addresses[0],
                                               "): dropped t (")));
  EXPECT_THAT(run->out, HasSubstr(absl::StrCat("shard 1 (", addresses[1],
                                               "): dropped t (")));
  EXPECT_GT(ok, 0);
  EXPECT_GT(not_found, 0);
  EXPECT_THAT(other, ::testing::IsEmpty());

  for (const bool yes : {true, false}) {
    std::vector<std::string> argv = {Runfile("tools/ps_admin"), "--ps=" + ps,
                                     "--json", "drop-table", "t"};
    if (yes) argv.push_back("--yes");
    run = RunCommand(argv);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 1) << yes;
    EXPECT_THAT(run->err, HasSubstr("no shard has table 't'; tables: keep"));
    EXPECT_THAT(run->out, HasSubstr("\"ok\": false"));
  }

  for (auto& shard : *shards) {
    shard->Kill(SIGKILL);
    ASSERT_TRUE(ShardProcess::Restart(&shard).ok());
  }
  auto tables = (*client)->ListTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 1u);
  EXPECT_EQ((*tables)[0].name(), "keep");
  auto keep_after = (*client)->Pull("keep", Keys(100));
  ASSERT_TRUE(keep_after.ok()) << keep_after.status();
  EXPECT_EQ(keep_after->values, keep_before->values);
  EXPECT_EQ((*client)->Pull("t", Keys(1)).status().code(),
            absl::StatusCode::kNotFound);

  // Created again, wider: the client that pulled dim 4 pulls dim 8.
  ASSERT_TRUE((*client)->CreateTable(IdTable("t", 8), false).ok());
  auto wider = (*puller)->Pull("t", Keys(2000));
  ASSERT_TRUE(wider.ok()) << wider.status();
  EXPECT_EQ(wider->dim, 8u);
  auto stats = (*client)->Stats("t");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(TotalStats(*stats)[0].rows(), 0u);

  auto restored = (*client)->Restore("before");
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto t_back = (*client)->Pull("t", Keys(100));
  ASSERT_TRUE(t_back.ok()) << t_back.status();
  EXPECT_EQ(t_back->dim, 4u);
  EXPECT_EQ(t_back->values, t_before->values);
}

// A drop whose answer is lost: the shard drops the table and answers
// late (--test_delay_first_drop_answer_ms), the client's deadline passes
// and it resends. The shard knows the request id: while the first attempt
// runs a resend is UNAVAILABLE (sent again), then it gets the first
// attempt's answer, dropped with the rows the table held, not NOT_FOUND,
// and a table created again meanwhile would not be dropped.
TEST(ShardDropTableTest, ADropWhoseAnswerWasLostIsReportedAsDropped) {
  auto shard = StartShard({"--test_delay_first_drop_answer_ms=6000"});
  ASSERT_NE(shard, nullptr);
  PsClient::Options options;
  options.max_attempts = 3;
  auto client = Client(*shard, options);
  ASSERT_TRUE(client->CreateTable(IdTable("t", 4), false).ok());
  ASSERT_TRUE(client->Push("t", Keys(7), std::vector<float>(28, 1.0f)).ok());
  std::atomic<int> resends{0};
  auto impatient = PsClient::Create({shard->address()}, [&] {
    PsClient::Options o;
    o.timeout = absl::Seconds(2);
    o.max_attempts = 20;
    o.initial_backoff = absl::Milliseconds(500);
    o.max_backoff = absl::Seconds(1);
    o.on_retry = [&](const absl::Status& error, int) {
      if (absl::StrContains(error.message(), "is still running here")) {
        ++resends;
      }
    };
    return o;
  }());
  ASSERT_TRUE(impatient.ok()) << impatient.status();
  auto dropped = (*impatient)->DropTable("t");
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_TRUE((*dropped)[0].drop.dropped());
  EXPECT_FALSE((*dropped)[0].answer_lost);  // the shard's own answer
  EXPECT_EQ((*dropped)[0].drop.rows(), 7u);
  EXPECT_GT(resends.load(), 0);
  EXPECT_EQ(client->Stats("t").status().code(), absl::StatusCode::kNotFound);
  // Dropped for good: a drop now is NOT_FOUND naming what there is.
  ASSERT_TRUE(client->CreateTable(IdTable("other", 4), false).ok());
  auto again = (*impatient)->DropTable("t");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(again.status().message()),
              HasSubstr("no shard has table 't'; tables: other"));
}

// DropTable needs the admin role; a read token changes nothing.
TEST(ShardDropTableTest, DropTableNeedsAnAdminToken) {
  TokenShard t = StartTokenShard();
  ASSERT_NE(t.shard, nullptr);
  PsClient* admin = t.admin.get();
  PsClient* reader = t.reader.get();
  ASSERT_TRUE(admin->CreateTable(IdTable("t", 4), false).ok());
  ASSERT_TRUE(admin->Push("t", Keys(3), std::vector<float>(12, 1.0f)).ok());
  auto refused = reader->DropTable("t");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("DropTable"));
  auto stats = reader->Stats("t");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(TotalStats(*stats)[0].rows(), 3u);
  auto dropped = admin->DropTable("t");
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_TRUE((*dropped)[0].drop.dropped());
  EXPECT_EQ((*dropped)[0].drop.rows(), 3u);
}

// --max_connection_idle_ms: the shard closes a connection that has had no
// call for that long (GOAWAY: the client's channel goes idle), and the next
// call reconnects.
TEST(ShardConnectionsTest, IdleConnectionIsClosedAfterTheIdleLimit) {
  auto shard = StartShard({"--max_connection_idle_ms=300"});
  ASSERT_NE(shard, nullptr);
  auto channel = grpc::CreateChannel(shard->address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = ParameterServer::NewStub(channel);
  ListTablesResponse tables;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->ListTables(&context, ListTablesRequest(), &tables).ok());
  }
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  ASSERT_TRUE(channel->WaitForStateChange(
      GRPC_CHANNEL_READY,
      absl::ToChronoTime(absl::Now() + absl::Seconds(60))))
      << "the shard kept the idle connection open";
  EXPECT_EQ(channel->GetState(false), GRPC_CHANNEL_IDLE);
  grpc::ClientContext context;
  EXPECT_TRUE(stub->ListTables(&context, ListTablesRequest(), &tables).ok());
}

TEST(ShardLimitsTest, BadLimitFlagsStopTheShardNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--max_message_mb=0", "--max_message_mb must be in [1, 1024], got 0"},
      {"--max_message_mb=2048", "--max_message_mb must be in [1, 1024]"},
      {"--max_inflight_mb=-1", "--max_inflight_mb must be in"},
      {"--grpc_memory_mb=100", "--grpc_memory_mb must be at least twice"},
      {"--keepalive_timeout_ms=0",
       "--keepalive_timeout_ms must be in [1, 2147483647] ms, got 0"},
      {"--max_connection_idle_ms=-5",
       "--max_connection_idle_ms must be in [0, 2147483647] ms, got -5"},
      {"--memtable_mb=0", "--memtable_mb=0: expected 1 to 65536"},
      {"--memtable_mb=70000", "--memtable_mb=70000: expected 1 to 65536"},
  };
  for (const auto& [flag, message] : cases) {
    auto result = RunCommand({Runfile("ps/server"), "--data_dir=" + TestDir(),
                              "--port=0", flag});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 2) << flag;
    EXPECT_THAT(result->err, HasSubstr(message)) << flag;
  }
}

}  // namespace
}  // namespace mim::ps
