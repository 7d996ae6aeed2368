// A real fault in the middle of a training run: the trainer binary trains
// against two real //ps:server shards while shard 1 is SIGKILLed.
//
// - Killed and restarted on the same port and data_dir ~1.5 s later: the
//   trainer rides through the outage (its calls to shard 1 are retried
//   within --ps_retry_seconds), exits 0 and evaluates a model that learned
//   the planted pattern; every row shard 1 had acknowledged before the kill
//   is still there after it, and the rows of the finished run survive one
//   more SIGKILL bit for bit.
// - Killed and not restarted: the trainer fails within its (short) retry
//   budget with an error naming the unreachable shard.
// - Aborted by --test_crash_after_apply_before_ack between applying a push
//   and answering it, then restarted: the trainer resends that push, the
//   shard acknowledges it without applying it again, and the run's model
//   file is bit-identical to a run without the crash (no step lost, none
//   applied twice).
//
// The data carry the pattern of trainer_integration_test (even items are
// clicked with p = 0.85, odd ones with p = 0.15; the genre reveals the
// parity), with enough samples and small batches for several seconds of
// training.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "embedding/sharding.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "tests/planted_samples.h"
#include "tests/process.h"
#include "worker/data/feature_key.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using Json = nlohmann::json;

constexpr int kShards = 2;
constexpr int kTrainSamples = 12000;
constexpr int kTestSamples = 2000;
constexpr int kEpochs = 4;
constexpr int kBatchSize = 32;
constexpr int kItems = 400;
constexpr int kUsers = 500;
constexpr char kIdTable[] = "fault_id";

struct SyntheticData {
  std::string train_path;
  std::string test_path;
  absl::flat_hash_set<int64_t> train_users;
  absl::flat_hash_set<int64_t> train_items;  // targets and behaviour
};

SyntheticData WriteData(const std::string& dir) {
  SyntheticData d;
  d.train_path = dir + "/train.tsv";
  d.test_path = dir + "/test.tsv";
  ::mim::testing::PlantedSamples planted(/*seed=*/5, kUsers);
  std::vector<data::Sample> train, test;
  for (int i = 0; i < kTrainSamples; ++i) train.push_back(planted.Next(kItems));
  for (int i = 0; i < kTestSamples; ++i) test.push_back(planted.Next(kItems));
  for (const data::Sample& s : train) {
    d.train_users.insert(s.user_id);
    d.train_items.insert(s.item_id);
    d.train_items.insert(s.behavior.begin(), s.behavior.end());
  }
  ::mim::testing::WriteSamples(d.train_path, train);
  ::mim::testing::WriteSamples(d.test_path, test);
  return d;
}

// The trainer as a child process, run to completion on its own thread.
class TrainerRun {
 public:
  explicit TrainerRun(std::vector<std::string> argv)
      : thread_([this, argv = std::move(argv)] {
          result_ = RunCommand(argv);
          end_ = absl::Now();
          done_ = true;
        }) {}
  ~TrainerRun() { Join(); }

  bool done() const { return done_; }

  // Waits for the exit; the result and when it came.
  const absl::StatusOr<CommandResult>& Join() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  absl::Time end() const { return end_; }

