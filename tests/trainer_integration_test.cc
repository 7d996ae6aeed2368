// The trainer binary as a real process against two real //ps:server shards
// on loopback, on a small synthetic stream with a planted, learnable
// pattern: even items are clicked with p = 0.85 and odd ones with p = 0.15;
// the item's genre and its content vector both reveal its parity, so warm
// items (ID rows), cold items (genre, content) and the user's behaviour
// sequence all carry signal.
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

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "tests/planted_samples.h"
#include "tests/process.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/model/ciubm_model.h"

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using Json = nlohmann::json;

constexpr int kTrainSamples = 4000;
constexpr int kTestSamples = 1000;
constexpr int kTrainItems = 250;  // items 0..249 appear in training
constexpr int kAllItems = 300;    // items 250..299 are cold in the test set
constexpr int kUsers = 200;
constexpr int kContentDim = 16;
constexpr char kContentTable[] = "trainer_test_content";

using ::mim::testing::PlantedSamples;

bool Good(int64_t item) { return PlantedSamples::Good(item); }

// Writes train.tsv / test.tsv and returns the test samples.
struct SyntheticData {
  std::string train_path;
  std::string test_path;
  std::vector<data::Sample> train;
  std::vector<data::Sample> test;
};

SyntheticData WriteData(const std::string& dir) {
  SyntheticData d;
  d.train_path = dir + "/train.tsv";
  d.test_path = dir + "/test.tsv";
  PlantedSamples planted(/*seed=*/7, kUsers);
  for (int i = 0; i < kTrainSamples; ++i) d.train.push_back(planted.Next(kTrainItems));
  for (int i = 0; i < kTestSamples; ++i) d.test.push_back(planted.Next(kAllItems));
  ::mim::testing::WriteSamples(d.train_path, d.train);
  ::mim::testing::WriteSamples(d.test_path, d.test);
  return d;
}

class TrainerIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(std::getenv("TEST_TMPDIR"), "/trainer"));
    std::filesystem::create_directories(*dir_);
    // Two workers, each with a prefetch thread, call concurrently; the
    // default 4 server threads answer RESOURCE_EXHAUSTED under that load.
    auto shards = ShardProcess::StartCluster(*dir_, 2, {"--threads=16"});
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ = new std::vector<std::unique_ptr<ShardProcess>>(std::move(*shards));
    ps_ = new std::string(absl::StrCat((*shards_)[0]->address(), ",",
                                       (*shards_)[1]->address()));
    data_ = new SyntheticData(WriteData(*dir_));

    // Content vectors: a parity direction plus noise, for every item.
    absl::StatusOr<std::unique_ptr<ps::PsClient>> client =
        ps::PsClient::Create(ShardProcess::Addresses(*shards_));
    ASSERT_TRUE(client.ok()) << client.status();
    ps::TableConfig content;
    content.set_name(kContentTable);
    content.set_kind(ps::CONTENT);
    content.set_dim(kContentDim);
    ASSERT_TRUE((*client)->CreateTable(content, true).ok());
    std::mt19937_64 rng(11);
    std::normal_distribution<float> noise(0.0f, 0.3f);
    std::vector<uint64_t> keys;
    std::vector<float> values;
    for (int item = 0; item < kAllItems; ++item) {
      keys.push_back(static_cast<uint64_t>(item));
      for (int k = 0; k < kContentDim; ++k) {
        const float axis = (k == 0) == Good(item) ? 1.0f : 0.0f;
        values.push_back(axis * (k < 2 ? 1.0f : 0.0f) + noise(rng));
      }
    }
    absl::StatusOr<ps::PsClient::UpsertResult> upserted =
        (*client)->Upsert(kContentTable, keys, values, 3);
    ASSERT_TRUE(upserted.ok()) << upserted.status();
    ASSERT_EQ(upserted->rows_written, static_cast<uint64_t>(kAllItems));
  }

  static void TearDownTestSuite() {
    delete shards_;
    delete data_;
    delete ps_;
    delete dir_;
  }

  // Trainer argv with the common flags plus `extra`.
  static std::vector<std::string> Args(const std::string& model,
                                       const std::string& name,
                                       std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        Runfile("worker/trainer"),
        "--ps=" + *ps_,
        "--train=" + data_->train_path,
        "--model=" + model,
        "--epochs=3",
        "--batch_size=128",
        "--lr=0.005",
        "--id_lr=0.1",
        "--loss_every=5",
        "--table_prefix=" + name + "_",
        "--metrics_out=" + MetricsPath(name),
        "--model_dir=" + *dir_ + "/model_" + name,
    };
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  static std::string MetricsPath(const std::string& name) {
    return *dir_ + "/metrics_" + name + ".json";
  }

  static Json ReadJson(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    return Json::parse(in, nullptr, /*allow_exceptions=*/false);
  }

  // Runs the trainer to completion and returns its metrics JSON.
  static Json Train(const std::string& model, const std::string& name,
                    std::vector<std::string> extra) {
    absl::StatusOr<CommandResult> run = RunCommand(Args(model, name, extra));
    EXPECT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 0) << run->err;
    return ReadJson(MetricsPath(name));
  }

  // Test samples whose item has no training sample.
  static int64_t ColdTestSamples() {
    absl::flat_hash_set<int64_t> trained;
    for (const data::Sample& s : data_->train) trained.insert(s.item_id);
    int64_t cold = 0;
    for (const data::Sample& s : data_->test) cold += !trained.contains(s.item_id);
    return cold;
  }

  static std::string* dir_;
  static std::vector<std::unique_ptr<ShardProcess>>* shards_;
  static std::string* ps_;
  static SyntheticData* data_;
};

