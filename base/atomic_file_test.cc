#include "base/atomic_file.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace mim::base {
namespace {

std::string TempDir() { return std::getenv("TEST_TMPDIR"); }

TEST(AtomicFileTest, WritesAndReplacesWholeFile) {
  const std::string path = TempDir() + "/a.txt";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second, longer").ok());
  std::string got;
  ASSERT_TRUE(ReadFileToString(path, &got).ok());
  EXPECT_EQ(got, "second, longer");
  EXPECT_FALSE(std::filesystem::exists(TempPathFor(path)));
}

TEST(AtomicFileTest, FailureLeavesOldFileAndNamesPath) {
  const std::string dir = TempDir() + "/ro";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "keep").ok());
  // A directory where the temp file should go makes the create fail.
  std::filesystem::create_directories(TempPathFor(path));
  const absl::Status st = WriteFileAtomically(path, "lost");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(st.message().find(TempPathFor(path)), std::string::npos) << st;
  std::string got;
  ASSERT_TRUE(ReadFileToString(path, &got).ok());
  EXPECT_EQ(got, "keep");
}

// The temp file is this process's own: "<path>.<host>-<pid>.tmp".
TEST(AtomicFileTest, TempPathNamesTheHostAndProcess) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  EXPECT_EQ(TempPathFor("/d/f.tsv"), std::string("/d/f.tsv.") + host + "-" +
                                         std::to_string(::getpid()) + ".tmp");
}

TEST(AtomicFileTest, MissingFileIsNotFound) {
  std::string got;
  EXPECT_EQ(ReadFileToString(TempDir() + "/none", &got).code(),
            absl::StatusCode::kNotFound);
}

TEST(AtomicFileTest, SyncsNameWhatFailed) {
  const std::string path = TempDir() + "/synced";
  ASSERT_TRUE(WriteFileAtomically(path, "x").ok());
  EXPECT_TRUE(SyncFile(path).ok());
  EXPECT_TRUE(SyncParentDirectory(path).ok());
  EXPECT_TRUE(SyncParentDirectory("relative-name").ok());  // "."
  const absl::Status file = SyncFile(TempDir() + "/absent");
  EXPECT_EQ(file.code(), absl::StatusCode::kInternal);
  EXPECT_NE(file.message().find(TempDir() + "/absent"), std::string::npos)
      << file;
  const absl::Status dir = SyncParentDirectory(TempDir() + "/no/such");
  EXPECT_EQ(dir.code(), absl::StatusCode::kInternal);
  EXPECT_NE(dir.message().find(TempDir() + "/no"), std::string::npos) << dir;
}

}  // namespace
}  // namespace mim::base
