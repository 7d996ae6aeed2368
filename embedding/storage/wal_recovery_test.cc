// Start-up of the RocksDB backend on damaged or missing files, with real
// files written by the backend: a crash leaves an incomplete last WAL record
// (dropped: never acknowledged); a flipped byte, a truncated log after a
// clean shutdown, a deleted log or a missing db/ refuse to open with
// DATA_LOSS unless accept_data_loss, which then reports what was dropped.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "embedding/storage/storage.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + tag +
                          std::to_string(counter++);
  fs::remove_all(dir);
  return dir;
}

std::string Key(int i) { return absl::StrFormat("k%06d", i); }
// 100 bytes that name the row and the round that wrote it.
std::string Value(int i, int round = 0) {
  std::string v = absl::StrFormat("row %06d round %d ", i, round);
  v.resize(100, '.');
  return v;
}

void WriteRows(Storage& s, int from, int to, int round = 0) {
  for (int i = from; i < to; ++i) {
    StorageBatch b;
    b.puts.emplace_back(Key(i), Value(i, round));
    ASSERT_TRUE(s.Write(b).ok()) << i;
  }
}

std::map<std::string, std::string> Contents(const Storage& s) {
  std::map<std::string, std::string> out;
  EXPECT_TRUE(s.Scan("", [&](absl::string_view k, absl::string_view v) {
                 out.emplace(std::string(k), std::string(v));
                 return absl::OkStatus();
               }).ok());
  return out;
}

// Rows `from`..`to`-1 as WriteRows wrote them.
std::map<std::string, std::string> Rows(int from, int to, int round = 0) {
  std::map<std::string, std::string> out;
  for (int i = from; i < to; ++i) out[Key(i)] = Value(i, round);
  return out;
}

// A child process opens the storage, writes rows 0..n-1 (one batch each)
// and dies without closing anything, as a SIGKILL would leave it: the WAL
// holds every acknowledged write and there is no clean-shutdown marker.
void WriteThenDie(const RocksDbStorageOptions& options, int n) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = OpenRocksDbStorage(options);
    if (!s.ok()) _exit(2);
    for (int i = 0; i < n; ++i) {
      StorageBatch b;
      b.puts.emplace_back(Key(i), Value(i));
      if (!(*s)->Write(b).ok()) _exit(3);
    }
    _exit(0);  // no destructors: the database is never closed
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The WAL files of data_dir's live database, oldest first.
std::vector<std::string> WalFiles(const std::string& data_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(data_dir + "/db")) {
    if (e.path().extension() == ".log") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c ^= 0x20;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  ASSERT_TRUE(f.good());
}

// Every file of db/ but RocksDB's own text log (which each open rewrites).
std::map<std::string, std::string> DbFiles(const std::string& data_dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(data_dir + "/db")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("LOG", 0) == 0) continue;
    out[name] = ReadFile(e.path().string());
  }
  return out;
}

std::string Base(const std::string& path) {
  return fs::path(path).filename().string();
}

TEST(WalRecoveryTest, IncompleteLastRecordAfterACrashIsTheUnacknowledgedWrite) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("torn");
  WriteThenDie(options, 300);
  const std::vector<std::string> wals = WalFiles(options.data_dir);
  ASSERT_EQ(wals.size(), 1u);
  // As if the process died halfway through appending row 299's record.
  fs::resize_file(wals[0], fs::file_size(wals[0]) - 40);
  StorageRecovery recovery;
  auto s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Contents(**s), Rows(0, 299));
  EXPECT_FALSE(recovery.data_loss_accepted);
  EXPECT_EQ(recovery.wal_records_dropped, 0u);
  EXPECT_TRUE(recovery.detail.empty()) << recovery.detail;
}

