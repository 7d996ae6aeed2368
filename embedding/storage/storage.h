// Storage: an ordered, durable key-value store with named checkpoints, as
// needed by EmbeddingStore. Two backends: RocksDB (the real one, whose
// files are the only code in the project that includes RocksDB headers) and
// memory (for tests and ephemeral stores). One typed test suite
// (storage_test.cc) runs both through the same scenarios.
//
// Contract for implementations:
//  1. Write applies the whole batch atomically or not at all; OK means the
//     batch is durable as far as the backend promises (RocksDB: in the WAL,
//     fsynced when sync_writes). A batch with an empty prefix to delete, or
//     one of 0xff bytes only, is INVALID_ARGUMENT and writes nothing.
//  2. Get returns NOT_FOUND for an absent key; ScanAfter visits the keys
//     with the prefix that are greater than `after` (all of them for an
//     empty `after`) in ascending byte order and stops at the first non-OK
//     status returned by the visitor, returning it. The visitor runs under
//     the storage's lock: it must not call the storage nor take a lock that
//     is held around a Write (collect a page of keys, use them, and go on
//     after the last one).
//  3. CreateCheckpoint captures one point in time of everything written.
//     Names are 1..128 characters of [A-Za-z0-9_.-], not "." or ".."
//     (INVALID_ARGUMENT); an existing name is ALREADY_EXISTS. Each
//     checkpoint records its place in creation order (a sequence number
//     above every existing checkpoint's) together with the checkpoint
//     itself, so that a crash never leaves one without the other.
//     ListCheckpoints returns them in creation order, oldest first, never
//     in name order: "before-migration" may be newer than "zz".
//  4. OpenCheckpoint gives a read-only Storage over a checkpoint (Write and
//     checkpoint calls on it fail with FAILED_PRECONDITION); NOT_FOUND for an
//     unknown name.
//  5. RestoreCheckpoint durably replaces the live contents with the
//     checkpoint's; NOT_FOUND for an unknown name; on any failure the live
//     contents are unchanged. DeleteCheckpoint removes one (NOT_FOUND for
//     an unknown name); a crash in the middle never leaves a partly
//     deleted checkpoint that ListCheckpoints lists or OpenCheckpoint
//     opens. The caller must not delete a checkpoint that it has open
//     (EmbeddingStore runs checkpoint operations one at a time).
//  6. Errors from the backend are converted here: DATA_LOSS for corruption,
//     INTERNAL for I/O errors, UNAVAILABLE for retryable conditions.
//  7. A failed Write is not acknowledged and leaves nothing readable that a
//     successful Write would have; after a failure the batch is either
//     absent or (when only a sync failed) present whole, never in part.
//
// Opening never loses acknowledged writes silently (RocksDB): a damaged
// write-ahead log, one shorter than at the last clean shutdown, or a data dir
// whose live database is missing all fail with DATA_LOSS unless
// RocksDbStorageOptions::accept_data_loss is set, and then StorageRecovery
// says what was dropped.
//
// Thread-safety: implementations are safe for concurrent access.
#ifndef MIM_EMBEDDING_STORAGE_STORAGE_H_
#define MIM_EMBEDDING_STORAGE_STORAGE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace mim::embedding {

// One checkpoint as ListCheckpoints reports it.
struct StoredCheckpoint {
  std::string name;
  // Place in creation order: above every checkpoint created before it.
  // 0 for a checkpoint written before creation order was recorded; those
  // are listed first.
  uint64_t sequence = 0;
  // When it was created, in microseconds since the Unix epoch; for one
  // without a sequence, when its files were written (RocksDB). 0 if unknown.
  int64_t created_micros = 0;
};

// Puts and deletes applied together; deletes are applied after puts, and
// prefix deletes (every key that starts with one of them, e.g. all rows of
// a dropped table) after the deletes. A prefix is never empty.
struct StorageBatch {
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
  std::vector<std::string> delete_prefixes;
};

