#include "worker/data/content_vectors.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/atomic_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::data {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR")) + "/" + name;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

TEST(ContentVectorsTest, WriterNormalisesAndReaderRoundTrips) {
  const std::string path = TempPath("vec.txt");
  {
    auto w = ContentVectorWriter::Open(path, 3, "text");
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<float> a = {3, 0, 4};
    std::vector<float> b = {0, -2, 0};
    ASSERT_TRUE((*w)->Write(10, a).ok());
    ASSERT_TRUE((*w)->Write(11, b).ok());
    EXPECT_EQ((*w)->Write(12, std::vector<float>{0, 0, 0}).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ((*w)->Write(12, std::vector<float>{1, 0}).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*w)->Close().ok());
  }
  auto all = ReadAllContentVectors(path, 3);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].item_id, 10);
  EXPECT_FLOAT_EQ((*all)[0].values[0], 0.6f);
  EXPECT_FLOAT_EQ((*all)[0].values[1], 0.0f);
  EXPECT_FLOAT_EQ((*all)[0].values[2], 0.8f);
  EXPECT_EQ((*all)[1].item_id, 11);
  EXPECT_FLOAT_EQ((*all)[1].values[1], -1.0f);

  auto r = ContentVectorReader::Open(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->dim(), 3);
  EXPECT_EQ((*r)->modality(), "text");
}

// The file is replaced only at Close; an abandoned writer leaves the old
// one whole and no temp file behind.
TEST(ContentVectorsTest, TheOldFileStaysUntilCloseReplacesIt) {
  const std::string path = TempPath("replace_vec.txt");
  {
    auto w = ContentVectorWriter::Open(path, 2, "text");
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Write(1, std::vector<float>{1, 0}).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  {
    auto w = ContentVectorWriter::Open(path, 2, "text");
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Write(2, std::vector<float>{0, 1}).ok());
    auto during = ReadAllContentVectors(path, 2);
    ASSERT_TRUE(during.ok()) << during.status();
    EXPECT_EQ((*during)[0].item_id, 1);
  }  // abandoned
  auto after = ReadAllContentVectors(path, 2);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].item_id, 1);
  EXPECT_FALSE(std::filesystem::exists(base::TempPathFor(path)));
}

TEST(ContentVectorsTest, DimMismatchWithCaller) {
  const std::string path = TempPath("dim.txt");
  WriteFile(path, "#mim-vectors v1\tdim=3\tmodality=image\n1\t1 0 0\n");
  auto r = ContentVectorReader::Open(path, 64);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("dim=3 but the caller expects dim=64"));
}

TEST(ContentVectorsTest, BadRowsNameFileAndLine) {
  const std::string path = TempPath("bad.txt");
  WriteFile(path,
            "#mim-vectors v1\tdim=2\tmodality=text\n1\t1 0\n2\t1 0 0\n");
  auto all = ReadAllContentVectors(path);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(all.status().message()),
              HasSubstr(path + ":3: item 2 has 3 values, expected dim=2"));

  WriteFile(path, "#mim-vectors v1\tdim=2\tmodality=text\n1\t1 nan\n");
  all = ReadAllContentVectors(path);
  EXPECT_THAT(std::string(all.status().message()),
              HasSubstr(path + ":2: value 2 'nan' is not a finite float"));

  WriteFile(path, "#mim-vectors v1\tdim=2\tmodality=text\n1\t1 0\n1\t0 1\n");
  all = ReadAllContentVectors(path);
  EXPECT_THAT(std::string(all.status().message()),
              HasSubstr("item id 1 appears more than once"));

  WriteFile(path, "item\tvec\n");
  all = ReadAllContentVectors(path);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(all.status().message()), HasSubstr(path + ":1:"));
}

// "2\t0.6 0.8" cut to "2\t0.6 0.8"... or to "2\t0.6 0.": the last value
// parses either way; without the final newline the line is refused.
TEST(ContentVectorsTest, LastLineWithoutNewlineIsRefusedNamingIt) {
  const std::string path = TempPath("cut.txt");
  for (const char* last : {"2\t0.6 0.", "2\t0.6 0.8", "2\t0.6"}) {
    WriteFile(path, absl::StrCat("#mim-vectors v1\tdim=2\tmodality=text\n"
                                 "1\t1 0\n",
                                 last));
    auto all = ReadAllContentVectors(path);
    EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument) << last;
    EXPECT_THAT(std::string(all.status().message()),
                HasSubstr(path + ":3: the last line ends without a newline"))
        << last;
  }
  WriteFile(path,
            "#mim-vectors v1\tdim=2\tmodality=text\n1\t1 0\n2\t0.6 0.8\n");
  auto all = ReadAllContentVectors(path);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 2u);
}

// A header's dim sizes every row's buffer: one far above any table's was
// an 8 GB allocation per row (found by tests/fuzz content_vectors).
TEST(ContentVectorsTest, DimAboveTheLimitIsRefusedAtOpen) {
  const std::string path = TempPath("huge_dim.txt");
  WriteFile(path,
            "#mim-vectors v1\tdim=2000000000\tmodality=text\n1\t0.5\n");
  auto r = ContentVectorReader::Open(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            path + ":1: dim=2000000000 is above the largest vector file dim, "
                   "65536");
  EXPECT_EQ(ReadAllContentVectors(path).status().code(),
            absl::StatusCode::kInvalidArgument);

  WriteFile(path, "#mim-vectors v1\tdim=65536\tmodality=text\n");
  r = ContentVectorReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->dim(), kMaxContentVectorDim);

  auto w = ContentVectorWriter::Open(TempPath("w.txt"),
                                     kMaxContentVectorDim + 1, "text");
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ContentVectorsTest, L2Normalize) {
  std::vector<float> v = {1, 1, 1, 1};
  ASSERT_TRUE(L2Normalize(&v));
  for (float x : v) EXPECT_FLOAT_EQ(x, 0.5f);
  std::vector<float> z = {0, 0};
  EXPECT_FALSE(L2Normalize(&z));
}

}  // namespace
}  // namespace mim::data
