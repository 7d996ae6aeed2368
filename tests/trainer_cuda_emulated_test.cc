// The trainer's CUDA path end to end without a GPU: //worker:trainer_cuda_emulated
// (the trainer with the CUDA twins on the grid emulator,
// kernels/testing/README.md) trains the default model (din_mim, default
// epochs, batch size and learning rates) with --device=cuda on a small
// tools/gen_synthetic stream, against a real //ps:server shard on
// loopback; //worker:trainer does the same with --device=cpu on its own
// tables. The two must evaluate alike; the CUDA path with overlapped input
// copies (--overlap_copies, on the prefetch thread) must give the same
// bits as without.
//
// Bounds. Both runs are deterministic (fixed seeds, one worker, no
// prefetch: the same batches in the same order), so this test cannot fail
// by chance; the runs differ only by the twins' floating-point summation
// orders (kernels_cuda_test.cc), which perturb every step slightly. The
// AUC bound 0.005 is far above that perturbation's effect (when this test
// was written: the same AUC, logloss 3e-9 apart) and far below the AUC's sampling noise at
// 800 test samples (standard error about 0.02), so a CUDA path that trains
// a different model (a wrong gradient, a buffer left stale) cannot pass;
// per-sample predictions must agree within 2e-3 (probabilities).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/process.h"

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;
using Json = nlohmann::json;

constexpr double kAucBound = 0.005;
constexpr double kPredictionBound = 2e-3;

absl::Status RunTool(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> r = RunCommand(argv);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " exited ", r->exit_code,
                                            ": ", r->err.substr(0, 4000)));
  }
  return absl::OkStatus();
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

