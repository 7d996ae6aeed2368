// One typed suite runs every Storage backend through the same scenarios.
#include "embedding/storage/storage.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace mim::embedding {
namespace {

std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + tag +
                          std::to_string(counter++);
  std::filesystem::remove_all(dir);
  return dir;
}

// Names of `storage`'s checkpoints, in the order ListCheckpoints gives.
std::vector<std::string> Names(const Storage& storage) {
  std::vector<std::string> out;
  for (const StoredCheckpoint& c : storage.ListCheckpoints()) {
    out.push_back(c.name);
  }
  return out;
}

struct RocksDbBackend {
  static std::unique_ptr<Storage> Make() {
    RocksDbStorageOptions options;
    options.data_dir = FreshDir("rocks");
    auto s = OpenRocksDbStorage(options);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(s).value();
  }
};

struct MemoryBackend {
  static std::unique_ptr<Storage> Make() { return NewMemoryStorage(); }
};

template <typename Backend>
class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override { storage_ = Backend::Make(); }

  std::map<std::string, std::string> ScanAll(const Storage& s,
                                             const std::string& prefix) {
    std::map<std::string, std::string> out;
    EXPECT_TRUE(s.Scan(prefix, [&](absl::string_view k, absl::string_view v) {
                   out.emplace(std::string(k), std::string(v));
                   return absl::OkStatus();
                 }).ok());
    return out;
  }

  void Put(const std::string& k, const std::string& v) {
    StorageBatch b;
    b.puts.emplace_back(k, v);
    ASSERT_TRUE(storage_->Write(b).ok());
  }

  std::unique_ptr<Storage> storage_;
};

using Backends = ::testing::Types<RocksDbBackend, MemoryBackend>;
TYPED_TEST_SUITE(StorageTest, Backends);

TYPED_TEST(StorageTest, WriteGetAndMissingKey) {
  this->Put("a", "1");
  auto v = this->storage_->Get("a");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "1");
  EXPECT_EQ(this->storage_->Get("b").status().code(),
            absl::StatusCode::kNotFound);
  // Binary keys and values survive intact.
  const std::string k("r/t/\0\x01\xff", 7), val("\0\0x", 3);
  this->Put(k, val);
  v = this->storage_->Get(k);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, val);
}

TYPED_TEST(StorageTest, BatchAppliesPutsThenDeletes) {
  this->Put("x", "old");
  StorageBatch b;
  b.puts = {{"p/1", "a"}, {"p/2", "b"}, {"y", "c"}};
  b.deletes = {"x", "y"};
  ASSERT_TRUE(this->storage_->Write(b).ok());
  EXPECT_EQ(this->storage_->Get("x").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->Get("y").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->ScanAll(*this->storage_, "p/"),
            (std::map<std::string, std::string>{{"p/1", "a"}, {"p/2", "b"}}));
}

