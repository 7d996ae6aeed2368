// The storage target's memtable alone: its order is the comparator's order
// for keys whose 32-byte prefixes decide and for keys where they cannot.
// (Through RocksDB it is run by storage_test, wal_recovery_test and every
// store test: flushes, scans at open, checkpoints.)
#include "embedding/storage/rocksdb_memtable.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rocksdb/slice.h"

namespace mim::embedding {
namespace {

// Reads a memtable entry: varint32 length, then the internal key (user key
// and an 8-byte little-endian trailer, sequence << 8 | type).
rocksdb::Slice Decode(const char* entry) {
  uint32_t n = 0;
  int shift = 0;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(entry);
  while (*p & 0x80) {
    n |= static_cast<uint32_t>(*p++ & 0x7f) << shift;
    shift += 7;
  }
  n |= static_cast<uint32_t>(*p++) << shift;
  return rocksdb::Slice(reinterpret_cast<const char*>(p), n);
}

// RocksDB's internal key order over the bytewise comparator: user key
// ascending, then sequence descending.
int CompareInternal(const rocksdb::Slice& a, const rocksdb::Slice& b) {
  const rocksdb::Slice ua(a.data(), a.size() - 8);
  const rocksdb::Slice ub(b.data(), b.size() - 8);
  const int c = ua.compare(ub);
  if (c != 0) return c;
  uint64_t ta, tb;
  std::memcpy(&ta, a.data() + a.size() - 8, 8);
  std::memcpy(&tb, b.data() + b.size() - 8, 8);
  return ta > tb ? -1 : ta < tb ? 1 : 0;
}

class InternalKeyComparator : public rocksdb::MemTableRep::KeyComparator {
 public:
  int operator()(const char* a, const char* b) const override {
    return CompareInternal(Decode(a), Decode(b));
  }
  int operator()(const char* a, const rocksdb::Slice& key) const override {
    return CompareInternal(Decode(a), key);
  }
};

// An entry as the memtable holds it: length-prefixed internal key, value.
std::string Entry(const std::string& user_key, uint64_t sequence) {
  std::string internal = user_key;
  const uint64_t trailer = sequence << 8 | 1;  // kTypeValue
  internal.append(reinterpret_cast<const char*>(&trailer), 8);
  std::string out;
  uint32_t n = internal.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  return out + internal + "value";
}

std::string RowKey(const std::string& table, uint64_t key) {
  std::string k = "r/" + table + "/";
  for (int shift = 56; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((key >> shift) & 0xff));
  }
  return k;
}

class MemTableTest : public ::testing::Test {
 protected:
  MemTableTest()
      : rep_(InlineKeyVectorRepFactory().CreateMemTableRep(
            compare_, /*allocator=*/nullptr, /*prefix=*/nullptr,
            /*logger=*/nullptr)) {}

  void Insert(const std::string& user_key, uint64_t sequence) {
    entries_.push_back(
        std::make_unique<std::string>(Entry(user_key, sequence)));
    rep_->Insert(const_cast<char*>(entries_.back()->data()));
  }

  // Every inserted entry in the comparator's order.
  std::vector<const char*> Expected() const {
    std::vector<const char*> out;
    for (const auto& e : entries_) out.push_back(e->data());
    std::sort(out.begin(), out.end(), [this](const char* a, const char* b) {
      return compare_(a, b) < 0;
    });
    return out;
  }

  static std::vector<const char*> Walk(rocksdb::MemTableRep::Iterator* it) {
    std::vector<const char*> out;
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.push_back(it->key());
    return out;
  }