TEST(WalRecoveryTest, FlippedByteRefusesToOpenAndChangesNothing) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("flip");
  constexpr int kRows = 1000;
  WriteThenDie(options, kRows);
  const std::vector<std::string> wals = WalFiles(options.data_dir);
  ASSERT_EQ(wals.size(), 1u);
  const std::string wal = wals[0];
  // The middle of a 32 KiB block, so inside a record, not block padding.
  const uint64_t offset = fs::file_size(wal) / 2 / 32768 * 32768 + 16000;
  ASSERT_LT(offset, fs::file_size(wal));
  FlipByte(wal, offset);
  const auto before = DbFiles(options.data_dir);

  std::string refusal;
  for (int attempt = 0; attempt < 2; ++attempt) {  // the same each time
    auto s = OpenRocksDbStorage(options);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    if (attempt == 1) {
      EXPECT_EQ(s.status().message(), refusal);
    }
    refusal = std::string(s.status().message());
    EXPECT_EQ(DbFiles(options.data_dir), before);
  }
  EXPECT_THAT(refusal, HasSubstr("write-ahead log db/" + Base(wal) +
                                 " is damaged (Corruption: checksum "
                                 "mismatch"));
  EXPECT_THAT(refusal, HasSubstr("accept_data_loss"));
  EXPECT_THAT(refusal, Not(HasSubstr(options.data_dir)));  // no server path
  EXPECT_FALSE(fs::exists(options.data_dir + "/salvage"));

  // Accepting the loss keeps a prefix of the rows and says exactly how many
  // writes (one record, one row each) came after the recovery point.
  options.accept_data_loss = true;
  StorageRecovery recovery;
  auto s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  const auto rows = Contents(**s);
  const int kept = static_cast<int>(rows.size());
  EXPECT_EQ(rows, Rows(0, kept));
  EXPECT_GT(kept, 0);
  EXPECT_TRUE(recovery.data_loss_accepted);
  EXPECT_FALSE(recovery.started_empty);
  EXPECT_EQ(recovery.files, std::vector<std::string>{"db/" + Base(wal)});
  EXPECT_EQ(recovery.wal_writes_dropped, uint64_t(kRows - kept));
  // Row `kept` is the damaged record. RocksDB skips the rest of its 32 KiB
  // block too (a damaged length could point anywhere), so only the records
  // after that block count as readable; the block counts as unreadable.
  EXPECT_GT(recovery.wal_records_dropped, 0u);
  EXPECT_LT(recovery.wal_records_dropped, uint64_t(kRows - kept - 1));
  // Each record's batch is 122 bytes (its WAL fragment 129 with the header).
  EXPECT_GE(recovery.wal_bytes_dropped, 122u * (kRows - kept));
  EXPECT_LE(recovery.wal_bytes_dropped, 129u * (kRows - kept) + 32768);
  EXPECT_THAT(refusal,
              HasSubstr(absl::StrCat("drops ", recovery.wal_writes_dropped,
                                     " acknowledged writes: ",
                                     recovery.wal_records_dropped,
                                     " readable records (")));
  EXPECT_THAT(recovery.detail, HasSubstr("db/" + Base(wal)));
  // The log as it was is kept, byte for byte.
  ASSERT_THAT(recovery.salvage_dir, HasSubstr("salvage/"));
  EXPECT_EQ(
      ReadFile(options.data_dir + "/" + recovery.salvage_dir + "/" + Base(wal)),
      before.at(Base(wal)));

  // The damage is gone: new writes land, and the next open (without the
  // flag) is clean and reports nothing.
  WriteRows(**s, kRows, kRows + 10);
  s->reset();
  options.accept_data_loss = false;
  StorageRecovery next;
  s = OpenRocksDbStorage(options, &next);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(next.data_loss_accepted);
  auto expected = Rows(0, kept);
  for (const auto& [k, v] : Rows(kRows, kRows + 10)) expected[k] = v;
  EXPECT_EQ(Contents(**s), expected);
}

TEST(WalRecoveryTest, CleanShutdownsReopenWithoutComplaint) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("clean");
  for (int round = 0; round < 3; ++round) {
    StorageRecovery recovery;
    auto s = OpenRocksDbStorage(options, &recovery);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_FALSE(recovery.data_loss_accepted);
    EXPECT_EQ(Contents(**s), Rows(0, 50 * round));
    EXPECT_FALSE(fs::exists(options.data_dir + "/MIM_CLEAN_SHUTDOWN"));
    WriteRows(**s, 50 * round, 50 * (round + 1));
    s->reset();
    EXPECT_TRUE(fs::exists(options.data_dir + "/MIM_CLEAN_SHUTDOWN"));
  }
  EXPECT_TRUE(fs::exists(options.data_dir + "/MIM_DATA_DIR"));
  // A clean start flushes what it replayed once it has checked it, so no log
  // holds data after starts without writes (RocksDB 7.8 leaves each start's
  // empty log behind until the next flush, with or without this check).
  for (int round = 0; round < 3; ++round) {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
  }
  for (const std::string& wal : WalFiles(options.data_dir)) {
    EXPECT_EQ(fs::file_size(wal), 0u) << wal;
  }
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Contents(**s), Rows(0, 150));
}

TEST(WalRecoveryTest, TruncatedLogAfterACleanShutdownRefuses) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("cleantrunc");
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    WriteRows(**s, 0, 300);
  }
  const std::vector<std::string> wals = WalFiles(options.data_dir);
  ASSERT_EQ(wals.size(), 1u);
  // After a clean shutdown there is no write in flight: a cut-off last
  // record is damage, not a crash.
  fs::resize_file(wals[0], fs::file_size(wals[0]) - 40);
  const auto before = DbFiles(options.data_dir);
  auto s = OpenRocksDbStorage(options);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(),
              HasSubstr("write-ahead log db/" + Base(wals[0]) + " is damaged"));
  EXPECT_THAT(s.status().message(),
              HasSubstr("drops 1 acknowledged writes: 0 readable records"));
  EXPECT_EQ(DbFiles(options.data_dir), before);

  options.accept_data_loss = true;
  StorageRecovery recovery;
  s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Contents(**s), Rows(0, 299));
  EXPECT_TRUE(recovery.data_loss_accepted);
  EXPECT_EQ(recovery.wal_records_dropped, 0u);  // the cut record is unreadable
  EXPECT_EQ(recovery.wal_writes_dropped, 1u);   // but was acknowledged
  EXPECT_EQ(recovery.files, std::vector<std::string>{"db/" + Base(wals[0])});
}