std::string* TrainerIntegrationTest::dir_ = nullptr;
std::vector<std::unique_ptr<ShardProcess>>* TrainerIntegrationTest::shards_ =
    nullptr;
std::string* TrainerIntegrationTest::ps_ = nullptr;
SyntheticData* TrainerIntegrationTest::data_ = nullptr;

TEST_F(TrainerIntegrationTest, DinAndDinMimLearnThePlantedPattern) {
  for (const std::string model : {"din", "din_mim"}) {
    SCOPED_TRACE(model);
    const Json m = Train(model, model,
                         {"--test=" + data_->test_path,
                          absl::StrCat("--content_table=", kContentTable)});
    ASSERT_FALSE(m.is_discarded());
    EXPECT_EQ(m["model"], model);
    EXPECT_EQ(m["flags"]["model"], model);
    EXPECT_EQ(m["flags"]["epochs"], "3");
    EXPECT_EQ(m["dense_params"], "local");
    EXPECT_EQ(m["tables"]["id"], model + "_" + model + "_s1_id");
    EXPECT_EQ(m["tables"]["content"], kContentTable);
    EXPECT_EQ(m["tables"]["content_version"], 3);
    EXPECT_EQ(m["train_samples"], 3 * kTrainSamples);
    EXPECT_EQ(m["train_batches"], 3 * ((kTrainSamples + 127) / 128));
    EXPECT_GT(m["train_samples_per_sec"].get<double>(), 0.0);
    EXPECT_EQ(m["eval_source"], "test");
    EXPECT_EQ(m["eval_n"], kTestSamples);

    // 32 batches per epoch, a point every 5 batches: 96 / 5 -> 19 points
    // plus the last partial window.
    const Json& curve = m["loss_curve"];
    ASSERT_EQ(curve.size(), 20u);
    EXPECT_EQ(curve.back()["batch"], 96);
    EXPECT_LT(curve.back()["loss"].get<double>(),
              curve.front()["loss"].get<double>());

    const double auc = m["auc"].get<double>();
    std::cout << model << ": AUC " << auc << ", cold AUC " << m["cold_auc"]
              << ", " << m["train_samples_per_sec"] << " samples/s\n";
    EXPECT_GT(auc, 0.6);
    EXPECT_LE(auc, 1.0);
    EXPECT_GT(m["gauc"].get<double>(), 0.55);
    EXPECT_GT(m["gauc_users"].get<int>(), 0);
    EXPECT_GT(m["logloss"].get<double>(), 0.0);
    EXPECT_LT(m["logloss"].get<double>(), std::log(2.0));

    EXPECT_EQ(m["cold"]["n"], ColdTestSamples());
    EXPECT_EQ(m["cold"]["max_count"], 0);
    ASSERT_TRUE(m["cold_auc"].is_number());
    EXPECT_EQ(m["cold_auc"], m["cold"]["auc"]);
    EXPECT_GT(m["cold_auc"].get<double>(), 0.55);

    const Json& deciles = m["auc_by_item_frequency"];
    ASSERT_EQ(deciles.size(), 10u);
    int64_t total = 0;
    int64_t previous_max = 0;
    for (const Json& g : deciles) {
      EXPECT_EQ(g["n"], kTestSamples / 10);
      EXPECT_GE(g["min_count"].get<int64_t>(), previous_max);
      EXPECT_LE(g["min_count"].get<int64_t>(), g["max_count"].get<int64_t>());
      previous_max = g["max_count"].get<int64_t>();
      total += g["n"].get<int64_t>();
    }
    EXPECT_EQ(total, kTestSamples);
    EXPECT_EQ(deciles[0]["min_count"], 0);

    const std::string model_dir = *dir_ + "/model_" + model;
    EXPECT_TRUE(std::filesystem::is_regular_file(model_dir + "/model.mimmodel"));
    const Json manifest = ReadJson(model_dir + "/manifest.json");
    ASSERT_FALSE(manifest.is_discarded());
    EXPECT_EQ(manifest["model"], model);
    EXPECT_EQ(manifest["num_shards"], 2);
    EXPECT_EQ(manifest["id_table"]["name"], m["tables"]["id"]);
    EXPECT_EQ(manifest["format"], "mim-model-manifest v2");
    EXPECT_TRUE(absl::EndsWith(manifest["model_version"].get<std::string>(),
                               "-" + model));
    if (model == "din") {
      // A model that reads no content pins no content table.
      EXPECT_TRUE(manifest["content_table"].is_null());
    } else {
      EXPECT_EQ(manifest["content_table"]["name"], kContentTable);
      EXPECT_EQ(manifest["content_table"]["dim"], kContentDim);
      EXPECT_EQ(manifest["content_table"]["version"], 3);
      EXPECT_EQ(manifest["content_table"]["encoder"]["kind"], "external");
    }
    EXPECT_GT(manifest["id_table"]["rows"].get<uint64_t>(), 0u);
  }
}

