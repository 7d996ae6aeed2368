// Memory layout (why: at most 1.25x the raw float bytes for a 64-d table).
//
// Each of the 128 stripes owns
//  - an arena of fixed-stride records in chunks of a power-of-two number of
//    rows (~16 KiB per chunk, from a per-table ChunkPool that switches to
//    2 MiB huge-page slabs for large tables), so rows never move and there
//    is no per-row heap allocation. Record = 32-byte header + floats:
//      [u64 key][i64 last_update_micros][u64 version][u32 update_count]
//      [u32 reserved][dim values][state_floats optimizer state]
//    padded to a multiple of 8 bytes.
//  - an index (SlotIndex, slot_index.h): 64-byte groups of 8 entries, each
//    a 4-byte slot number and 32 bits of the key's hash, at most 7/8 full,
//    so a lookup reads one index cache line and then only the record of
//    the matching entry: 8 bytes per entry, 9.1-18.3 bytes per row.
// For a 64-d SGD or content table that is 288 bytes of record + the index
// + at most one partly filled chunk per stripe: ~300-310 bytes per row
// against 256 raw float bytes, at most 1.25x (embedding_table_test asserts
// it; bench/embedding_bench prints it for 1M rows).
#include "embedding/embedding_table.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "embedding/initializer.h"
#include "embedding/optimizers.h"
#include "embedding/sharding.h"
#include "embedding/slot_index.h"

namespace mim::embedding {

// Hands out fixed-size chunks for the arenas of one table's stripes. Small
// tables get plain heap chunks; once the table holds kHugePageAfterBytes,
// chunks are carved from 2 MiB-aligned slabs marked MADV_HUGEPAGE: random
// pulls from a large table are TLB-miss bound, and huge pages cut the pull
// cost by about half on the development VM (bench/embedding_bench).
// Slabs come from regions of address space mapped for the pool alone and
// marked before any page of them is touched, so that the kernel can back
// every slab with a huge page when it is first written (a slab from the
// heap that the heap had touched before kept 4 KiB pages whatever madvise
// said; docs/BENCHMARKS.md, issue 13). A region is address space until
// used: bytes() counts a slab once it is handed out, RSS once it is written.
// Chunks are freed only with the pool. Safe for concurrent access.
class ChunkPool {
 public:
  static constexpr size_t kSlabBytes = size_t{2} << 20;
  static constexpr size_t kRegionBytes = size_t{32} << 20;
  static constexpr size_t kHugePageAfterBytes = size_t{16} << 20;

  explicit ChunkPool(size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}
  ~ChunkPool() {
    for (void* region : regions_) ::munmap(region, kRegionBytes);
  }

  char* Allocate() {
    absl::MutexLock lock(&mu_);
    if (chunk_bytes_ > kSlabBytes || bytes_ < kHugePageAfterBytes) {
      return SmallChunk();
    }
    if (cursor_ + chunk_bytes_ > slab_end_) {
      char* slab = NextSlab();
      if (slab == nullptr) return SmallChunk();  // no address space left
      bytes_ += kSlabBytes;
      cursor_ = slab;
      slab_end_ = slab + kSlabBytes;
    }
    char* chunk = cursor_;
    cursor_ += chunk_bytes_;
    return chunk;
  }

  // Everything allocated, including the unused tail of the current slab.
  size_t bytes() const {
    absl::MutexLock lock(&mu_);
    return bytes_ + small_.capacity() * sizeof(small_[0]) +
           regions_.capacity() * sizeof(regions_[0]);
  }

 private:
  char* SmallChunk() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    small_.emplace_back(new char[chunk_bytes_]);
    bytes_ += chunk_bytes_;
    return small_.back().get();
  }

  // The next 2 MiB-aligned slab of the current region (a new region when
  // it is used up), or null when no region can be mapped.
  char* NextSlab() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (region_next_ == region_end_) {
      // Map one slab more than the region and trim to 2 MiB alignment.
      const size_t mapped = kRegionBytes + kSlabBytes;
      void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return nullptr;
      const uintptr_t raw = reinterpret_cast<uintptr_t>(p);
      const uintptr_t start = (raw + kSlabBytes - 1) & ~(kSlabBytes - 1);
      const size_t head = start - raw;
      if (head > 0) ::munmap(p, head);
      if (kSlabBytes - head > 0) {
        ::munmap(reinterpret_cast<void*>(start + kRegionBytes),
                 kSlabBytes - head);
      }
      char* region = reinterpret_cast<char*>(start);
      ::madvise(region, kRegionBytes, MADV_HUGEPAGE);  // a hint
      regions_.push_back(region);
      region_next_ = region;
      region_end_ = region + kRegionBytes;
    }
    char* slab = region_next_;
    region_next_ += kSlabBytes;
    return slab;
  }

  const size_t chunk_bytes_;
  mutable absl::Mutex mu_;
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<char[]>> small_ ABSL_GUARDED_BY(mu_);
  std::vector<char*> regions_ ABSL_GUARDED_BY(mu_);  // kRegionBytes each
  char* region_next_ ABSL_GUARDED_BY(mu_) = nullptr;
  char* region_end_ ABSL_GUARDED_BY(mu_) = nullptr;
  char* cursor_ ABSL_GUARDED_BY(mu_) = nullptr;
  char* slab_end_ ABSL_GUARDED_BY(mu_) = nullptr;
};

