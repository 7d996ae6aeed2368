#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"
#include "base/atomic_file.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/data/text_lines.h"

namespace mim::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR")) + "/" + name;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

Sample MakeSample(int64_t ts, int64_t item) {
  Sample s;
  s.timestamp = ts;
  s.user_id = 7;
  s.item_id = item;
  s.label = 1;
  s.age_bucket = 2;
  s.gender = 1;
  s.occupation = 19;
  s.genres = {3, 5};
  s.behavior = {11, 12, 13};
  return s;
}

TEST(SampleTest, FormatAndParseRoundTrip) {
  Sample s = MakeSample(881250949, 242);
  EXPECT_EQ(FormatSample(s), "881250949\t7\t242\t1\t2\t1\t19\t3,5\t11,12,13");
  Sample back;
  ASSERT_TRUE(ParseSample(FormatSample(s), &back).ok());
  EXPECT_EQ(back, s);
}

TEST(SampleTest, EmptyListsRoundTrip) {
  Sample s = MakeSample(1, 2);
  s.genres.clear();
  s.behavior.clear();
  EXPECT_EQ(FormatSample(s), "1\t7\t2\t1\t2\t1\t19\t\t");
  Sample back;
  ASSERT_TRUE(ParseSample(FormatSample(s), &back).ok());
  EXPECT_EQ(back, s);
}

TEST(SampleTest, ParseErrorsNameTheField) {
  Sample s;
  absl::Status st = ParseSample("1\t2\t3\t2\t0\t0\t0\t\t", &s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("field 'label'"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("got '2'"));

  st = ParseSample("1\t2\t3\t1\t0\t0\t0\t1,x\t", &s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("field 'genres'"));

  // Genres are a set (Predict and UpsertItem refuse a repeat too).
  st = ParseSample("1\t2\t3\t1\t0\t0\t0\t7,4,7\t", &s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("field 'genres' (column 8): got '7,4,7', expected "
                        "distinct genre ids (7 appears twice)"));
  ASSERT_TRUE(ParseSample("1\t2\t3\t1\t0\t0\t0\t7,4,5\t", &s).ok());
  EXPECT_THAT(s.genres, ElementsAre(7, 4, 5));  // order kept

  st = ParseSample("-5\t2\t3\t1\t0\t0\t0\t\t", &s);
  EXPECT_THAT(std::string(st.message()), HasSubstr("field 'ts'"));

  st = ParseSample("1\t2\t3\t1", &s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("got 4 tab-separated"));

  std::string long_behavior;
  for (int i = 0; i < kMaxBehaviorLength + 1; ++i) {
    long_behavior += (i ? "," : "") + std::to_string(i);
  }
  st = ParseSample("1\t2\t3\t1\t0\t0\t0\t\t" + long_behavior, &s);
  EXPECT_THAT(std::string(st.message()), HasSubstr("field 'behavior'"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("at most 50"));
}

TEST(SampleIoTest, WriteThenReadInBatches) {
  const std::string path = TempPath("samples.tsv");
  {
    auto w = SampleWriter::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*w)->Write(MakeSample(100 + i, 1000 + i)).ok());
    }
    EXPECT_EQ((*w)->num_written(), 5);
    ASSERT_TRUE((*w)->Close().ok());
  }
  auto r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<Sample> batch;
  std::vector<size_t> sizes;
  std::vector<int64_t> items;
  while (true) {
    auto n = (*r)->ReadBatch(2, &batch);
    ASSERT_TRUE(n.ok()) << n.status();
    sizes.push_back(*n);
    ASSERT_EQ(batch.size(), *n);
    if (*n == 0) break;
    for (const Sample& s : batch) items.push_back(s.item_id);
  }
  EXPECT_THAT(sizes, ElementsAre(2, 2, 1, 0));
  EXPECT_THAT(items, ElementsAre(1000, 1001, 1002, 1003, 1004));
  EXPECT_EQ(batch.size(), 0u);
  auto again = (*r)->ReadBatch(2, &batch);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
}