TYPED_TEST(StorageTest, BuiltBatchAppliesPartsInOrderThenDeletes) {
  this->Put("x", "old");
  this->Put("z", "old");
  std::unique_ptr<StorageBatchBuilder> b =
      this->storage_->NewBatchBuilder(/*puts=*/2, /*bytes=*/8);
  std::map<std::string, std::string> want;
  // More than reserved, so the batch grows while being built.
  for (int i = 0; i < 100; ++i) {
    const std::string k = std::to_string(1000 + i);
    const std::string v(static_cast<size_t>(i), static_cast<char>(i));
    const absl::string_view key_parts[] = {"p/", k};
    const absl::string_view value_parts[] = {"<", v, "", ">"};
    b->PutParts(key_parts, value_parts);
    want["p/" + k] = "<" + v + ">";
  }
  const std::string binary_key("p/\0\xff", 4), binary_value("\0x\0", 3);
  b->Put(binary_key, binary_value);
  want[binary_key] = binary_value;
  // Parts beyond what a row needs (RocksDB joins those itself).
  std::vector<absl::string_view> many(20, "ab");
  b->PutParts({"p/many"}, many);
  want["p/many"] = std::string(40, 'a');
  for (size_t i = 1; i < 40; i += 2) want["p/many"][i] = 'b';
  // A later put of the same key wins; deletes come after every put, even
  // one given before a put of the same key.
  b->Put("p/1000", "later");
  want["p/1000"] = "later";
  b->Delete("x");
  b->Put("x", "put after its delete");
  b->Delete("z");
  ASSERT_TRUE(this->storage_->WriteBuilt(std::move(b)).ok());
  EXPECT_EQ(this->storage_->Get("x").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->Get("z").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->ScanAll(*this->storage_, "p/"), want);

  // A builder of another storage is refused and writes nothing.
  std::unique_ptr<Storage> other = TypeParam::Make();
  std::unique_ptr<StorageBatchBuilder> foreign = other->NewBatchBuilder(1, 4);
  foreign->Put("q", "1");
  EXPECT_EQ(this->storage_->WriteBuilt(std::move(foreign)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(this->storage_->Get("q").status().code(),
            absl::StatusCode::kNotFound);
}

// A prefix delete removes every key with the prefix, keys written before
// and in the same batch, and nothing else: not a key that is a prefix of
// it, nor one that shares all but its last byte, nor one whose bytes after
// the prefix's are 0xff; a checkpoint taken before still holds them all.
TYPED_TEST(StorageTest, PrefixDeleteRemovesExactlyThePrefixAfterPuts) {
  const std::string high("r/t/\xff\xff", 6);
  for (const char* k : {"r/t", "r/t/1", "r/t/2", "r/t0", "r/s/1", "r/t."}) {
    this->Put(k, "v");
  }
  this->Put(high, "v");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("before").ok());
  StorageBatch b;
  b.puts = {{"r/t/3", "put in the same batch"}, {"t/u", "config"}};
  b.deletes = {"r/s/1"};
  b.delete_prefixes = {"r/t/"};
  ASSERT_TRUE(this->storage_->Write(b).ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, "r/"),
            (std::map<std::string, std::string>{
                {"r/t", "v"}, {"r/t.", "v"}, {"r/t0", "v"}}));
  EXPECT_EQ(*this->storage_->Get("t/u"), "config");
  auto before = this->storage_->OpenCheckpoint("before");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(this->ScanAll(**before, "r/t/").size(), 3u);

  // Through a builder too, with a prefix ending in 0xff (its range ends at
  // "{", the byte before the 0xff raised by one).
  this->Put(std::string("z\xfe", 2), "v");
  this->Put("{", "v");
  std::unique_ptr<StorageBatchBuilder> built =
      this->storage_->NewBatchBuilder(1, 8);
  built->Put(std::string("z\xff\x01", 3), "v");
  built->Put(std::string("z\xff", 2), "v");
  built->DeletePrefix(std::string("z\xff", 2));
  ASSERT_TRUE(this->storage_->WriteBuilt(std::move(built)).ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, "z").size(), 1u);
  EXPECT_EQ(*this->storage_->Get(std::string("z\xfe", 2)), "v");
  EXPECT_EQ(*this->storage_->Get("{"), "v");

  // An empty prefix, or one of 0xff bytes only, is refused and the whole
  // batch writes nothing.
  for (const std::string& bad : {std::string(), std::string("\xff\xff", 2)}) {
    StorageBatch refused;
    refused.puts = {{"r/new", "v"}};
    refused.delete_prefixes = {"r/t", bad};
    absl::Status st = this->storage_->Write(refused);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_EQ(this->storage_->Get("r/new").status().code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(*this->storage_->Get("r/t"), "v");
  }
}

TYPED_TEST(StorageTest, ScanVisitsOnlyThePrefixInOrderAndStopsOnError) {
  for (const char* k : {"a/2", "a/1", "a0", "b/1", "a/3", "a"}) this->Put(k, k);
  std::vector<std::string> seen;
  absl::Status st = this->storage_->Scan(
      "a/", [&](absl::string_view k, absl::string_view) {
        seen.emplace_back(k);
        return k == "a/2" ? absl::CancelledError("stop") : absl::OkStatus();
      });
  EXPECT_EQ(st.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, (std::vector<std::string>{"a/1", "a/2"}));
  EXPECT_EQ(this->ScanAll(*this->storage_, "b/").size(), 1u);
  EXPECT_EQ(this->ScanAll(*this->storage_, "").size(), 6u);
}

