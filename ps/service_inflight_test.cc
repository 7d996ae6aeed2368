// The shard's memory budget (--max_inflight_mb) counts calls waiting for a
// thread (AdmitQueued, what ShardCallbackService reserves for a parsed
// request) together with the calls in progress, and a Push reserves
// kWriteMemoryFactor times its request.
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "embedding/embedding_store.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/ps.grpc.pb.h"
#include "base/executor.h"
#include "base/grpc_auth.h"
#include "base/metrics.h"
#include "ps/callback_service.h"
#include "ps/client.h"
#include "ps/limits.h"
#include "ps/service.h"
#include "ps/status_convert.h"

namespace mim::ps {
namespace {

using ::testing::HasSubstr;

constexpr size_t kMiB = size_t{1} << 20;
constexpr uint32_t kDim = 64;
constexpr float kLearningRate = 0.5f;

// A callback server on a free loopback port (*port), serving `callback`.
std::unique_ptr<grpc::Server> StartOnLoopback(ShardCallbackService* callback,
                                              int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           port);
  builder.RegisterService(callback);
  return builder.BuildAndStart();
}

// Occupies a 1-thread, 1-place executor until `release` is notified: its
// thread runs a task (started when this returns) and its queue holds one.
void Saturate(base::Executor* executor, absl::Notification* release) {
  absl::Notification running;
  ASSERT_TRUE(executor
                  ->Submit(absl::InfiniteFuture(),
                           [release, &running](const absl::Status&) {
                             running.Notify();
                             release->WaitForNotification();
                           })
                  .ok());
  running.WaitForNotification();
  ASSERT_TRUE(executor
                  ->Submit(absl::InfiniteFuture(),
                           [release](const absl::Status&) {
                             release->WaitForNotification();
                           })
                  .ok());
}

class InflightTest : public ::testing::Test {
 protected:
  // The data dir the service hides from error messages.
  virtual std::string ServiceDataDir() const { return ""; }
  void SetUp() override {
    embedding::EmbeddingStore::Options options;
    options.data_dir = absl::StrCat(
        std::getenv("TEST_TMPDIR"), "/",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto store = embedding::EmbeddingStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ParameterServerService::Options service_options;
    service_options.max_inflight_bytes = kMiB;
    service_options.data_dir = ServiceDataDir();
    service_ = std::make_unique<ParameterServerService>(store_.get(),
                                                        service_options);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
    stub_ = ParameterServer::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));

    CreateTableRequest create;
    create.mutable_config()->set_name("t");
    create.mutable_config()->set_kind(ID);
    create.mutable_config()->set_dim(kDim);
    create.mutable_config()->mutable_optimizer()->set_name("sgd");
    create.mutable_config()->mutable_optimizer()->set_learning_rate(
        kLearningRate);
    create.mutable_config()->mutable_initializer()->set_name("zeros");
    CreateTableResponse created;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->CreateTable(&context, create, &created).ok());
  }

  void TearDown() override { server_->Shutdown(); }

  // A push of `keys` rows (keys 1..keys, gradient 1) to `table`.
  grpc::Status Push(size_t keys, PushResponse* response,
                    const std::string& table = "t") {
    PushRequest push;
    push.set_table(table);
    for (size_t k = 1; k <= keys; ++k) push.add_keys(k);
    std::vector<float> gradients(keys * kDim, 1.0f);
    push.set_gradients(gradients.data(), gradients.size() * sizeof(float));
    grpc::ClientContext context;
    return stub_->Push(&context, push, response);
  }

  uint64_t Rows() {
    TableStatsRequest request;
    request.set_table("t");
    TableStatsResponse stats;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->TableStats(&context, request, &stats).ok());
    return stats.tables_size() == 1 ? stats.tables(0).rows() : 0;
  }

  std::unique_ptr<embedding::EmbeddingStore> store_;
  std::unique_ptr<ParameterServerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<ParameterServer::Stub> stub_;
};

