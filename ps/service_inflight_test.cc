// The shard's memory budget (--max_inflight_mb) counts calls waiting for a
// thread (AdmitQueued, what ShardCallbackService reserves for a parsed
// request) together with the calls in progress, and a Push reserves
// kWriteMemoryFactor times its request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
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


// One gRPC call made by hand over HTTP/2 on a plain socket, by a reader
// that never takes its answer: it tells the server a stream window of 0
// bytes (SETTINGS_INITIAL_WINDOW_SIZE), so not one byte of the answer may
// be sent to it, and gRPC keeps the whole answer until the call ends. The
// call ends when this is destroyed (the connection closes).
class StalledReader {
 public:
  // Calls `path` (e.g. "/mim.ps.ParameterServer/Pull") on 127.0.0.1:port
  // with `message` (a serialized request). Null, with a failure recorded,
  // if the connection or the handshake fails.
  static std::unique_ptr<StalledReader> Call(int port, const std::string& path,
                                             const std::string& message) {
    auto reader = std::unique_ptr<StalledReader>(new StalledReader);
    reader->fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout{30, 0};  // a hung handshake fails instead of hanging
    ::setsockopt(reader->fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout,
                 sizeof(timeout));
    if (reader->fd_ < 0 ||
        ::connect(reader->fd_, reinterpret_cast<sockaddr*>(&addr),
                  sizeof(addr)) != 0) {
      ADD_FAILURE() << "connect: " << std::strerror(errno);
      return nullptr;
    }
    std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 0.
    Frame(0x4, 0, 0, std::string("\x00\x04\x00\x00\x00\x00", 6), &out);
    if (!reader->Send(out) || !reader->AckServerSettings()) return nullptr;
    // HEADERS (END_HEADERS), each a literal without indexing (HPACK 6.2.2).
    std::string block;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{
             {":method", "POST"},
             {":scheme", "http"},
             {":path", path},
             {":authority", absl::StrCat("127.0.0.1:", port)},
             {"content-type", "application/grpc"},
             {"te", "trailers"}}) {
      block += '\0';
      block += static_cast<char>(name.size());  // all below 127
      block += name;
      block += static_cast<char>(value.size());
      block += value;
    }
    out.clear();
    Frame(0x1, 0x4, 1, block, &out);
    // The gRPC message (not compressed, 4-byte length) in DATA frames of
    // at most 16 KiB (HTTP/2's default frame size), END_STREAM on the last.
    std::string body(1, '\0');
    for (int shift = 24; shift >= 0; shift -= 8) {
      body += static_cast<char>((message.size() >> shift) & 0xff);
    }
    body += message;
    for (size_t at = 0; at < body.size(); at += 16384) {
      const bool last = at + 16384 >= body.size();
      Frame(0x0, last ? 0x1 : 0x0, 1, body.substr(at, 16384), &out);
    }
    if (!reader->Send(out)) return nullptr;
    return reader;
  }

  ~StalledReader() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  StalledReader() = default;

  static void Frame(uint8_t type, uint8_t flags, uint32_t stream,
                    const std::string& payload, std::string* out) {
    const size_t n = payload.size();
    *out += static_cast<char>((n >> 16) & 0xff);
    *out += static_cast<char>((n >> 8) & 0xff);
    *out += static_cast<char>(n & 0xff);
    *out += static_cast<char>(type);
    *out += static_cast<char>(flags);
    for (int shift = 24; shift >= 0; shift -= 8) {
      *out += static_cast<char>((stream >> shift) & 0xff);
    }
    *out += payload;
  }

  bool Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done,
                               MSG_NOSIGNAL);
      if (n <= 0) {
        ADD_FAILURE() << "send: " << std::strerror(errno);
        return false;
      }
      done += static_cast<size_t>(n);
    }
    return true;
  }

  bool Read(size_t n, std::string* bytes) {
    bytes->resize(n);
    size_t done = 0;
    while (done < n) {
      const ssize_t got = ::recv(fd_, bytes->data() + done, n - done, 0);
      if (got <= 0) {
        ADD_FAILURE() << "recv: "
                      << (got == 0 ? "closed" : std::strerror(errno));
        return false;
      }
      done += static_cast<size_t>(got);
    }
    return true;
  }

  // Reads frames up to the server's SETTINGS and acknowledges it.
  bool AckServerSettings() {
    for (;;) {
      std::string header;
      if (!Read(9, &header)) return false;
      const size_t length = (size_t{static_cast<uint8_t>(header[0])} << 16) |
                            (size_t{static_cast<uint8_t>(header[1])} << 8) |
                            static_cast<uint8_t>(header[2]);
      std::string payload;
      if (!Read(length, &payload)) return false;
      if (header[3] == 0x4 && (header[4] & 0x1) == 0) {
        std::string ack;
        Frame(0x4, 0x1, 0, "", &ack);
        return Send(ack);
      }
    }
  }

  int fd_ = -1;
};