namespace {

constexpr int kStripeBits = 7;
constexpr size_t kNumStripes = size_t{1} << kStripeBits;
constexpr size_t kHeaderBytes = 32;
constexpr size_t kKeyOffset = 0;
constexpr size_t kLastUpdateOffset = 8;
constexpr size_t kVersionOffset = 16;
constexpr size_t kCountOffset = 24;
constexpr size_t kTargetChunkBytes = 16 << 10;

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
void Store(char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

RowMeta ReadMeta(const char* record) {
  RowMeta m;
  m.last_update_micros = Load<int64_t>(record + kLastUpdateOffset);
  m.update_count = Load<uint32_t>(record + kCountOffset);
  m.version = Load<uint64_t>(record + kVersionOffset);
  return m;
}

void WriteMeta(char* record, const RowMeta& m) {
  Store<int64_t>(record + kLastUpdateOffset, m.last_update_micros);
  Store<uint32_t>(record + kCountOffset, m.update_count);
  Store<uint64_t>(record + kVersionOffset, m.version);
  Store<uint32_t>(record + kCountOffset + 4, 0);
}

float* Values(char* record) {
  return reinterpret_cast<float*>(record + kHeaderBytes);
}
const float* Values(const char* record) {
  return reinterpret_cast<const float*>(record + kHeaderBytes);
}

size_t RowsPerChunk(size_t stride) {
  size_t rows = 1;
  while (rows * 2 * stride <= kTargetChunkBytes) rows *= 2;
  return rows;
}

// Chunked storage of fixed-stride records addressed by a dense slot number.
// Not thread-safe (guarded by its stripe's lock).
class RowArena {
 public:
  RowArena(size_t stride, ChunkPool* pool) : stride_(stride), pool_(pool) {
    const size_t rows = RowsPerChunk(stride);
    shift_ = 0;
    while ((size_t{1} << shift_) < rows) ++shift_;
    mask_ = (size_t{1} << shift_) - 1;
  }
  char* record(uint32_t slot) {
    return chunks_[slot >> shift_] + (slot & mask_) * stride_;
  }
  const char* record(uint32_t slot) const {
    return chunks_[slot >> shift_] + (slot & mask_) * stride_;
  }
  uint64_t key(uint32_t slot) const {
    return Load<uint64_t>(record(slot) + kKeyOffset);
  }
  uint32_t Append() {
    if ((size_ & mask_) == 0 && (size_ >> shift_) == chunks_.size()) {
      chunks_.push_back(pool_->Allocate());
    }
    return size_++;
  }
  uint32_t size() const { return size_; }
  // The chunk table only; chunk memory is accounted by the pool.
  size_t bytes() const { return chunks_.capacity() * sizeof(chunks_[0]); }

 private:
  const size_t stride_;
  ChunkPool* const pool_;
  int shift_;
  size_t mask_;
  uint32_t size_ = 0;
  std::vector<char*> chunks_;  // owned by pool_
};

// The index's 32 bits of a key's mixed hash: those below the stripe bits,
// so that keys of one stripe differ in them.
uint32_t IndexHash(uint64_t mixed) {
  return static_cast<uint32_t>(mixed >> (64 - kStripeBits - 32));
}

// Starts loading every cache line of a record's header and values.
void PrefetchRecord(const char* record, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(record) & ~uintptr_t{63};
  const uintptr_t end = reinterpret_cast<uintptr_t>(record) + bytes;
  for (uintptr_t line = first; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line));
  }
}

// The same, for a record about to be overwritten.
void PrefetchRecordForWrite(char* record, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(record) & ~uintptr_t{63};
  const uintptr_t end = reinterpret_cast<uintptr_t>(record) + bytes;
  for (uintptr_t line = first; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<void*>(line), /*rw=*/1);
  }
}

// How far ahead Stage and Install fetch (see Stage); kStageRing > it, a
// power of two.
constexpr size_t kStageAhead = 8;
constexpr size_t kStageRing = 16;

