// EmbeddingStore: the tables of one parameter-server shard, durable on disk.
//
// This is the domain object behind the ParameterServer service: the service
// converts protobuf to these calls and absl::Status to grpc::Status, nothing
// more. It owns the in-memory EmbeddingTables and the RocksDB storage.
//
// Durability: a mutating call (Push, Upsert, CreateTable, DropTable) returns
// OK only
// after the rows it changed (values, optimizer state, metadata) are written
// to RocksDB's write-ahead log, so an acknowledged write survives the process
// being killed (SIGKILL). With Options::sync_writes the WAL is also fsynced,
// which survives power loss at the cost of one fsync per request. A write
// whose storage write fails is refused and changes nothing in memory.
// Start-up never drops acknowledged writes silently: a damaged write-ahead
// log, one that ends before the last clean shutdown's last write, or a data
// dir that lost its database fail Open with DATA_LOSS unless
// Options::accept_data_loss, and Recovery() then says what was dropped.
//
// Validation: every call checks its whole input first (table exists, lengths
// match dim, values finite, request size within limits) and changes nothing
// when it fails.
//
// Thread-safety: safe for concurrent access. Pulls and pushes on different
// keys run in parallel (striped locks inside each table); Checkpoint briefly
// blocks writers so that all tables are captured at one consistent point.
// A Restore loads its checkpoint and copies it (Storage::PrepareRestore)
// while reads and writes go on, then blocks writers while the database is
// swapped and readers only for the moment
// the tables are swapped. Checkpoint, Restore and DeleteCheckpoint run one
// at a time: one that starts while another runs fails at once with
// UNAVAILABLE naming the one in progress (retry when it is done), so admin
// calls never pile up behind a long restore.
#ifndef MIM_EMBEDDING_EMBEDDING_STORE_H_
#define MIM_EMBEDDING_EMBEDDING_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "embedding/table_config.h"

namespace mim::embedding {

struct RowMeta {
  int64_t last_update_micros = 0;  // wall clock of the last push/upsert
  uint32_t update_count = 0;       // pushes (ID) or upserts (content) applied
  uint64_t version = 0;            // content tables: version of the last upsert
};

struct TableStats {
  TableConfig config;
  uint64_t rows = 0;
  uint64_t bytes = 0;          // memory held for rows, state, metadata, index
  double bytes_per_row = 0;    // bytes / rows (0 when empty)
  uint64_t keys_pulled = 0;    // since the process started
  uint64_t keys_pushed = 0;    // since the process started
  uint64_t max_version = 0;    // content tables
};

// One push of one client, for exactly-once application (PushOnce). A
// client_id of 0 is "untagged": the push is applied like Push.
struct PushTag {
  uint64_t client_id = 0;
  uint64_t sequence = 0;  // 1, 2, ...; a resend keeps its number
};

struct PushOutcome {
  uint64_t rows_updated = 0;  // distinct keys (a duplicate: of the request)
  bool duplicate = false;     // applied before; acknowledged, not applied
};

struct UpsertResult {
  uint64_t rows_written = 0;
  uint64_t rows_stale = 0;  // stored version was newer; row left alone
};

struct CheckpointInfo {
  std::string name;
  std::string path;
  uint64_t rows = 0;
  // Checkpoint: the older checkpoints deleted by Options::keep_checkpoints,
  // and what went wrong deleting one (empty: nothing).
  std::vector<std::string> deleted;
  std::string retention_error;
};

// What opening the store dropped to start (Options::accept_data_loss). All
// zero and empty when it lost nothing.
struct StartupRecovery {
  // The open lost acknowledged writes and went on because accept_data_loss
  // allowed it.
  bool data_loss_accepted = false;
  // The data dir held the shard's files but no database: it started empty.
  bool started_empty = false;
  // Write-ahead-log records that were readable but came after the damage,
  // the writes (row puts) lost from the recovery point on, and the bytes of
  // log lost (those records plus the unreadable bytes).
  uint64_t wal_records_dropped = 0;
  uint64_t wal_writes_dropped = 0;
  uint64_t wal_bytes_dropped = 0;
  // Damaged or missing files, relative to the data dir ("db/000012.log").
  std::vector<std::string> files;
  // Where the logs were copied before anything was dropped, relative to the
  // data dir ("salvage/<UTC time>"); empty if nothing was copied.
  std::string salvage_dir;
  // One line: what was wrong and what was dropped.
  std::string detail;
};

// One checkpoint as ListCheckpoints reports it.
struct CheckpointEntry {
  std::string name;
  std::string path;
  // Place in this store's creation order (greater is newer); 0 for a
  // checkpoint written before creation order was recorded.
  uint64_t sequence = 0;
  // Creation time in microseconds since the Unix epoch (for one without a
  // sequence, when its files were written); 0 if unknown.
  int64_t created_micros = 0;
};

class EmbeddingStore {
 public:
  struct Options {
    // Directory holding the live RocksDB database ("<data_dir>/db") and
    // checkpoints ("<data_dir>/checkpoints/<name>"). Created if missing.
    std::string data_dir;
    // fsync the WAL on every acknowledged write (see the file comment).
    bool sync_writes = false;
    // Requests with more keys than this are refused with RESOURCE_EXHAUSTED.
    size_t max_keys_per_request = 1 << 20;
    // Start even when that drops acknowledged writes (a damaged write-ahead
    // log, a missing database); Recovery() then says what was dropped.
    bool accept_data_loss = false;
    // RocksDbStorageOptions::memtable_bytes, in MiB (0: RocksDB's default,
    // 64). The server's --memtable_mb.
    int memtable_mb = 0;
    // Checkpoints kept: after a successful Checkpoint, the oldest ones (by
    // creation order) beyond this many are deleted. 0: keep all.
    uint32_t keep_checkpoints = 0;
    // Clients whose applied pushes PushOnce remembers (embedding/push_log.h:
    // the least recently used is forgotten beyond this).
    size_t max_push_clients = 4096;
    // Tests only: PushOnce calls this after a tagged push is durable and
    // applied, before it returns (e.g. to abort the process there).
    std::function<void()> test_after_push_applied;
  };

