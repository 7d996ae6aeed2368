// Exactly-once pushes and hung shards, with a real shard (the //ps:server
// binary on loopback): a shard that dies between applying a push and
// answering it (--test_crash_after_apply_before_ack) applies the client's
// resend zero more times; a shard stopped with SIGSTOP is asked again until
// it answers, and named when it does not.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "embedding/sharding.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/ps.grpc.pb.h"
#include "ps/client.h"
#include "tests/process.h"
#include "worker/csft/csft_workers.h"

namespace mim::ps {
namespace {

using ::mim::testing::ShardProcess;
using ::testing::HasSubstr;

// SGD with learning rate 1 from zeros: a row is minus the sum of the
// gradients applied to it, and its update_count says how many pushes.
TableConfig SgdTable() {
  TableConfig c;
  c.set_name("t");
  c.set_kind(ID);
  c.set_dim(2);
  c.mutable_optimizer()->set_name("sgd");
  c.mutable_optimizer()->set_learning_rate(1.0f);
  c.mutable_initializer()->set_name("zeros");
  return c;
}

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
}

std::unique_ptr<ShardProcess> StartShard(const std::string& data_dir,
                                         int port,
                                         std::vector<std::string> extra) {
  ShardProcess::Flags f;
  f.data_dir = data_dir;
  f.port = port;
  f.extra = std::move(extra);
  auto shard = ShardProcess::Start(f);
  EXPECT_TRUE(shard.ok()) << shard.status();
  return shard.ok() ? *std::move(shard) : nullptr;
}

// A client that rides through a shard's restart or hang for up to 60 s,
// calling `on_retry` (when set) before each retry.
std::unique_ptr<PsClient> PatientClient(
    const std::string& address, absl::Duration timeout,
    std::function<void(const absl::Status&, int)> on_retry = nullptr) {
  PsClient::Options o;
  o.timeout = timeout;
  o.max_attempts = std::numeric_limits<int>::max();
  o.retry_budget = absl::Seconds(60);
  o.initial_backoff = absl::Milliseconds(20);
  o.max_backoff = absl::Milliseconds(200);
  o.on_retry = std::move(on_retry);
  auto client = PsClient::Create({address}, o);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// The shard aborts right after the push's WriteBatch is committed, before
// it answers. The client's resend reaches the restarted shard, which knows
// (durably) that it applied that push: acknowledged, applied once.
TEST(ExactlyOncePushTest, KilledBetweenApplyAndAckTheResendIsNotApplied) {
  const std::string dir = TestDir() + "/shard";
  auto shard = StartShard(dir, 0, {"--test_crash_after_apply_before_ack=2"});
  ASSERT_NE(shard, nullptr);
  const int port = shard->port();
  auto client = PatientClient(shard->address(), absl::Seconds(10));
  ASSERT_TRUE(client->CreateTable(SgdTable(), false).ok());
  ASSERT_TRUE(client->Push("t", {7}, {1.0f, 1.0f}).ok());  // push 1: fine

  absl::StatusOr<uint64_t> pushed;
  std::thread pusher(
      [&] { pushed = client->Push("t", {7, 8}, {10.0f, 20.0f, 1.0f, 2.0f}); });
  const int status = shard->Wait();  // push 2 applied, then abort()
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)
      << "wait status " << status;
  shard = StartShard(dir, port, {});
  ASSERT_NE(shard, nullptr);
  pusher.join();
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(*pushed, 2u);

  auto rows = client->GetRows("t", {7, 8});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{-11.0f, -21.0f, -1.0f, -2.0f}));
  EXPECT_EQ(rows->meta[0].update_count(), 2u);
  EXPECT_EQ(rows->meta[1].update_count(), 1u);

  // The same tag sent by hand: acknowledged as a duplicate, not applied;
  // a new sequence is applied.
  auto stub = ParameterServer::NewStub(grpc::CreateChannel(
      shard->address(), grpc::InsecureChannelCredentials()));
  PushRequest request;
  request.set_table("t");
  request.add_keys(9);
  request.mutable_gradients()->assign(2 * sizeof(float), '\0');
  reinterpret_cast<float*>(request.mutable_gradients()->data())[0] = 5.0f;
  request.set_client_id(0x5eed);
  request.set_sequence(1);
  for (const bool duplicate : {false, true, true}) {
    PushResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Push(&context, request, &response).ok());
    EXPECT_EQ(response.duplicate(), duplicate);
    EXPECT_EQ(response.rows_updated(), 1u);
  }
  rows = client->GetRows("t", {9});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{-5.0f, 0.0f}));
  EXPECT_EQ(rows->meta[0].update_count(), 1u);
}