TEST_F(TrainerIntegrationTest, TwoWorkersReachTheQualityOfOne) {
  const std::vector<std::string> common = {
      "--test=" + data_->test_path,
      absl::StrCat("--content_table=", kContentTable), "--progress=false",
      // A failed worker 1 must fail worker 0's barrier, not hang the test.
      "--barrier_timeout_s=120"};
  const Json one = Train("din_mim", "one_worker", common);

  // Both workers share tables through the prefix; only worker 0 evaluates.
  std::vector<std::string> w0 = common;
  w0.insert(w0.end(), {"--num_workers=2", "--worker_index=0"});
  std::vector<std::string> w1 = common;
  w1.insert(w1.end(), {"--num_workers=2", "--worker_index=1"});
  std::vector<std::string> w1_args = Args("din_mim", "two_workers", w1);
  for (std::string& a : w1_args) {
    if (absl::StartsWith(a, "--metrics_out=")) {
      a = "--metrics_out=" + MetricsPath("two_workers_w1");
    }
    if (absl::StartsWith(a, "--model_dir=")) a += "_w1";
  }
  absl::StatusOr<CommandResult> second;
  std::thread worker1([&] { second = RunCommand(w1_args); });
  const Json two = Train("din_mim", "two_workers", w0);
  worker1.join();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->exit_code, 0) << second->err;
  const Json other = ReadJson(MetricsPath("two_workers_w1"));

  EXPECT_EQ(two["dense_params"], "ps");
  EXPECT_EQ(two["tables"]["dense"], "two_workers_din_mim_s1_dense");
  // Batches are dealt round-robin: 32 per epoch, 16 each.
  EXPECT_EQ(two["train_batches"], 3 * 16);
  EXPECT_EQ(other["train_batches"], 3 * 16);
  EXPECT_EQ(two["train_samples"].get<int64_t>() +
                other["train_samples"].get<int64_t>(),
            3 * kTrainSamples);
  EXPECT_TRUE(other["auc"].is_null());  // worker 1 does not evaluate
  EXPECT_FALSE(std::filesystem::exists(*dir_ + "/model_two_workers_w1"));

  const double auc1 = one["auc"].get<double>();
  const double auc2 = two["auc"].get<double>();
  std::cout << "AUC one worker " << auc1 << ", two workers " << auc2 << "\n";
  EXPECT_GT(auc2, 0.6);
  // Two workers push asynchronously, so their run is not bit-reproducible
  // (docs/ARCHITECTURE.md): the AUC moves from run to run. The bound says
  // "as good as one worker" with room for that noise: the gap has been seen
  // up to 0.0103 on this test set, so a 0.01 two-sided band flaked (1 run
  // in 4 on a loaded machine); 0.03 below is three times the largest gap
  // seen, and a broken dense sync lands far below it (near 0.5).
  EXPECT_GT(auc2, auc1 - 0.03);
}