TEST_F(InflightTest, WaitingRequestsCountAgainstTheBudget) {
  // A 600 KiB request waiting for a thread.
  std::optional<ParameterServerService::InflightLease> waiting;
  {
    auto admitted = service_->AdmitQueued("PushRequest", 600 * 1024);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    waiting.emplace(std::move(*admitted));
  }

  // 1000 rows of 64 floats: a 264 KB request reserving 4x that, capped at
  // half the budget (0.5 MiB), which does not fit beside the waiting one.
  PushResponse response;
  grpc::Status s = Push(1000, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(),
              HasSubstr("calls waiting or in progress hold 0.6 MiB"));
  EXPECT_THAT(s.error_message(), HasSubstr("this Push needs 0.5 MiB more"));
  EXPECT_THAT(s.error_message(), HasSubstr("(--max_inflight_mb)"));
  EXPECT_EQ(Rows(), 0u);  // nothing applied

  // Another request arriving while the first waits does not fit either.
  auto second = service_->AdmitQueued("PullRequest", 500 * 1024);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(),
              HasSubstr("this PullRequest needs 0.5 MiB more"));

  // A small push fits beside it: 100 rows reserve 4 x 26 KB.
  ASSERT_TRUE(Push(100, &response).ok());
  EXPECT_EQ(response.rows_updated(), 100u);

  // Once the waiting call has started (its lease dropped), the large push
  // runs: a call alone is admitted whatever its size.
  waiting.reset();
  ASSERT_TRUE(Push(1000, &response).ok());
  EXPECT_EQ(response.rows_updated(), 1000u);
  EXPECT_EQ(Rows(), 1000u);
}

// The busy refusal is marked "retry later" on the wire, and PsClient sends
// the call again (with backoff) rather than failing its caller: the push is
// applied once, when room is made.
// A push to a table whose optimizer keeps state reserves for the state its
// rows are written with: with Adam (2 x dim state floats) 1 + 3 x 3 = 10
// times the request, where SGD reserves 4 times.
TEST_F(InflightTest, AdamPushesReserveForTheirState) {
  {
    CreateTableRequest create;
    create.mutable_config()->set_name("adam");
    create.mutable_config()->set_kind(ID);
    create.mutable_config()->set_dim(kDim);
    create.mutable_config()->mutable_optimizer()->set_name("adam");
    create.mutable_config()->mutable_optimizer()->set_learning_rate(0.01f);
    create.mutable_config()->mutable_initializer()->set_name("zeros");
    CreateTableResponse created;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->CreateTable(&context, create, &created).ok());
  }
  // 0.8 MiB of the 1 MiB budget held by a call waiting for a thread.
  std::optional<ParameterServerService::InflightLease> waiting;
  {
    auto admitted = service_->AdmitQueued("PushRequest", 819 * 1024);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    waiting.emplace(std::move(*admitted));
  }
  // 100 rows: a 26 KB request, 0.1 MiB for SGD (fits), 0.25 for Adam.
  PushResponse response;
  ASSERT_TRUE(Push(100, &response, "t").ok());
  const grpc::Status s = Push(100, &response, "adam");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("this Push needs 0.3 MiB more"));
  waiting.reset();
  ASSERT_TRUE(Push(100, &response, "adam").ok());
  EXPECT_EQ(response.rows_updated(), 100u);
}

TEST_F(InflightTest, PsClientRetriesABusyShardAndAppliesThePushOnce) {
  std::optional<ParameterServerService::InflightLease> waiting;
  {
    auto admitted = service_->AdmitQueued("PushRequest", 600 * 1024);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    waiting.emplace(std::move(*admitted));
  }
  const std::vector<uint64_t> keys = [] {
    std::vector<uint64_t> k(1000);
    for (size_t i = 0; i < k.size(); ++i) k[i] = i + 1;
    return k;
  }();
  const std::vector<float> gradients(keys.size() * kDim, 1.0f);

  // One attempt: the caller sees the refusal, marked retry-later, naming
  // the shard; nothing applied.
  PsClient::Options once;
  once.max_attempts = 1;
  auto single = PsClient::Create({address_}, once);
  ASSERT_TRUE(single.ok());
  const absl::Status refused =
      (*single)->Push("t", keys, gradients).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsRetryLater(refused)) << refused;
  EXPECT_FALSE(IsPushInDoubt(refused));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("shard 0/1 (" + address_ + "): shard 0/1 is busy"));
  EXPECT_EQ(Rows(), 0u);

  // With retries, the first refusal is reported to on_retry, which makes
  // room (the waiting call starts); the resend is applied.
  std::vector<std::string> retried;
  PsClient::Options options;
  options.initial_backoff = absl::Milliseconds(1);
  options.on_retry = [&](const absl::Status& error, int attempt) {
    retried.push_back(absl::StrCat(attempt, ": ", error.message()));
    waiting.reset();
  };
  auto client = PsClient::Create({address_}, options);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<uint64_t> pushed = (*client)->Push("t", keys, gradients);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(*pushed, 1000u);
  ASSERT_EQ(retried.size(), 1u);
  EXPECT_THAT(retried[0], HasSubstr("1: shard 0/1 ("));
  EXPECT_THAT(retried[0], HasSubstr("is busy"));
  EXPECT_EQ(Rows(), 1000u);
  // Applied once: one sgd step of gradient 1 from zeros.
  absl::StatusOr<PsClient::PullResult> rows = (*client)->Pull("t", {1, 1000});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->values.size(), 2 * kDim);
  for (const float v : rows->values) EXPECT_FLOAT_EQ(v, -kLearningRate);

  // A pull refused as busy is retried the same way.
  {
    auto admitted = service_->AdmitQueued("PushRequest", 1000 * 1024);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    waiting.emplace(std::move(*admitted));
  }
  retried.clear();
  absl::StatusOr<PsClient::PullResult> pulled = (*client)->Pull("t", keys);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(retried.size(), 1u);
  EXPECT_EQ(pulled->values.size(), keys.size() * kDim);
}

