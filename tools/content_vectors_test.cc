#include "tools/content_vectors_lib.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serving/content_encoder.h"
#include "worker/data/content_vectors.h"

namespace mim::tools {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR")) + "/" + name;
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

// The saved encoder reproduces the file: for every item, Encode on the
// item's text (as the file has it) gives exactly the floats the file holds,
// bit for bit (the writer's %.9g reads back as the float printed).
TEST(ContentVectorsTool, SavedEncoderReproducesWrittenVectors) {
  const std::vector<std::string> pool = {
      "Space", "alien", "rocket", "galaxy", "love", "wedding", "romance",
      "kiss",  "the",   "a",      "story",  "of",   "Sci-Fi",  "drama"};
  const std::string text_path = TempPath("encoder_items.tsv");
  std::vector<std::pair<int64_t, std::string>> items;  // As in the file.
  {
    std::mt19937 rng(5);  // Fixed corpus.
    for (int i = 0; i < 50; ++i) {
      std::string text = absl::StrCat("Item #", i, "\t", 1990 + i % 7, "\t");
      for (int w = 0; w < 6 + i % 5; ++w) {
        absl::StrAppend(&text, pool[rng() % pool.size()], w % 4 == 3 ? "! " : " ");
      }
      items.emplace_back(100 + i, text);
    }
    items.emplace_back(7, "...\t--");  // No words: no vector.
    std::ofstream out(text_path);
    out << "#mim-item-text v1\titem\ttitle\tyear\ttext\n";
    for (const auto& [id, text] : items) out << id << '\t' << text << '\n';
  }
  ContentVectorOptions o;
  o.item_text = text_path;
  o.output = TempPath("encoder_items.vec");
  o.encoder_out = TempPath("encoder_dir");
  o.dim = 8;
  o.epoch = 5;
  o.threads = 1;
  auto stats = BuildContentVectors(o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->items, 51);
  EXPECT_EQ(stats->written, 50);
  EXPECT_EQ(stats->skipped_empty, 1);

  auto encoder = serving::ContentEncoder::Load(o.encoder_out);
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  EXPECT_EQ((*encoder)->id(), stats->encoder_id);
  EXPECT_EQ((*encoder)->dim(), 8);

  auto vecs = data::ReadAllContentVectors(o.output, 8);
  ASSERT_TRUE(vecs.ok()) << vecs.status();
  absl::flat_hash_map<int64_t, std::vector<float>> written;
  for (const auto& v : *vecs) written[v.item_id] = v.values;
  ASSERT_EQ(written.size(), 50u);

  int compared = 0;
  for (const auto& [id, text] : items) {
    std::vector<float> encoded;
    auto outcome = (*encoder)->Encode(text, &encoded);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    auto it = written.find(id);
    if (id == 7) {
      EXPECT_EQ(*outcome, serving::EncodeOutcome::kNoKnownWord);
      EXPECT_EQ(encoded, std::vector<float>(8, 0.0f));
      EXPECT_TRUE(it == written.end());
      continue;
    }
    ASSERT_EQ(*outcome, serving::EncodeOutcome::kEncoded) << id;
    ASSERT_TRUE(it != written.end()) << id;
    EXPECT_EQ(encoded, it->second) << "item " << id;
    // What the writer normalised is Encode's output, bit for bit.
    std::vector<float> centred;
    ASSERT_TRUE((*encoder)->EncodeCentred(text, &centred).ok());
    ASSERT_TRUE(data::L2Normalize(&centred));
    EXPECT_EQ(centred, encoded) << id;
    ++compared;
  }
  EXPECT_EQ(compared, 50);
}

TEST(ContentVectorsTool, EncoderOutThatCannotBeCreated) {
  const std::string text_path = TempPath("few.tsv");
  {
    std::ofstream out(text_path);
    out << "1\trocket galaxy\n2\tlove wedding\n";
  }
  const std::string file = TempPath("not_a_dir");
  std::ofstream(file) << "x";
  ContentVectorOptions o;
  o.item_text = text_path;
  o.output = TempPath("few.vec");
  o.encoder_out = file + "/encoder";
  o.dim = 4;
  o.epoch = 1;
  auto stats = BuildContentVectors(o);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr("cannot create encoder directory " + file +
                        "/encoder: "));
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

  // A last line cut short (no newline) is refused, naming the line.
  {
    std::ofstream out(path);
    out << "1\tfine text\n2\tcut sho";
  }
  stats = BuildContentVectors(o);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr(path + ":2: the last line ends without a newline"));

  o.item_text = TempPath("missing.tsv");
  EXPECT_EQ(BuildContentVectors(o).status().code(), absl::StatusCode::kNotFound);
}

// A bad --modality fails before anything is trained or saved: the encoder
// and vectors written by an earlier run stay as they were.
TEST(ContentVectorsTool, BadModalityChangesNothing) {
  const std::string text_path = TempPath("modality_items.tsv");
  {
    std::ofstream out(text_path);
    out << "1\trocket galaxy space\n2\tlove wedding romance\n"
        << "3\tspace rocket launch\n";
  }
  ContentVectorOptions o;
  o.item_text = text_path;
  o.output = TempPath("modality.vec");
  o.encoder_out = TempPath("modality_encoder");
  o.dim = 4;
  o.epoch = 1;
  auto first = BuildContentVectors(o);
  ASSERT_TRUE(first.ok()) << first.status();
  const auto read_all = [](const std::string& p) {
    std::string bytes;
    const absl::Status read = base::ReadFileToString(p, &bytes);
    EXPECT_TRUE(read.ok()) << read;
    return bytes;
  };
  const std::string vectors = read_all(o.output);
  const std::string encoder_dir = o.encoder_out;
  std::vector<std::pair<std::string, std::string>> encoder_files;
  for (const auto& f : std::filesystem::directory_iterator(encoder_dir)) {
    encoder_files.push_back({f.path().string(), read_all(f.path().string())});
  }
  for (const std::string& modality : {std::string("my text"), std::string()}) {
    o.modality = modality;
    auto stats = BuildContentVectors(o);
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument)
        << modality;
    EXPECT_THAT(std::string(stats.status().message()), HasSubstr("modality"));
  }
  EXPECT_EQ(read_all(o.output), vectors);
  for (const auto& [path, bytes] : encoder_files) {
    EXPECT_EQ(read_all(path), bytes) << path;
  }
  // Checked first: before the item texts are even opened.
  o.item_text = TempPath("missing_modality_items.tsv");
  o.modality = "my text";
  EXPECT_EQ(BuildContentVectors(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim::tools

// Debian's libfasttext.so exports its CLI's `main`, which would win over
// gtest_main's when both are shared libraries; so this test has its own.
int main(int argc, char** argv) {
  ::testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
