// Reading what a RocksDB database's write-ahead logs hold, to say what a
// recovery would drop. Private to the storage target (RocksDB headers).
#ifndef MIM_EMBEDDING_STORAGE_ROCKSDB_WAL_PROBE_H_
#define MIM_EMBEDDING_STORAGE_ROCKSDB_WAL_PROBE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rocksdb/options.h"
#include "rocksdb/wal_filter.h"

namespace mim::embedding {

// One write-ahead-log record (one WriteBatch) as recovery met it.
struct WalRecord {
  uint64_t wal_number = 0;
  uint64_t sequence = 0;  // of its first write
  uint32_t writes = 0;    // puts and deletes in it
  uint64_t bytes = 0;     // the batch's size
};

// Something recovery could not read.
struct WalDamage {
  std::string file;    // base name, e.g. "000012.log"
  uint64_t bytes = 0;  // unreadable bytes RocksDB reported
  std::string reason;  // RocksDB's words, e.g. "Corruption: checksum mismatch"
};

struct WalProbe {
  std::vector<WalRecord> records;  // every readable record, in replay order
  std::vector<WalDamage> damage;   // in the order met
};

// Reads the WAL records of the database at `db_path` as recovery in `mode`
// would, without changing any file or replaying anything into memory (a
// read-only open): with kPointInTimeRecovery, the records before the first
// damage and that damage (an incomplete last record included); with
// kSkipAnyCorruptedRecords, every readable record and the damaged ones it
// skipped (RocksDB does not report an incomplete last record in that mode).
// `base` supplies the Env and the table options. DATA_LOSS when even this
// open fails.
absl::StatusOr<WalProbe> ProbeWal(const rocksdb::Options& base,
                                  const std::string& db_path,
                                  rocksdb::WALRecoveryMode mode);

// A WalFilter that records each record recovery replays and lets it
// through. Not thread-safe (RocksDB recovery runs on one thread).
class WalRecordLog : public rocksdb::WalFilter {
 public:
  explicit WalRecordLog(bool replay) : replay_(replay) {}
  WalProcessingOption LogRecordFound(unsigned long long log_number,
                                     const std::string& log_file_name,
                                     const rocksdb::WriteBatch& batch,
                                     rocksdb::WriteBatch* new_batch,
                                     bool* batch_changed) override;
  const char* Name() const override { return "MimWalRecordLog"; }
  const std::vector<WalRecord>& records() const { return records_; }

 private:
  const bool replay_;  // false: record and skip (nothing reaches memory)
  std::vector<WalRecord> records_;
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_ROCKSDB_WAL_PROBE_H_