  // Opens (or creates) the store and loads every table found in
  // `options.data_dir` into memory. Every stored record is checked: a table
  // config that does not decode or validate (DATA_LOSS naming the table),
  // or a row with a bad checksum, length or dims, a non-finite value, or
  // optimizer state that is non-finite or out of its domain (a negative
  // Adagrad accumulator, Adam second moment or FTRL n) (DATA_LOSS naming
  // the table, the key and the bad float). Fails with the storage error
  // otherwise: DATA_LOSS for a corrupt database, for a damaged write-ahead
  // log or one that ends before the last clean shutdown's last write, and
  // for a data dir that holds the shard's files but no database, each
  // naming the file and what would be lost, unless options.accept_data_loss
  // (see OpenRocksDbStorage in embedding/storage/storage.h). On failure
  // nothing is left open and no stored record has been changed (loading
  // only reads).
  static absl::StatusOr<std::unique_ptr<EmbeddingStore>> Open(
      const Options& options);

  virtual ~EmbeddingStore() = default;

  // Creates a table. ALREADY_EXISTS if the name is taken (OK instead when
  // if_not_exists and the stored config equals `config`); INVALID_ARGUMENT
  // from ValidateTableConfig.
  virtual absl::Status CreateTable(const TableConfig& config,
                                   bool if_not_exists) = 0;

  virtual std::vector<TableConfig> ListTables() const = 0;

  // Drops a table: its config, every row and its optimizer state, from
  // memory and, in one storage write (a range delete of its rows with the
  // config's delete), from disk, so a crash leaves it either whole or gone.
  // Returns the rows it held. NOT_FOUND for an unknown table. Writers wait
  // for the drop as for a Checkpoint (a checkpoint holds the table whole or
  // not at all); a call already reading the table finishes first, later
  // ones get NOT_FOUND. Checkpoints keep the table: a Restore of one taken
  // before the drop brings it back. A table of the same name created later
  // starts empty.
  virtual absl::StatusOr<uint64_t> DropTable(absl::string_view table) = 0;

  // Writes keys.size() * dim floats into `values` (resized), in key order.
  // A missing row of an ID table reads as its initial value (the table's
  // initializer, a pure function of seed and key) and is not created: rows
  // are created by their first Push, from that same value, so a pull never
  // grows the table nor changes what a checkpoint holds.
  // Content tables zero-fill missing rows and append their indices to
  // `missing`. NOT_FOUND for an unknown table.
  virtual absl::Status Pull(absl::string_view table,
                            absl::Span<const uint64_t> keys, float* values,
                            std::vector<uint32_t>* missing) = 0;

  // As Pull, into the buffer that `buffer(dim)` returns once the table's
  // dim is known (keys.size() * dim floats), under the same lock as the
  // read, so the rows always have the dim the buffer was made for, even
  // when a Restore replaces the table meanwhile. An error from `buffer` is
  // returned as is and nothing is read.
  using RowBuffer = std::function<absl::StatusOr<float*>(uint32_t dim)>;
  virtual absl::Status PullInto(absl::string_view table,
                                absl::Span<const uint64_t> keys,
                                const RowBuffer& buffer,
                                std::vector<uint32_t>* missing) = 0;

  // Dimension of `table`, or NOT_FOUND.
  virtual absl::StatusOr<uint32_t> Dim(absl::string_view table) const = 0;
  // Optimizer state floats per row of `table`, per value of the row (0 for
  // SGD and content tables, 1 for Adagrad, 2 for Adam and FTRL), or
  // NOT_FOUND.
  virtual absl::StatusOr<uint32_t> StateFloatsPerDim(
      absl::string_view table) const = 0;

  // Applies gradients (keys.size() * dim floats) to an ID table through its
  // optimizer; repeated keys have their gradients summed first. Returns the
  // number of distinct rows updated. NOT_FOUND (unknown table),
  // INVALID_ARGUMENT (content table, wrong length, NaN/Inf naming the key),
  // RESOURCE_EXHAUSTED (too many keys).
  virtual absl::StatusOr<uint64_t> Push(absl::string_view table,
                                        absl::Span<const uint64_t> keys,
                                        absl::Span<const float> gradients) = 0;