// A Pull's answer counts against --max_inflight_mb until gRPC is done with
// the call, not only while the handler runs: a reader that does not take
// its 0.6 MiB answer keeps it counted, so a second such Pull finds the 1
// MiB budget full and is refused, and once the stalled call ends (its
// connection closes) the second one runs. Both on the executor and inline
// on gRPC's thread (the parameter: inline_pull_keys).
class PullLeaseTest : public ::testing::TestWithParam<size_t> {};

TEST_P(PullLeaseTest, AnswerNotTakenStillCounts) {
  embedding::EmbeddingStore::Options store_options;
  store_options.data_dir = absl::StrCat(std::getenv("TEST_TMPDIR"),
                                        "/pull_lease_", GetParam());
  auto store = embedding::EmbeddingStore::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto metrics = base::Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ParameterServerService::Options service_options;
  service_options.max_inflight_bytes = kMiB;
  service_options.metrics = metrics->get();
  ParameterServerService service(store->get(), service_options);
  base::Executor executor(/*threads=*/2, /*max_queue=*/8, "shard 0/1");
  ShardCallbackService callback(&service, &executor,
                                /*inline_pull_keys=*/GetParam());
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartOnLoopback(&callback, &port);
  ASSERT_NE(server, nullptr);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  PsClient::Options once;
  once.max_attempts = 1;
  once.pull_keys_per_call = 0;  // one call per Pull
  auto client = PsClient::Create({address}, once);
  ASSERT_TRUE(client.ok());
  TableConfig config;
  config.set_name("t");
  config.set_kind(ID);
  config.set_dim(kDim);
  config.mutable_optimizer()->set_name("sgd");
  config.mutable_initializer()->set_name("zeros");
  ASSERT_TRUE((*client)->CreateTable(config, /*if_not_exists=*/false).ok());

  // 2400 rows of 256 bytes: 0.59 MiB of answer (rows not yet pushed read
  // as their initial value).
  PullRequest request;
  request.set_table("t");
  std::vector<uint64_t> keys;
  for (uint64_t k = 1; k <= 2400; ++k) {
    request.add_keys(k);
    keys.push_back(k);
  }
  std::unique_ptr<StalledReader> stalled = StalledReader::Call(
      port, "/mim.ps.ParameterServer/Pull", request.SerializeAsString());
  ASSERT_NE(stalled, nullptr);
  // Until its handler has run (the metrics count a call when it ends).
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while ((*metrics)->Scrape().find(
             "mim_ps_requests_total{method=\"Pull\"} 1") ==
         std::string::npos) {
    ASSERT_LT(absl::Now(), give_up) << "the stalled Pull was never handled";
    absl::SleepFor(absl::Milliseconds(5));
  }
  const absl::Status refused = (*client)->Pull("t", keys).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted)
      << "a second 0.6 MiB Pull ran while the first one's answer was "
         "still held: "
      << refused;
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("calls waiting or in progress hold 0.6 MiB"));

  stalled.reset();  // the connection closes, the call ends
  PsClient::Options patient = once;
  patient.max_attempts = std::numeric_limits<int>::max();
  patient.retry_budget = absl::Seconds(60);
  patient.max_backoff = absl::Milliseconds(20);
  auto waiting = PsClient::Create({address}, patient);
  ASSERT_TRUE(waiting.ok());
  absl::StatusOr<PsClient::PullResult> pulled = (*waiting)->Pull("t", keys);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, std::vector<float>(keys.size() * kDim, 0.0f));
  // An answer taken is released too (each of these needs the other's
  // lease gone, within the retry budget).
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<PsClient::PullResult> next = (*waiting)->Pull("t", keys);
    ASSERT_TRUE(next.ok()) << next.status();
  }
  server->Shutdown();
}

INSTANTIATE_TEST_SUITE_P(QueuedAndInline, PullLeaseTest,
                         ::testing::Values(size_t{0}, size_t{4096}));

}  // namespace
}  // namespace mim::ps