TYPED_TEST(StorageTest, ScanAfterResumesPastAKey) {
  for (const char* k : {"a", "a/1", "a/2", "a/3", "a0", "b/1"}) this->Put(k, k);
  auto keys_after = [&](const std::string& prefix, const std::string& after) {
    std::vector<std::string> seen;
    EXPECT_TRUE(this->storage_
                    ->ScanAfter(prefix, after,
                                [&](absl::string_view k, absl::string_view) {
                                  seen.emplace_back(k);
                                  return absl::OkStatus();
                                })
                    .ok());
    return seen;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(keys_after("a/", ""), (V{"a/1", "a/2", "a/3"}));
  EXPECT_EQ(keys_after("a/", "a/1"), (V{"a/2", "a/3"}));
  EXPECT_EQ(keys_after("a/", "a/15"), (V{"a/2", "a/3"}));  // absent key
  EXPECT_EQ(keys_after("a/", "a/3"), V{});
  EXPECT_EQ(keys_after("a/", "a"), (V{"a/1", "a/2", "a/3"}));  // before it
  EXPECT_EQ(keys_after("a/", "b"), V{});
}

TYPED_TEST(StorageTest, CheckpointIsAPointInTimeCopy) {
  this->Put("k1", "v1");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c1").ok());
  this->Put("k1", "v1-new");
  this->Put("k2", "v2");
  EXPECT_EQ(this->storage_->CreateCheckpoint("c1").code(),
            absl::StatusCode::kAlreadyExists);
  for (const char* bad : {"", "a/b", "..", "x..y", "c.tmp"}) {
    EXPECT_EQ(this->storage_->CreateCheckpoint(bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c0").ok());
  EXPECT_EQ(Names(*this->storage_),
            (std::vector<std::string>{"c1", "c0"}));  // creation order

  auto cp = this->storage_->OpenCheckpoint("c1");
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ(this->ScanAll(**cp, ""),
            (std::map<std::string, std::string>{{"k1", "v1"}}));
  StorageBatch b;
  b.puts = {{"z", "z"}};
  EXPECT_EQ((*cp)->Write(b).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->storage_->OpenCheckpoint("nope").status().code(),
            absl::StatusCode::kNotFound);
}

// Names chosen so that name order and creation order disagree.
TYPED_TEST(StorageTest, ListCheckpointsIsCreationOrderNotNameOrder) {
  const std::vector<std::string> created = {
      "zz-first", "ckpt-20991231-235959.999999", "before-migration", "a",
      "B", "a.2"};
  for (const std::string& name : created) {
    this->Put("k", name);
    ASSERT_TRUE(this->storage_->CreateCheckpoint(name).ok()) << name;
  }
  EXPECT_EQ(Names(*this->storage_), created);
  // Restoring an older checkpoint (which opens it) does not reorder them,
  // and a checkpoint taken afterwards is the newest.
  ASSERT_TRUE(this->storage_->RestoreCheckpoint("zz-first").ok());
  ASSERT_TRUE(this->storage_->OpenCheckpoint("before-migration").ok());
  EXPECT_EQ(Names(*this->storage_), created);
  ASSERT_TRUE(this->storage_->CreateCheckpoint("0-after-restore").ok());
  std::vector<std::string> expected = created;
  expected.push_back("0-after-restore");
  EXPECT_EQ(Names(*this->storage_), expected);
  // A failed create takes no place in the order.
  EXPECT_EQ(this->storage_->CreateCheckpoint("a").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Names(*this->storage_), expected);
}

// Each listed checkpoint carries its creation sequence (increasing, above
// 0) and the time it was created.
TYPED_TEST(StorageTest, ListCheckpointsReportsSequenceAndCreationTime) {
  const int64_t before = absl::ToUnixMicros(absl::Now());
  for (const char* name : {"b", "a", "c"}) {
    ASSERT_TRUE(this->storage_->CreateCheckpoint(name).ok()) << name;
  }
  const int64_t after = absl::ToUnixMicros(absl::Now());
  const std::vector<StoredCheckpoint> listed =
      this->storage_->ListCheckpoints();
  ASSERT_EQ(listed.size(), 3u);
  uint64_t previous = 0;
  for (const StoredCheckpoint& c : listed) {
    EXPECT_GT(c.sequence, previous) << c.name;
    previous = c.sequence;
    EXPECT_GE(c.created_micros, before) << c.name;
    EXPECT_LE(c.created_micros, after) << c.name;
  }
}

TYPED_TEST(StorageTest, RestoreReplacesLiveContents) {
  this->Put("k1", "v1");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c1").ok());
  this->Put("k1", "changed");
  this->Put("k2", "added");
  ASSERT_TRUE(this->storage_->RestoreCheckpoint("c1").ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v1"}}));
  // Still writable afterwards, and the checkpoint itself is untouched.
  this->Put("k3", "v3");
  EXPECT_EQ(this->ScanAll(*this->storage_, "").size(), 2u);
  auto cp = this->storage_->OpenCheckpoint("c1");
  ASSERT_TRUE(cp.ok());
  EXPECT_EQ(this->ScanAll(**cp, "").size(), 1u);
}

// PrepareRestore does the slow half while writes go on: the live contents
// are unchanged by it, a write after it is still replaced by the restore,
// and a restore of another checkpoint discards it.
TYPED_TEST(StorageTest, PreparedRestoreReplacesWritesMadeAfterIt) {
  this->Put("k1", "v1");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c1").ok());
  this->Put("k1", "v2");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c2").ok());
  ASSERT_TRUE(this->storage_->PrepareRestore("c1").ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v2"}}));
  this->Put("k2", "during");
  ASSERT_TRUE(this->storage_->RestoreCheckpoint("c1").ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v1"}}));
  ASSERT_TRUE(this->storage_->PrepareRestore("c1").ok());
  ASSERT_TRUE(this->storage_->RestoreCheckpoint("c2").ok());
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v2"}}));
  EXPECT_EQ(this->storage_->PrepareRestore("missing").code(),
            absl::StatusCode::kNotFound);
  this->Put("k3", "after");  // still writable
  EXPECT_EQ(this->ScanAll(*this->storage_, "").size(), 2u);
}

TYPED_TEST(StorageTest, DeleteCheckpointRemovesOnlyThatOne) {
  this->Put("k1", "v1");
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c1").ok());
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c2").ok());
  ASSERT_TRUE(this->storage_->DeleteCheckpoint("c1").ok());
  EXPECT_EQ(Names(*this->storage_), std::vector<std::string>{"c2"});
  EXPECT_EQ(this->storage_->OpenCheckpoint("c1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->RestoreCheckpoint("c1").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->DeleteCheckpoint("c1").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->DeleteCheckpoint("../db").code(),
            absl::StatusCode::kNotFound);
  // The live contents and the other checkpoint are untouched; the name
  // can be taken again, and is then the newest.
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v1"}}));
  auto c2 = this->storage_->OpenCheckpoint("c2");
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(this->ScanAll(**c2, "").size(), 1u);
  ASSERT_TRUE(this->storage_->CreateCheckpoint("c1").ok());
  EXPECT_EQ(Names(*this->storage_),
            (std::vector<std::string>{"c2", "c1"}));
}

TYPED_TEST(StorageTest, RestoreOfMissingCheckpointChangesNothing) {
  this->Put("k1", "v1");
  EXPECT_EQ(this->storage_->RestoreCheckpoint("missing").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->storage_->RestoreCheckpoint("../db").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(this->ScanAll(*this->storage_, ""),
            (std::map<std::string, std::string>{{"k1", "v1"}}));
}

// RocksDB only: contents and restores survive closing and reopening.
TEST(RocksDbStorageTest, ReopenKeepsWritesAndRestores) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("reopen");
  options.sync_writes = true;
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    StorageBatch b;
    b.puts = {{"a", "1"}};
    ASSERT_TRUE((*s)->Write(b).ok());
    ASSERT_TRUE((*s)->CreateCheckpoint("cp").ok());
    b.puts = {{"a", "2"}, {"b", "3"}};
    ASSERT_TRUE((*s)->Write(b).ok());
  }
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(*(*s)->Get("a"), "2");
    EXPECT_EQ(*(*s)->Get("b"), "3");
    ASSERT_TRUE((*s)->RestoreCheckpoint("cp").ok());
  }
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*(*s)->Get("a"), "1");
  EXPECT_EQ((*s)->Get("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Names(**s), std::vector<std::string>{"cp"});
}

// RocksDB only: memtable_bytes reaches the live database (its OPTIONS
// file records write_buffer_size), on the first open, after a reopen and
// after a restore; 0 leaves RocksDB's default. A memtable smaller than the
// writes flushes them on the way: every row still reads back.
TEST(RocksDbStorageTest, MemtableBytesReachTheLiveDatabase) {
  namespace fs = std::filesystem;
  auto write_buffer_size = [](const std::string& dir) {
    // The newest OPTIONS-<number> file of the live database.
    std::string newest;
    for (const auto& e : fs::directory_iterator(fs::path(dir) / "db")) {
      const std::string name = e.path().filename().string();
      if (name.rfind("OPTIONS-", 0) == 0 &&
          (newest.empty() || std::stoull(name.substr(8)) >
                                 std::stoull(newest.substr(8)))) {
        newest = name;
      }
    }
    std::ifstream in(fs::path(dir) / "db" / newest);
    std::string line;
    while (std::getline(in, line)) {
      // The column family's option, not DBOptions' db_write_buffer_size.
      const size_t start = line.find_first_not_of(" \t");
      if (start != std::string::npos &&
          line.compare(start, 18, "write_buffer_size=") == 0) {
        return line.substr(start + 18);
      }
    }
    return std::string("none in ") + newest;
  };
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("memtable");
  options.memtable_bytes = size_t{1} << 20;
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(write_buffer_size(options.data_dir), "1048576");
    // 4 MB of rows through a 1 MiB memtable.
    for (int b = 0; b < 40; ++b) {
      StorageBatch batch;
      for (int i = 0; i < 100; ++i) {
        batch.puts.emplace_back("r/" + std::to_string(b * 100 + i),
                                std::string(1000, static_cast<char>('a' + b % 26)));
      }
      ASSERT_TRUE((*s)->Write(batch).ok());
    }
    ASSERT_TRUE((*s)->CreateCheckpoint("cp").ok());
    ASSERT_TRUE((*s)->RestoreCheckpoint("cp").ok());
    EXPECT_EQ(write_buffer_size(options.data_dir), "1048576");
  }
  options.memtable_bytes = size_t{3} << 20;
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(write_buffer_size(options.data_dir), "3145728");
    for (int k : {0, 1999, 3999}) {
      absl::StatusOr<std::string> v = (*s)->Get("r/" + std::to_string(k));
      ASSERT_TRUE(v.ok()) << k << ": " << v.status();
      EXPECT_EQ(*v, std::string(1000, static_cast<char>('a' + (k / 100) % 26)));
    }
  }
  options.memtable_bytes = 0;
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(write_buffer_size(options.data_dir), "67108864");
}

// RocksDB only: rows written in random order, several times each, scan in
// key order with their last values from the memtable being written, after
// a flush (the checkpoint's) and after a reopen (the WAL replayed into a
// memtable and flushed), including keys whose first 32 bytes are equal.
TEST(RocksDbStorageTest, RandomOrderWritesScanSortedThroughFlushAndReopen) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("sorted");
  std::map<std::string, std::string> expected;
  uint64_t state = 12345;  // fixed: the same keys every run
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  auto write_round = [&](Storage& s, int round) {
    for (int b = 0; b < 20; ++b) {
      StorageBatch batch;
      for (int i = 0; i < 100; ++i) {
        const uint64_t key = next() % 1500;
        std::string k = (key % 2 ? "r/bench/" : "r/" + std::string(40, 't') +
                                                     "/");
        for (int shift = 56; shift >= 0; shift -= 8) {
          k.push_back(static_cast<char>((key >> shift) & 0xff));
        }
        const std::string v = std::to_string(round * 100000 + b * 100 + i);
        batch.puts.emplace_back(k, v);
        expected[k] = v;
      }
      ASSERT_TRUE(s.Write(batch).ok());
    }
  };
  auto scan = [](const Storage& s) {
    std::vector<std::pair<std::string, std::string>> out;
    EXPECT_TRUE(s.Scan("r/", [&](absl::string_view k, absl::string_view v) {
                   out.emplace_back(std::string(k), std::string(v));
                   return absl::OkStatus();
                 }).ok());
    return out;
  };
  using Rows = std::vector<std::pair<std::string, std::string>>;
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    write_round(**s, 1);
    EXPECT_EQ(scan(**s), Rows(expected.begin(), expected.end()));
    ASSERT_TRUE((*s)->CreateCheckpoint("flushed").ok());
    write_round(**s, 2);
    EXPECT_EQ(scan(**s), Rows(expected.begin(), expected.end()));
  }
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(scan(**s), Rows(expected.begin(), expected.end()));
}

// RocksDB only: a prefix delete (a range tombstone) holds through a flush,
// a reopen and a restore of a checkpoint taken after it, and rows written
// under the prefix afterwards are seen again.
TEST(RocksDbStorageTest, PrefixDeleteSurvivesFlushReopenAndRestore) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("prefix");
  options.memtable_bytes = 64 << 10;  // flushes on the way
  auto key = [](const std::string& table, int i) {
    return "r/" + table + "/" + std::to_string(100000 + i);
  };
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    for (int b = 0; b < 20; ++b) {
      StorageBatch batch;
      for (int i = 0; i < 100; ++i) {
        batch.puts.emplace_back(key("a", b * 100 + i), std::string(200, 'a'));
        batch.puts.emplace_back(key("b", b * 100 + i), std::string(200, 'b'));
      }
      ASSERT_TRUE((*s)->Write(batch).ok());
    }
    StorageBatch drop;
    drop.deletes = {"t/a"};
    drop.delete_prefixes = {"r/a/"};
    ASSERT_TRUE((*s)->Write(drop).ok());
    ASSERT_TRUE((*s)->CreateCheckpoint("after").ok());
    StorageBatch again;
    again.puts = {{key("a", 7), "new"}};
    ASSERT_TRUE((*s)->Write(again).ok());
  }
  auto count = [](const Storage& s, const std::string& prefix) {
    size_t n = 0;
    EXPECT_TRUE(s.Scan(prefix, [&](absl::string_view, absl::string_view) {
                   ++n;
                   return absl::OkStatus();
                 }).ok());
    return n;
  };
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(count(**s, "r/a/"), 1u);
  EXPECT_EQ(*(*s)->Get(key("a", 7)), "new");
  EXPECT_EQ((*s)->Get(key("a", 8)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(count(**s, "r/b/"), 2000u);
  ASSERT_TRUE((*s)->RestoreCheckpoint("after").ok());
  EXPECT_EQ(count(**s, "r/a/"), 0u);
  EXPECT_EQ(count(**s, "r/b/"), 2000u);
}

// RocksDB only: a prefix delete and CompactDeletedPrefix give the live
// database's space back (a checkpoint's hard links keep theirs): the
// deleted rows' files are removed or compacted away in the background, so
// the files shrink to about the rows that are left, without any other
// write to trigger a compaction (waits up to a minute).
TEST(RocksDbStorageTest, PrefixDeleteGivesTheDiskSpaceBack) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("reclaim");
  options.memtable_bytes = 256 << 10;  // many files
  // Files may go while the directory is read (compactions): skipped.
  auto sst_bytes = [&] {
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& f :
         std::filesystem::directory_iterator(options.data_dir + "/db", ec)) {
      if (f.path().extension() != ".sst") continue;
      std::error_code size_ec;
      const uint64_t size = std::filesystem::file_size(f.path(), size_ec);
      if (!size_ec) total += size;
    }
    return total;
  };
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int b = 0; b < 40; ++b) {
    StorageBatch batch;
    for (int i = 0; i < 250; ++i) {
      const std::string k = std::to_string(1000000 + b * 250 + i);
      batch.puts.emplace_back("r/big/" + k, std::string(400, 'x'));
      if (i % 10 == 0) batch.puts.emplace_back("r/small/" + k, "kept");
    }
    ASSERT_TRUE((*s)->Write(batch).ok());
  }
  ASSERT_TRUE((*s)->CreateCheckpoint("flush").ok());  // everything in files
  const uint64_t before = sst_bytes();
  ASSERT_GT(before, 3u << 20);
  StorageBatch drop;
  drop.delete_prefixes = {"r/big/"};
  ASSERT_TRUE((*s)->Write(drop).ok());
  ASSERT_TRUE((*s)->CompactDeletedPrefix("r/big/").ok());
  uint64_t after = sst_bytes();
  for (int i = 0; i < 600 && after > before / 10; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    after = sst_bytes();
  }
  EXPECT_LE(after, before / 10) << "before " << before;
  size_t small = 0;
  ASSERT_TRUE((*s)->Scan("r/", [&](absl::string_view k, absl::string_view v) {
                     EXPECT_TRUE(absl::StartsWith(k, "r/small/")) << k;
                     EXPECT_EQ(v, "kept");
                     ++small;
                     return absl::OkStatus();
                   }).ok());
  EXPECT_EQ(small, 1000u);
}