  // As Push, but applied at most once per tag: a push whose (client_id,
  // sequence) this store has applied before is acknowledged (duplicate,
  // rows_updated = the request's distinct keys) and not applied again,
  // whether the first one was answered or not. The record of applied tags
  // (embedding/push_log.h) is written in the same storage batch as the
  // rows, so it is exactly as durable (it survives kill -9) and comes back
  // with a checkpoint's Restore. Pushes of one client run one at a time.
  // INVALID_ARGUMENT for a tag with a client id and sequence 0;
  // FAILED_PRECONDITION for a sequence too far below the client's newest
  // to tell whether it was applied (ClientWindow::kWindow); ABORTED, with
  // nothing applied, while the client's record is being evicted by another
  // client's push (PushLog::Get; send it again); otherwise as Push. An
  // untagged push (client_id 0) is a plain Push.
  virtual absl::StatusOr<PushOutcome> PushOnce(
      absl::string_view table, absl::Span<const uint64_t> keys,
      absl::Span<const float> gradients, const PushTag& tag) = 0;

  // Writes content rows with `version`. A repeated key keeps its last value
  // in the request. Rows whose stored version is greater than `version` are
  // left alone and counted as stale. INVALID_ARGUMENT for an ID table, wrong
  // length, non-finite values or a version above kMaxContentVersion (2^53).
  virtual absl::StatusOr<UpsertResult> Upsert(absl::string_view table,
                                              absl::Span<const uint64_t> keys,
                                              absl::Span<const float> values,
                                              uint64_t version) = 0;

  // Reads rows without creating any, for inspection. values gets
  // keys.size() * dim floats (zeros when missing), meta one entry per key.
  virtual absl::Status GetRows(absl::string_view table,
                               absl::Span<const uint64_t> keys,
                               std::vector<float>* values,
                               std::vector<RowMeta>* meta,
                               std::vector<uint32_t>* missing) = 0;

  // Stats of one table (NOT_FOUND if unknown) or, with an empty name, all.
  virtual absl::StatusOr<std::vector<TableStats>> Stats(
      absl::string_view table) const = 0;

  // Writes a consistent snapshot of every table (rows, optimizer state,
  // metadata, configs) under <data_dir>/checkpoints/<name>, recording its
  // place in creation order with it. An empty name picks
  // "ckpt-YYYYmmdd-HHMMSS.ffffff" (UTC). ALREADY_EXISTS if the name is
  // taken, INVALID_ARGUMENT for a name with '/' or "..". With
  // Options::keep_checkpoints, then deletes the oldest checkpoints beyond
  // that many (a failure to delete one is logged, not returned: the new
  // checkpoint is good). UNAVAILABLE while another Checkpoint, Restore or
  // DeleteCheckpoint runs.
  virtual absl::StatusOr<CheckpointInfo> Checkpoint(const std::string& name) = 0;

  // Deletes checkpoint `name` (its files; the live tables are untouched).
  // NOT_FOUND when there is none; UNAVAILABLE while another Checkpoint,
  // Restore or DeleteCheckpoint runs. A crash during the delete leaves no
  // half-deleted checkpoint that ListCheckpoints would list.
  virtual absl::Status DeleteCheckpoint(const std::string& name) = 0;

  // Replaces every table with the contents of checkpoint `name` (empty: the
  // most recently created one, whatever the names; see ListCheckpoints),
  // bit-identical to when it was taken, and makes that durable. NOT_FOUND if
  // there is no such checkpoint; DATA_LOSS (as Open) if a stored record
  // in it is corrupt; UNAVAILABLE while another Checkpoint, Restore or
  // DeleteCheckpoint runs. On failure the live state is unchanged.
  virtual absl::StatusOr<CheckpointInfo> Restore(const std::string& name) = 0;

  // Every checkpoint in creation order, oldest first (not name order:
  // "before-migration" taken after "zz" comes after it); the last one is
  // what Restore("") takes. Checkpoints written before creation order was
  // recorded come first, by the time their files were written. Reads only
  // the checkpoint directory (no database is opened).
  virtual std::vector<CheckpointEntry> ListCheckpoints() const = 0;

  // Visits every in-memory row of `table` (values, optimizer state, meta) in
  // no particular order, for dumps and bit-exact comparisons in tests.
  // NOT_FOUND for an unknown table. `visit` must not call into the store.
  using RowVisitor = std::function<void(uint64_t key, const RowMeta& meta,
                                        absl::Span<const float> values,
                                        absl::Span<const float> state)>;
  virtual absl::Status ExportRows(absl::string_view table,
                                  const RowVisitor& visit) const {
    return absl::UnimplementedError("ExportRows");
  }

  // What Open dropped to start (fixed for the life of the store).
  virtual StartupRecovery Recovery() const { return {}; }
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_EMBEDDING_STORE_H_
