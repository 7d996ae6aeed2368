// Training that can be trusted, with the trainer binary as a real process
// against two real //ps:server shards on loopback:
// - the same seed and flags give bit-identical model files, metrics and
//   predictions, run after run, with prefetch on and off and 1 or 2 kernel
//   threads, and prefetch on gives exactly what prefetch off gives (the
//   prefetch thread used to let a push in early when it was slower than
//   the compute, so the rows a batch read depended on timing);
// - --eval_only reproduces a training run's evaluation from its model_dir
//   and the shards, and refuses a model whose ID table is not there;
// - a content model without --content_table is refused, not trained on
//   zero vectors.
// A run with --num_workers > 1 is asynchronous by design and not covered.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "tests/planted_samples.h"
#include "tests/process.h"
#include "worker/data/sample.h"

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::PlantedSamples;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using Json = nlohmann::json;

constexpr int kTrainSamples = 3000;
constexpr int kTestSamples = 600;
constexpr int kTrainItems = 200;
constexpr int kAllItems = 240;
constexpr int kContentDim = 8;
constexpr char kContentTable[] = "repro_content";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return Json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// The parts of a metrics JSON that a run's outcome decides (not its
// timings, flags or table names).
Json Outcome(const Json& m) {
  Json o;
  for (const char* key :
       {"train_samples", "train_batches", "loss_curve", "eval_n",
        "eval_positives", "auc", "gauc", "gauc_users", "logloss", "cold_auc",
        "cold", "auc_by_item_frequency"}) {
    o[key] = m[key];
  }
  return o;
}

// What one trainer run left behind.
struct RunOutput {
  Json metrics;
  std::string model_file;   // bytes of model.mimmodel
  std::string predictions;  // bytes of --predictions_out
};

class TrainerReproducibilityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        absl::StrCat(std::getenv("TEST_TMPDIR"), "/reproducibility"));
    std::filesystem::create_directories(*dir_);
    auto shards = ShardProcess::StartCluster(*dir_, 2, {"--threads=16"});
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ = new std::vector<std::unique_ptr<ShardProcess>>(std::move(*shards));
    ps_ = new std::string(absl::StrCat((*shards_)[0]->address(), ",",
                                       (*shards_)[1]->address()));
    PlantedSamples planted(/*seed=*/5, /*num_users=*/150);
    std::vector<data::Sample> train, test;
    for (int i = 0; i < kTrainSamples; ++i) train.push_back(planted.Next(kTrainItems));
    for (int i = 0; i < kTestSamples; ++i) test.push_back(planted.Next(kAllItems));
    ::mim::testing::WriteSamples(TrainPath(), train);
    ::mim::testing::WriteSamples(TestPath(), test);

    // Content vectors that reveal an item's parity, plus noise.
    absl::StatusOr<std::unique_ptr<ps::PsClient>> client =
        ps::PsClient::Create(ShardProcess::Addresses(*shards_));
    ASSERT_TRUE(client.ok()) << client.status();
    ps::TableConfig content;
    content.set_name(kContentTable);
    content.set_kind(ps::CONTENT);
    content.set_dim(kContentDim);
    ASSERT_TRUE((*client)->CreateTable(content, true).ok());
    std::mt19937_64 rng(3);
    std::normal_distribution<float> noise(0.0f, 0.3f);
    std::vector<uint64_t> keys;
    std::vector<float> values;
    for (int item = 0; item < kAllItems; ++item) {
      keys.push_back(static_cast<uint64_t>(item));
      for (int k = 0; k < kContentDim; ++k) {
        const bool axis = (k == 0) == PlantedSamples::Good(item);
        values.push_back((axis && k < 2 ? 1.0f : 0.0f) + noise(rng));
      }
    }
    ASSERT_TRUE((*client)->Upsert(kContentTable, keys, values, 1).ok());
  }

  static void TearDownTestSuite() {
    delete shards_;
    delete ps_;
    delete dir_;
  }

  static std::string TrainPath() { return *dir_ + "/train.tsv"; }
  static std::string TestPath() { return *dir_ + "/test.tsv"; }

  // Trainer argv for run `name` (its own tables, files) plus `extra`.
  static std::vector<std::string> Args(const std::string& name,
                                       const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        Runfile("worker/trainer"),
        "--ps=" + *ps_,
        "--train=" + TrainPath(),
        "--test=" + TestPath(),
        "--model=din_mim",
        absl::StrCat("--content_table=", kContentTable),
        "--epochs=2",
        "--batch_size=64",
        "--seed=3",
        "--progress=false",
        "--table_prefix=" + name + "_",
        "--metrics_out=" + *dir_ + "/" + name + ".json",
        "--predictions_out=" + *dir_ + "/" + name + ".predictions",
        "--model_dir=" + *dir_ + "/" + name};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  static RunOutput Collect(const std::string& name) {
    RunOutput r;
    r.metrics = ReadJson(*dir_ + "/" + name + ".json");
    r.model_file = ReadBytes(*dir_ + "/" + name + "/model.mimmodel");
    r.predictions = ReadBytes(*dir_ + "/" + name + ".predictions");
    return r;
  }

  // Trains to completion as run `name`.
  static RunOutput Train(const std::string& name,
                   const std::vector<std::string>& extra) {
    absl::StatusOr<CommandResult> run = RunCommand(Args(name, extra));
    EXPECT_TRUE(run.ok()) << run.status();
    if (run.ok()) {
      EXPECT_EQ(run->exit_code, 0) << run->err;
    }
    return Collect(name);
  }

  static std::string* dir_;
  static std::vector<std::unique_ptr<ShardProcess>>* shards_;
  static std::string* ps_;
};

