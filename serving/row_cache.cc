#include "serving/row_cache.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

namespace mim::serving {

absl::Time RowCache::Now() {
  return absl::UnixEpoch() +
         absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

namespace {
// Per-entry bookkeeping beyond the row: list node, index slot, vector header.
constexpr int64_t kEntryOverhead = 96;

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}
}  // namespace

RowCache::RowCache(const Options& options)
    : options_(options),
      stripe_capacity_(options.capacity_bytes /
                       std::max(1, options.stripes)) {
  const int n = std::max(1, options.stripes);
  for (int i = 0; i < n; ++i) stripes_.push_back(std::make_unique<Stripe>());
  for (auto& g : generations_) g.store(1);
  for (auto& f : flushed_at_) f.store(0);
}

int64_t RowCache::EntryBytes(int dim) {
  return kEntryOverhead + int64_t{dim} * static_cast<int64_t>(sizeof(float));
}

RowCache::Stripe& RowCache::StripeOf(Table table, uint64_t key) {
  return *stripes_[Mix(key * 2 + static_cast<uint64_t>(table)) %
                   stripes_.size()];
}

void RowCache::EraseLocked(Stripe& s, std::list<Entry>::iterator it) {
  s.bytes -= EntryBytes(static_cast<int>(it->row.size()));
  s.index.erase({it->table, it->key});
  s.lru.erase(it);
}

RowCache::Table RowCache::TableId(const std::string& name) {
  absl::MutexLock lock(&names_mu_);
  auto it = names_.find(name);
  if (it != names_.end()) return it->second;
  if (static_cast<int>(names_.size()) >= kMaxTables) return kUncached;
  const Table id = static_cast<Table>(names_.size());
  names_.emplace(name, id);
  return id;
}

RowCache::Found RowCache::Lookup(Table table, uint64_t key, int dim,
                                 absl::Time now, float* out) {
  if (options_.capacity_bytes <= 0 || table == kUncached) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return Found::kMiss;
  }
  Stripe& s = StripeOf(table, key);
  absl::MutexLock lock(&s.mu);
  auto it = s.index.find({table, key});
  if (it == s.index.end() ||
      static_cast<int>(it->second->row.size()) != dim) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return Found::kMiss;
  }
  const auto entry = it->second;
  const absl::Duration age = now - entry->fetched;
  if (age > options_.max_stale) {
    EraseLocked(s, entry);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return Found::kMiss;
  }
  std::memcpy(out, entry->row.data(), sizeof(float) * dim);
  s.lru.splice(s.lru.begin(), s.lru, entry);
  if (age <= options_.ttl) {
    hits_.fetch_add(1, std::memory_order_relaxed);
    return Found::kFresh;
  }
  stale_hits_.fetch_add(1, std::memory_order_relaxed);
  return Found::kStale;
}

void RowCache::Insert(Table table, uint64_t key, const float* row, int dim,
                      absl::Time fetched, uint64_t generation) {
  if (options_.capacity_bytes <= 0 || table == kUncached) return;
  const int64_t bytes = EntryBytes(dim);
  if (bytes > stripe_capacity_) return;
  Stripe& s = StripeOf(table, key);
  absl::MutexLock lock(&s.mu);
  // Under the stripe lock: Invalidate marks the stripe under the same lock,
  // so either it ran first (and this insert is refused) or it erases what
  // is inserted here. InvalidateTable marks the table before it erases
  // every stripe's rows, with the same effect.
  if (s.invalidated_at[table] > generation ||
      flushed_at_[table].load(std::memory_order_acquire) > generation) {
    return;
  }
  auto it = s.index.find({table, key});
  if (it != s.index.end()) {
    if (it->second->fetched > fetched) return;  // a newer fetch won
    EraseLocked(s, it->second);
  }
  s.lru.push_front(Entry{key, table, fetched, std::vector<float>(row, row + dim)});
  s.index[{table, key}] = s.lru.begin();
  s.bytes += bytes;
  while (s.bytes > stripe_capacity_ && !s.lru.empty()) {
    EraseLocked(s, std::prev(s.lru.end()));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

void RowCache::Invalidate(Table table, uint64_t key) {
  if (table == kUncached) return;
  Stripe& s = StripeOf(table, key);
  absl::MutexLock lock(&s.mu);
  s.invalidated_at[table] =
      generations_[table].fetch_add(1, std::memory_order_acq_rel) + 1;
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  auto it = s.index.find({table, key});
  if (it != s.index.end()) EraseLocked(s, it->second);
}

void RowCache::InvalidateTable(Table table) {
  if (table == kUncached) return;
  // Mark first: inserts that started before are refused from now on (a
  // concurrent flush may have marked a later generation: keep the larger).
  const uint64_t g =
      generations_[table].fetch_add(1, std::memory_order_acq_rel) + 1;
  uint64_t marked = flushed_at_[table].load(std::memory_order_acquire);
  while (marked < g && !flushed_at_[table].compare_exchange_weak(
                           marked, g, std::memory_order_acq_rel)) {
  }
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  for (auto& stripe : stripes_) {
    Stripe& s = *stripe;
    absl::MutexLock lock(&s.mu);
    for (auto it = s.lru.begin(); it != s.lru.end();) {
      auto next = std::next(it);
      if (it->table == table) EraseLocked(s, it);
      it = next;
    }
  }
}

RowCache::Stats RowCache::stats() const {
  Stats st;
  st.hits = hits_.load(std::memory_order_relaxed);
  st.stale_hits = stale_hits_.load(std::memory_order_relaxed);
  st.misses = misses_.load(std::memory_order_relaxed);
  st.evictions = evictions_.load(std::memory_order_relaxed);
  st.invalidations = invalidations_.load(std::memory_order_relaxed);
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    st.entries += static_cast<int64_t>(stripe->lru.size());
    st.bytes += stripe->bytes;
  }
  return st;
}

}  // namespace mim::serving