// RocksDB only: one live storage per data dir. A second open (another
// shard process given the same --data_dir, or a second store here) is
// refused before it touches anything, naming the dir; once the first is
// gone the dir opens again with everything in it.
TEST(RocksDbStorageTest, ADataDirServesOneStorageAtATime) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("one_at_a_time");
  auto first = OpenRocksDbStorage(options);
  ASSERT_TRUE(first.ok()) << first.status();
  StorageBatch b;
  b.puts = {{"k", "v"}};
  ASSERT_TRUE((*first)->Write(b).ok());
  auto second = OpenRocksDbStorage(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(),
                                options.data_dir + " is in use by another "
                                                   "shard"))
      << second.status();
  EXPECT_EQ(*(*first)->Get("k"), "v");  // the first is untouched
  first->reset();
  auto again = OpenRocksDbStorage(options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*(*again)->Get("k"), "v");
}

// RocksDB only: what checkpoint operations cut short by a crash leave in
// checkpoints/ (a staging "<name>.tmp" with hard links to SSTs, RocksDB's
// "<name>.tmp.tmp", a "<name>.deleting.tmp") is removed at the next open;
// the checkpoints themselves stay.
TEST(RocksDbStorageTest, OpenRemovesWhatInterruptedCheckpointsLeft) {
  namespace fs = std::filesystem;
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("leftovers");
  const std::string dir = options.data_dir + "/checkpoints/";
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    StorageBatch b;
    b.puts = {{"k", "v"}};
    ASSERT_TRUE((*s)->Write(b).ok());
    ASSERT_TRUE((*s)->CreateCheckpoint("kept").ok());
  }
  for (const char* left : {"ckpt-1.tmp", "ckpt-2.tmp.tmp", "old.deleting.tmp"}) {
    fs::copy(dir + "kept", dir + left, fs::copy_options::recursive);
  }
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<std::string> present;
  for (const auto& e : fs::directory_iterator(dir)) {
    present.push_back(e.path().filename().string());
  }
  EXPECT_EQ(present, std::vector<std::string>{"kept"});
  EXPECT_EQ(Names(**s), std::vector<std::string>{"kept"});
  EXPECT_EQ(*(*s)->Get("k"), "v");
}