// Stops the shard (a child of this process) and returns once it is stopped:
// kill() only queues the signal, and a call sent before the shard stops
// would be answered.
void StopShard(pid_t pid) {
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << "wait status " << status;
}

// Sends SIGCONT to the shard when it goes out of scope, so that a failed
// assertion never leaves a stopped process behind.
class Resumer {
 public:
  explicit Resumer(pid_t pid) : pid_(pid) {}
  ~Resumer() {
    if (pid_ > 0) kill(pid_, SIGCONT);
  }
  // For a process killed meanwhile: no SIGCONT (which would let a stopped
  // process run before it dies, and could reach a reused pid once reaped).
  void Disarm() { pid_ = 0; }

 private:
  pid_t pid_;
};

// A shard stopped with SIGSTOP: calls run into their deadline, are asked
// again (the retry names the shard and says it is not answering), and
// succeed once it resumes; a push resent meanwhile is applied once. Left
// stopped, a pull fails within the retry budget naming the shard.
TEST(HungShardTest, CallsAreRetriedUntilTheShardAnswers) {
  auto shard = StartShard(TestDir() + "/shard", 0, {});
  ASSERT_NE(shard, nullptr);
  Resumer resume_at_end(shard->pid());
  absl::Mutex mu;
  std::vector<std::string> retries;
  auto retried = std::make_shared<absl::Notification>();
  auto client = PatientClient(
      shard->address(), absl::Milliseconds(300),
      [&](const absl::Status& error, int) {
        absl::MutexLock lock(&mu);
        retries.push_back(error.ToString());
        if (!retried->HasBeenNotified()) retried->Notify();
      });
  // Stops the shard; a thread resumes it once a call has been retried (or
  // after a minute, so that a call answered without a retry fails the
  // test below instead of hanging it).
  auto stop_until_retried = [&] {
    std::shared_ptr<absl::Notification> next;
    {
      absl::MutexLock lock(&mu);
      retried = std::make_shared<absl::Notification>();
      next = retried;
    }
    StopShard(shard->pid());
    return std::thread([next, pid = shard->pid()] {
      // A call timed out and is asked again.
      EXPECT_TRUE(next->WaitForNotificationWithTimeout(absl::Seconds(60)));
      kill(pid, SIGCONT);
    });
  };
  ASSERT_TRUE(client->CreateTable(SgdTable(), false).ok());
  ASSERT_TRUE(client->Push("t", {1}, {1.0f, 1.0f}).ok());

  std::thread resumer = stop_until_retried();
  absl::StatusOr<uint64_t> pushed = client->Push("t", {1}, {2.0f, 2.0f});
  resumer.join();
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  auto pulled = client->Pull("t", {1});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, (std::vector<float>{-3.0f, -3.0f}));
  auto rows = client->GetRows("t", {1});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->meta[0].update_count(), 2u);  // the resend was not applied
  {
    absl::MutexLock lock(&mu);
    ASSERT_FALSE(retries.empty());
    EXPECT_THAT(retries[0], HasSubstr("DEADLINE_EXCEEDED"));
    EXPECT_THAT(retries[0], HasSubstr(absl::StrCat("shard 0/1 (",
                                                   shard->address(), ")")));
    EXPECT_THAT(retries[0], HasSubstr("not answering"));
  }

  // A pull (idempotent) is retried just the same.
  std::thread resumer2 = stop_until_retried();
  pulled = client->Pull("t", {1});
  resumer2.join();
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, (std::vector<float>{-3.0f, -3.0f}));

  // Stopped for longer than the budget: the pull fails naming the shard.
  PsClient::Options o;
  o.timeout = absl::Milliseconds(200);
  o.max_attempts = std::numeric_limits<int>::max();
  o.retry_budget = absl::Seconds(1);
  o.initial_backoff = absl::Milliseconds(20);
  auto impatient = PsClient::Create({shard->address()}, o);
  ASSERT_TRUE(impatient.ok());
  ASSERT_TRUE((*impatient)->Pull("t", {1}).ok());  // connected
  StopShard(shard->pid());
  const absl::Status hung = (*impatient)->Pull("t", {1}).status();
  kill(shard->pid(), SIGCONT);
  EXPECT_EQ(hung.code(), absl::StatusCode::kDeadlineExceeded) << hung;
  EXPECT_THAT(std::string(hung.message()),
              HasSubstr(absl::StrCat("shard 0/1 (", shard->address(), ")")));
  EXPECT_THAT(std::string(hung.message()), HasSubstr("not answering"));
  EXPECT_THAT(std::string(hung.message()), HasSubstr("retry budget 1s"));
}

