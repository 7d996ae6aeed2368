#include "tools/prepare_movielens_lib.h"

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"

namespace mim::tools {
namespace {

using ::mim::data::Sample;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::vector<Sample> ReadAll(const std::string& path) {
  auto r = data::SampleReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<Sample> all, batch;
  while (true) {
    auto n = (*r)->ReadBatch(3, &batch);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) break;
    all.insert(all.end(), batch.begin(), batch.end());
  }
  return all;
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string MakeDir(const std::string& name) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  std::string cmd = "mkdir -p '" + dir + "'";
  EXPECT_EQ(system(cmd.c_str()), 0);
  return dir;
}

const char kUsers[] =
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n"
    "2\t60\tF\tastronaut\t94043\n";

TEST(PrepareMovieLens, ExactSamplesTiesSplitAndPlots) {
  const std::string dir = MakeDir("tiny");
  WriteFile(dir + "/ml-100k.user", kUsers);
  WriteFile(dir + "/ml-100k.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            "class:token_seq\n"
            "10\tUsual Suspects, The\t1995\tCrime Thriller\n"
            "11\tToy Story\t1995\tAnimation Children's Comedy\n"
            "12\tSeven (Se7en)\t1995\tCrime\n"
            "13\tNope\t2000\tDrama\n");
  WriteFile(dir + "/movies_extrainfos.dat",
            "50::The Usual Suspects::1995::R::x::Crime::d::w::a::Plot A.::u\n"
            "1::Toy Story::1995::G::x::Animation::d::w::a::Plot\tB.::u\n"
            "3::Seven::1995::R::x::Crime::d::w::a::Plot C.::u\n"
            "4::Nope::1999::R::x::Drama::d::w::a::Wrong year.::u\n");
  // Deliberately unsorted; two rows of user 1 share timestamp 100.
  WriteFile(dir + "/ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t12\t2\t200\n"
            "1\t11\t4\t100\n"
            "2\t13\t4\t300\n"
            "1\t10\t5\t100\n"
            "2\t10\t3\t150\n"
            "1\t13\t5\t300\n");
  MovieLensPrepOptions opt;
  opt.input_dir = dir;
  opt.output_dir = dir;
  opt.test_start = 300;
  auto stats = PrepareMovieLens(opt);
  ASSERT_TRUE(stats.ok()) << stats.status();

  std::vector<Sample> train = ReadAll(dir + "/train.tsv");
  std::vector<Sample> test = ReadAll(dir + "/test.tsv");
  ASSERT_EQ(train.size(), 4u);
  ASSERT_EQ(test.size(), 2u);
  // Order (ts, user, item) and the strict-before behaviour.
  EXPECT_EQ(data::FormatSample(train[0]), "100\t1\t10\t1\t2\t1\t20\t7,17\t");
  EXPECT_EQ(data::FormatSample(train[1]), "100\t1\t11\t1\t2\t1\t20\t4,5,6\t");
  EXPECT_EQ(data::FormatSample(train[2]), "150\t2\t10\t0\t7\t2\t0\t7,17\t");
  EXPECT_EQ(data::FormatSample(train[3]), "200\t1\t12\t0\t2\t1\t20\t7\t10,11");
  EXPECT_EQ(data::FormatSample(test[0]), "300\t1\t13\t1\t2\t1\t20\t9\t10,11");
  // User 2's only earlier row (item 10) was a negative.
  EXPECT_EQ(data::FormatSample(test[1]), "300\t2\t13\t1\t7\t2\t0\t9\t");

  EXPECT_EQ(stats->samples, 6);
  EXPECT_EQ(stats->positives, 4);
  EXPECT_EQ(stats->train_samples, 4);
  EXPECT_EQ(stats->test_samples, 2);
  EXPECT_EQ(stats->users, 2);
  EXPECT_EQ(stats->items, 4);
  EXPECT_EQ(stats->test_items, 1);
  EXPECT_EQ(stats->cold_test_items, 1);
  EXPECT_EQ(stats->cold_test_samples, 2);
  EXPECT_EQ(stats->catalogue_items, 4);
  EXPECT_EQ(stats->plot_matches, 3);
  EXPECT_EQ(stats->plot_matches_exact, 2);

  EXPECT_THAT(
      ReadLines(dir + "/item_text.tsv"),
      ElementsAre("#mim-item-text v1\titem\ttitle\tyear\tgenres\tplot",
                  "10\tUsual Suspects, The\t1995\tCrime Thriller\tPlot A.",
                  "11\tToy Story\t1995\tAnimation Children's Comedy\tPlot B.",
                  "12\tSeven (Se7en)\t1995\tCrime\tPlot C.",
                  "13\tNope\t2000\tDrama\t"));
}

TEST(PrepareMovieLens, BehaviourKeepsTheLast50Positives) {
  const std::string dir = MakeDir("cap");
  WriteFile(dir + "/ml-100k.user", kUsers);
  WriteFile(dir + "/ml-100k.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            "class:token_seq\n");
  std::string inter =
      "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";
  for (int i = 1; i <= 60; ++i) {
    inter += "1\t" + std::to_string(i) + "\t4\t" + std::to_string(i) + "\n";
  }
  inter += "1\t999\t1\t100\n";
  WriteFile(dir + "/ml-100k.inter", inter);
  MovieLensPrepOptions opt;
  opt.input_dir = dir;
  opt.output_dir = dir;
  opt.test_start = 100;
  auto stats = PrepareMovieLens(opt);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->plot_matches, 0);  // No plot file: allowed.
  std::vector<Sample> train = ReadAll(dir + "/train.tsv");
  std::vector<Sample> test = ReadAll(dir + "/test.tsv");
  ASSERT_EQ(train.size(), 60u);
  ASSERT_EQ(test.size(), 1u);
  std::vector<int64_t> expected;
  for (int i = 11; i <= 60; ++i) expected.push_back(i);
  EXPECT_EQ(test[0].behavior, expected);
  EXPECT_EQ(test[0].label, 0);
  EXPECT_THAT(train[0].behavior, IsEmpty());
  EXPECT_EQ(train[50].behavior.size(), 50u);  // ts 51 sees items 1..50.
  EXPECT_EQ(train[50].behavior.front(), 1);
  EXPECT_EQ(train[51].behavior.front(), 2);
  EXPECT_TRUE(train[0].genres.empty());  // Item not in the catalogue.
}

TEST(PrepareMovieLens, MalformedRowNamesFileLineAndColumn) {
  const std::string dir = MakeDir("bad");
  WriteFile(dir + "/ml-100k.user", kUsers);
  WriteFile(dir + "/ml-100k.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            "class:token_seq\n");
  WriteFile(dir + "/ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t2\t4\t10\n"
            "1\t3\tfive\t11\n");
  MovieLensPrepOptions opt;
  opt.input_dir = dir;
  opt.output_dir = dir;
  auto stats = PrepareMovieLens(opt);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr(dir + "/ml-100k.inter:3: column 'rating': got 'five'"));

  opt.input_dir = dir + "/nowhere";
  EXPECT_EQ(PrepareMovieLens(opt).status().code(), absl::StatusCode::kNotFound);
}

// A bad plot file is found before anything is written: an earlier run's
// train.tsv, test.tsv and item_text.tsv stay as they were.
TEST(PrepareMovieLens, ABadPlotFileWritesNothing) {
  const std::string dir = MakeDir("badplot");
  WriteFile(dir + "/ml-100k.user", kUsers);
  WriteFile(dir + "/ml-100k.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            "class:token_seq\n"
            "11\tToy Story\t1995\tAnimation\n");
  WriteFile(dir + "/ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t11\t4\t100\n2\t11\t5\t200\n");
  MovieLensPrepOptions opt;
  opt.input_dir = dir;
  opt.output_dir = dir;
  opt.test_start = 150;
  ASSERT_TRUE(PrepareMovieLens(opt).ok());
  const std::vector<std::string> train = ReadLines(dir + "/train.tsv");
  const std::vector<std::string> text = ReadLines(dir + "/item_text.tsv");
  ASSERT_EQ(ReadAll(dir + "/train.tsv").size(), 1u);

  WriteFile(dir + "/ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t11\t4\t100\n2\t11\t5\t120\n");
  WriteFile(dir + "/movies_extrainfos.dat", "1::Toy Story::1995\n");
  auto stats = PrepareMovieLens(opt);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()),
              HasSubstr("movies_extrainfos.dat:1: got 3 '::'-separated "
                        "fields, expected at least 10"));
  EXPECT_EQ(ReadLines(dir + "/train.tsv"), train);
  EXPECT_EQ(ReadLines(dir + "/item_text.tsv"), text);
}

TEST(PrepareMovieLens, TitleNormalisationAndAgeBuckets) {
  EXPECT_EQ(NormalizeTitle("Usual Suspects, The"), "the usual suspects");
  EXPECT_EQ(NormalizeTitle(" The Usual Suspects "), "the usual suspects");
  EXPECT_EQ(NormalizeTitle("Time to Kill, A"), "a time to kill");
  EXPECT_EQ(NormalizeTitle("Toy Story"), "toy story");
  EXPECT_EQ(AgeBucket(0), 0);
  EXPECT_EQ(AgeBucket(17), 1);
  EXPECT_EQ(AgeBucket(18), 2);
  EXPECT_EQ(AgeBucket(24), 2);
  EXPECT_EQ(AgeBucket(25), 3);
  EXPECT_EQ(AgeBucket(56), 7);
}

}  // namespace
}  // namespace mim::tools