// Request positions ordered by stripe (a counting sort of `stripe_of`,
// each position's stripe): stripe s's positions, in request order, are
// (*order)[start[s]] .. (*order)[start[s + 1] - 1].
void OrderByStripe(const std::vector<uint8_t>& stripe_of,
                   uint32_t start[kNumStripes + 1],
                   std::vector<uint32_t>* order) {
  std::fill(start, start + kNumStripes + 1, 0);
  for (const uint8_t s : stripe_of) ++start[s + 1];
  for (size_t s = 0; s < kNumStripes; ++s) start[s + 1] += start[s];
  order->resize(stripe_of.size());
  uint32_t next[kNumStripes];
  std::memcpy(next, start, sizeof(next));
  for (size_t i = 0; i < stripe_of.size(); ++i) {
    (*order)[next[stripe_of[i]]++] = static_cast<uint32_t>(i);
  }
}

absl::Status CheckFinite(absl::Span<const uint64_t> keys,
                         absl::Span<const float> data, uint32_t dim,
                         absl::string_view what) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (!std::isfinite(data[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " for key ", keys[i / dim], " (position ", i / dim,
          " in the request, element ", i % dim, ") is not finite: ",
          data[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct EmbeddingTable::Stripe {
  Stripe(size_t stride, ChunkPool* pool) : arena(stride, pool) {}

  // Orders writes (stage, persist, install) touching this stripe; taken
  // before `mu`, in ascending stripe order.
  absl::Mutex commit_mu;
  mutable absl::Mutex mu;
  RowArena arena ABSL_GUARDED_BY(mu);
  SlotIndex index ABSL_GUARDED_BY(mu);

  // Slot of `key` or -1 (SlotIndex::kNone).
  int64_t Find(uint64_t key) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return Find(IndexHash(MixKey(key)), key);
  }
  int64_t Find(uint32_t hash, uint64_t key) const
      ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return index.Find(hash, key, [this](uint32_t slot)
                                     ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                       return arena.key(slot);
                                     });
  }
  void Insert(uint64_t key, uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    index.Insert(IndexHash(MixKey(key)), slot);
  }
};

// Holds commit_mu of a set of stripes, taken in ascending order.
class EmbeddingTable::CommitLocks {
 public:
  CommitLocks(const std::vector<std::unique_ptr<Stripe>>& stripes,
              const std::vector<std::vector<uint32_t>>& by_stripe)
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (size_t s = 0; s < by_stripe.size(); ++s) {
      if (by_stripe[s].empty()) continue;
      stripes[s]->commit_mu.Lock();
      held_.push_back(&stripes[s]->commit_mu);
    }
  }
  ~CommitLocks() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) (*it)->Unlock();
  }

 private:
  std::vector<absl::Mutex*> held_;
};

uint64_t ChangedRows::key(size_t i) const {
  return Load<uint64_t>(record(i) + kKeyOffset);
}
RowMeta ChangedRows::meta(size_t i) const { return ReadMeta(record(i)); }
const float* ChangedRows::values(size_t i) const { return Values(record(i)); }
const float* ChangedRows::state(size_t i) const {
  return Values(record(i)) + dim_;
}

absl::StatusOr<std::unique_ptr<EmbeddingTable>> EmbeddingTable::Create(
    const TableConfig& config) {
  absl::Status st = ValidateTableConfig(config);
  if (!st.ok()) return st;
  return std::unique_ptr<EmbeddingTable>(new EmbeddingTable(config));
}

EmbeddingTable::EmbeddingTable(const TableConfig& config)
    : config_(config),
      state_floats_(StateFloatsPerDim(config) * config.dim),
      stride_((kHeaderBytes + sizeof(float) * (config.dim + state_floats_) +
               7) & ~size_t{7}) {
  // Stripes hold mutexes and their index points into their arena: they are
  // heap-allocated once and never move.
  pool_ = std::make_unique<ChunkPool>(stride_ * RowsPerChunk(stride_));
  stripes_.reserve(kNumStripes);
  for (size_t s = 0; s < kNumStripes; ++s) {
    stripes_.push_back(std::make_unique<Stripe>(stride_, pool_.get()));
  }
}

EmbeddingTable::~EmbeddingTable() = default;

size_t EmbeddingTable::StripeOf(uint64_t key) const {
  return MixKey(key) >> (64 - kStripeBits);
}

void EmbeddingTable::InitRecord(uint64_t key, char* record) const {
  Store<uint64_t>(record + kKeyOffset, key);
  WriteMeta(record, RowMeta{});
  float* values = Values(record);
  InitializeRow(config_.initializer, key, config_.dim, values);
  if (state_floats_ > 0) {
    InitOptimizerState(config_.optimizer, config_.dim, values + config_.dim);
  }
}