std::string* TrainerReproducibilityTest::dir_ = nullptr;
std::vector<std::unique_ptr<ShardProcess>>*
    TrainerReproducibilityTest::shards_ = nullptr;
std::string* TrainerReproducibilityTest::ps_ = nullptr;

void ExpectSameRun(const RunOutput& a, const RunOutput& b) {
  ASSERT_FALSE(a.metrics.is_discarded());
  ASSERT_FALSE(b.metrics.is_discarded());
  EXPECT_EQ(Outcome(a.metrics), Outcome(b.metrics));
  EXPECT_FALSE(a.model_file.empty());
  EXPECT_TRUE(a.model_file == b.model_file) << "model files differ";
  EXPECT_FALSE(a.predictions.empty());
  EXPECT_TRUE(a.predictions == b.predictions) << "predictions differ";
}

TEST_F(TrainerReproducibilityTest, SameSeedSameBitsWithPrefetchOnAndOff) {
  for (const int threads : {1, 2}) {
    std::vector<RunOutput> runs;  // prefetch on, on, off, off
    for (const bool prefetch : {true, false}) {
      for (const int attempt : {1, 2}) {
        const std::string name =
            absl::StrCat("t", threads, prefetch ? "_prefetch_" : "_sync_",
                         attempt);
        SCOPED_TRACE(name);
        runs.push_back(
            Train(name, {absl::StrCat("--threads=", threads),
                         absl::StrCat("--prefetch=", prefetch)}));
        EXPECT_EQ(runs.back().metrics["train_batches"],
                  2 * ((kTrainSamples + 63) / 64));
        EXPECT_TRUE(runs.back().metrics["auc"].is_number());
      }
    }
    SCOPED_TRACE(absl::StrCat("--threads=", threads));
    ExpectSameRun(runs[0], runs[1]);  // prefetch on, twice
    ExpectSameRun(runs[2], runs[3]);  // prefetch off, twice
    ExpectSameRun(runs[0], runs[2]);  // on == off
  }
}