// A writer replaces its file only at Close: an abandoned write (an error
// halfway, a destructor without Close) leaves the old file whole.
TEST(SampleIoTest, TheOldFileStaysUntilCloseReplacesIt) {
  const std::string path = TempPath("replace.tsv");
  const auto count_rows = [&] {
    auto r = SampleReader::Open(path);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<Sample> batch;
    auto n = (*r)->ReadBatch(100, &batch);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? static_cast<int>(*n) : -1;
  };
  {
    auto w = SampleWriter::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*w)->Write(MakeSample(1, i)).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  EXPECT_EQ(count_rows(), 3);
  {
    auto w = SampleWriter::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Write(MakeSample(1, 9)).ok());
    EXPECT_EQ(count_rows(), 3);  // still the old file while writing
  }  // abandoned
  EXPECT_EQ(count_rows(), 3);
  EXPECT_FALSE(std::filesystem::exists(base::TempPathFor(path)));
  auto w = SampleWriter::Open(path);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Write(MakeSample(1, 9)).ok());
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ(count_rows(), 1);
  EXPECT_FALSE(std::filesystem::exists(base::TempPathFor(path)));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Two runs writing one output at once (two processes here): each writes a
// temp file of its own, so the output is always one run's whole file. The
// child starts first and commits last; the parent writes and commits the
// whole file in between. With one temp name shared by both, the parent's
// create truncated the child's half-written file, the parent's rename put
// that shared file in place, the child's later bytes landed in it, and the
// child's own rename failed.
TEST(TempFileTest, TwoProcessesWritingOnePathEachCommitAWholeFile) {
  const std::string dir = TempPath("two_writers");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/out.tsv";
  const std::string first(64 * 1024, 'c');
  const std::string second = "child's last line\n";
  int started[2];
  int go_on[2];
  ASSERT_EQ(::pipe(started), 0);
  ASSERT_EQ(::pipe(go_on), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Each side keeps only its own pipe ends, so that either one's exit
    // ends the other's read instead of leaving it blocked.
    ::close(started[0]);
    ::close(go_on[1]);
    char c;
    TempFile file(path, "child's output");
    if (!file.Opened().ok()) ::_exit(2);
    file.out() << first;
    file.out().flush();
    if (::write(started[1], "s", 1) != 1) ::_exit(3);
    if (::read(go_on[0], &c, 1) != 1) ::_exit(4);
    file.out() << second;
    if (!file.Finish().ok()) ::_exit(5);
    if (!file.Commit().ok()) ::_exit(6);
    ::_exit(0);
  }
  ::close(started[1]);
  ::close(go_on[0]);
  bool reaped = false;
  absl::Cleanup reap = [&] {
    if (!reaped) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    }
    ::close(started[0]);
    ::close(go_on[1]);
  };
  char c;
  ASSERT_EQ(::read(started[0], &c, 1), 1);  // the child is half-way
  {
    TempFile file(path, "parent's output");
    ASSERT_TRUE(file.Opened().ok());
    file.out() << "parent's file\n";
    ASSERT_TRUE(file.Finish().ok());
    ASSERT_TRUE(file.Commit().ok());
  }
  EXPECT_EQ(ReadAll(path), "parent's file\n");
  ASSERT_EQ(::write(go_on[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  reaped = true;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's write failed";
  EXPECT_TRUE(ReadAll(path) == first + second)
      << "the output is not the child's whole file (" << ReadAll(path).size()
      << " bytes)";
  // Nothing is left beside it.
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ElementsAre("out.tsv"));
}

TEST(SampleIoTest, MalformedRowNamesFileLineAndField) {
  const std::string path = TempPath("bad.tsv");
  WriteFile(path, std::string(kSampleHeader) +
                      "\n1\t2\t3\t1\t0\t0\t0\t\t\n"
                      "2\t2\tabc\t1\t0\t0\t0\t\t\n");
  auto r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::vector<Sample> batch;
  auto n = (*r)->ReadBatch(10, &batch);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(n.status().message()),
              HasSubstr(path + ":3: field 'item' (column 3): got 'abc'"));
}

// A file cut short in its last line: "...\t1234" became "...\t12", which
// would parse as another id. Without the final newline it is refused,
// naming the line; the same line with its newline reads.
TEST(SampleIoTest, LastLineWithoutNewlineIsRefusedNamingIt) {
  const std::string path = TempPath("cut.tsv");
  const std::string rows = std::string(kSampleHeader) +
                           "\n1\t2\t3\t1\t0\t0\t0\t\t\n"
                           "0\t7\t12";
  WriteFile(path, rows);
  auto r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<Sample> batch;
  auto n = (*r)->ReadBatch(10, &batch);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(n.status().message()),
              HasSubstr(path + ":3: the last line ends without a newline"));
  // Even when the cut line parses completely.
  WriteFile(path, std::string(kSampleHeader) +
                      "\n1\t2\t3\t1\t0\t0\t0\t\t\n"
                      "1\t2\t3\t1\t0\t0\t0\t\t");
  r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  n = (*r)->ReadBatch(10, &batch);
  EXPECT_THAT(std::string(n.status().message()),
              HasSubstr(path + ":3: the last line ends without a newline"));
  WriteFile(path, std::string(kSampleHeader) +
                      "\n1\t2\t3\t1\t0\t0\t0\t\t\n"
                      "1\t2\t3\t1\t0\t0\t0\t\t\n");
  r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  n = (*r)->ReadBatch(10, &batch);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  // A header alone without a newline is an empty file, not a cut one.
  WriteFile(path, std::string(kSampleHeader));
  r = SampleReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  n = (*r)->ReadBatch(10, &batch);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
}

