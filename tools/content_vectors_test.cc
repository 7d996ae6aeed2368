#include "tools/content_vectors_lib.h"

#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/content_vectors.h"

namespace mim::tools {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR")) + "/" + name;
}

TEST(ContentVectorsTool, Normalisation) {
  EXPECT_EQ(NormalizeTextForFastText("  Children's Sci-Fi\t1995 "),
            "children s sci fi 1995");
  EXPECT_EQ(NormalizeTextForFastText("Amélie!"), "amélie");
  EXPECT_EQ(NormalizeTextForFastText("..."), "");
}

// Two genres with disjoint word pools plus shared filler. A model of text
// must place same-genre items closer than cross-genre items on average.
TEST(ContentVectorsTool, SameGenreItemsAreCloser) {
  const std::vector<std::string> space = {
      "space", "alien", "rocket", "galaxy", "planet", "robot", "laser",
      "starship", "orbit", "astronaut"};
  const std::vector<std::string> love = {
      "love", "wedding", "romance", "kiss", "heart", "bride", "dating",
      "couple", "passion", "letter"};
  const std::vector<std::string> filler = {"the", "a", "story", "of", "man",
                                           "woman", "city", "night"};
  const std::string text_path = TempPath("items.tsv");
  std::set<std::string> words = {"</s>", "item", "1990", "sci", "fi",
                                 "romance"};
  {
    std::ofstream out(text_path);
    out << "#mim-item-text v1\titem\ttitle\tyear\tgenres\tplot\n";
    std::mt19937 rng(42);  // Fixed corpus.
    for (int i = 0; i < 60; ++i) {
      const auto& pool = i % 2 == 0 ? space : love;
      out << i + 1 << "\tItem " << i + 1 << "\t1990\t"
          << (i % 2 == 0 ? "Sci-Fi" : "Romance") << "\t";
      words.insert(std::to_string(i + 1));
      for (int w = 0; w < 20; ++w) {
        const std::string& word = rng() % 3 == 0 ? filler[rng() % filler.size()]
                                                 : pool[rng() % pool.size()];
        words.insert(word);
        out << word << ' ';
      }
      out << '\n';
    }
    out << "61\t...\n";  // No words: skipped, not an error.
  }
  ContentVectorOptions o;
  o.item_text = text_path;
  o.output = TempPath("items.vec");
  o.dim = 16;
  o.epoch = 20;
  auto stats = BuildContentVectors(o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->items, 61);
  EXPECT_EQ(stats->written, 60);
  EXPECT_EQ(stats->skipped_empty, 1);
  // min_count 1: every distinct normalised word, plus fastText's "</s>".
  EXPECT_EQ(stats->vocabulary, static_cast<int64_t>(words.size()));

  auto vecs = data::ReadAllContentVectors(o.output, 16);
  ASSERT_TRUE(vecs.ok()) << vecs.status();
  ASSERT_EQ(vecs->size(), 60u);
  double same = 0, cross = 0;
  int n_same = 0, n_cross = 0;
  for (size_t i = 0; i < vecs->size(); ++i) {
    const auto& a = (*vecs)[i];
    double norm = 0;
    for (float x : a.values) norm += x * x;
    EXPECT_NEAR(norm, 1.0, 1e-5);
    for (size_t j = i + 1; j < vecs->size(); ++j) {
      const auto& b = (*vecs)[j];
      double dot = 0;
      for (int d = 0; d < 16; ++d) dot += a.values[d] * b.values[d];
      if ((a.item_id % 2) == (b.item_id % 2)) {
        same += dot;
        ++n_same;
      } else {
        cross += dot;
        ++n_cross;
      }
    }
  }
  EXPECT_GT(same / n_same, cross / n_cross + 0.05)
      << "same " << same / n_same << " cross " << cross / n_cross;
}

TEST(ContentVectorsTool, BadInputs) {
  const std::string path = TempPath("bad.tsv");
  {
    std::ofstream out(path);
    out << "1\tfine text\nx2\tbad id\n";
  }
  ContentVectorOptions o;
  o.item_text = path;
  o.output = TempPath("bad.vec");
  auto stats = BuildContentVectors(o);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(path + ":2:"));

  {
    std::ofstream out(path);
    out << "1\tfine text\n1\tagain\n";
  }
  stats = BuildContentVectors(o);
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr(path + ":2: item id 1 appears twice"));

  o.item_text = TempPath("missing.tsv");
  EXPECT_EQ(BuildContentVectors(o).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mim::tools

// Debian's libfasttext.so exports its CLI's `main`, which would win over
// gtest_main's when both are shared libraries; so this test has its own.
int main(int argc, char** argv) {
  ::testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