ChangedRows EmbeddingTable::NewChangedRows(size_t count) const {
  ChangedRows rows;
  rows.stride_ = stride_;
  rows.dim_ = config_.dim;
  rows.count_ = count;
  rows.buffer_.resize(count * stride_);
  return rows;
}

absl::Status EmbeddingTable::Pull(absl::Span<const uint64_t> keys,
                                  float* values,
                                  std::vector<uint32_t>* missing) {
  const uint32_t dim = config_.dim;
  const size_t row_bytes = sizeof(float) * dim;
  const bool is_id = config_.kind == TableKind::kId;
  keys_pulled_.fetch_add(keys.size(), std::memory_order_relaxed);
  if (keys.empty()) return absl::OkStatus();

  // Request positions by stripe: each lock taken once. The index hash of
  // each key is kept from the same mix.
  std::vector<uint8_t> stripe_of(keys.size());
  std::vector<uint32_t> hash_of(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint64_t mixed = MixKey(keys[i]);
    stripe_of[i] = static_cast<uint8_t>(mixed >> (64 - kStripeBits));
    hash_of[i] = IndexHash(mixed);
  }
  uint32_t start[kNumStripes + 1];
  std::vector<uint32_t> order;
  OrderByStripe(stripe_of, start, &order);

  // Lookups are memory-latency bound: one index group, then the record.
  // They run in two passes over each group of keys, so that the misses of
  // many keys overlap instead of queueing one key at a time:
  //  1. index: key j's group is probed (by hash alone, no record read)
  //     while key j + kIndexAhead's group is being loaded; the candidate
  //     record of each key is noted;
  //  2. records: key j's row is copied while key j + kRecordAhead's
  //     record is being loaded; the key is confirmed then, its record by
  //     then in cache.
  // One pipeline that probed key j + 16 between the copies of key j (each
  // key's record address waiting on its index group) measured 14-20%
  // slower from 256 to 16384 keys (docs/BENCHMARKS.md, issue 13, "two
  // passes"): a pass of probes alone keeps more index loads in flight.
  constexpr uint32_t kIndexAhead = 32;
  constexpr uint32_t kRecordAhead = 16;
  // The passes run over groups of consecutive stripes holding at least
  // kGroupKeys keys between them, their reader locks taken together in
  // ascending order (writers never hold one stripe's lock while taking
  // another's, so this cannot deadlock): a stripe alone holds too few keys
  // of a small pull (8 of 1024) for the pipelines to fill.
  constexpr uint32_t kGroupKeys = 16;
  const size_t record_bytes = kHeaderBytes + row_bytes;
  std::vector<uint32_t> absent;
  // Pass 1's candidate record of the key at each sorted position.
  std::vector<const char*> candidate(keys.size());
  // Keys [b, e) (stripes locked); probe_stripe(j) and prefetch_stripe(j)
  // give key j's stripe, called with rising j each.
  const auto pull_keys = [&](uint32_t b, uint32_t e, auto&& probe_stripe,
                             auto&& prefetch_stripe)
                             ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const auto prefetch = [&](uint32_t j) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      prefetch_stripe(j).index.Prefetch(hash_of[order[j]]);
    };
    for (uint32_t j = b; j < e && j < b + kIndexAhead; ++j) prefetch(j);
    for (uint32_t j = b; j < e; ++j) {
      if (j + kIndexAhead < e) prefetch(j + kIndexAhead);
      const Stripe& stripe = probe_stripe(j);
      const int64_t slot = stripe.index.FindHash(hash_of[order[j]]);
      candidate[j] = slot == SlotIndex::kNone
                         ? nullptr
                         : stripe.arena.record(static_cast<uint32_t>(slot));
    }
    for (uint32_t j = b; j < e && j < b + kRecordAhead; ++j) {
      if (candidate[j] != nullptr) PrefetchRecord(candidate[j], record_bytes);
    }
    for (uint32_t j = b; j < e; ++j) {
      if (j + kRecordAhead < e && candidate[j + kRecordAhead] != nullptr) {
        PrefetchRecord(candidate[j + kRecordAhead], record_bytes);
      }
      const uint32_t i = order[j];
      const char* rec = candidate[j];
      if (rec != nullptr && Load<uint64_t>(rec + kKeyOffset) != keys[i]) {
        // Another key with the same 32-bit hash: the full probe.
        const Stripe& stripe = *stripes_[stripe_of[i]];
        const int64_t slot = stripe.Find(hash_of[i], keys[i]);
        rec = slot == SlotIndex::kNone
                  ? nullptr
                  : stripe.arena.record(static_cast<uint32_t>(slot));
      }
      if (rec != nullptr) {
        std::memcpy(values + size_t{i} * dim, Values(rec), row_bytes);
      } else {
        absent.push_back(i);
      }
    }
  };
  // Stripes s0 .. s1 - 1, locked. One stripe: its keys with the stripe at
  // hand; several: the stripe of the key being probed and of the one being
  // prefetched followed by a cursor each (positions are sorted by stripe).
  const auto pull_group = [&](size_t s0, size_t s1) {
    if (s1 == s0 + 1) {
      const Stripe& stripe = *stripes_[s0];
      const auto same = [&stripe](uint32_t) -> const Stripe& { return stripe; };
      pull_keys(start[s0], start[s1], same, same);
      return;
    }
    size_t probe_s = s0, prefetch_s = s0;
    pull_keys(
        start[s0], start[s1],
        [&](uint32_t j) -> const Stripe& {
          while (j >= start[probe_s + 1]) ++probe_s;
          return *stripes_[probe_s];
        },
        [&](uint32_t j) -> const Stripe& {
          while (j >= start[prefetch_s + 1]) ++prefetch_s;
          return *stripes_[prefetch_s];
        });
  };
  for (size_t s0 = 0; s0 < kNumStripes;) {
    size_t s1 = s0;
    while (s1 < kNumStripes && start[s1] - start[s0] < kGroupKeys) ++s1;
    if (start[s0] != start[s1]) {
      absl::Mutex* held[kNumStripes];
      size_t num_held = 0;
      for (size_t s = s0; s < s1; ++s) {
        if (start[s] == start[s + 1]) continue;
        held[num_held] = &stripes_[s]->mu;
        held[num_held++]->ReaderLock();
      }
      pull_group(s0, s1);
      for (size_t h = num_held; h-- > 0;) held[h]->ReaderUnlock();
    }
    s0 = s1;
  }
  if (absent.empty()) return absl::OkStatus();

  if (!is_id) {
    for (uint32_t i : absent) std::memset(values + size_t{i} * dim, 0, row_bytes);
    if (missing != nullptr) {
      std::sort(absent.begin(), absent.end());
      missing->insert(missing->end(), absent.begin(), absent.end());
    }
    return absl::OkStatus();
  }

  // ID table: an unseen key reads as its initial value, a pure function of
  // (initializer, key), and is not stored: the row is created by its first
  // Push, from this same value (Stage), so a pull-only client cannot grow
  // the table and nothing unpersisted lives in memory.
  for (uint32_t i : absent) {
    InitializeRow(config_.initializer, keys[i], dim, values + size_t{i} * dim);
  }
  return absl::OkStatus();
}

