#include "embedding/storage/rocksdb_memtable.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "base/big_endian.h"
#include "rocksdb/slice.h"

namespace mim::embedding {
namespace {

using Entries = std::vector<const char*>;
using rocksdb::MemTableRep;

// Bytes of the user key kept beside each entry while sorting.
constexpr size_t kPrefixWords = 4;
// A memtable entry's internal key ends in an 8-byte (sequence, type) trailer.
constexpr size_t kTrailerBytes = 8;
// How far ahead of the current entry the prefix pass and the iterator fetch.
constexpr size_t kPrefetchAhead = 16;

// The first 8 * kPrefixWords bytes of a user key as big-endian words, zero
// padded. For keys a and b: prefix(a) < prefix(b) (as word sequences)
// implies a < b bytewise. Where they first differ, either both keys have a
// real byte there, or the shorter key has run out (its padding 0 against a
// real byte >= 0; at a 0 the prefixes would not differ), and a key that is a
// proper prefix of another sorts first. Equal prefixes decide nothing.
struct SortKey {
  uint64_t words[kPrefixWords];
  const char* entry;
};

SortKey MakeSortKey(const MemTableRep::KeyComparator& compare,
                    const char* entry) {
  SortKey k;
  k.entry = entry;
  const rocksdb::Slice internal = compare.decode_key(entry);
  const size_t user_bytes = internal.size() >= kTrailerBytes
                                ? internal.size() - kTrailerBytes
                                : 0;
  char padded[8 * kPrefixWords] = {};
  std::memcpy(padded, internal.data(), std::min(user_bytes, sizeof(padded)));
  for (size_t w = 0; w < kPrefixWords; ++w) {
    k.words[w] = base::LoadBigEndian64(padded + 8 * w);
  }
  return k;
}

// Sorts `entries` into the order of `compare` (see SortKey).
void SortEntries(const MemTableRep::KeyComparator& compare, Entries* entries) {
  const size_t n = entries->size();
  std::vector<SortKey> keys(n);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) {
      const char* ahead = (*entries)[i + kPrefetchAhead];
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + 8 * kPrefixWords + 8);
    }
    keys[i] = MakeSortKey(compare, (*entries)[i]);
  }
  std::sort(keys.begin(), keys.end(),
            [&compare](const SortKey& a, const SortKey& b) {
              for (size_t w = 0; w < kPrefixWords; ++w) {
                if (a.words[w] != b.words[w]) return a.words[w] < b.words[w];
              }
              return compare(a.entry, b.entry) < 0;
            });
  for (size_t i = 0; i < n; ++i) (*entries)[i] = keys[i].entry;
}

class InlineKeyVectorRep;

// The iterators made by GetDynamicPrefixIterator(nullptr) while this thread
// is inside InlineKeyVectorRep::Get (null outside): that Get deletes them.
thread_local std::vector<std::unique_ptr<MemTableRep::Iterator>>*
    tls_point_lookup_iterators = nullptr;

// Iterates a sorted vector of entries: the memtable's own once it is
// read-only (sorted in place, once, whichever iterator comes first), or a
// private copy taken while it is still written. Not thread-safe (RocksDB
// uses one iterator from one thread).
class SortedIterator : public MemTableRep::Iterator {
 public:
  // `rep` is set when `entries` is the read-only memtable's own vector.
  SortedIterator(InlineKeyVectorRep* rep, std::shared_ptr<Entries> entries,
                 const MemTableRep::KeyComparator& compare)
      : rep_(rep),
        entries_(std::move(entries)),
        compare_(compare),
        pos_(entries_->size()) {}

  bool Valid() const override { return pos_ < entries_->size(); }
  const char* key() const override { return (*entries_)[pos_]; }
  void Next() override {
    if (pos_ >= entries_->size()) return;
    ++pos_;
    // The flush reads every entry (key and value) in this order, each from
    // its own place in the memtable.
    if (pos_ + kPrefetchAhead < entries_->size()) {
      const char* ahead = (*entries_)[pos_ + kPrefetchAhead];
      for (int line = 0; line < 4; ++line) __builtin_prefetch(ahead + 64 * line);
    }
  }
  // As the vector memtable: stepping back from the first entry leaves the
  // iterator invalid.
  void Prev() override {
    pos_ = pos_ == 0 ? entries_->size() : pos_ - 1;
  }
  void Seek(const rocksdb::Slice& internal_key,
            const char* memtable_key) override {
    EnsureSorted();
    const char* target = Encoded(internal_key, memtable_key);
    pos_ = std::lower_bound(entries_->begin(), entries_->end(), target,
                            [this](const char* a, const char* b) {
                              return compare_(a, b) < 0;
                            }) -
           entries_->begin();
  }
  void SeekForPrev(const rocksdb::Slice& internal_key,
                   const char* memtable_key) override {
    EnsureSorted();
    const char* target = Encoded(internal_key, memtable_key);
    const size_t after =
        std::upper_bound(entries_->begin(), entries_->end(), target,
                         [this](const char* a, const char* b) {
                           return compare_(a, b) < 0;
                         }) -
        entries_->begin();
    pos_ = after == 0 ? entries_->size() : after - 1;
  }
  void SeekToFirst() override {
    EnsureSorted();
    pos_ = 0;
  }
  void SeekToLast() override {
    EnsureSorted();
    pos_ = entries_->empty() ? 0 : entries_->size() - 1;
  }