TEST_F(TrainerReproducibilityTest, EvalOnlyReproducesTheTrainingRunsMetrics) {
  const RunOutput trained = Train("evalsrc", {"--threads=2"});
  const std::string eval_name = "evalsrc_again";
  absl::StatusOr<CommandResult> run = RunCommand(
      {Runfile("worker/trainer"), "--ps=" + *ps_, "--eval_only",
       "--model_dir=" + *dir_ + "/evalsrc", "--test=" + TestPath(),
       "--train=" + TrainPath(), "--progress=false",
       "--metrics_out=" + *dir_ + "/" + eval_name + ".json",
       "--predictions_out=" + *dir_ + "/" + eval_name + ".predictions"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;
  const Json m = ReadJson(*dir_ + "/" + eval_name + ".json");
  ASSERT_FALSE(m.is_discarded());
  EXPECT_EQ(m["model"], "din_mim");
  EXPECT_EQ(m["tables"]["id"], trained.metrics["tables"]["id"]);
  EXPECT_EQ(m["tables"]["content"], kContentTable);
  EXPECT_EQ(m["train_batches"], 0);
  EXPECT_EQ(m["eval_source"], "test");
  for (const char* key : {"eval_n", "eval_positives", "auc", "gauc", "logloss",
                          "cold", "auc_by_item_frequency"}) {
    EXPECT_EQ(m[key], trained.metrics[key]) << key;
  }
  EXPECT_TRUE(ReadBytes(*dir_ + "/" + eval_name + ".predictions") ==
              trained.predictions)
      << "predictions differ";

  // Without --train there is no telling cold from warm: those stay empty.
  run = RunCommand({Runfile("worker/trainer"), "--ps=" + *ps_, "--eval_only",
                    "--model_dir=" + *dir_ + "/evalsrc",
                    "--test=" + TestPath(), "--progress=false",
                    "--metrics_out=" + *dir_ + "/evalsrc_notrain.json"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;
  const Json bare = ReadJson(*dir_ + "/evalsrc_notrain.json");
  EXPECT_EQ(bare["auc"], trained.metrics["auc"]);
  EXPECT_TRUE(bare["cold_auc"].is_null());
  EXPECT_EQ(bare["cold"]["n"], 0);
  EXPECT_EQ(bare["auc_by_item_frequency"], Json::array());
}

TEST_F(TrainerReproducibilityTest, EvalOnlyRefusesAnIdTableMissingOnTheShards) {
  Train("evalghost", {"--epochs=1"});
  const std::string src = *dir_ + "/evalghost";
  const std::string moved = *dir_ + "/evalghost_moved";
  std::filesystem::create_directories(moved);
  std::filesystem::copy_file(src + "/model.mimmodel", moved + "/model.mimmodel");
  Json manifest = ReadJson(src + "/manifest.json");
  manifest["id_table"]["name"] = "evalghost_never_created_id";
  std::ofstream(moved + "/manifest.json") << manifest.dump();

  absl::StatusOr<CommandResult> run = RunCommand(
      {Runfile("worker/trainer"), "--ps=" + *ps_, "--eval_only",
       "--model_dir=" + moved, "--test=" + TestPath(), "--progress=false"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run->err, "FAILED_PRECONDITION")) << run->err;
  EXPECT_TRUE(absl::StrContains(run->err, "evalghost_never_created_id"))
      << run->err;
  EXPECT_TRUE(absl::StrContains(run->err, "not on the shards")) << run->err;

  // And a model_dir with no model at all is NOT_FOUND, naming the flag.
  run = RunCommand({Runfile("worker/trainer"), "--ps=" + *ps_, "--eval_only",
                    "--model_dir=" + *dir_ + "/no_such_model",
                    "--test=" + TestPath(), "--progress=false"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run->err, "NOT_FOUND")) << run->err;
  EXPECT_TRUE(absl::StrContains(run->err, "--model_dir=")) << run->err;
}

// A run that is not a warm start refuses an ID table an earlier run
// trained (the same command again): newly seeded dense weights on trained
// rows would neither reproduce nor continue anything. The earlier run's
// rows are left as they were. A warm start from a model file that is not
// the one its manifest names is refused too.
TEST_F(TrainerReproducibilityTest, AFreshRunRefusesAnIdTableAnEarlierRunTrained) {
  const RunOutput first = Train("again", {"--epochs=1"});
  ASSERT_FALSE(first.model_file.empty());
  auto client = ps::PsClient::Create(ShardProcess::Addresses(*shards_));
  ASSERT_TRUE(client.ok()) << client.status();
  const auto before = (*client)->Stats("again_din_mim_s3_id");
  ASSERT_TRUE(before.ok()) << before.status();
  absl::StatusOr<CommandResult> run =
      RunCommand(Args("again", {"--epochs=1", "--model_dir=" + *dir_ +
                                                  "/again_second"}));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run->err, "FAILED_PRECONDITION")) << run->err;
  EXPECT_TRUE(absl::StrContains(
      run->err, "ID table 'again_din_mim_s3_id' already holds"))
      << run->err;
  EXPECT_TRUE(absl::StrContains(run->err, "--init_model_dir")) << run->err;
  const auto after = (*client)->Stats("again_din_mim_s3_id");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(ps::TotalStats(*after)[0].rows(), ps::TotalStats(*before)[0].rows());
  EXPECT_FALSE(std::filesystem::exists(*dir_ + "/again_second/manifest.json"));

  // The model file of another save under this manifest: refused by its
  // checksum before anything is trained.
  const std::string damaged = *dir_ + "/again_damaged";
  std::filesystem::create_directories(damaged);
  std::filesystem::copy_file(*dir_ + "/again/manifest.json",
                             damaged + "/manifest.json");
  {
    std::ofstream out(damaged + "/model.mimmodel", std::ios::binary);
    out << first.model_file << "x";
  }
  run = RunCommand(Args("again", {"--epochs=1", "--init_model_dir=" + damaged,
                                  "--model_dir=" + *dir_ + "/again_third"}));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run->err, "differs from its manifest's"))
      << run->err;
}

