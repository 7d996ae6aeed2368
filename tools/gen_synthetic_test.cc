#include "tools/gen_synthetic_lib.h"

#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/atomic_file.h"
#include "gtest/gtest.h"
#include "worker/data/content_vectors.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

namespace mim::tools {
namespace {

using ::mim::data::Sample;

std::string MakeDir(const std::string& name) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  EXPECT_EQ(system(("mkdir -p '" + dir + "'").c_str()), 0);
  return dir;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<Sample> ReadAll(const std::string& path) {
  auto r = data::SampleReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<Sample> all, batch;
  while (r.ok()) {
    auto n = (*r)->ReadBatch(1000, &batch);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) break;
    all.insert(all.end(), batch.begin(), batch.end());
  }
  return all;
}

SyntheticOptions Small(const std::string& dir, uint64_t seed) {
  SyntheticOptions o;
  o.output_dir = dir;
  o.num_samples = 5000;
  o.num_items = 400;
  o.num_users = 60;
  o.num_topics = 4;
  o.content_dim = 8;
  o.seed = seed;
  return o;
}

TEST(GenSynthetic, DeterministicBySeed) {
  const std::string a = MakeDir("a"), b = MakeDir("b"), c = MakeDir("c");
  ASSERT_TRUE(GenerateSynthetic(Small(a, 7)).ok());
  ASSERT_TRUE(GenerateSynthetic(Small(b, 7)).ok());
  ASSERT_TRUE(GenerateSynthetic(Small(c, 8)).ok());
  for (const char* f : {"/train.tsv", "/test.tsv", "/item_vectors.tsv",
                        "/item_text.tsv", "/item_truth.tsv"}) {
    const std::string fa = Slurp(a + f);
    EXPECT_GT(fa.size(), 100u) << f;
    EXPECT_EQ(fa, Slurp(b + f)) << f;
    EXPECT_NE(fa, Slurp(c + f)) << f;
  }
}

TEST(GenSynthetic, ValidFormatStrictBehaviourAndColdItems) {
  const std::string dir = MakeDir("valid");
  auto stats = GenerateSynthetic(Small(dir, 3));
  ASSERT_TRUE(stats.ok()) << stats.status();
  std::vector<Sample> train = ReadAll(dir + "/train.tsv");
  std::vector<Sample> test = ReadAll(dir + "/test.tsv");
  EXPECT_EQ(train.size(), 4000u);
  EXPECT_EQ(test.size(), 1000u);
  EXPECT_EQ(stats->train_samples, 4000);
  EXPECT_EQ(stats->test_samples, 1000);
  EXPECT_EQ(stats->test_start, test.front().timestamp);

  // Replay: each behaviour is the user's last <= 50 earlier positives, and
  // timestamps strictly increase through train then test.
  absl::flat_hash_map<int64_t, std::deque<int64_t>> hist;
  absl::flat_hash_set<int64_t> train_items;
  int64_t prev_ts = -1, positives = 0;
  for (const std::vector<Sample>* part : {&train, &test}) {
    for (const Sample& s : *part) {
      ASSERT_GT(s.timestamp, prev_ts);
      prev_ts = s.timestamp;
      const std::deque<int64_t>& h = hist[s.user_id];
      ASSERT_EQ(s.behavior, std::vector<int64_t>(h.begin(), h.end()));
      ASSERT_GE(s.item_id, 1);
      ASSERT_LE(s.item_id, 400);
      ASSERT_EQ(s.genres.size(), 1u);
      if (s.label) {
        ++positives;
        hist[s.user_id].push_back(s.item_id);
        if (hist[s.user_id].size() > 50) hist[s.user_id].pop_front();
      }
      if (part == &train) train_items.insert(s.item_id);
    }
  }
  EXPECT_EQ(positives, stats->positives);
  absl::flat_hash_set<int64_t> cold;
  int64_t cold_samples = 0;
  for (const Sample& s : test) {
    if (!train_items.contains(s.item_id)) {
      cold.insert(s.item_id);
      ++cold_samples;
    }
  }
  EXPECT_GT(cold.size(), 0u);
  EXPECT_EQ(static_cast<int64_t>(cold.size()), stats->cold_test_items);
  EXPECT_EQ(cold_samples, stats->cold_test_samples);
}

TEST(GenSynthetic, ContentVectorsFollowTopics) {
  const std::string dir = MakeDir("content");
  ASSERT_TRUE(GenerateSynthetic(Small(dir, 5)).ok());
  auto vecs = data::ReadAllContentVectors(dir + "/item_vectors.tsv", 8);
  ASSERT_TRUE(vecs.ok()) << vecs.status();
  ASSERT_EQ(vecs->size(), 400u);
  std::ifstream truth(dir + "/item_truth.tsv");
  std::string line;
  std::getline(truth, line);  // Header.
  std::vector<int> topic;
  int64_t item, arrival;
  int t;
  double q;
  while (truth >> item >> arrival >> t >> q) topic.push_back(t);
  ASSERT_EQ(topic.size(), 400u);
  double same = 0, diff = 0;
  int n_same = 0, n_diff = 0;
  for (size_t i = 0; i < 400; ++i) {
    double norm = 0;
    for (float x : (*vecs)[i].values) norm += x * x;
    EXPECT_NEAR(norm, 1.0, 1e-5);
    for (size_t j = i + 1; j < 400; ++j) {
      double dot = 0;
      for (int d = 0; d < 8; ++d) dot += (*vecs)[i].values[d] * (*vecs)[j].values[d];
      if (topic[i] == topic[j]) { same += dot; ++n_same; } else { diff += dot; ++n_diff; }
    }
  }
  // Planted: same-topic items share a centre, so their mean cosine is well
  // above that of other pairs (about 0.6 vs ~0 for noise 0.8).
  EXPECT_GT(same / n_same, diff / n_diff + 0.3);
}

TEST(GenSynthetic, RejectsBadOptions) {
  SyntheticOptions o = Small(MakeDir("bad"), 1);
  o.test_fraction = 1.5;
  EXPECT_EQ(GenerateSynthetic(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Sizes that would allocate without bound or overflow are refused before
  // any file is written.
  for (int which = 0; which < 3; ++which) {
    SyntheticOptions big = Small(MakeDir("big"), 1);
    if (which == 0) big.num_users = int64_t{5} << 30;
    if (which == 1) big.content_dim = 2000000000;
    if (which == 2) big.num_samples = int64_t{1} << 40;
    EXPECT_EQ(GenerateSynthetic(big).status().code(),
              absl::StatusCode::kInvalidArgument)
        << which;
    EXPECT_FALSE(std::filesystem::exists(big.output_dir + "/item_vectors.tsv"));
  }
}

// A run that fails partway leaves an earlier run's files whole, and no
// temp files.
TEST(GenSynthetic, AFailedRunLeavesTheEarlierFiles) {
  const std::string dir = MakeDir("keep");
  SyntheticOptions o = Small(dir, 1);
  ASSERT_TRUE(GenerateSynthetic(o).ok());
  const auto read_all = [](const std::string& p) {
    std::string bytes;
    const absl::Status read = base::ReadFileToString(p, &bytes);
    EXPECT_TRUE(read.ok()) << read;
    return bytes;
  };
  const std::string vectors = read_all(dir + "/item_vectors.tsv");
  const std::string train = read_all(dir + "/train.tsv");
  // test.tsv cannot be created (a directory is in its way): the run fails
  // after the item files and train.tsv were written to their temp files.
  std::filesystem::create_directories(base::TempPathFor(dir + "/test.tsv"));
  o.seed = 2;
  EXPECT_FALSE(GenerateSynthetic(o).ok());
  EXPECT_EQ(read_all(dir + "/item_vectors.tsv"), vectors);
  EXPECT_EQ(read_all(dir + "/train.tsv"), train);
  EXPECT_FALSE(
      std::filesystem::exists(base::TempPathFor(dir + "/item_vectors.tsv")));
  EXPECT_FALSE(
      std::filesystem::exists(base::TempPathFor(dir + "/item_text.tsv")));
  EXPECT_FALSE(
      std::filesystem::exists(base::TempPathFor(dir + "/train.tsv")));
}

}  // namespace
}  // namespace mim::tools