// RocksDB only: creation order is on disk with each checkpoint, survives
// reopening and restores, and checkpoints without it (written before it
// existed, or with a damaged MIM_CHECKPOINT) come first, by the time their
// CURRENT file was written.
TEST(RocksDbStorageTest, CreationOrderIsStoredWithEachCheckpoint) {
  namespace fs = std::filesystem;
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("order");
  const std::string dir = options.data_dir + "/checkpoints/";
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok()) << s.status();
    for (const char* name : {"x", "y", "m", "p"}) {
      StorageBatch b;
      b.puts = {{"k", name}};
      ASSERT_TRUE((*s)->Write(b).ok());
      ASSERT_TRUE((*s)->CreateCheckpoint(name).ok()) << name;
      EXPECT_TRUE(fs::exists(dir + name + "/MIM_CHECKPOINT")) << name;
    }
    ASSERT_TRUE((*s)->RestoreCheckpoint("x").ok());
    EXPECT_FALSE(fs::exists(options.data_dir + "/db/MIM_CHECKPOINT"));
    EXPECT_EQ(*(*s)->Get("k"), "x");
  }
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Names(**s),
            (std::vector<std::string>{"x", "y", "m", "p"}));

  // x and y as if written before MIM_CHECKPOINT existed, y two hours before
  // x; p's MIM_CHECKPOINT damaged. They go first, by CURRENT's time.
  const auto now = fs::last_write_time(dir + "m/CURRENT");
  for (const char* name : {"x", "y"}) {
    ASSERT_TRUE(fs::remove(dir + name + "/MIM_CHECKPOINT"));
  }
  fs::last_write_time(dir + "x/CURRENT", now - std::chrono::hours(1));
  fs::last_write_time(dir + "y/CURRENT", now - std::chrono::hours(2));
  std::ofstream(dir + "p/MIM_CHECKPOINT", std::ios::trunc) << "garbage\n";
  EXPECT_EQ(Names(**s),
            (std::vector<std::string>{"y", "x", "p", "m"}));
  const std::vector<StoredCheckpoint> listed = (*s)->ListCheckpoints();
  ASSERT_EQ(listed.size(), 4u);
  for (int i : {0, 1, 2}) {  // y, x, p: no creation sequence
    EXPECT_EQ(listed[i].sequence, 0u) << listed[i].name;
  }
  EXPECT_GT(listed[3].sequence, 0u);
  // Without a sequence, the creation time is when CURRENT was written.
  EXPECT_EQ(listed[1].created_micros - listed[0].created_micros,
            int64_t{3600} * 1000000);

  // The next checkpoint is the newest; a leftover .tmp is not listed.
  fs::create_directories(dir + "zz.tmp");
  ASSERT_TRUE((*s)->CreateCheckpoint("a").ok());
  EXPECT_EQ(Names(**s),
            (std::vector<std::string>{"y", "x", "p", "m", "a"}));

  // A damaged sequence at the top of uint64 is damage too (no sequence):
  // the next checkpoint still sorts last instead of wrapping to 0.
  const std::string info = dir + "m/MIM_CHECKPOINT";
  std::ofstream(info, std::ios::trunc)
      << "mim-checkpoint 1\nsequence 18446744073709551615\ncreated_micros 1\n";
  ASSERT_TRUE((*s)->CreateCheckpoint("b").ok());
  const std::vector<std::string> names = Names(**s);
  ASSERT_EQ(names.size(), 6u);
  EXPECT_EQ(names.back(), "b");
  const std::vector<StoredCheckpoint> after = (*s)->ListCheckpoints();
  EXPECT_EQ(after[static_cast<size_t>(
                      std::find(names.begin(), names.end(), "m") -
                      names.begin())]
                .sequence,
            0u);
}