 private:
  absl::StatusOr<CommandResult> result_ = absl::UnknownError("not run");
  absl::Time end_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

class TrainerFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new std::string(
        absl::StrCat(std::getenv("TEST_TMPDIR"), "/fault_data"));
    std::filesystem::create_directories(*data_dir_);
    data_ = new SyntheticData(WriteData(*data_dir_));
  }
  static void TearDownTestSuite() {
    delete data_;
    delete data_dir_;
  }

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
    auto shards = ShardProcess::StartCluster(dir_, kShards);
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ = std::move(*shards);
    // The test's own view of the shards: quick to give up, so that a check
    // never waits long.
    ps::PsClient::Options options;
    options.timeout = absl::Seconds(10);
    auto client = ps::PsClient::Create(Addresses(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  std::vector<std::string> Addresses() const {
    std::vector<std::string> out;
    for (const auto& s : shards_) out.push_back(s->address());
    return out;
  }

  std::vector<std::string> TrainerArgs(double retry_seconds) const {
    return {Runfile("worker/trainer"),
            absl::StrCat("--ps=", Addresses()[0], ",", Addresses()[1]),
            "--train=" + data_->train_path,
            "--test=" + data_->test_path,
            "--model=din",
            absl::StrCat("--epochs=", kEpochs),
            absl::StrCat("--batch_size=", kBatchSize),
            "--lr=0.005",
            "--id_lr=0.1",
            absl::StrCat("--id_table=", kIdTable),
            absl::StrCat("--ps_retry_seconds=", retry_seconds),
            "--progress=false",
            "--metrics_out=" + MetricsPath(),
            "--model_dir=" + dir_ + "/model"};
  }

  std::string MetricsPath() const { return dir_ + "/metrics.json"; }

  // Waits until shard 1 has taken a good number of pushes of the ID table
  // (training is under way), while the trainer still runs.
  void AwaitTraining(const TrainerRun& run) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline && !run.done()) {
      auto stats = client_->Stats(kIdTable);
      if (stats.ok() && (*stats)[1].stats.tables_size() == 1 &&
          (*stats)[1].stats.tables(0).pushes() >= 200) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    FAIL() << "training did not get under way before "
           << (run.done() ? "the trainer exited" : "60 s");
  }

  // The ID keys of the training data that live on shard 1.
  std::vector<uint64_t> Shard1Keys() const {
    std::vector<uint64_t> keys;
    auto add = [&keys](uint64_t key) {
      if (embedding::ShardOf(key, kShards) == 1) keys.push_back(key);
    };
    for (int64_t u : data_->train_users) {
      add(data::FeatureKey(data::FeatureField::kUser, u));
    }
    for (int64_t i : data_->train_items) {
      add(data::FeatureKey(data::FeatureField::kItem, i));
    }
    return keys;
  }

  // SIGKILLs shard 1; returns once it is gone.
  void KillShard1() {
    const int status = shards_[1]->Kill(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "wait status " << status;
  }

  // Starts shard 1 again on its port and data_dir.
  void RestartShard1() {
    const absl::Status restarted = ShardProcess::Restart(&shards_[1]);
    ASSERT_TRUE(restarted.ok()) << restarted;
  }

  static std::string* data_dir_;
  static SyntheticData* data_;
  std::string dir_;
  std::vector<std::unique_ptr<ShardProcess>> shards_;
  std::unique_ptr<ps::PsClient> client_;
};

std::string* TrainerFaultTest::data_dir_ = nullptr;
SyntheticData* TrainerFaultTest::data_ = nullptr;

TEST_F(TrainerFaultTest, TrainerRidesThroughAShardKilledAndRestarted) {
  const absl::Time start = absl::Now();
  TrainerRun run(TrainerArgs(/*retry_seconds=*/60));
  AwaitTraining(run);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());

  // What shard 1 has acknowledged so far (a row is readable only once it
  // is durable; pushes keep landing until the kill).
  const std::vector<uint64_t> keys = Shard1Keys();
  ASSERT_GT(keys.size(), 100u);
  auto before = client_->GetRows(kIdTable, keys);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_FALSE(run.done()) << "the trainer finished before the fault: make "
                              "the training data bigger";
  const std::string shard1 = shards_[1]->address();
  const absl::Time killed = absl::Now();
  KillShard1();
  absl::SleepFor(absl::Milliseconds(1500));
  RestartShard1();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const absl::Duration outage = absl::Now() - killed;

  // Every row acknowledged before the kill is back, with at least as many
  // updates (and the same bits where none landed since).
  auto after = client_->GetRows(kIdTable, keys);
  ASSERT_TRUE(after.ok()) << after.status();
  int64_t acknowledged = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t updates = before->meta[i].update_count();
    if (updates == 0) continue;  // not pushed yet (or not durable)
    ++acknowledged;
    ASSERT_GE(after->meta[i].update_count(), updates) << "key " << keys[i];
    if (after->meta[i].update_count() == updates) {
      for (uint32_t d = 0; d < before->dim; ++d) {
        ASSERT_EQ(after->values[i * before->dim + d],
                  before->values[i * before->dim + d])
            << "key " << keys[i];
      }
    }
  }
  EXPECT_GT(acknowledged, 100);

  const absl::StatusOr<CommandResult>& result = run.Join();
  ASSERT_TRUE(result.ok()) << result.status();
  std::cout << "trainer ran " << (run.end() - start) << ", shard 1 down for "
            << outage << "; its output:\n"
            << result->out << result->err.substr(0, 4000) << "\n";
  ASSERT_EQ(result->exit_code, 0) << result->err;
  // The trainer did meet the outage, and retried shard 1.
  EXPECT_TRUE(absl::StrContains(result->err, "retrying for up to 60 s"))
      << result->err;
  EXPECT_TRUE(absl::StrContains(result->err, shard1)) << result->err;

  std::ifstream in(MetricsPath());
  ASSERT_TRUE(in.good()) << MetricsPath();
  const Json m = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(m.is_discarded());
  // No batch was skipped, and no step lost: a push cut off mid-call by the
  // kill was resent to the restarted shard, which applies each push once.
  EXPECT_EQ(m["train_samples"], kEpochs * kTrainSamples);
  EXPECT_EQ(m["train_batches"],
            kEpochs * ((kTrainSamples + kBatchSize - 1) / kBatchSize));
  EXPECT_EQ(m["pushes_in_doubt"].get<int64_t>(), 0);
  EXPECT_EQ(m["flags"]["ps_retry_seconds"], "60");
  ASSERT_TRUE(m["auc"].is_number()) << m["auc"];
  const double auc = m["auc"].get<double>();
  std::cout << "AUC " << auc << ", pushes in doubt " << m["pushes_in_doubt"]
            << "\n";
  EXPECT_TRUE(std::isfinite(auc));
  EXPECT_GT(auc, 0.6);
  EXPECT_LE(auc, 1.0);

  // The restarted shard holds its part of the table ...
  auto stats = client_->Stats(kIdTable);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ((*stats)[1].stats.tables_size(), 1);
  EXPECT_GT((*stats)[1].stats.tables(0).rows(), 0u);
  // ... and what it acknowledged to the finished run survives another
  // SIGKILL bit for bit.
  auto final_rows = client_->GetRows(kIdTable, keys);
  ASSERT_TRUE(final_rows.ok()) << final_rows.status();
  EXPECT_TRUE(final_rows->missing.empty());
  KillShard1();
  RestartShard1();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  auto reloaded = client_->GetRows(kIdTable, keys);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->values, final_rows->values);
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(reloaded->meta[i].update_count(),
              final_rows->meta[i].update_count())
        << "key " << keys[i];
  }
}

