// The memtable of the RocksDB backend: a private part of the storage target
// (RocksDB headers stay inside it); rocksdb_memtable_test.cc tests it alone.
#ifndef MIM_EMBEDDING_STORAGE_ROCKSDB_MEMTABLE_H_
#define MIM_EMBEDDING_STORAGE_ROCKSDB_MEMTABLE_H_

#include "rocksdb/memtablerep.h"

namespace mim::embedding {

// Makes memtables that append each entry and sort once, when they are first
// iterated (the flush), like rocksdb::VectorRepFactory, but sort an array of
// (the first 32 bytes of each entry's user key, entry) pairs instead of bare
// pointers: the comparisons then read contiguous memory, where the vector
// memtable's sort followed both pointers of every comparison into the whole
// memtable (a cache miss each; docs/BENCHMARKS.md, "Issue 13: Push"). Entries
// whose first 32 user-key bytes are equal (the same key written twice, or
// longer keys with a common 32-byte prefix) are ordered by the memtable's
// own comparator, so the order is always the comparator's. The sort takes
// 40 bytes per entry of temporary memory (a 64 MB memtable of 300-byte rows:
// about 9 MB) while the flush sorts.
//
// Contract: only for databases whose user comparator is RocksDB's default
// bytewise one (the prefix order is bytewise); no concurrent inserts
// (allow_concurrent_memtable_write = false). Reads while it is written see a
// sorted copy (as the vector memtable does): correct, but each costs a copy
// and a sort, so it suits databases read only by scans at open.
//
// Safe for concurrent access (RocksDB calls it from several threads).
class InlineKeyVectorRepFactory : public rocksdb::MemTableRepFactory {
 public:
  static const char* kClassName() { return "MimInlineKeyVectorRepFactory"; }
  const char* Name() const override { return kClassName(); }

  using rocksdb::MemTableRepFactory::CreateMemTableRep;
  rocksdb::MemTableRep* CreateMemTableRep(
      const rocksdb::MemTableRep::KeyComparator& compare,
      rocksdb::Allocator* allocator, const rocksdb::SliceTransform* prefix,
      rocksdb::Logger* logger) override;
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_ROCKSDB_MEMTABLE_H_