// Scores of a --predictions_out file, in file order.
std::vector<double> ReadScores(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::vector<double> scores;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    scores.push_back(std::stod(f.back()));
  }
  return scores;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(TrainerCudaEmulatedTest, TrainsTheSyntheticDefaultLikeTheCpuPath) {
  const std::string dir =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/trainer_cuda");
  const std::string data = dir + "/data";
  std::filesystem::create_directories(data);
  auto shards = ShardProcess::StartCluster(dir, 1);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps = (*shards)[0]->address();
  ASSERT_TRUE(RunTool({Runfile("tools/gen_synthetic"), "--output_dir=" + data,
                   "--num_samples=4000", "--num_items=300",
                   "--num_users=200", "--seed=5"})
                  .ok());
  const absl::Status ingested =
      RunTool({Runfile("tools/ingest_content"), "--ps=" + ps,
           "--vectors=" + data + "/item_vectors.tsv", "--table=content",
           "--content_version=1"});
  ASSERT_TRUE(ingested.ok()) << ingested;

  // Runs: the CPU path; the CUDA path with each batch copied in at its
  // step (no prefetch thread); the CUDA path with the inputs staged on the
  // prefetch thread into double-buffered device inputs while the previous
  // batch computes (--overlap_copies, the default).
  // And the CUDA path with TF32 GEMMs (--cuda_math=tf32).
  struct Run {
    const char* name;
    const char* device;
    bool overlap;
    const char* math;
  };
  const Run runs[] = {{"cpu", "cpu", false, "fp32"},
                      {"cuda", "cuda", false, "fp32"},
                      {"cuda_overlap", "cuda", true, "fp32"},
                      {"cuda_tf32", "cuda", false, "tf32"}};
  constexpr int kRuns = sizeof(runs) / sizeof(runs[0]);
  Json metrics[kRuns];
  std::vector<double> scores[kRuns];
  for (int i = 0; i < kRuns; ++i) {
    const std::string name = runs[i].name, dev = runs[i].device;
    const std::string bin =
        Runfile(dev == "cpu" ? "worker/trainer" : "worker/trainer_cuda_emulated");
    const std::string overlap = runs[i].overlap ? "true" : "false";
    const absl::Status trained = RunTool(
        {bin, "--ps=" + ps, "--train=" + data + "/train.tsv",
         "--test=" + data + "/test.tsv", "--content_table=content",
         "--device=" + dev, "--prefetch=" + overlap,
         "--overlap_copies=" + overlap, "--cuda_math=" + std::string(runs[i].math),
         "--progress=false",
         "--table_prefix=" + name + "_", "--model_dir=" + dir + "/model_" + name,
         "--metrics_out=" + dir + "/metrics_" + name + ".json",
         "--predictions_out=" + dir + "/predictions_" + name + ".tsv"});
    ASSERT_TRUE(trained.ok()) << name << ": " << trained;
    metrics[i] = ReadJson(dir + "/metrics_" + name + ".json");
    scores[i] = ReadScores(dir + "/predictions_" + name + ".tsv");
    EXPECT_EQ(metrics[i]["device"], dev);
    EXPECT_EQ(metrics[i]["model"], "din_mim");
    std::cout << name << ": AUC " << metrics[i]["auc"] << ", logloss "
              << metrics[i]["logloss"] << ", "
              << metrics[i]["train_samples_per_sec"] << " samples/s\n";
  }
  // Overlapped copies change where the inputs are, not what is computed:
  // the same bits (a device input set rewritten before its compute ran
  // would differ, and the emulator faults on a copy no event orders after
  // the compute reading its buffer).
  const Json& overlapped = metrics[2];
  EXPECT_EQ(overlapped["train_batches"], metrics[1]["train_batches"]);
  EXPECT_EQ(overlapped["loss_curve"], metrics[1]["loss_curve"]);
  EXPECT_EQ(overlapped["auc"], metrics[1]["auc"]);
  EXPECT_EQ(overlapped["logloss"], metrics[1]["logloss"]);
  EXPECT_EQ(scores[2], scores[1]);
  EXPECT_EQ(ReadBytes(dir + "/model_cuda_overlap/model.mimmodel"),
            ReadBytes(dir + "/model_cuda/model.mimmodel"));
  EXPECT_FALSE(ReadBytes(dir + "/model_cuda/model.mimmodel").empty());

  // TF32 GEMMs (operands rounded to 10-bit mantissas) train a model that
  // evaluates like strict fp32's, within the bound the CPU path is held to
  // (far below the AUC's sampling noise).
  const Json& tf32 = metrics[3];
  std::cout << "tf32 - fp32: AUC "
            << tf32["auc"].get<double>() - metrics[1]["auc"].get<double>() << ", logloss "
            << tf32["logloss"].get<double>() - metrics[1]["logloss"].get<double>() << "\n";
  EXPECT_EQ(tf32["train_batches"], metrics[1]["train_batches"]);
  EXPECT_NEAR(tf32["auc"].get<double>(), metrics[1]["auc"].get<double>(), kAucBound);
  EXPECT_NEAR(tf32["logloss"].get<double>(), metrics[1]["logloss"].get<double>(), kAucBound);
  const Json& cpu = metrics[0];
  const Json& cuda = metrics[1];
  EXPECT_EQ(cpu["train_samples"], cuda["train_samples"]);
  EXPECT_EQ(cpu["eval_n"], cuda["eval_n"]);
  // Both learned something (the generator plants a learnable signal).
  EXPECT_GT(cpu["auc"].get<double>(), 0.6);
  EXPECT_NEAR(cuda["auc"].get<double>(), cpu["auc"].get<double>(), kAucBound);
  EXPECT_NEAR(cuda["logloss"].get<double>(), cpu["logloss"].get<double>(),
              kAucBound);
  ASSERT_EQ(scores[0].size(), scores[1].size());
  ASSERT_EQ(static_cast<int64_t>(scores[0].size()), cpu["eval_n"].get<int64_t>());
  for (size_t k = 0; k < scores[0].size(); ++k) {
    ASSERT_NEAR(scores[0][k], scores[1][k], kPredictionBound) << "sample " << k;
  }

  // --dense_params=nccl reaches NCCL only in a --config=cuda build: the
  // emulated trainer says so (the grid emulator has no NCCL), and the CPU
  // path refuses it.
  for (const std::string dev : {"cpu", "cuda"}) {
    absl::StatusOr<CommandResult> r = RunCommand(
        {Runfile(dev == "cpu" ? "worker/trainer" : "worker/trainer_cuda_emulated"),
         "--ps=" + ps, "--train=" + data + "/train.tsv",
         "--test=" + data + "/test.tsv", "--content_table=content",
         "--device=" + dev, "--dense_params=nccl", "--progress=false",
         "--table_prefix=nccl_" + dev + "_"});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->exit_code, 0) << dev;
    EXPECT_NE(r->err.find(dev == "cpu" ? "--dense_params=nccl all-reduces on the GPUs"
                                       : "built without NCCL"),
              std::string::npos)
        << dev << ": " << r->err;
  }
  // Bad values of the CUDA path's flags are refused, naming them.
  const std::pair<std::string, std::string> bad_flags[] = {
      {"--cuda_math=bf16", "--cuda_math = 'bf16', expected fp32 or tf32"},
      {"--nccl_timeout_s=0", "--nccl_timeout_s = 0, expected > 0"}};
  for (const auto& [flag, message] : bad_flags) {
    absl::StatusOr<CommandResult> r = RunCommand(
        {Runfile("worker/trainer_cuda_emulated"), "--ps=" + ps,
         "--train=" + data + "/train.tsv", "--test=" + data + "/test.tsv",
         "--device=cuda", "--progress=false", flag});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->exit_code, 0) << flag;
    EXPECT_NE(r->err.find(message), std::string::npos) << flag << ": " << r->err;
  }
}

}  // namespace
}  // namespace mim
