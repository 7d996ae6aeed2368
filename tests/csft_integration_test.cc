// //worker/csft:csft end to end on two real shards: tiny planted data
// (items of 4 genres, users who like one genre), C-SFT trains, writes the
// vectors, the encoder and the metrics, and upserts every item's vector
// into a new content table; the rows on the shards equal the file, the
// saved encoder reproduces them, and din_mim trains on the new table.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "ps/client.h"
#include "tests/process.h"
#include "worker/csft/encoder.h"
#include "worker/data/content_vectors.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

namespace mim {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::RunCommand;
using ::mim::testing::Runfile;
using ::mim::testing::ShardProcess;

constexpr int kItems = 60;
constexpr int kDim = 8;

void WriteData(const std::string& dir) {
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  {
    auto w = data::ContentVectorWriter::Open(dir + "/vec.tsv", kDim, "text");
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < kItems; ++i) {
      std::vector<float> v(kDim);
      for (int k = 0; k < kDim; ++k) v[k] = (k == i % 4 ? 1.0f : 0.0f) + noise(rng);
      ASSERT_TRUE((*w)->Write(1000 + i, v).ok());
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
  for (const char* name : {"train", "test"}) {
    auto w = data::SampleWriter::Open(dir + "/" + name + ".tsv");
    ASSERT_TRUE(w.ok());
    int64_t ts = std::string(name) == "train" ? 1 : 100000;
    for (int u = 0; u < 40; ++u) {
      std::vector<int64_t> behavior;
      for (int step = 0; step < 12; ++step) {
        data::Sample s;
        s.timestamp = ts++;
        s.user_id = u;
        const int item = int(rng() % kItems);
        s.item_id = 1000 + item;
        s.label = item % 4 == u % 4 ? 1 : 0;
        s.genres = {1 + item % 4};
        s.behavior = behavior;
        if (s.behavior.size() > 50) s.behavior.erase(s.behavior.begin());
        ASSERT_TRUE((*w)->Write(s).ok());
        if (s.label == 1) behavior.push_back(s.item_id);
      }
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
}

TEST(CsftIntegrationTest, TrainsUpsertsAndDinMimTrainsOnTheNewTable) {
  const std::string dir = ::testing::TempDir() + "/csft_e2e";
  ASSERT_EQ(system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  WriteData(dir);
  auto shards = ShardProcess::StartCluster(dir + "/ps", 2);
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::string ps =
      absl::StrCat((*shards)[0]->address(), ",", (*shards)[1]->address());

  absl::StatusOr<CommandResult> run = RunCommand(
      {Runfile("worker/csft/csft"), "--train=" + dir + "/train.tsv",
       "--vectors=" + dir + "/vec.tsv", "--eval_samples=" + dir + "/test.tsv",
       "--out_vectors=" + dir + "/csft.tsv",
       "--encoder_out=" + dir + "/csft.encoder",
       "--metrics_out=" + dir + "/csft.json", "--ps=" + ps,
       "--table=item_content_csft", "--content_version=7", "--epochs=2",
       "--batch_size=32", "--holdout_items=0.2"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->err;

  auto tuned = data::ReadAllContentVectors(dir + "/csft.tsv", kDim);
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  ASSERT_EQ(tuned->size(), size_t(kItems));

  // The shards hold exactly the file's vectors (decimal text: 1e-6).
  auto client = ps::PsClient::Create(
      std::vector<std::string>{(*shards)[0]->address(), (*shards)[1]->address()});
  ASSERT_TRUE(client.ok());
  std::vector<uint64_t> keys;
  for (const auto& iv : *tuned) keys.push_back(uint64_t(iv.item_id));
  auto rows = (*client)->GetRows("item_content_csft", keys);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(rows->missing.empty());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(rows->meta[i].version(), 7u) << "item " << keys[i];
    for (int k = 0; k < kDim; ++k) {
      ASSERT_NEAR(rows->values[i * kDim + k], (*tuned)[i].values[k], 1e-6)
          << "item " << keys[i];
    }
  }

  // The saved encoder encodes an item to its row.
  auto encoder = csft::CsftEncoder::Load(dir + "/csft.encoder");
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  auto plain = data::ReadAllContentVectors(dir + "/vec.tsv", kDim);
  ASSERT_TRUE(plain.ok());
  std::vector<float> x = (*plain)[5].values;
  data::L2Normalize(&x);
  const std::vector<int32_t> genres = {1 + 5 % 4};
  std::vector<float> out(kDim);
  ASSERT_TRUE((*encoder)->Encode({{x.data(), &genres}}, out.data()).ok());
  for (int k = 0; k < kDim; ++k) {
    EXPECT_NEAR(out[k], (*tuned)[5].values[k], 1e-6);
  }

  std::ifstream metrics(dir + "/csft.json");
  std::string json((std::istreambuf_iterator<char>(metrics)),
                   std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"best_epoch\""), std::string::npos);
  EXPECT_NE(json.find("\"new\": {\"plain\""), std::string::npos);

  run = RunCommand({Runfile("worker/trainer"), "--ps=" + ps,
                    "--train=" + dir + "/train.tsv",
                    "--test=" + dir + "/test.tsv", "--model=din_mim",
                    "--content_table=item_content_csft", "--epochs=1",
                    "--table_prefix=e2e_", "--progress=false",
                    "--metrics_out=" + dir + "/din_mim.json"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->err;
}

}  // namespace
}  // namespace mim