TEST_F(TrainerFaultTest, CrashBetweenApplyAndAckLosesNoStepAndDoublesNone) {
  // Shard 1 again, now set to abort after applying its 150th push.
  const ShardProcess::Flags flags = shards_[1]->flags();
  ShardProcess::Flags crashing = flags;
  crashing.port = shards_[1]->port();
  crashing.extra.push_back("--test_crash_after_apply_before_ack=150");
  shards_[1].reset();  // SIGTERM, clean shutdown
  auto started = ShardProcess::Start(crashing);
  ASSERT_TRUE(started.ok()) << started.status();
  shards_[1] = *std::move(started);

  std::vector<std::string> args = TrainerArgs(/*retry_seconds=*/60);
  args.push_back("--epochs=1");
  TrainerRun run(args);
  const int status = shards_[1]->Wait();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)
      << "wait status " << status;
  ShardProcess::Flags restarted = flags;
  restarted.port = crashing.port;
  started = ShardProcess::Start(restarted);
  ASSERT_TRUE(started.ok()) << started.status();
  shards_[1] = *std::move(started);
  const absl::StatusOr<CommandResult>& result = run.Join();
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << result->err;
  std::ifstream in(MetricsPath());
  const Json m = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(m.is_discarded());
  EXPECT_EQ(m["pushes_in_doubt"].get<int64_t>(), 0);

  // The same run on two fresh shards that never fail.
  const std::string clean_dir = dir_ + "/clean";
  auto clean = ShardProcess::StartCluster(clean_dir, kShards);
  ASSERT_TRUE(clean.ok()) << clean.status();
  std::vector<std::string> clean_args = args;
  for (std::string& a : clean_args) {
    if (absl::StartsWith(a, "--ps=")) {
      a = absl::StrCat("--ps=", (*clean)[0]->address(), ",",
                       (*clean)[1]->address());
    } else if (absl::StartsWith(a, "--metrics_out=")) {
      a = "--metrics_out=" + clean_dir + "/metrics.json";
    } else if (absl::StartsWith(a, "--model_dir=")) {
      a = "--model_dir=" + clean_dir + "/model";
    }
  }
  const absl::StatusOr<CommandResult> clean_result = RunCommand(clean_args);
  ASSERT_TRUE(clean_result.ok()) << clean_result.status();
  ASSERT_EQ(clean_result->exit_code, 0) << clean_result->err;
  auto read = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string model = read(dir_ + "/model/model.mimmodel");
  ASSERT_FALSE(model.empty());
  EXPECT_TRUE(model == read(clean_dir + "/model/model.mimmodel"))
      << "the crashed run's model differs from the clean run's";
  std::ifstream clean_in(clean_dir + "/metrics.json");
  const Json cm = Json::parse(clean_in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(cm.is_discarded());
  EXPECT_EQ(m["auc"], cm["auc"]);
  EXPECT_EQ(m["logloss"], cm["logloss"]);
}

