#include "worker/trainer_report.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/atomic_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace mim::worker {
namespace {

using Json = nlohmann::json;

TrainReport SampleReport() {
  TrainReport r;
  r.config.name = "din_mim";
  r.dense_mode = "local";
  r.id_table = "din_mim_s1_id";
  r.content_table = "item_content";
  r.content_version = 7;
  r.train_samples = 2048;
  r.train_batches = 2;
  r.train_seconds = 0.5;
  r.train_samples_per_sec = 4096;
  r.loss_curve = {{1, 1, 1024, 0.69}, {1, 2, 2048, 0.6}};
  EvalReport e;
  e.source = "test";
  e.path = "test.tsv";
  e.n = 100;
  e.positives = 30;
  e.auc = 0.75;
  e.gauc = eval::GaucResult{0.7, 12, 80};
  e.logloss = 0.5;
  e.cold.n = 10;
  e.cold.positives = 3;
  e.cold.auc = 0.6;
  e.by_item_frequency.resize(10);
  e.by_item_frequency[0].n = 10;
  e.by_item_frequency[0].max_count = 2;
  e.by_item_frequency[0].auc = 0.55;  // groups 1..9 have no AUC
  r.eval = e;
  return r;
}

TEST(MetricsJsonTest, CarriesEveryMetricAndFlag) {
  TrainerOptions o;
  const Json j = Json::parse(
      MetricsJson(SampleReport(), o, {{"model", "din_mim"}, {"epochs", "2"}}));
  EXPECT_EQ(j["model"], "din_mim");
  EXPECT_EQ(j["flags"]["epochs"], "2");
  EXPECT_EQ(j["tables"]["content_version"], 7);
  EXPECT_TRUE(j["tables"]["dense"].is_null());
  EXPECT_EQ(j["train_samples_per_sec"], 4096.0);
  ASSERT_EQ(j["loss_curve"].size(), 2u);
  EXPECT_EQ(j["loss_curve"][1]["samples"], 2048);
  EXPECT_DOUBLE_EQ(j["loss_curve"][1]["loss"].get<double>(), 0.6);
  EXPECT_EQ(j["auc"], 0.75);
  EXPECT_EQ(j["gauc"], 0.7);
  EXPECT_EQ(j["gauc_users"], 12);
  EXPECT_EQ(j["logloss"], 0.5);
  EXPECT_EQ(j["cold_auc"], 0.6);
  EXPECT_EQ(j["cold"]["n"], 10);
  ASSERT_EQ(j["auc_by_item_frequency"].size(), 10u);
  EXPECT_EQ(j["auc_by_item_frequency"][0]["group"], 0);
  EXPECT_EQ(j["auc_by_item_frequency"][0]["max_count"], 2);
  EXPECT_EQ(j["auc_by_item_frequency"][0]["auc"], 0.55);
  EXPECT_TRUE(j["auc_by_item_frequency"][1]["auc"].is_null());
}

TEST(MetricsJsonTest, WorkerWithoutEvaluationHasNullMetrics) {
  TrainReport r = SampleReport();
  r.eval.reset();
  TrainerOptions o;
  o.num_workers = 2;
  o.worker_index = 1;
  const Json j = Json::parse(MetricsJson(r, o, {}));
  EXPECT_EQ(j["worker"]["index"], 1);
  EXPECT_EQ(j["worker"]["num_workers"], 2);
  EXPECT_TRUE(j["auc"].is_null());
  EXPECT_TRUE(j["cold_auc"].is_null());
  EXPECT_EQ(j["eval_n"], 0);
  EXPECT_TRUE(j["auc_by_item_frequency"].empty());
  EXPECT_EQ(j["train_samples"], 2048);
}

TEST(WriteMetricsJsonTest, WritesTheJsonAndANewline) {
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR")) + "/metrics.json";
  TrainerOptions o;
  ASSERT_TRUE(WriteMetricsJson(path, SampleReport(), o, {}).ok());
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), MetricsJson(SampleReport(), o, {}) + "\n");
  EXPECT_FALSE(std::filesystem::exists(base::TempPathFor(path)));
}

TEST(WriteMetricsJsonTest, MissingDirectoryIsInternalAndWritesNothing) {
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR")) + "/no_such_dir/metrics.json";
  const absl::Status written =
      WriteMetricsJson(path, SampleReport(), TrainerOptions(), {});
  EXPECT_EQ(written.code(), absl::StatusCode::kInternal) << written;
  EXPECT_NE(written.message().find("no_such_dir"), std::string::npos)
      << written;
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace mim::worker
