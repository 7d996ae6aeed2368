// EmbeddingTable: one in-memory table of 64-bit keys -> fixed-dim rows.
//
// ID tables apply pushed gradients through the table's sparse optimizer,
// with the optimizer state stored beside each row. A key's row is created by
// its first Push, starting from the deterministic per-key initial value; a
// Pull of a key without a row returns that initial value and stores nothing. Content tables are written only by
// Upsert (with a version) and report unknown keys as missing.
//
// Writes are two-phase so that a caller can make them durable first: the
// changed rows are computed aside, handed to a PersistFn, and only installed
// (made visible to Pull) if it returns OK. A failed persist leaves the table
// unchanged. Writes touching the same lock stripe are persisted and installed
// in the same order, so the durable copy never lags behind memory.
//
// Thread-safety: safe for concurrent access. Keys are spread over 128 lock
// stripes; a batch takes each stripe's lock once, readers share it.
#ifndef MIM_EMBEDDING_EMBEDDING_TABLE_H_
#define MIM_EMBEDDING_EMBEDDING_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedding/embedding_store.h"
#include "embedding/table_config.h"

namespace mim::embedding {

class ChunkPool;  // embedding_table.cc

// Rows changed by one write, in the table's record format (see
// embedding_table.cc). Not thread-safe; owned by the write in progress.
class ChangedRows {
 public:
  size_t size() const { return count_; }
  uint64_t key(size_t i) const;
  RowMeta meta(size_t i) const;
  // dim floats.
  const float* values(size_t i) const;
  // state_floats floats (StateFloatsPerDim * dim); none for content tables.
  const float* state(size_t i) const;

 private:
  friend class EmbeddingTable;
  const char* record(size_t i) const { return buffer_.data() + i * stride_; }
  char* record(size_t i) { return buffer_.data() + i * stride_; }
  std::vector<char> buffer_;
  size_t stride_ = 0;
  size_t count_ = 0;
  uint32_t dim_ = 0;
};

class EmbeddingTable {
 public:
  // Called with the rows a write is about to install; a non-OK result aborts
  // the write and is returned to its caller.
  using PersistFn = std::function<absl::Status(const ChangedRows&)>;

  // INVALID_ARGUMENT from ValidateTableConfig.
  static absl::StatusOr<std::unique_ptr<EmbeddingTable>> Create(
      const TableConfig& config);

  ~EmbeddingTable();
  EmbeddingTable(const EmbeddingTable&) = delete;
  EmbeddingTable& operator=(const EmbeddingTable&) = delete;

  const TableConfig& config() const { return config_; }
  uint32_t dim() const { return config_.dim; }
  // Optimizer state floats per row.
  uint32_t state_floats() const { return state_floats_; }

  // See EmbeddingStore::Pull. `values` must hold keys.size() * dim floats.
  absl::Status Pull(absl::Span<const uint64_t> keys, float* values,
                    std::vector<uint32_t>* missing);

  // See EmbeddingStore::Push. `persist` may be empty (no durability).
  absl::StatusOr<uint64_t> Push(absl::Span<const uint64_t> keys,
                                absl::Span<const float> gradients,
                                int64_t now_micros, const PersistFn& persist);

  // See EmbeddingStore::Upsert.
  absl::StatusOr<UpsertResult> Upsert(absl::Span<const uint64_t> keys,
                                      absl::Span<const float> values,
                                      uint64_t version, int64_t now_micros,
                                      const PersistFn& persist);

  // See EmbeddingStore::GetRows (never creates rows).
  void GetRows(absl::Span<const uint64_t> keys, std::vector<float>* values,
               std::vector<RowMeta>* meta,
               std::vector<uint32_t>* missing) const;

  // Copies one row with its state; false when the key has no row.
  bool ReadRow(uint64_t key, RowMeta* meta, std::vector<float>* values,
               std::vector<float>* state) const;

  // Inserts or overwrites a row verbatim (loading from storage).
  // INVALID_ARGUMENT when the lengths do not match the table.
  absl::Status LoadRow(uint64_t key, const RowMeta& meta,
                       absl::Span<const float> values,
                       absl::Span<const float> state);

  TableStats Stats() const;

  // Calls `visit` for every row, stripe by stripe (each under its reader
  // lock, so `visit` must not call back into this table).
  using RowVisitor = std::function<void(uint64_t key, const RowMeta& meta,
                                        absl::Span<const float> values,
                                        absl::Span<const float> state)>;
  void ForEachRow(const RowVisitor& visit) const;

 private:
  struct Stripe;
  class CommitLocks;
  explicit EmbeddingTable(const TableConfig& config);

  size_t StripeOf(uint64_t key) const;
  // Fills a fresh record for `key` (initial values and state, zero meta).
  void InitRecord(uint64_t key, char* record) const;
  // Installs each staged record (stripe by stripe): into slots[i] for row
  // i, or a new slot where that is SlotIndex::kNone. The caller holds the
  // commit locks of the stripes since the Stage that found the slots.
  void Install(const ChangedRows& rows,
               const std::vector<std::vector<uint32_t>>& by_stripe,
               const std::vector<int64_t>& slots);
  // Copies the current (or a fresh) record of each key into `rows`, and
  // sets (*slots)[i] to key i's slot, or SlotIndex::kNone if it has none.
  void Stage(absl::Span<const uint64_t> keys,
             const std::vector<std::vector<uint32_t>>& by_stripe,
             bool init_missing, ChangedRows* rows,
             std::vector<int64_t>* slots) const;
  ChangedRows NewChangedRows(size_t count) const;

  const TableConfig config_;
  const uint32_t state_floats_;
  const size_t stride_;  // bytes per record
  std::unique_ptr<ChunkPool> pool_;  // memory of every stripe's rows
  std::vector<std::unique_ptr<Stripe>> stripes_;  // never resized
  std::atomic<uint64_t> keys_pulled_{0};
  std::atomic<uint64_t> keys_pushed_{0};
  std::atomic<uint64_t> max_version_{0};
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_EMBEDDING_TABLE_H_