void EmbeddingTable::Stage(absl::Span<const uint64_t> keys,
                           const std::vector<std::vector<uint32_t>>& by_stripe,
                           bool init_missing, ChangedRows* rows,
                           std::vector<int64_t>* slots) const {
  slots->assign(keys.size(), SlotIndex::kNone);
  for (size_t s = 0; s < kNumStripes; ++s) {
    const std::vector<uint32_t>& us = by_stripe[s];
    if (us.empty()) continue;
    const Stripe& stripe = *stripes_[s];
    absl::ReaderMutexLock lock(&stripe.mu);
    // The same software pipeline as Pull's (see there): key j's record is
    // copied while key j + kStageAhead's record and key j + 2 kStageAhead's
    // index group are loading; the index is probed by hash and the key
    // confirmed when its record, by then in cache, is read.
    int64_t candidate[kStageRing];
    const auto hash_of = [&](size_t j) {
      return IndexHash(MixKey(keys[us[j]]));
    };
    const auto probe = [&](size_t j) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      const int64_t slot = stripe.index.FindHash(hash_of(j));
      if (slot != SlotIndex::kNone) {
        PrefetchRecord(stripe.arena.record(static_cast<uint32_t>(slot)),
                       stride_);
      }
      candidate[j % kStageRing] = slot;
    };
    const size_t n = us.size();
    for (size_t j = 0; j < n && j < 2 * kStageAhead; ++j) {
      stripe.index.Prefetch(hash_of(j));
    }
    for (size_t j = 0; j < n && j < kStageAhead; ++j) probe(j);
    for (size_t j = 0; j < n; ++j) {
      if (j + 2 * kStageAhead < n) {
        stripe.index.Prefetch(hash_of(j + 2 * kStageAhead));
      }
      if (j + kStageAhead < n) probe(j + kStageAhead);
      const uint32_t u = us[j];
      int64_t slot = candidate[j % kStageRing];
      if (slot != SlotIndex::kNone &&
          stripe.arena.key(static_cast<uint32_t>(slot)) != keys[u]) {
        slot = stripe.Find(keys[u]);  // another key with the same hash
      }
      char* out = rows->record(u);
      if (slot != SlotIndex::kNone) {
        std::memcpy(out, stripe.arena.record(static_cast<uint32_t>(slot)),
                    stride_);
        (*slots)[u] = slot;
      } else if (init_missing) {
        InitRecord(keys[u], out);
      } else {
        Store<uint64_t>(out + kKeyOffset, keys[u]);
        WriteMeta(out, RowMeta{});
      }
    }
  }
}