TEST_F(TrainerIntegrationTest, ValidationTailHoldsOutTheEndOfTraining) {
  const Json m = Train("din", "validation",
                       {"--validation_tail_fraction=0.25", "--epochs=1"});
  // Timestamps are 1'000'000 + k for train sample k: span 3999, cutoff
  // min + ceil(0.75 * 3999) = min + 3000, so the last 1000 are held out.
  EXPECT_EQ(m["eval_source"], "validation_tail");
  EXPECT_EQ(m["validation_cutoff"], 1'000'000 + 3000);
  EXPECT_EQ(m["train_samples"], 3000);
  EXPECT_EQ(m["eval_n"], 1000);
  EXPECT_TRUE(m["tables"]["content"].is_null());
  EXPECT_TRUE(m["auc"].is_number());
}

TEST_F(TrainerIntegrationTest, AblationFlagsReachTheSavedModel) {
  const Json m = Train("din_mim", "ablation",
                       {"--test=" + data_->test_path,
                        absl::StrCat("--content_table=", kContentTable),
                        "--epochs=1", "--no_content_interest", "--no_fusion"});
  EXPECT_EQ(m["flags"]["no_fusion"], "true");
  EXPECT_EQ(m["flags"]["no_id_interest"], "false");
  EXPECT_TRUE(m["auc"].is_number());
  const Json manifest = ReadJson(*dir_ + "/model_ablation/manifest.json");
  EXPECT_EQ(manifest["model_config"]["use_id_interest"], true);
  EXPECT_EQ(manifest["model_config"]["use_content_interest"], false);
  EXPECT_EQ(manifest["model_config"]["use_fusion"], false);
}

// Incremental training: a second run continues the first one's dense
// params and Adam state (and its ID table), and a run that would put them
// on another ID table is refused before anything is created.
TEST_F(TrainerIntegrationTest, WarmStartContinuesAnEarlierRun) {
  const Json first = Train("din", "warm", {"--test=" + data_->test_path, "--epochs=1"});
  const std::string first_dir = *dir_ + "/model_warm";
  auto first_model = model::CiubmModel::LoadFromFile(first_dir + "/model.mimmodel");
  ASSERT_TRUE(first_model.ok()) << first_model.status();
  const int64_t first_steps = (*first_model)->adam_step();
  EXPECT_EQ(first_steps, first["train_batches"].get<int64_t>());

  std::vector<std::string> args =
      Args("din", "warm", {"--test=" + data_->test_path, "--epochs=1",
                           "--init_model_dir=" + first_dir});
  for (std::string& a : args) {
    if (absl::StartsWith(a, "--model_dir=")) a += "_2";
    if (absl::StartsWith(a, "--metrics_out=")) a = "--metrics_out=" + MetricsPath("warm_2");
  }
  absl::StatusOr<CommandResult> run = RunCommand(args);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;
  const Json second = ReadJson(MetricsPath("warm_2"));
  EXPECT_EQ(second["init_adam_step"], first_steps);
  EXPECT_EQ(second["tables"]["id"], first["tables"]["id"]);
  auto second_model = model::CiubmModel::LoadFromFile(first_dir + "_2/model.mimmodel");
  ASSERT_TRUE(second_model.ok()) << second_model.status();
  EXPECT_EQ((*second_model)->adam_step(),
            first_steps + second["train_batches"].get<int64_t>());
  const Json manifest = ReadJson(first_dir + "_2/manifest.json");
  EXPECT_EQ(manifest["init_model"], first_dir + "/model.mimmodel");

  // Another table prefix means another ID table: refused, naming both.
  absl::StatusOr<CommandResult> wrong = RunCommand(
      Args("din", "warm_other", {"--test=" + data_->test_path, "--epochs=1",
                                 "--init_model_dir=" + first_dir}));
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_NE(wrong->exit_code, 0);
  EXPECT_NE(wrong->err.find("warm_din"), std::string::npos) << wrong->err;
  EXPECT_NE(wrong->err.find("--id_table="), std::string::npos) << wrong->err;
}