// Calls `f` until it returns OK or 60 s pass (a restarted shard may take a
// while on a loaded machine; the clients below have short retry budgets,
// so that a stopped shard makes a push go in doubt quickly).
absl::Status Eventually(const std::function<absl::Status()>& f) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::Status st = f();
  while (!st.ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
    st = f();
  }
  return st;
}

// Kills the (stopped) shard with SIGKILL, so that whatever sits unread in
// its sockets is lost, and starts it again on the same data dir and port;
// the resumer follows the new process. *shard is null if the start failed.
void KillStoppedAndRestart(const std::string& dir, int port,
                           std::unique_ptr<ShardProcess>* shard,
                           std::unique_ptr<Resumer>* resumer) {
  ASSERT_EQ(kill((*shard)->pid(), SIGKILL), 0);
  // Not resumed first: a stopped process dies of SIGKILL without running,
  // so nothing unread in its sockets is applied.
  (*resumer)->Disarm();
  (*shard)->Wait();
  *shard = StartShard(dir, port, {});
  if (*shard != nullptr) *resumer = std::make_unique<Resumer>((*shard)->pid());
}

// Options of a client that gives up on a stopped shard quickly (200 ms a
// try, `budget` in all), so that a push to it goes in doubt.
PsClient::Options ImpatientOptions(absl::Duration budget) {
  PsClient::Options o;
  o.timeout = absl::Milliseconds(200);
  o.max_attempts = std::numeric_limits<int>::max();
  o.retry_budget = budget;
  o.initial_backoff = absl::Milliseconds(20);
  return o;
}

// Creates SgdTable through a patient client (a loaded machine may take
// longer than the impatient clients' budgets), then waits until `client`
// has a connection (a push goes out only over a connected channel, and a
// stopped shard cannot finish a new one).
bool SetUpTable(const std::string& address, PsClient* client) {
  auto patient = PatientClient(address, absl::Seconds(10));
  if (patient == nullptr) return false;
  const absl::Status created = patient->CreateTable(SgdTable(), false);
  EXPECT_TRUE(created.ok()) << created;
  const absl::Status connected =
      Eventually([&] { return client->GetRows("t", {1}).status(); });
  EXPECT_TRUE(connected.ok()) << connected;
  return created.ok() && connected.ok();
}