void EmbeddingTable::Install(
    const ChangedRows& rows,
    const std::vector<std::vector<uint32_t>>& by_stripe,
    const std::vector<int64_t>& slots) {
  for (size_t s = 0; s < kNumStripes; ++s) {
    const std::vector<uint32_t>& us = by_stripe[s];
    if (us.empty()) continue;
    Stripe& stripe = *stripes_[s];
    absl::MutexLock lock(&stripe.mu);
    // Rows that existed at Stage are still in the slot it found: the
    // caller has held the stripe's commit_mu since, and every change to
    // an arena or index (Install, LoadRow) holds it; slots never move.
    // Their records are fetched for writing kStageAhead rows ahead.
    const size_t n = us.size();
    for (size_t j = 0; j < n; ++j) {
      if (j + kStageAhead < n) {
        const int64_t ahead = slots[us[j + kStageAhead]];
        if (ahead != SlotIndex::kNone) {
          PrefetchRecordForWrite(
              stripe.arena.record(static_cast<uint32_t>(ahead)), stride_);
        }
      }
      const uint32_t u = us[j];
      const char* rec = rows.record(u);
      int64_t slot = slots[u];
      if (slot == SlotIndex::kNone) {
        slot = stripe.arena.Append();
        std::memcpy(stripe.arena.record(static_cast<uint32_t>(slot)), rec,
                    stride_);
        stripe.Insert(Load<uint64_t>(rec + kKeyOffset),
                      static_cast<uint32_t>(slot));
      } else {
        std::memcpy(stripe.arena.record(static_cast<uint32_t>(slot)), rec,
                    stride_);
      }
    }
  }
}

absl::StatusOr<uint64_t> EmbeddingTable::Push(
    absl::Span<const uint64_t> keys, absl::Span<const float> gradients,
    int64_t now_micros, const PersistFn& persist) {
  const uint32_t dim = config_.dim;
  if (config_.kind != TableKind::kId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name,
        "' is a content table: it is written by Upsert, not by gradients"));
  }
  if (gradients.size() != keys.size() * dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name, "': expected ", keys.size(), " keys x dim ",
        dim, " = ", keys.size() * dim, " gradient floats, got ",
        gradients.size()));
  }
  absl::Status st = CheckFinite(keys, gradients, dim, "gradient");
  if (!st.ok()) return st;
  keys_pushed_.fetch_add(keys.size(), std::memory_order_relaxed);
  if (keys.empty()) return 0;

  // Sum the gradients of repeated keys.
  absl::flat_hash_map<uint64_t, uint32_t> position;
  position.reserve(keys.size());
  std::vector<uint64_t> unique;
  std::vector<float> grad;
  grad.reserve(gradients.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [it, inserted] =
        position.try_emplace(keys[i], static_cast<uint32_t>(unique.size()));
    const float* g = gradients.data() + i * dim;
    if (inserted) {
      unique.push_back(keys[i]);
      grad.insert(grad.end(), g, g + dim);
    } else {
      float* sum = grad.data() + size_t{it->second} * dim;
      for (uint32_t d = 0; d < dim; ++d) sum[d] += g[d];
    }
  }
  std::vector<std::vector<uint32_t>> by_stripe(kNumStripes);
  for (size_t u = 0; u < unique.size(); ++u) {
    by_stripe[StripeOf(unique[u])].push_back(static_cast<uint32_t>(u));
  }

  CommitLocks commit(stripes_, by_stripe);
  ChangedRows rows = NewChangedRows(unique.size());
  std::vector<int64_t> slots;
  Stage(unique, by_stripe, /*init_missing=*/true, &rows, &slots);
  for (size_t u = 0; u < unique.size(); ++u) {
    char* rec = rows.record(u);
    RowMeta meta = ReadMeta(rec);
    ++meta.update_count;
    meta.last_update_micros = now_micros;
    WriteMeta(rec, meta);
    float* row = Values(rec);
    ApplyOptimizer(config_.optimizer, dim, grad.data() + u * dim,
                   meta.update_count, row, row + dim);
    // Finite gradients can still overflow (summed repeats, g^2 in the
    // state); a non-finite row would be persisted and then refused as
    // corrupt by the next Open, so the whole push is refused instead.
    for (uint32_t f = 0; f < dim + state_floats_; ++f) {
      if (!std::isfinite(row[f])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "table '", config_.name, "': gradients for key ", unique[u],
            " overflow its ", f < dim ? "values" : "optimizer state",
            " to a non-finite number; scale the gradients down"));
      }
    }
  }
  if (persist) {
    st = persist(rows);
    if (!st.ok()) return st;
  }
  Install(rows, by_stripe, slots);
  return unique.size();
}