// ReadLine reads what std::getline reads, across its 4 KiB chunks (lines
// of 4094 to 4097 bytes and longer, empty lines, CRLF, a last line with
// and without a newline), and stops at the bound.
TEST(ReadLineTest, SameLinesAsGetlineAndBounded) {
  std::string text;
  for (size_t len : {0, 1, 4094, 4095, 4096, 4097, 9000, 0, 12288, 3}) {
    text += std::string(len, 'a' + len % 26);
    text += len == 3 ? "\r\n" : "\n";
  }
  for (const std::string& last : {std::string(""), std::string("tail"),
                                   std::string(8191, 'z')}) {
    std::istringstream want(text + last), got(text + last);
    std::string w, g;
    int lines = 0;
    for (;;) {
      const bool more = static_cast<bool>(std::getline(want, w));
      const LineRead read = ReadLine(got, &g);
      ASSERT_EQ(more, read == LineRead::kLine) << "line " << lines;
      if (!more) break;
      ASSERT_EQ(g, w) << "line " << lines;
      EXPECT_EQ(got.eof(), want.eof()) << "line " << lines;
      ++lines;
    }
    EXPECT_EQ(lines, last.empty() ? 10 : 11);
  }
  std::istringstream in("short\n" + std::string(5000, 'x') + "\nafter\n");
  std::string line;
  EXPECT_EQ(ReadLine(in, &line, 4500), LineRead::kLine);
  EXPECT_EQ(line, "short");
  EXPECT_EQ(ReadLine(in, &line, 4500), LineRead::kTooLong);
  EXPECT_TRUE(line.empty());
  EXPECT_EQ(ReadLine(in, &line, 4500), LineRead::kEnd);  // left failed
  std::istringstream exact(std::string(100, 'y') + "\n" +
                           std::string(101, 'y'));
  EXPECT_EQ(ReadLine(exact, &line, 100), LineRead::kLine);
  EXPECT_EQ(ReadLine(exact, &line, 100), LineRead::kTooLong);
}

// A file without newlines is refused at the line that passes the bound,
// without reading it whole.
TEST(SampleIoTest, OverlongLineIsRefusedNamingIt) {
  const std::string path = TempPath("overlong.tsv");
  {
    std::ofstream out(path);
    out << kSampleHeader << "\n" << std::string(kMaxLineBytes + 10, '1');
  }
  auto reader = SampleReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<Sample> batch;
  const auto n = (*reader)->ReadBatch(8, &batch);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(n.status().message()),
              ::testing::HasSubstr(path + ":2: the line is longer than " +
                                   std::to_string(kMaxLineBytes) + " bytes"));
  {
    std::ofstream out(path);
    out << std::string(kMaxLineBytes + 1, 'h') << "\n";
  }
  const auto bad_header = SampleReader::Open(path);
  EXPECT_EQ(bad_header.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_header.status().message()),
              ::testing::HasSubstr(":1: the line is longer than"));
}

TEST(SampleIoTest, WrongHeaderAndMissingFile) {
  const std::string path = TempPath("nohdr.tsv");
  WriteFile(path, "1\t2\t3\t1\t0\t0\t0\t\t\n");
  auto r = SampleReader::Open(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(path + ":1:"));
  EXPECT_EQ(SampleReader::Open(TempPath("missing.tsv")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SampleIoTest, ItemFirstSeenTakesEarliestTimestamp) {
  const std::string path = TempPath("first.tsv");
  {
    auto w = SampleWriter::Open(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(MakeSample(50, 1)).ok());
    ASSERT_TRUE((*w)->Write(MakeSample(10, 2)).ok());
    ASSERT_TRUE((*w)->Write(MakeSample(30, 1)).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  auto first = ItemFirstSeen(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->size(), 2u);
  EXPECT_EQ(first->at(1), 30);
  EXPECT_EQ(first->at(2), 10);
}

}  // namespace
}  // namespace mim::data