// A push that gets no answer within the retry budget (shard stopped) is in
// doubt, and the client keeps it. Resending it while the shard is still
// stopped fails and keeps it. Then the shard is killed (the push, unread in
// its socket, is lost with it) and restarted: the resend applies it, once.
// A second push in doubt whose first attempt does reach the shard (resumed
// with SIGCONT) is settled by a resend that is acknowledged as a
// duplicate: applied once either way.
TEST(HungShardTest, APushInDoubtIsSettledByItsResend) {
  const std::string dir = TestDir() + "/shard";
  auto shard = StartShard(dir, 0, {});
  ASSERT_NE(shard, nullptr);
  const int port = shard->port();
  auto resumer = std::make_unique<Resumer>(shard->pid());
  auto client = PsClient::Create({shard->address()},
                                 ImpatientOptions(absl::Milliseconds(600)));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(SetUpTable(shard->address(), client->get()));
  ASSERT_TRUE(PatientClient(shard->address(), absl::Seconds(10))
                  ->Push("t", {1}, {1.0f, 1.0f})
                  .ok());
  EXPECT_TRUE((*client)->ResolvePushesInDoubt().ok());  // nothing held

  StopShard(shard->pid());
  const absl::Status pushed =
      (*client)->Push("t", {1, 2}, {2.0f, 2.0f, 4.0f, 4.0f}).status();
  EXPECT_TRUE(IsPushInDoubt(pushed)) << pushed;
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 1u);
  const absl::Status still = (*client)->ResolvePushesInDoubt();
  EXPECT_EQ(still.code(), absl::StatusCode::kDeadlineExceeded) << still;
  EXPECT_THAT(std::string(still.message()),
              HasSubstr("1 of 1 push parts in doubt are still unsettled"));
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 1u);

  // Killed while stopped: nothing of the push was read.
  KillStoppedAndRestart(dir, port, &shard, &resumer);
  ASSERT_NE(shard, nullptr);
  absl::StatusOr<PsClient::GetRowsResult> rows;
  ASSERT_TRUE(Eventually([&] {
                rows = (*client)->GetRows("t", {1, 2});
                return rows.status();
              }).ok())
      << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{-1.0f, -1.0f, 0.0f, 0.0f}))
      << "the push in doubt had not landed";
  absl::Status settled =
      Eventually([&] { return (*client)->ResolvePushesInDoubt(); });
  EXPECT_TRUE(settled.ok()) << settled;
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 0u);
  ASSERT_TRUE(Eventually([&] {
                rows = (*client)->GetRows("t", {1, 2});
                return rows.status();
              }).ok())
      << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{-3.0f, -3.0f, -4.0f, -4.0f}));
  EXPECT_EQ(rows->meta[0].update_count(), 2u);
  EXPECT_EQ(rows->meta[1].update_count(), 1u);

  // Stopped, then resumed: the first attempt may land, the resend does not
  // apply it again.
  StopShard(shard->pid());
  EXPECT_TRUE(IsPushInDoubt((*client)->Push("t", {2}, {1.0f, 1.0f}).status()));
  kill(shard->pid(), SIGCONT);
  settled = Eventually([&] { return (*client)->ResolvePushesInDoubt(); });
  EXPECT_TRUE(settled.ok()) << settled;
  ASSERT_TRUE(Eventually([&] {
                rows = (*client)->GetRows("t", {2});
                return rows.status();
              }).ok())
      << rows.status();
  EXPECT_EQ(rows->values, (std::vector<float>{-5.0f, -5.0f}));
  EXPECT_EQ(rows->meta[0].update_count(), 2u);
}

// A push split into waves (max_keys_per_rpc 1, one call per shard at a
// time): the first wave goes out unanswered, so the push is in doubt and
// the later waves are never sent. All three parts are kept, and the resend
// applies each once.
TEST(HungShardTest, APushInDoubtKeepsItsUnsentWavesToo) {
  const std::string dir = TestDir() + "/shard";
  auto shard = StartShard(dir, 0, {});
  ASSERT_NE(shard, nullptr);
  const int port = shard->port();
  auto resumer = std::make_unique<Resumer>(shard->pid());
  PsClient::Options o = ImpatientOptions(absl::Milliseconds(400));
  o.max_keys_per_rpc = 1;
  o.max_calls_per_shard = 1;
  auto client = PsClient::Create({shard->address()}, o);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(SetUpTable(shard->address(), client->get()));
  StopShard(shard->pid());
  const absl::Status pushed =
      (*client)
          ->Push("t", {1, 2, 3}, {1.0f, 1.0f, 2.0f, 2.0f, 3.0f, 3.0f})
          .status();
  EXPECT_TRUE(IsPushInDoubt(pushed)) << pushed;
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 3u);
  KillStoppedAndRestart(dir, port, &shard, &resumer);
  ASSERT_NE(shard, nullptr);
  const absl::Status settled =
      Eventually([&] { return (*client)->ResolvePushesInDoubt(); });
  EXPECT_TRUE(settled.ok()) << settled;
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 0u);
  absl::StatusOr<PsClient::GetRowsResult> rows;
  ASSERT_TRUE(Eventually([&] {
                rows = (*client)->GetRows("t", {1, 2, 3});
                return rows.status();
              }).ok())
      << rows.status();
  EXPECT_EQ(rows->values,
            (std::vector<float>{-1.0f, -1.0f, -2.0f, -2.0f, -3.0f, -3.0f}));
}