absl::StatusOr<UpsertResult> EmbeddingTable::Upsert(
    absl::Span<const uint64_t> keys, absl::Span<const float> values,
    uint64_t version, int64_t now_micros, const PersistFn& persist) {
  const uint32_t dim = config_.dim;
  if (config_.kind != TableKind::kContent) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name,
        "' is an ID table: it is trained by Push, Upsert needs a content "
        "table"));
  }
  if (values.size() != keys.size() * dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name, "': expected ", keys.size(), " keys x dim ",
        dim, " = ", keys.size() * dim, " floats, got ", values.size()));
  }
  if (version > kMaxContentVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name, "': version ", version,
        " is above the largest a content row may have, 2^53 = ",
        kMaxContentVersion, " (a row written with it could never be "
        "updated again)"));
  }
  absl::Status st = CheckFinite(keys, values, dim, "value");
  if (!st.ok()) return st;
  keys_pushed_.fetch_add(keys.size(), std::memory_order_relaxed);
  UpsertResult result;
  if (keys.empty()) return result;

  // A repeated key keeps its last value.
  absl::flat_hash_map<uint64_t, uint32_t> last;
  last.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    last[keys[i]] = static_cast<uint32_t>(i);
  }
  std::vector<uint64_t> unique;
  std::vector<uint32_t> source;
  unique.reserve(last.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (last[keys[i]] == i) {
      unique.push_back(keys[i]);
      source.push_back(static_cast<uint32_t>(i));
    }
  }
  std::vector<std::vector<uint32_t>> by_stripe(kNumStripes);
  for (size_t u = 0; u < unique.size(); ++u) {
    by_stripe[StripeOf(unique[u])].push_back(static_cast<uint32_t>(u));
  }

  CommitLocks commit(stripes_, by_stripe);
  ChangedRows staged = NewChangedRows(unique.size());
  std::vector<int64_t> slots;
  Stage(unique, by_stripe, /*init_missing=*/false, &staged, &slots);

  // Keep only rows whose stored version is not newer.
  std::vector<std::vector<uint32_t>> write_by_stripe(kNumStripes);
  std::vector<int64_t> write_slots;  // of rows' records, for Install
  write_slots.reserve(unique.size());
  ChangedRows rows = NewChangedRows(0);
  size_t n = 0;
  for (size_t s = 0; s < kNumStripes; ++s) {
    for (uint32_t u : by_stripe[s]) {
      const RowMeta old = ReadMeta(staged.record(u));
      if (slots[u] != SlotIndex::kNone && old.version > version) {
        ++result.rows_stale;
        continue;
      }
      rows.buffer_.resize((n + 1) * stride_);
      char* rec = rows.record(n);
      Store<uint64_t>(rec + kKeyOffset, unique[u]);
      RowMeta meta = old;
      meta.version = version;
      meta.last_update_micros = now_micros;
      ++meta.update_count;
      WriteMeta(rec, meta);
      std::memcpy(Values(rec), values.data() + size_t{source[u]} * dim,
                  sizeof(float) * dim);
      write_by_stripe[s].push_back(static_cast<uint32_t>(n));
      write_slots.push_back(slots[u]);
      ++n;
    }
  }
  rows.count_ = n;
  result.rows_written = n;
  if (n > 0 && persist) {
    st = persist(rows);
    if (!st.ok()) return st;
  }
  Install(rows, write_by_stripe, write_slots);
  if (n > 0) {
    uint64_t prev = max_version_.load(std::memory_order_relaxed);
    while (prev < version && !max_version_.compare_exchange_weak(
                                 prev, version, std::memory_order_relaxed)) {
    }
  }
  return result;
}