TEST_F(TrainerFaultTest, ShardThatStaysDownFailsTheRunWithinItsBudget) {
  constexpr double kBudgetSeconds = 2;
  TrainerRun run(TrainerArgs(kBudgetSeconds));
  AwaitTraining(run);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  ASSERT_FALSE(run.done()) << "the trainer finished before the fault";
  const std::string shard1 = shards_[1]->address();
  const absl::Time killed = absl::Now();
  KillShard1();

  const absl::StatusOr<CommandResult>& result = run.Join();
  ASSERT_TRUE(result.ok()) << result.status();
  const absl::Duration took = run.end() - killed;
  std::cout << "trainer failed " << took << " after the kill:\n"
            << result->err.substr(0, 4000) << "\n";
  EXPECT_NE(result->exit_code, 0);
  // Not before the budget was spent. (How soon after depends on the
  // machine's load, so it is not a pass/fail bound here: the error below
  // names the budget it gave up on.)
  EXPECT_GE(took, absl::Seconds(kBudgetSeconds) - absl::Milliseconds(100));
  // The final error names the shard, its code and the budget.
  const size_t final_line = result->err.rfind("trainer: ");
  ASSERT_NE(final_line, std::string::npos) << result->err;
  const std::string error = result->err.substr(final_line);
  EXPECT_TRUE(absl::StrContains(error, "UNAVAILABLE")) << error;
  EXPECT_TRUE(absl::StrContains(error, "shard 1/2 (" + shard1 + ")"))
      << error;
  EXPECT_TRUE(absl::StrContains(error, "retry budget 2s")) << error;
  EXPECT_FALSE(std::filesystem::exists(MetricsPath()));
}

}  // namespace
}  // namespace mim