TEST(RocksDbStorageTest, InterruptedRestoreIsUndoneOnOpen) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("interrupted");
  {
    auto s = OpenRocksDbStorage(options);
    ASSERT_TRUE(s.ok());
    StorageBatch b;
    b.puts = {{"a", "1"}};
    ASSERT_TRUE((*s)->Write(b).ok());
  }
  // Simulate a crash between "db -> db.old" and "db.restore -> db".
  namespace fs = std::filesystem;
  fs::rename(options.data_dir + "/db", options.data_dir + "/db.old");
  fs::create_directories(options.data_dir + "/db.restore");
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*(*s)->Get("a"), "1");
  EXPECT_FALSE(fs::exists(options.data_dir + "/db.restore"));
}

// A crash in the middle of DeleteCheckpoint leaves the checkpoint renamed
// to "<name>.deleting.tmp": never listed nor opened, removed by the next
// delete.
TEST(RocksDbStorageTest, InterruptedDeleteLeavesNothingListed) {
  RocksDbStorageOptions options;
  options.data_dir = FreshDir("interrupted-delete");
  auto s = OpenRocksDbStorage(options);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->CreateCheckpoint("c1").ok());
  ASSERT_TRUE((*s)->CreateCheckpoint("c2").ok());
  namespace fs = std::filesystem;
  const std::string dir = options.data_dir + "/checkpoints/";
  fs::rename(dir + "c1", dir + "c1.deleting.tmp");
  EXPECT_EQ(Names(**s), std::vector<std::string>{"c2"});
  EXPECT_EQ((*s)->OpenCheckpoint("c1").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE((*s)->DeleteCheckpoint("c2").ok());
  EXPECT_TRUE(Names(**s).empty());
  EXPECT_FALSE(fs::exists(dir + "c1.deleting.tmp"));
  EXPECT_FALSE(fs::exists(dir + "c2.deleting.tmp"));
  EXPECT_FALSE(fs::exists(dir + "c2"));
}

}  // namespace
}  // namespace mim::embedding
