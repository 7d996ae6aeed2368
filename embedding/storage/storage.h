// Storage: an ordered, durable key-value store with named checkpoints, as
// needed by EmbeddingStore. Two backends: RocksDB (the real one, the only
// code in the project that includes RocksDB headers) and memory (for tests
// and ephemeral stores). One typed test suite (storage_test.cc) runs both
// through the same scenarios.
//
// Contract for implementations:
//  1. Write applies the whole batch atomically or not at all; OK means the
//     batch is durable as far as the backend promises (RocksDB: in the WAL,
//     fsynced when sync_writes).
//  2. Get returns NOT_FOUND for an absent key; Scan visits keys with the
//     prefix in ascending byte order and stops at the first non-OK status
//     returned by the visitor, returning it.
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
//     contents are unchanged.
//  6. Errors from the backend are converted here: DATA_LOSS for corruption,
//     INTERNAL for I/O errors, UNAVAILABLE for retryable conditions.
//
// Thread-safety: implementations are safe for concurrent access.
#ifndef MIM_EMBEDDING_STORAGE_STORAGE_H_
#define MIM_EMBEDDING_STORAGE_STORAGE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

// Puts and deletes applied together; deletes are applied after puts.
struct StorageBatch {
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
};

class Storage {
 public:
  using Visitor =
      std::function<absl::Status(absl::string_view key, absl::string_view value)>;

  virtual ~Storage() = default;

  virtual absl::Status Write(const StorageBatch& batch) = 0;
  virtual absl::StatusOr<std::string> Get(absl::string_view key) const = 0;
  virtual absl::Status Scan(absl::string_view prefix,
                            const Visitor& visit) const = 0;

  virtual absl::Status CreateCheckpoint(const std::string& name) = 0;
  // Every checkpoint, oldest first by creation (contract 3); the last one
  // is the most recently created.
  virtual std::vector<StoredCheckpoint> ListCheckpoints() const = 0;
  // Where checkpoint `name` lives, for display (a path for RocksDB).
  virtual std::string CheckpointPath(const std::string& name) const = 0;
  virtual absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& name) const = 0;
  virtual absl::Status RestoreCheckpoint(const std::string& name) = 0;
};

// INVALID_ARGUMENT unless `name` is a valid checkpoint name (contract 3).
absl::Status ValidateCheckpointName(absl::string_view name);

struct RocksDbStorageOptions {
  // Live database in <data_dir>/db, checkpoints in <data_dir>/checkpoints.
  std::string data_dir;
  bool sync_writes = false;
};

// Opens or creates the database, first finishing or undoing a restore that
// was interrupted by a crash. DATA_LOSS for a corrupt database.
absl::StatusOr<std::unique_ptr<Storage>> OpenRocksDbStorage(
    const RocksDbStorageOptions& options);

// Contents and checkpoints live in memory only and die with the object.
std::unique_ptr<Storage> NewMemoryStorage();

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_STORAGE_H_