 private:
  void EnsureSorted();
  // The memtable form of `internal_key` (varint32 length, then the key),
  // unless the caller passed it.
  const char* Encoded(const rocksdb::Slice& internal_key,
                      const char* memtable_key) {
    if (memtable_key != nullptr) return memtable_key;
    encoded_.clear();
    uint32_t n = static_cast<uint32_t>(internal_key.size());
    while (n >= 0x80) {
      encoded_.push_back(static_cast<char>((n & 0x7f) | 0x80));
      n >>= 7;
    }
    encoded_.push_back(static_cast<char>(n));
    encoded_.append(internal_key.data(), internal_key.size());
    return encoded_.data();
  }

  InlineKeyVectorRep* const rep_;
  const std::shared_ptr<Entries> entries_;
  const MemTableRep::KeyComparator& compare_;
  bool sorted_ = false;
  size_t pos_;  // entries_->size(): not positioned
  std::string encoded_;
};

// Safe for concurrent access: `mu_` guards the entries and the sort.
class InlineKeyVectorRep : public MemTableRep {
 public:
  InlineKeyVectorRep(const KeyComparator& compare, rocksdb::Allocator* allocator)
      : MemTableRep(allocator),
        compare_(compare),
        entries_(std::make_shared<Entries>()) {}

  void Insert(rocksdb::KeyHandle handle) override {
    absl::MutexLock lock(&mu_);
    entries_->push_back(static_cast<const char*>(handle));
    count_.store(entries_->size(), std::memory_order_relaxed);
  }

  // `key` is an entry's own address (as the vector memtable compares).
  bool Contains(const char* key) const override {
    absl::ReaderMutexLock lock(&mu_);
    return std::find(entries_->begin(), entries_->end(), key) !=
           entries_->end();
  }

  void MarkReadOnly() override {
    absl::MutexLock lock(&mu_);
    read_only_ = true;
  }

  size_t ApproximateMemoryUsage() override {
    // As the vector memtable counts: the entries' pointers. The sort's
    // temporary keys exist only while the flush sorts.
    return sizeof(*this) +
           count_.load(std::memory_order_relaxed) * sizeof(const char*);
  }

  // RocksDB's MemTableRep::Get (a point lookup: DB::Get) seeks an iterator
  // from GetDynamicPrefixIterator() and never deletes it (RocksDB's own
  // memtables override Get using LookupKey, which is not a public type).
  // This Get runs it and then deletes the iterators it made.
  void Get(const rocksdb::LookupKey& k, void* callback_args,
           bool (*callback_func)(void* arg, const char* entry)) override {
    std::vector<std::unique_ptr<MemTableRep::Iterator>> made;
    auto* outer = tls_point_lookup_iterators;
    tls_point_lookup_iterators = &made;
    MemTableRep::Get(k, callback_args, callback_func);
    tls_point_lookup_iterators = outer;
  }

  MemTableRep::Iterator* GetDynamicPrefixIterator(
      rocksdb::Arena* arena) override {
    MemTableRep::Iterator* it = GetIterator(arena);
    if (arena == nullptr && tls_point_lookup_iterators != nullptr) {
      tls_point_lookup_iterators->emplace_back(it);
    }
    return it;
  }

  MemTableRep::Iterator* GetIterator(rocksdb::Arena* arena) override {
    SortedIterator* it = nullptr;
    void* memory = arena == nullptr ? nullptr : IteratorMemory();
    absl::ReaderMutexLock lock(&mu_);
    // A memtable still written is copied: the iterator sorts its copy.
    InlineKeyVectorRep* shared = read_only_ ? this : nullptr;
    auto entries =
        read_only_ ? entries_ : std::make_shared<Entries>(*entries_);
    if (memory == nullptr) {
      it = new SortedIterator(shared, std::move(entries), compare_);
    } else {
      it = new (memory) SortedIterator(shared, std::move(entries), compare_);
    }
    return it;
  }

 private:
  friend class SortedIterator;

  // Memory for an iterator RocksDB asked to place in its arena: RocksDB then
  // only runs the iterator's destructor and frees the memory with the arena,
  // whose type is not in RocksDB's public headers. The memory is kept here
  // instead, until the memtable goes (RocksDB destroys a memtable's
  // iterators before the memtable); a few dozen bytes per flush or scan.
  void* IteratorMemory() {
    absl::MutexLock lock(&shells_mu_);
    shells_.push_back(std::make_unique<Shell>());
    return shells_.back()->bytes;
  }

  struct Shell {
    alignas(SortedIterator) unsigned char bytes[sizeof(SortedIterator)];
  };

  const KeyComparator& compare_;
  mutable absl::Mutex mu_;
  std::shared_ptr<Entries> entries_ ABSL_GUARDED_BY(mu_);
  bool read_only_ ABSL_GUARDED_BY(mu_) = false;
  bool sorted_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<size_t> count_{0};
  absl::Mutex shells_mu_;
  std::vector<std::unique_ptr<Shell>> shells_ ABSL_GUARDED_BY(shells_mu_);
};

void SortedIterator::EnsureSorted() {
  if (sorted_) return;
  if (rep_ != nullptr) {
    absl::MutexLock lock(&rep_->mu_);
    if (!rep_->sorted_) {
      SortEntries(compare_, entries_.get());
      rep_->sorted_ = true;
    }
  } else {
    SortEntries(compare_, entries_.get());
  }
  sorted_ = true;
}

}  // namespace

rocksdb::MemTableRep* InlineKeyVectorRepFactory::CreateMemTableRep(
    const rocksdb::MemTableRep::KeyComparator& compare,
    rocksdb::Allocator* allocator, const rocksdb::SliceTransform* /*prefix*/,
    rocksdb::Logger* /*logger*/) {
  return new InlineKeyVectorRep(compare, allocator);
}

}  // namespace mim::embedding