void EmbeddingTable::GetRows(absl::Span<const uint64_t> keys,
                             std::vector<float>* values,
                             std::vector<RowMeta>* meta,
                             std::vector<uint32_t>* missing) const {
  const uint32_t dim = config_.dim;
  values->assign(keys.size() * dim, 0.0f);
  meta->assign(keys.size(), RowMeta{});
  // Positions grouped by stripe, so each stripe's reader lock is taken
  // once, as in Pull.
  std::vector<uint8_t> stripe_of(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    stripe_of[i] = static_cast<uint8_t>(StripeOf(keys[i]));
  }
  uint32_t start[kNumStripes + 1];
  std::vector<uint32_t> order;
  OrderByStripe(stripe_of, start, &order);
  const size_t missing_before = missing != nullptr ? missing->size() : 0;
  for (size_t s = 0; s < kNumStripes; ++s) {
    if (start[s] == start[s + 1]) continue;
    const Stripe& stripe = *stripes_[s];
    absl::ReaderMutexLock lock(&stripe.mu);
    for (uint32_t j = start[s]; j < start[s + 1]; ++j) {
      const uint32_t i = order[j];
      const int64_t slot = stripe.Find(keys[i]);
      if (slot < 0) {
        if (missing != nullptr) missing->push_back(i);
        continue;
      }
      const char* rec = stripe.arena.record(static_cast<uint32_t>(slot));
      std::memcpy(values->data() + size_t{i} * dim, Values(rec),
                  sizeof(float) * dim);
      (*meta)[i] = ReadMeta(rec);
    }
  }
  // In request order, as callers expect.
  if (missing != nullptr) {
    std::sort(missing->begin() + missing_before, missing->end());
  }
}

bool EmbeddingTable::ReadRow(uint64_t key, RowMeta* meta,
                             std::vector<float>* values,
                             std::vector<float>* state) const {
  const Stripe& stripe = *stripes_[StripeOf(key)];
  absl::ReaderMutexLock lock(&stripe.mu);
  const int64_t slot = stripe.Find(key);
  if (slot < 0) return false;
  const char* rec = stripe.arena.record(static_cast<uint32_t>(slot));
  *meta = ReadMeta(rec);
  const float* v = Values(rec);
  values->assign(v, v + config_.dim);
  state->assign(v + config_.dim, v + config_.dim + state_floats_);
  return true;
}

absl::Status EmbeddingTable::LoadRow(uint64_t key, const RowMeta& meta,
                                     absl::Span<const float> values,
                                     absl::Span<const float> state) {
  if (values.size() != config_.dim || state.size() != state_floats_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", config_.name, "' key ", key, ": expected ", config_.dim,
        " values and ", state_floats_, " state floats, got ", values.size(),
        " and ", state.size()));
  }
  Stripe& stripe = *stripes_[StripeOf(key)];
  absl::MutexLock commit(&stripe.commit_mu);
  absl::MutexLock lock(&stripe.mu);
  int64_t slot = stripe.Find(key);
  const bool fresh = slot < 0;
  if (fresh) slot = stripe.arena.Append();
  char* rec = stripe.arena.record(static_cast<uint32_t>(slot));
  Store<uint64_t>(rec + kKeyOffset, key);
  WriteMeta(rec, meta);
  std::memcpy(Values(rec), values.data(), sizeof(float) * values.size());
  // Content rows have no state: state.data() may be null, and memcpy from
  // null is undefined even for 0 bytes (UBSan, tests/fuzz ps_service).
  if (!state.empty()) {
    std::memcpy(Values(rec) + config_.dim, state.data(),
                sizeof(float) * state.size());
  }
  if (fresh) stripe.Insert(key, static_cast<uint32_t>(slot));
  uint64_t prev = max_version_.load(std::memory_order_relaxed);
  while (prev < meta.version &&
         !max_version_.compare_exchange_weak(prev, meta.version,
                                             std::memory_order_relaxed)) {
  }
  return absl::OkStatus();
}

void EmbeddingTable::ForEachRow(const RowVisitor& visit) const {
  for (size_t s = 0; s < kNumStripes; ++s) {
    const Stripe& stripe = *stripes_[s];
    absl::ReaderMutexLock lock(&stripe.mu);
    for (uint32_t slot = 0; slot < stripe.arena.size(); ++slot) {
      const char* rec = stripe.arena.record(slot);
      const float* v = Values(rec);
      visit(Load<uint64_t>(rec + kKeyOffset), ReadMeta(rec),
            absl::Span<const float>(v, config_.dim),
            absl::Span<const float>(v + config_.dim, state_floats_));
    }
  }
}

TableStats EmbeddingTable::Stats() const {
  TableStats stats;
  stats.config = config_;
  uint64_t bytes = sizeof(*this) + (sizeof(Stripe) + sizeof(void*)) * kNumStripes +
                   pool_->bytes();
  for (size_t s = 0; s < kNumStripes; ++s) {
    const Stripe& stripe = *stripes_[s];
    absl::ReaderMutexLock lock(&stripe.mu);
    stats.rows += stripe.index.size();
    bytes += stripe.arena.bytes();
    bytes += stripe.index.bytes();
  }
  stats.bytes = bytes;
  stats.bytes_per_row =
      stats.rows == 0 ? 0.0 : static_cast<double>(bytes) / stats.rows;
  stats.keys_pulled = keys_pulled_.load(std::memory_order_relaxed);
  stats.keys_pushed = keys_pushed_.load(std::memory_order_relaxed);
  stats.max_version = max_version_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace mim::embedding