  InternalKeyComparator compare_;
  std::vector<std::unique_ptr<std::string>> entries_;
  std::unique_ptr<rocksdb::MemTableRep> rep_;
};

TEST_F(MemTableTest, OrderIsTheComparatorsWhereThePrefixCannotDecide) {
  uint64_t seq = 1;
  // Keys that are proper prefixes of one another, with zero bytes where
  // the prefix pads with zeros; the empty key.
  for (const std::string& k :
       {std::string(""), std::string("a"), std::string("a\0", 2),
        std::string("a\0\0", 3), std::string("a\x01", 2), std::string("b"),
        std::string(32, 'x'), std::string(32, 'x') + std::string(1, '\0'),
        std::string(31, 'x'), std::string(33, 'x')}) {
    Insert(k, seq++);
  }
  // Long table names: rows whose first 32 bytes are all equal.
  const std::string long_name(40, 't');
  for (uint64_t key : {5ull, 1ull, 0xff00000000000000ull, 3ull, 2ull}) {
    Insert(RowKey(long_name, key), seq++);
  }
  // The same user key written several times: newest first.
  for (int i = 0; i < 3; ++i) Insert(RowKey("bench", 7), seq++);
  Insert(RowKey("bench", 6), seq++);
  rep_->MarkReadOnly();
  std::unique_ptr<rocksdb::MemTableRep::Iterator> it(rep_->GetIterator());
  EXPECT_EQ(Walk(it.get()), Expected());
}

TEST_F(MemTableTest, ManyRowKeysSortLikeTheComparator) {
  std::mt19937_64 gen(13);  // fixed seed: the same keys every run
  uint64_t seq = 1;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t key = gen() % 3000;  // some keys repeat
    Insert(RowKey(i % 3 == 0 ? "bench" : "item_content", key), seq++);
  }
  Insert("t/bench", seq++);
  Insert("c/" + std::string(8, '\x01'), seq++);
  rep_->MarkReadOnly();
  const std::vector<const char*> expected = Expected();
  std::unique_ptr<rocksdb::MemTableRep::Iterator> first(rep_->GetIterator());
  std::unique_ptr<rocksdb::MemTableRep::Iterator> second(rep_->GetIterator());
  EXPECT_EQ(Walk(first.get()), expected);
  EXPECT_EQ(Walk(second.get()), expected);  // sorted once, shared
}

TEST_F(MemTableTest, IteratorOfAWrittenMemTableSeesASortedCopy) {
  Insert("c", 1);
  Insert("a", 2);
  std::unique_ptr<rocksdb::MemTableRep::Iterator> it(rep_->GetIterator());
  Insert("b", 3);  // after the iterator was made: not in it
  ASSERT_EQ(Walk(it.get()).size(), 2u);
  it->SeekToFirst();
  EXPECT_EQ(it->key(), entries_[1]->data());
  std::unique_ptr<rocksdb::MemTableRep::Iterator> later(rep_->GetIterator());
  EXPECT_EQ(Walk(later.get()), Expected());
}

TEST_F(MemTableTest, SeekSeekForPrevPrevAndContains) {
  Insert("b", 1);
  Insert("d", 2);
  Insert("f", 3);
  rep_->MarkReadOnly();
  std::unique_ptr<rocksdb::MemTableRep::Iterator> it(rep_->GetIterator());
  const std::string c = Entry("c", 100);
  // Seek: first entry >= target, encoding the key when no memtable key is
  // given.
  it->Seek(Decode(c.data()), /*memtable_key=*/nullptr);
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), entries_[1]->data());  // "d"
  it->Seek(Decode(c.data()), c.data());
  EXPECT_EQ(it->key(), entries_[1]->data());
  // SeekForPrev: last entry <= target.
  it->SeekForPrev(Decode(c.data()), c.data());
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), entries_[0]->data());  // "b"
  const std::string a = Entry("a", 100);
  it->SeekForPrev(Decode(a.data()), a.data());
  EXPECT_FALSE(it->Valid());
  const std::string g = Entry("g", 100);
  it->Seek(Decode(g.data()), g.data());
  EXPECT_FALSE(it->Valid());
  it->SeekToLast();
  EXPECT_EQ(it->key(), entries_[2]->data());  // "f"
  it->Prev();
  EXPECT_EQ(it->key(), entries_[1]->data());
  it->Prev();
  it->Prev();  // before the first: invalid, as the vector memtable
  EXPECT_FALSE(it->Valid());
  EXPECT_TRUE(rep_->Contains(entries_[1]->data()));
  EXPECT_FALSE(rep_->Contains(c.data()));
}

}  // namespace
}  // namespace mim::embedding