// A batch being built for Storage::WriteBuilt, in the form its backend
// writes: a put given in parts (a row's header, values and checksum) goes
// into the backend's own batch without being composed into a string or
// copied into a StorageBatch first. For a Push of thousands of rows those
// strings and copies, and the pages of a second multi-megabyte buffer, were
// a visible part of the shard's CPU (issue 13 in docs/BENCHMARKS.md).
// Applied as a StorageBatch is: puts in the order given, then the deletes.
// Not thread-safe.
class StorageBatchBuilder {
 public:
  virtual ~StorageBatchBuilder() = default;
  // Puts the concatenation of `key_parts` -> that of `value_parts`.
  virtual void PutParts(absl::Span<const absl::string_view> key_parts,
                        absl::Span<const absl::string_view> value_parts) = 0;
  void Put(absl::string_view key, absl::string_view value) {
    PutParts({&key, 1}, {&value, 1});
  }
  virtual void Delete(absl::string_view key) = 0;
  // Deletes every key that starts with `prefix` (see ValidateDeletePrefix),
  // after the puts and deletes. RocksDB: one range tombstone, whatever the
  // number of keys; once it is written and synced, the files that hold
  // only keys of the prefix are removed. So no write of a key with the
  // prefix may run at the same time as the batch (EmbeddingStore::DropTable
  // holds every writer off).
  virtual void DeletePrefix(absl::string_view prefix) = 0;
};

// INVALID_ARGUMENT for an empty prefix to delete or one of 0xff bytes only
// (contract 1).
absl::Status ValidateDeletePrefix(absl::string_view prefix);

class Storage {
 public:
  using Visitor =
      std::function<absl::Status(absl::string_view key, absl::string_view value)>;

  virtual ~Storage() = default;

  virtual absl::Status Write(const StorageBatch& batch) = 0;

  // A builder for WriteBuilt. `puts` and `bytes`: about how many puts and
  // key and value bytes in all will go in, so that the batch is allocated
  // once. The default builds a StorageBatch and writes it with Write (what
  // a wrapper that overrides Write alone gets); RocksDB builds its own
  // write batch.
  virtual std::unique_ptr<StorageBatchBuilder> NewBatchBuilder(size_t puts,
                                                               size_t bytes);
  // Writes a batch from this storage's NewBatchBuilder, with Write's
  // contract (1 and 7). INVALID_ARGUMENT for a builder of another storage.
  virtual absl::Status WriteBuilt(std::unique_ptr<StorageBatchBuilder> batch);
  virtual absl::StatusOr<std::string> Get(absl::string_view key) const = 0;
  virtual absl::Status ScanAfter(absl::string_view prefix,
                                 absl::string_view after,
                                 const Visitor& visit) const = 0;
  // Every key with the prefix (contract 2).
  absl::Status Scan(absl::string_view prefix, const Visitor& visit) const {
    return ScanAfter(prefix, absl::string_view(), visit);
  }

  virtual absl::Status CreateCheckpoint(const std::string& name) = 0;
  // Every checkpoint, oldest first by creation (contract 3); the last one
  // is the most recently created.
  virtual std::vector<StoredCheckpoint> ListCheckpoints() const = 0;
  // Where checkpoint `name` lives, for display (a path for RocksDB).
  virtual std::string CheckpointPath(const std::string& name) const = 0;
  virtual absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& name) const = 0;
  virtual absl::Status RestoreCheckpoint(const std::string& name) = 0;
  // Optional first half of a RestoreCheckpoint(name) that comes next: the
  // slow part (RocksDB: the copy of the checkpoint, fsynced) done while
  // reads and writes go on, so that the caller blocks writers only for the
  // swap. The live contents are unchanged; a later RestoreCheckpoint of
  // another name, or none, discards it. NOT_FOUND for an unknown name. The
  // default only checks the name.
  virtual absl::Status PrepareRestore(const std::string& name) {
    for (const StoredCheckpoint& c : ListCheckpoints()) {
      if (c.name == name) return absl::OkStatus();
    }
    return absl::NotFoundError(absl::StrCat("no checkpoint '", name, "'"));
  }

  // After a batch that deleted `prefix`: frees the space its keys still
  // take (RocksDB: flushes, then has the files that hold such keys
  // compacted in the background). Writes may go on meanwhile. The default
  // (memory) has nothing to do.
  virtual absl::Status CompactDeletedPrefix(absl::string_view prefix) {
    return ValidateDeletePrefix(prefix);
  }
  virtual absl::Status DeleteCheckpoint(const std::string& name) = 0;
};

// INVALID_ARGUMENT unless `name` is a valid checkpoint name (contract 3).
absl::Status ValidateCheckpointName(absl::string_view name);