// Under the at-most-once policies nothing is kept: a push in doubt stays
// the caller's to judge.
TEST(HungShardTest, OnlyResendingClientsKeepPushesInDoubt) {
  auto shard = StartShard(TestDir() + "/shard", 0, {});
  ASSERT_NE(shard, nullptr);
  Resumer resume_at_end(shard->pid());
  PsClient::Options o = ImpatientOptions(absl::Milliseconds(400));
  o.push_retry = PsClient::Options::PushRetry::kUnsent;
  auto client = PsClient::Create({shard->address()}, o);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(SetUpTable(shard->address(), client->get()));
  StopShard(shard->pid());
  EXPECT_TRUE(IsPushInDoubt((*client)->Push("t", {1}, {1.0f, 1.0f}).status()));
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 0u);
}

// A C-SFT worker's gradient push in doubt (csft::PsWorkerGroup) is resent
// by the worker itself: while the shard stays stopped the step fails,
// naming the worker and the table, with the gradient kept; once the shard
// answers, it is applied once. A second push, whose shard resumes while
// the worker resends, is settled inside PushGradient. Adam's first steps
// with one gradient move every parameter by the learning rate, so a
// gradient lost or applied twice shows in the parameters.
TEST(HungShardTest, ACsftGradientInDoubtIsResentByTheWorker) {
  const std::string dir = TestDir() + "/shard";
  auto shard = StartShard(dir, 0, {});
  ASSERT_NE(shard, nullptr);
  auto resumer = std::make_unique<Resumer>(shard->pid());
  auto client = PsClient::Create({shard->address()},
                                 ImpatientOptions(absl::Milliseconds(600)));
  ASSERT_TRUE(client.ok());
  csft::PsWorkerGroupOptions go;
  go.prefix = "cg";
  go.dim = 2;
  go.max_positives = 2;
  go.learning_rate = 0.01f;
  const std::vector<float> initial = {0.5f, -0.5f, 0.25f};
  std::unique_ptr<csft::PsWorkerGroup> group;
  ASSERT_TRUE(Eventually([&] {
                auto g = csft::PsWorkerGroup::Create(client->get(), go,
                                                     initial, /*seed=*/1);
                if (g.ok()) group = std::move(*g);
                return g.status();
              }).ok());
  std::vector<float> params;
  ASSERT_TRUE(Eventually([&] { return group->FetchParams(&params); }).ok());
  const std::vector<float> gradient = {1.0f, -2.0f, 0.5f};
  const auto expect_steps = [&](int steps) {
    std::vector<float> now;
    ASSERT_TRUE(Eventually([&] { return group->FetchParams(&now); }).ok());
    ASSERT_EQ(now.size(), initial.size());
    for (size_t i = 0; i < initial.size(); ++i) {
      const float sign = gradient[i] > 0 ? 1.0f : -1.0f;
      EXPECT_NEAR(now[i], initial[i] - sign * steps * go.learning_rate, 1e-5)
          << "parameter " << i << " after " << steps << " gradients";
    }
  };

  StopShard(shard->pid());
  const absl::Status failed = group->PushGradient(gradient);
  EXPECT_EQ(failed.code(), absl::StatusCode::kDeadlineExceeded) << failed;
  EXPECT_THAT(std::string(failed.message()),
              HasSubstr("C-SFT worker 0: gradient push to "));
  EXPECT_THAT(std::string(failed.message()),
              HasSubstr("is in doubt, and its resend failed"));
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 1u);
  kill(shard->pid(), SIGCONT);
  EXPECT_TRUE(
      Eventually([&] { return (*client)->ResolvePushesInDoubt(); }).ok());
  expect_steps(1);

  // Resumed as soon as the push is held in doubt, i.e. while the worker
  // resends it.
  StopShard(shard->pid());
  std::atomic<bool> done{false};
  std::thread resume([&] {
    while (!done && (*client)->pushes_held_in_doubt() == 0) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    kill(shard->pid(), SIGCONT);
  });
  const absl::Status pushed = group->PushGradient(gradient);
  done = true;
  resume.join();
  if (!pushed.ok()) {
    // A machine too loaded for the resumed shard to answer within the
    // budget: the worker says so and still holds the gradient.
    EXPECT_THAT(std::string(pushed.message()),
                HasSubstr("is in doubt, and its resend failed"))
        << pushed;
    EXPECT_TRUE(
        Eventually([&] { return (*client)->ResolvePushesInDoubt(); }).ok());
  }
  EXPECT_EQ((*client)->pushes_held_in_doubt(), 0u);
  expect_steps(2);
}


}  // namespace
}  // namespace mim::ps
