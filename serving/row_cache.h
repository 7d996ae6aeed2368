// RowCache: the serving tier's cache of parameter-server rows, bounded in
// bytes, with a freshness bound and invalidation that makes a write visible
// to every lookup that starts after it (read-your-write for UpsertItem).
//
// An entry is fresh for Options::ttl after it was fetched, then stale; a
// stale entry is only served when its shard cannot be reached (the caller
// decides, see Lookup) and only until Options::max_stale, after which it is
// dropped. Least-recently-used entries are evicted to stay within
// Options::capacity_bytes (rows plus a fixed per-entry overhead).
//
// Entries are keyed by the parameter-server table (interned by name with
// TableId) and the row key, so versions of a model that read different
// tables never see each other's rows.
//
// Read-your-write: a caller takes generation(table) before it fetches rows
// from the shards and passes it to Insert; Invalidate / InvalidateTable
// bump the generation, so a row fetched before an invalidation is never
// inserted after it. Invalidate(table, key) refuses such late inserts only
// in the key's stripe (1 / Options::stripes of the table), so a stream of
// upserts does not keep every concurrent request from caching its rows.
//
// Thread-safety: safe for concurrent access (striped locks).
#ifndef MIM_SERVING_ROW_CACHE_H_
#define MIM_SERVING_ROW_CACHE_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mim::serving {

class RowCache {
 public:
  struct Options {
    int64_t capacity_bytes = int64_t{256} << 20;  // 0 disables the cache
    absl::Duration ttl = absl::Seconds(5);
    absl::Duration max_stale = absl::Seconds(300);
    int stripes = 32;
  };
  // A table, as interned by TableId.
  using Table = int;
  // Tables one cache keeps apart; TableId returns kUncached beyond that
  // (such a table's rows are never cached).
  static constexpr int kMaxTables = 64;
  static constexpr Table kUncached = -1;
  enum class Found { kMiss, kFresh, kStale };

  struct Stats {
    int64_t hits = 0;        // fresh lookups
    int64_t stale_hits = 0;  // lookups that found a stale entry
    int64_t misses = 0;
    int64_t entries = 0;
    int64_t bytes = 0;
    int64_t evictions = 0;
    int64_t invalidations = 0;
  };

  explicit RowCache(const Options& options);
  RowCache(const RowCache&) = delete;
  RowCache& operator=(const RowCache&) = delete;

  // The clock to stamp and age entries with (Lookup's `now`, Insert's
  // `fetched`): monotonic, so a step of the wall clock (NTP, a migrated VM)
  // never makes a row look fresher than it is. Its epoch is arbitrary:
  // compare its times with each other only.
  static absl::Time Now();

  // Copies the row of (table, key) into out[0, dim) when an entry of that
  // dim exists and is younger than max_stale at `now`; kFresh when younger
  // than ttl. An entry past max_stale is dropped (kMiss).
  Found Lookup(Table table, uint64_t key, int dim, absl::Time now, float* out);

  // The id of the parameter-server table `name` (the same id for the same
  // name for the life of the cache).
  Table TableId(const std::string& name);

  // Current generation of `table`; take it before fetching rows to Insert.
  uint64_t generation(Table table) const {
    return table == kUncached
               ? 0
               : generations_[table].load(std::memory_order_acquire);
  }
  // Caches `row` (dim floats) fetched at `fetched` unless the table was
  // invalidated since `generation` was taken.
  void Insert(Table table, uint64_t key, const float* row, int dim,
              absl::Time fetched, uint64_t generation);

  // Drops the entry of one key / every entry of a table, and bumps the
  // table's generation.
  void Invalidate(Table table, uint64_t key);
  void InvalidateTable(Table table);

  Stats stats() const;
  const Options& options() const { return options_; }

 private:
  struct Entry {
    uint64_t key;
    Table table;
    absl::Time fetched;
    std::vector<float> row;
  };
  struct Stripe {
    mutable absl::Mutex mu;
    std::list<Entry> lru ABSL_GUARDED_BY(mu);  // most recent first
    // (table, key) -> entry
    absl::flat_hash_map<std::pair<int, uint64_t>, std::list<Entry>::iterator>
        index ABSL_GUARDED_BY(mu);
    int64_t bytes ABSL_GUARDED_BY(mu) = 0;
    // Per table, the generation of the last Invalidate of a key in this
    // stripe: a fetch that took an older generation inserts nothing here,
    // while the table's other stripes still take its rows.
    uint64_t invalidated_at[kMaxTables] ABSL_GUARDED_BY(mu) = {};
  };
  static int64_t EntryBytes(int dim);
  Stripe& StripeOf(Table table, uint64_t key);
  void EraseLocked(Stripe& s, std::list<Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);

  const Options options_;
  const int64_t stripe_capacity_;
  std::vector<std::unique_ptr<Stripe>> stripes_;
  std::atomic<uint64_t> generations_[kMaxTables];
  // Per table, the generation of the last InvalidateTable.
  std::atomic<uint64_t> flushed_at_[kMaxTables];
  absl::Mutex names_mu_;
  absl::flat_hash_map<std::string, Table> names_ ABSL_GUARDED_BY(names_mu_);
  std::atomic<int64_t> hits_{0}, stale_hits_{0}, misses_{0}, evictions_{0},
      invalidations_{0};
};

}  // namespace mim::serving

#endif  // MIM_SERVING_ROW_CACHE_H_