// A log lost whole (deleted, or truncated at a record boundary) leaves no
// damage to see; the clean-shutdown marker still tells how far it reached.
TEST(WalRecoveryTest, DeletedLogAfterACleanShutdownRefuses) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("cleandel");
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    WriteRows(**s, 0, 100);
  }
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    WriteRows(**s, 100, 170);
  }
  // Rows 0..99 were flushed to an SST by the second start; 100..169 are only
  // in the second run's log.
  std::vector<std::string> wals = WalFiles(options.data_dir);
  ASSERT_EQ(wals.size(), 1u);
  ASSERT_TRUE(fs::remove(wals.back()));
  for (int attempt = 0; attempt < 2; ++attempt) {  // refused every time
    auto s = OpenRocksDbStorage(options);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    EXPECT_THAT(s.status().message(),
                HasSubstr("70 acknowledged writes are missing"));
    EXPECT_THAT(s.status().message(), HasSubstr("accept_data_loss"));
  }
  options.accept_data_loss = true;
  StorageRecovery recovery;
  auto s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Contents(**s), Rows(0, 100));
  EXPECT_TRUE(recovery.data_loss_accepted);
  EXPECT_EQ(recovery.wal_writes_dropped, 70u);
  s->reset();
  options.accept_data_loss = false;
  s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Contents(**s), Rows(0, 100));
}

TEST(WalRecoveryTest, MissingDatabaseInAShardsDataDirRefuses) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("nodb");
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    WriteRows(**s, 0, 20);
    ASSERT_TRUE((*s)->CreateCheckpoint("c1").ok());
  }
  fs::remove_all(options.data_dir + "/db");
  auto s = OpenRocksDbStorage(options);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(),
              HasSubstr("holds this shard's MIM_DATA_DIR, MIM_CLEAN_SHUTDOWN, "
                        "1 entry under checkpoints/ but not its live database "
                        "(db/ is missing)"));
  EXPECT_THAT(s.status().message(), HasSubstr("accept_data_loss"));
  EXPECT_FALSE(fs::exists(options.data_dir + "/db"));  // nothing created

  // An emptied db/ is no better.
  fs::create_directories(options.data_dir + "/db");
  s = OpenRocksDbStorage(options);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("db/ has no CURRENT file"));

  options.accept_data_loss = true;
  StorageRecovery recovery;
  s = OpenRocksDbStorage(options, &recovery);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(Contents(**s).empty());
  EXPECT_TRUE(recovery.data_loss_accepted);
  EXPECT_TRUE(recovery.started_empty);
  EXPECT_EQ(recovery.files, std::vector<std::string>{"db/"});
  // The checkpoint is still there to restore.
  ASSERT_TRUE((*s)->RestoreCheckpoint("c1").ok());
  EXPECT_EQ(Contents(**s), Rows(0, 20));
}

// A data dir from before MIM_DATA_DIR existed: its checkpoints show it held
// a database.
TEST(WalRecoveryTest, CheckpointsAloneShowADatabaseWasThere) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("legacy");
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->CreateCheckpoint("c1").ok());
  }
  fs::remove_all(options.data_dir + "/db");
  fs::remove(options.data_dir + "/MIM_DATA_DIR");
  fs::remove(options.data_dir + "/MIM_CLEAN_SHUTDOWN");
  auto s = OpenRocksDbStorage(options);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(),
              HasSubstr("holds this shard's 1 entry under checkpoints/"));
}

TEST(WalRecoveryTest, NewOrEmptyDataDirStartsEmpty) {
  // Missing, empty, and holding only files that are not the shard's.
  const std::string missing = FreshDir("new");
  const std::string empty = FreshDir("empty");
  fs::create_directories(empty);
  const std::string other = FreshDir("other");
  fs::create_directories(other + "/checkpoints");
  std::ofstream(other + "/notes.txt") << "operator notes\n";
  for (const std::string& dir : {missing, empty, other}) {
    RocksDbStorageOptions options;
    options.data_dir = dir;
    StorageRecovery recovery;
    auto s = OpenRocksDbStorage(options, &recovery);
    ASSERT_TRUE(s.ok()) << dir << ": " << s.status();
    EXPECT_FALSE(recovery.data_loss_accepted);
    EXPECT_TRUE(fs::exists(dir + "/MIM_DATA_DIR")) << dir;
  }
}

}  // namespace
}  // namespace mim::embedding