// The shard binary's callback server: a call that finds the executor's
// queue full ran nothing, so it is refused retry-later too, and PsClient
// sends it again.
// A data dir whose name is a word of the busy message ("shard"): the
// message is not rewritten around it, and the refusal stays marked
// retry-later (rewriting it used to drop the mark, so PsClient failed the
// push instead of waiting for room).
class WordDataDirTest : public InflightTest {
 protected:
  std::string ServiceDataDir() const override { return "shard"; }
};

TEST_F(WordDataDirTest, BusyRefusalKeepsItsMessageAndRetryLaterMark) {
  std::optional<ParameterServerService::InflightLease> waiting;
  auto admitted = service_->AdmitQueued("PushRequest", 600 * 1024);
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  waiting.emplace(std::move(*admitted));
  std::vector<uint64_t> distinct(1000);
  for (size_t i = 0; i < distinct.size(); ++i) distinct[i] = i + 1;
  PsClient::Options once;
  once.max_attempts = 1;
  auto single = PsClient::Create({address_}, once);
  ASSERT_TRUE(single.ok());
  const absl::Status refused =
      (*single)
          ->Push("t", distinct, std::vector<float>(distinct.size() * kDim, 1))
          .status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsRetryLater(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("shard 0/1 is busy"));
}

TEST_F(InflightTest, FullQueueIsRetryLaterAndPsClientResends) {
  // Declared before the executor: its tasks wait on them until it joins.
  absl::Notification release;
  base::Executor executor(/*threads=*/1, /*max_queue=*/1, "shard 0/1");
  ShardCallbackService callback(service_.get(), &executor);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartOnLoopback(&callback, &port);
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // The only thread busy (its task has started) and the one queue place
  // taken. Whatever happens below, the blocked tasks end before the
  // executor is destroyed.
  absl::Cleanup unblock = [&release] {
    if (!release.HasBeenNotified()) release.Notify();
  };
  Saturate(&executor, &release);
  PsClient::Options once;
  once.max_attempts = 1;
  auto single = PsClient::Create({address}, once);
  ASSERT_TRUE(single.ok());
  const absl::Status refused = (*single)->Pull("t", {1, 2}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(IsRetryLater(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("queue full"));

  int retries = 0;
  PsClient::Options options;
  options.initial_backoff = absl::Milliseconds(1);
  options.on_retry = [&](const absl::Status& error, int) {
    ++retries;
    EXPECT_THAT(std::string(error.message()), HasSubstr("queue full"));
    if (!release.HasBeenNotified()) release.Notify();
  };
  auto client = PsClient::Create({address}, options);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<PsClient::PullResult> pulled = (*client)->Pull("t", {1, 2});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values.size(), 2 * kDim);
  EXPECT_GE(retries, 1);
  server->Shutdown();
}

// With authentication on, a call without a valid token is refused before
// it takes a queue place or in-flight bytes: with the executor's thread
// busy and its queue full, an unauthenticated push is UNAUTHENTICATED, not
// a queue-full refusal (which an admin's push gets), so callers without a
// token cannot crowd out those with one.
TEST(EarlyAuthTest, NoTokenIsRefusedBeforeTheQueue) {
  constexpr char kAdmin[] = "admin-token-0123456789abcdefghijklmnop";
  auto authorizer = base::Authorizer::FromText(
      absl::StrCat("admin ", kAdmin, "\n"), "test tokens");
  ASSERT_TRUE(authorizer.ok()) << authorizer.status();
  embedding::EmbeddingStore::Options store_options;
  store_options.data_dir =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/early_auth");
  auto store = embedding::EmbeddingStore::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto metrics = base::Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ParameterServerService::Options service_options;
  service_options.authorizer = authorizer->get();
  service_options.metrics = metrics->get();
  ParameterServerService service(store->get(), service_options);
  absl::Notification release;
  base::Executor executor(/*threads=*/1, /*max_queue=*/1, "shard 0/1");
  ShardCallbackService callback(&service, &executor);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartOnLoopback(&callback, &port);
  ASSERT_NE(server, nullptr);
  absl::Cleanup unblock = [&release] {
    if (!release.HasBeenNotified()) release.Notify();
  };
  Saturate(&executor, &release);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  PsClient::Options once;
  once.max_attempts = 1;
  auto anonymous = PsClient::Create({address}, once);
  ASSERT_TRUE(anonymous.ok());
  const absl::Status refused =
      (*anonymous)->Push("t", {1}, std::vector<float>(kDim, 1.0f)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << refused;
  once.auth_token = kAdmin;
  auto admin = PsClient::Create({address}, once);
  ASSERT_TRUE(admin.ok());
  const absl::Status full =
      (*admin)->Push("t", {1}, std::vector<float>(kDim, 1.0f)).status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(std::string(full.message()), HasSubstr("queue full"));
  // Both refusals are in the shard's metrics, as a handler's are.
  const std::string scraped = (*metrics)->Scrape();
  EXPECT_THAT(scraped, HasSubstr("mim_ps_requests_total{method=\"Push\"} 2"));
  EXPECT_THAT(scraped,
              HasSubstr("mim_ps_request_errors_total{code=\"UNAUTHENTICATED\","
                        "method=\"Push\"} 1"));
  EXPECT_THAT(scraped, HasSubstr("mim_ps_request_errors_total{code=\""
                                 "RESOURCE_EXHAUSTED\",method=\"Push\"} 1"));
  release.Notify();
  server->Shutdown();
}

// With inline_pull_keys, a small Pull runs on gRPC's thread: it is answered
// while the executor is blocked and its queue full, with the rows a queued
// pull returns; a larger one still goes through the executor.
TEST_F(InflightTest, SmallPullsRunInlineWithTheSameRows) {
  absl::Notification release;
  base::Executor executor(/*threads=*/1, /*max_queue=*/1, "shard 0/1");
  ShardCallbackService callback(service_.get(), &executor,
                                /*inline_pull_keys=*/16);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartOnLoopback(&callback, &port);
  ASSERT_NE(server, nullptr);
  PsClient::Options once;
  once.max_attempts = 1;
  auto inline_client =
      PsClient::Create({absl::StrCat("127.0.0.1:", port)}, once);
  ASSERT_TRUE(inline_client.ok());
  auto queued_client = PsClient::Create({address_}, once);  // sync server
  ASSERT_TRUE(queued_client.ok());

  PushResponse pushed;
  ASSERT_TRUE(Push(40, &pushed).ok());  // keys 1..40, rows -0.5 each
  std::vector<uint64_t> small = {3, 1, 2, 40, 39};
  absl::StatusOr<PsClient::PullResult> expected =
      (*queued_client)->Pull("t", small);
  ASSERT_TRUE(expected.ok()) << expected.status();

  absl::Cleanup unblock = [&release] {
    if (!release.HasBeenNotified()) release.Notify();
  };
  Saturate(&executor, &release);

  absl::StatusOr<PsClient::PullResult> got =
      (*inline_client)->Pull("t", small);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->values, expected->values);
  std::vector<uint64_t> large(40);
  for (size_t i = 0; i < large.size(); ++i) large[i] = i + 1;
  const absl::Status refused = (*inline_client)->Pull("t", large).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("queue full"));
  release.Notify();
  // Until the blocked tasks are done: a task queued after them has run
  // (one thread, first in first out). Its Submit is refused while the
  // queue is still full.
  absl::Notification drained;
  while (!executor
              .Submit(absl::InfiniteFuture(),
                      [&drained](const absl::Status&) { drained.Notify(); })
              .ok()) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  drained.WaitForNotification();
  absl::StatusOr<PsClient::PullResult> all =
      (*inline_client)->Pull("t", large);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->values, std::vector<float>(40 * kDim, -kLearningRate));
  server->Shutdown();
}

}  // namespace
}  // namespace mim::ps