TEST_F(TrainerReproducibilityTest, ContentModelWithoutContentTableIsRefused) {
  for (const std::string model : {"din_mim", "avgpool_ct"}) {
    std::vector<std::string> args = Args("nocontent_" + model, {});
    for (std::string& a : args) {
      if (absl::StartsWith(a, "--model=")) a = "--model=" + model;
      if (absl::StartsWith(a, "--content_table=")) a = "--content_table=";
    }
    absl::StatusOr<CommandResult> run = RunCommand(args);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 1) << model;
    EXPECT_TRUE(absl::StrContains(run->err, "INVALID_ARGUMENT")) << run->err;
    EXPECT_TRUE(absl::StrContains(run->err, "--content_table=TABLE"))
        << run->err;
    // Refused before anything was trained or written.
    EXPECT_FALSE(std::filesystem::exists(*dir_ + "/nocontent_" + model))
        << model;
  }
}

TEST_F(TrainerReproducibilityTest, TargetIdDropoutIsReproducibleAndTakesEffect) {
  std::vector<RunOutput> runs;  // prefetch on, on, off
  for (const std::string name : {"drop_prefetch_1", "drop_prefetch_2",
                                 "drop_sync"}) {
    SCOPED_TRACE(name);
    runs.push_back(Train(name, {"--target_id_dropout=0.3",
                                absl::StrCat("--prefetch=",
                                             name != "drop_sync")}));
    // gflags prints the double in full ("0.29999999999999999").
    EXPECT_DOUBLE_EQ(std::stod(runs.back()
                                   .metrics["flags"]["target_id_dropout"]
                                   .get<std::string>()),
                     0.3);
  }
  ExpectSameRun(runs[0], runs[1]);
  ExpectSameRun(runs[0], runs[2]);
  // Dropped targets train differently from none dropped: a model file that
  // equalled the plain run's would mean the flag never reached the batches.
  const RunOutput plain = Train("drop_none", {});
  ASSERT_FALSE(plain.model_file.empty());
  EXPECT_FALSE(plain.model_file == runs[0].model_file);
}

TEST_F(TrainerReproducibilityTest, TargetIdDropoutOutOfRangeIsRefused) {
  for (const std::string value : {"1", "-0.1", "nan"}) {
    absl::StatusOr<CommandResult> run = RunCommand(
        Args("drop_bad", {"--target_id_dropout=" + value}));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 1) << value;
    EXPECT_TRUE(absl::StrContains(run->err, "--target_id_dropout = "))
        << run->err;
    EXPECT_TRUE(absl::StrContains(run->err, "expected in [0, 1)"))
        << run->err;
  }
}

}  // namespace
}  // namespace mim