// Test-only seam (RocksDbStorageOptions::fault_injector): asked before every
// file operation of the RocksDB backend, RocksDB's own and the backend's
// (checkpoint and restore renames, MIM_* files). A non-OK answer fails that
// operation with an I/O error carrying the message.
//
// Implementations must be safe for concurrent access: RocksDB calls from its
// background threads.
class StorageFaultInjector {
 public:
  enum class Op {
    kWrite,   // appending to a file (WAL, SST, MANIFEST, CURRENT, MIM_*)
    kSync,    // fsync or fdatasync of a file or a directory
    kRename,  // renaming a file or a directory
  };
  virtual ~StorageFaultInjector() = default;
  // For kWrite, `*write_prefix` starts as the number of bytes to append; an
  // implementation that fails the call may lower it to have that many bytes
  // written first (a torn write). It is null for other operations.
  virtual absl::Status Check(Op op, absl::string_view path,
                             size_t* write_prefix) = 0;
};

struct RocksDbStorageOptions {
  // Live database in <data_dir>/db, checkpoints in <data_dir>/checkpoints.
  std::string data_dir;
  bool sync_writes = false;
  // Bytes of one RocksDB memtable of the live database (write_buffer_size;
  // RocksDB keeps up to two, one being flushed). 0: RocksDB's default, 64
  // MiB. Larger ones cost that much more memory and take more versions of
  // a hot row before a flush: fewer flush and compaction bytes per pushed
  // key (docs/BENCHMARKS.md, "Issue 13: a larger memtable").
  size_t memtable_bytes = 0;
  // Open even when that loses acknowledged writes (see OpenRocksDbStorage),
  // reporting what was lost in StorageRecovery.
  bool accept_data_loss = false;
  // Tests only: fails chosen file operations. Null in production.
  std::shared_ptr<StorageFaultInjector> fault_injector;
};

// What opening a RocksDB storage dropped. All zero and empty when it lost
// nothing.
struct StorageRecovery {
  // The open lost acknowledged writes and went on because accept_data_loss
  // allowed it.
  bool data_loss_accepted = false;
  // The data dir held a shard's files but no live database; an empty one was
  // created.
  bool started_empty = false;
  // Write-ahead-log records that were readable but came after the damage, so
  // were not replayed; the writes (puts and deletes) in them; and the bytes
  // lost: those records plus the unreadable bytes (or, for a log shorter than
  // at the last clean shutdown, nothing: the lost bytes are gone).
  uint64_t wal_records_dropped = 0;
  uint64_t wal_writes_dropped = 0;
  uint64_t wal_bytes_dropped = 0;
  // Damaged or missing files, relative to data_dir ("db/000012.log", "db/").
  std::vector<std::string> files;
  // Where copies of the write-ahead logs were kept, as they were before
  // anything was dropped, relative to data_dir ("salvage/<UTC time>");
  // empty if none were kept.
  std::string salvage_dir;
  // One line for logs and stats: what was wrong and what was dropped.
  std::string detail;
};

// Opens or creates the database under options.data_dir, first finishing or
// undoing a restore that was interrupted by a crash.
//
// An empty or new data dir starts an empty database; one that holds the
// shard's files (MIM_DATA_DIR, written when the database is first created,
// checkpoints, MIM_CLEAN_SHUTDOWN) but no live database (db/CURRENT) fails
// with DATA_LOSS naming what is missing and what to do.
//
// Write-ahead log: an incomplete last record is what a crash in the middle of
// an unacknowledged write leaves, and is dropped (after a clean shutdown,
// recorded in MIM_CLEAN_SHUTDOWN, there can be none, so it is damage too).
// Any other damage (a checksum mismatch, a bad record), or a log that ends
// before the last write of the last clean shutdown, fails with DATA_LOSS
// naming the file and how much would be lost, without changing any file.
//
// With options.accept_data_loss those cases open anyway: the write-ahead
// logs are first copied to salvage/<UTC time>/, the database recovers to
// the last consistent point before the damage (or starts empty when db/ is
// missing), and `*recovery` (when not null) says what was dropped. Other
// errors: DATA_LOSS for a corrupt database, INTERNAL for I/O errors.
absl::StatusOr<std::unique_ptr<Storage>> OpenRocksDbStorage(
    const RocksDbStorageOptions& options, StorageRecovery* recovery = nullptr);

// Contents and checkpoints live in memory only and die with the object.
std::unique_ptr<Storage> NewMemoryStorage();

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_STORAGE_H_