// With the dense params on the shards (--dense_params=ps, and every
// multi-worker run) the shards' dense table holds deltas over the seeded
// initialisation, so loading an earlier run's params on top of it would
// count that run's update twice (it did: params moved by 0.11 in one
// sample's step at lr 0.005). Refused before anything is created.
TEST_F(TrainerIntegrationTest, WarmStartWithDenseParamsOnTheShardsIsRefused) {
  Train("din", "warmps", {"--test=" + data_->test_path, "--epochs=1",
                          "--dense_params=ps"});
  const std::string first_dir = *dir_ + "/model_warmps";
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--dense_params=ps"},
        std::vector<std::string>{"--num_workers=2", "--worker_index=1"}}) {
    std::vector<std::string> args =
        Args("din", "warmps", {"--test=" + data_->test_path, "--epochs=1",
                               "--init_model_dir=" + first_dir});
    args.insert(args.end(), extra.begin(), extra.end());
    for (std::string& a : args) {
      if (absl::StartsWith(a, "--model_dir=")) a += "_2";
    }
    absl::StatusOr<CommandResult> run = RunCommand(args);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_NE(run->exit_code, 0);
    EXPECT_NE(run->err.find("--init_model_dir needs the dense params local"),
              std::string::npos)
        << run->err;
  }
}

// A manifest naming the right ID table is not enough: when that table is
// not on the shards (fresh shards, a dropped table), the warm start would
// put the trained dense params on fresh ID rows. Refused.
TEST_F(TrainerIntegrationTest, WarmStartRefusesAnIdTableMissingOnTheShards) {
  Train("din", "warmghost", {"--test=" + data_->test_path, "--epochs=1"});
  const std::string first_dir = *dir_ + "/model_warmghost";
  const std::string ghost_dir = *dir_ + "/model_warmghost_moved";
  std::filesystem::create_directories(ghost_dir);
  std::filesystem::copy_file(first_dir + "/model.mimmodel",
                             ghost_dir + "/model.mimmodel");
  Json manifest = ReadJson(first_dir + "/manifest.json");
  manifest["id_table"]["name"] = "warmghost_never_created_id";
  std::ofstream(ghost_dir + "/manifest.json") << manifest.dump();

  std::vector<std::string> args = Args(
      "din", "warmghost", {"--test=" + data_->test_path, "--epochs=1",
                           "--id_table=warmghost_never_created_id",
                           "--init_model_dir=" + ghost_dir});
  for (std::string& a : args) {
    if (absl::StartsWith(a, "--model_dir=")) a += "_2";
  }
  absl::StatusOr<CommandResult> run = RunCommand(args);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_NE(run->exit_code, 0);
  EXPECT_NE(run->err.find("not on the shards"), std::string::npos) << run->err;
}

TEST_F(TrainerIntegrationTest, FailedWorkerMarksTheRunFailed) {
  // Worker 1 fails after joining the barrier (its train file is missing);
  // worker 0 of the same run then refuses the half-trained tables at once
  // instead of waiting for worker 1 to finish.
  std::vector<std::string> w1 =
      Args("din", "failed", {"--num_workers=2", "--worker_index=1",
                             "--test=" + data_->test_path});
  for (std::string& a : w1) {
    if (absl::StartsWith(a, "--train=")) a = "--train=" + *dir_ + "/missing.tsv";
  }
  absl::StatusOr<CommandResult> first = RunCommand(w1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(first->err, "NOT_FOUND")) << first->err;

  absl::StatusOr<CommandResult> second = RunCommand(
      Args("din", "failed", {"--num_workers=2", "--worker_index=0",
                             "--test=" + data_->test_path,
                             "--barrier_timeout_s=120"}));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(second->err, "FAILED_PRECONDITION"))
      << second->err;
  EXPECT_TRUE(absl::StrContains(second->err, "worker 1")) << second->err;
}

TEST_F(TrainerIntegrationTest, MissingContentTableIsReportedNotFound) {
  absl::StatusOr<CommandResult> run = RunCommand(
      Args("din_mim", "missing",
           {"--test=" + data_->test_path, "--content_table=no_such_table"}));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run->err, "NOT_FOUND")) << run->err;
  EXPECT_TRUE(absl::StrContains(run->err, "no_such_table")) << run->err;
}

}  // namespace
}  // namespace mim
