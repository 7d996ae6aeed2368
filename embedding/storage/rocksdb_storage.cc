// RocksDB Storage backend. RocksDB headers are included only by the files of
// the storage target (this one, rocksdb_wal_probe.cc, rocksdb_fault_fs.cc);
// rocksdb::Status is converted to absl::Status here.
//
// Layout under data_dir:
//   db/                    live database (WAL always on)
//   checkpoints/<name>/    rocksdb::Checkpoint (hard links to SST files)
//                          plus MIM_CHECKPOINT, its place in creation order
//   checkpoints/<name>.tmp checkpoint being written (renamed when complete);
//                          any "*.tmp" there at open is a crash's leftover,
//                          removed
//   db.restore/            copy of a checkpoint about to replace db/
//   db.old/                previous db/ while a restore swaps directories
//   MIM_LOCK               flock'ed by the live storage for its whole life
//                          (DataDirLock): one storage per data dir
//   MIM_DATA_DIR           "mim-data-dir 1": written once db/ first exists,
//                          so a data dir with it but no db/CURRENT is one
//                          that lost its database, not a new one
//   MIM_CLEAN_SHUTDOWN     "mim-clean-shutdown 1", "last_sequence S": written
//                          (temp file, fsync, rename) after the WAL was
//                          synced and the database closed with no failed
//                          write; removed by the next open before any write
//   salvage/<UTC time>/    copies of the WAL files (and db/ remains) taken
//                          before an open that accepts data loss drops them
// Restore copies the checkpoint to db.restore/, fsyncs it, closes the live
// DB, renames db/ -> db.old/ and db.restore/ -> db/, fsyncs data_dir,
// reopens, then deletes db.old/. A failure before the reopen succeeds
// renames db/ back to db.restore/ (deleting it in place only if that
// rename fails) and db.old/ back to db/, so the live contents are
// unchanged; if db.old/ cannot be put back the store stays closed. Open()
// finishes or undoes a restore interrupted by a crash.
//
// Creation order: MIM_CHECKPOINT ("mim-checkpoint 1", "sequence N",
// "created_micros T", one per line) is written (temp file, fsync, rename)
// into <name>.tmp/ before that directory is renamed to <name>/, so a
// complete checkpoint always has it, unless it was written before this file
// existed. N is one above the greatest sequence of the checkpoints present;
// ListCheckpoints orders by (N, T, name). Checkpoints without a readable
// MIM_CHECKPOINT come first, ordered by the modification time of their
// CURRENT file (written once by rocksdb::Checkpoint, never by a read-only
// open or a restore), then by name.
//
// Start-up without silent loss (the contract is in storage.h). Without
// MIM_CLEAN_SHUTDOWN the last run may have died in the middle of a write, so
// the WAL is replayed with kTolerateCorruptedTailRecords: an incomplete last
// record (that unacknowledged write) is dropped, any other damage fails the
// open. With it there can be no incomplete record, so kAbsoluteConsistency,
// and the database must reach sequence S; the recovered WAL is kept
// (avoid_flush_during_recovery) until that is checked, then flushed. A failed
// open changes no file (RocksDB stops before writing) and is described by two
// read-only probes (rocksdb_wal_probe.h): where point-in-time recovery would
// stop, and what readable records lie beyond. Accepting the loss copies the
// WAL to salvage/ and reopens with kPointInTimeRecovery, which flushes what
// it recovered and deletes the damaged WAL, so the next start is clean.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/atomic_file.h"
#include "base/status_macros.h"
#include "embedding/storage/rocksdb_fault_fs.h"
#include "embedding/storage/rocksdb_memtable.h"
#include "embedding/storage/rocksdb_wal_probe.h"
#include "embedding/storage/storage.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/experimental.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace mim::embedding {
namespace {

// rocksdb::WriteBatch's layout: a 12-byte header (sequence, count), then
// per record a type byte and varint32-prefixed key and value.
constexpr size_t kWriteBatchHeaderBytes = 12;
constexpr size_t kMaxVarint32Bytes = 5;

namespace fs = std::filesystem;

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument() || s.IsNotSupported()) {
    return absl::InvalidArgumentError(msg);
  }
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() || s.IsIncomplete()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

absl::Status FromErrorCode(const std::error_code& ec,
                           absl::string_view context) {
  if (!ec) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(context, ": ", ec.message()));
}

// fsyncs a file or directory so that renames and copies survive power loss.
absl::Status SyncPath(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path.string()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path.string()));
  return absl::OkStatus();
}

// The entries of `dir` (not recursive), read without exceptions: a
// directory that cannot be listed, or an error part way, sets *ec (the
// entries read until then are returned). A range-for over a
// directory_iterator would throw from its increment instead.
std::vector<fs::path> ListDir(const fs::path& dir, std::error_code* ec) {
  std::vector<fs::path> out;
  for (fs::directory_iterator it(dir, *ec), end; !*ec && it != end;
       it.increment(*ec)) {
    out.push_back(it->path());
  }
  return out;
}

// Removes every entry of `dir` whose name ends with `suffix`, best effort:
// what cannot be listed or removed stays.
void RemoveEntriesEndingWith(const fs::path& dir, absl::string_view suffix) {
  std::error_code ec;
  for (const fs::path& entry : ListDir(dir, &ec)) {
    if (absl::EndsWith(entry.filename().string(), suffix)) {
      std::error_code removed;
      fs::remove_all(entry, removed);
    }
  }
}

absl::Status SyncTree(const fs::path& dir) {
  std::error_code ec;
  for (const fs::path& entry : ListDir(dir, &ec)) {
    absl::Status st = SyncPath(entry);
    if (!st.ok()) return st;
  }
  if (ec) return FromErrorCode(ec, absl::StrCat("list ", dir.string()));
  return SyncPath(dir);
}

constexpr char kInfoFile[] = "MIM_CHECKPOINT";
// From this on a MIM_CHECKPOINT sequence reads as damaged (2^48 checkpoints
// would take a million years at one a minute).
constexpr uint64_t kMaxCheckpointSequence = uint64_t{1} << 48;
constexpr char kInfoHeader[] = "mim-checkpoint 1";

// A checkpoint's place in creation order (see the file comment).
struct CheckpointOrder {
  bool has_info = false;       // MIM_CHECKPOINT present and readable
  uint64_t sequence = 0;       // 0 without MIM_CHECKPOINT
  int64_t created_micros = 0;  // without it: mtime of CURRENT
  std::string name;

  bool operator<(const CheckpointOrder& o) const {
    return std::tie(has_info, sequence, created_micros, name) <
           std::tie(o.has_info, o.sequence, o.created_micros, o.name);
  }
};

std::string EncodeInfo(uint64_t sequence, int64_t created_micros) {
  return absl::StrCat(kInfoHeader, "\nsequence ", sequence,
                      "\ncreated_micros ", created_micros, "\n");
}

// False for a missing, unreadable or malformed file.
bool ReadInfo(const fs::path& dir, CheckpointOrder* order) {
  std::ifstream in(dir / kInfoFile, std::ios::binary);
  if (!in) return false;
  std::string text(256, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad() || !in.eof()) return false;  // an I/O error or too long
  text.resize(static_cast<size_t>(in.gcount()));
  const std::vector<absl::string_view> lines =
      absl::StrSplit(text, '\n', absl::SkipEmpty());
  if (lines.size() != 3 || lines[0] != kInfoHeader) return false;
  absl::string_view sequence_text = lines[1], created_text = lines[2];
  uint64_t sequence = 0;
  int64_t created = 0;
  if (!absl::ConsumePrefix(&sequence_text, "sequence ") ||
      !absl::SimpleAtoi(sequence_text, &sequence) ||
      !absl::ConsumePrefix(&created_text, "created_micros ") ||
      !absl::SimpleAtoi(created_text, &created)) {
    return false;
  }
  // Sequences count checkpoints; one this large is damage, and taking it
  // would make the next checkpoint's (one above the greatest) wrap to 0
  // and sort first.
  if (sequence >= kMaxCheckpointSequence) return false;
  order->has_info = true;
  order->sequence = sequence;
  order->created_micros = created;
  return true;
}

// Modification time of `path` in microseconds since the epoch; 0 if absent.
int64_t MtimeMicros(const fs::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return int64_t{st.st_mtim.tv_sec} * 1000000 + st.st_mtim.tv_nsec / 1000;
}

constexpr char kDataDirFile[] = "MIM_DATA_DIR";
constexpr char kDataDirContents[] = "mim-data-dir 1\n";
constexpr char kCleanShutdownFile[] = "MIM_CLEAN_SHUTDOWN";
constexpr char kCleanShutdownHeader[] = "mim-clean-shutdown 1";
constexpr char kSalvageDir[] = "salvage";

// How one database directory is opened.
struct DbOpenMode {
  bool read_only = false;
  bool create_if_missing = false;
  rocksdb::WALRecoveryMode wal_recovery =
      rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // Keep the recovered WAL files instead of flushing them at open.
  bool keep_wal = false;
  rocksdb::WalFilter* wal_filter = nullptr;
  // RocksDBStorageOptions::memtable_bytes (0: RocksDB's default).
  size_t memtable_bytes = 0;
};

// The least key above every key that starts with `prefix` (one that
// ValidateDeletePrefix accepts: not empty, not all 0xff): the prefix with
// its last byte below 0xff raised by one, the 0xff bytes after it dropped.
// [prefix, PrefixEnd(prefix)) holds exactly the keys with the prefix.
std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (static_cast<uint8_t>(end.back()) == 0xff) end.pop_back();
  end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
  return end;
}

// How the live database (not a checkpoint) is opened.
DbOpenMode LiveMode(const RocksDbStorageOptions& options) {
  DbOpenMode mode;
  mode.memtable_bytes = options.memtable_bytes;
  return mode;
}

// Options every open shares. `env` may be null (the default Env).
rocksdb::Options BaseOptions(rocksdb::Env* env) {
  rocksdb::Options options;
  if (env != nullptr) options.env = env;
  options.paranoid_checks = true;
  // Rows are served from memory (EmbeddingTable); RocksDB is written on
  // every push and read back only by a full scan at open. The memtable
  // appends each put and sorts once at flush, where the default skip list
  // pays a random O(log n) insert per row: with pushes of thousands of
  // random keys that insert was the largest cost of a push. It sorts the
  // keys' first bytes kept side by side, not pointers into the memtable
  // as RocksDB's vector memtable does (rocksdb_memtable.h).
  options.memtable_factory = std::make_shared<InlineKeyVectorRepFactory>();
  options.allow_concurrent_memtable_write = false;
  // Rows are random float32 values and optimizer state, which snappy
  // barely shrinks; skip its CPU cost at every flush and compaction.
  options.compression = rocksdb::kNoCompression;
  return options;
}

// `display` names the directory in errors, relative to the data dir (an
// error may reach a client through Restore: no absolute server paths).
absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(const std::string& path,
                                                    absl::string_view display,
                                                    rocksdb::Env* env,
                                                    const DbOpenMode& mode) {
  rocksdb::Options options = BaseOptions(env);
  options.create_if_missing = mode.create_if_missing && !mode.read_only;
  options.wal_recovery_mode = mode.wal_recovery;
  options.avoid_flush_during_recovery = mode.keep_wal;
  options.wal_filter = mode.wal_filter;
  if (mode.memtable_bytes > 0) options.write_buffer_size = mode.memtable_bytes;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = mode.read_only
                          ? rocksdb::DB::OpenForReadOnly(options, path, &db)
                          : rocksdb::DB::Open(options, path, &db);
  MIM_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("open rocksdb at ", display)));
  return std::unique_ptr<rocksdb::DB>(db);
}

// The sequence recorded by the last clean shutdown, or nullopt when there is
// no marker (the last run did not stop cleanly) or it cannot be read (then
// the open is as careful as after a crash).
std::optional<uint64_t> ReadCleanShutdown(const fs::path& root) {
  std::string text;
  if (!base::ReadFileToString((root / kCleanShutdownFile).string(), &text)
           .ok()) {
    return std::nullopt;
  }
  const std::vector<absl::string_view> lines =
      absl::StrSplit(text, '\n', absl::SkipEmpty());
  uint64_t sequence = 0;
  absl::string_view value = lines.size() == 2 ? lines[1] : "";
  if (lines.size() != 2 || lines[0] != kCleanShutdownHeader ||
      !absl::ConsumePrefix(&value, "last_sequence ") ||
      !absl::SimpleAtoi(value, &sequence)) {
    return std::nullopt;
  }
  return sequence;
}

// What in `root` shows that it holds (or held) a shard's database, for a
// data dir whose db/ is missing; empty for a new or empty data dir.
std::vector<std::string> ShardFilesIn(const fs::path& root) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : {kDataDirFile, kCleanShutdownFile}) {
    if (fs::exists(root / name, ec)) found.push_back(name);
  }
  const size_t checkpoints = ListDir(root / "checkpoints", &ec).size();
  if (checkpoints > 0) {
    found.push_back(absl::StrCat(checkpoints, " entr",
                                 checkpoints == 1 ? "y" : "ies",
                                 " under checkpoints/"));
  }
  if (fs::exists(root / kSalvageDir, ec)) found.push_back("salvage/");
  return found;
}

// Copies every WAL file of `db` into a new salvage/<UTC time>/ directory
// (fsynced) and returns that directory relative to `root`.
absl::StatusOr<std::string> SalvageWal(const fs::path& root,
                                       const fs::path& db) {
  const std::string name = absl::StrCat(
      kSalvageDir, "/",
      absl::FormatTime("%Y%m%d-%H%M%E6S", absl::Now(), absl::UTCTimeZone()));
  const fs::path dest = root / name;
  std::error_code ec;
  fs::create_directories(dest, ec);
  MIM_RETURN_IF_ERROR(FromErrorCode(ec, absl::StrCat("create ", name)));
  std::error_code list_ec;
  for (const fs::path& entry : ListDir(db, &list_ec)) {
    if (entry.extension() != ".log") continue;
    fs::copy_file(entry, dest / entry.filename(), ec);
    MIM_RETURN_IF_ERROR(FromErrorCode(
        ec, absl::StrCat("copy db/", entry.filename().string(), " to ",
                         name)));
  }
  MIM_RETURN_IF_ERROR(FromErrorCode(list_ec, "list db/"));
  MIM_RETURN_IF_ERROR(SyncTree(dest));
  MIM_RETURN_IF_ERROR(SyncPath(dest.parent_path()));
  return name;
}

// What a recovery that stops at the first damage drops, from the two probes
// (see the file comment).
struct WalLoss {
  std::vector<std::string> files;  // "db/000012.log", in the order met
  std::string reason;              // of the first damage
  uint64_t unreadable_bytes = 0;
  uint64_t records = 0;       // readable records after the first damage
  uint64_t record_bytes = 0;  // their size
  // Writes (puts and deletes) lost: every sequence number from the recovery
  // point to the last readable record, unreadable records included; or,
  // when the recovery point is unknown, those in the readable records.
  uint64_t writes = 0;
};

// `stop` is the point-in-time probe and `all` the skip-any one; `kept` the
// sequences of the records recovery keeps; `reached` the last sequence it
// keeps (0: unknown), and `clean` the last clean shutdown's, if any.
WalLoss DescribeLoss(const WalProbe& stop, const WalProbe& all,
                     const absl::flat_hash_set<uint64_t>& kept,
                     uint64_t reached, std::optional<uint64_t> clean) {
  WalLoss loss;
  absl::flat_hash_set<std::string> seen;
  auto add_file = [&](const std::string& file) {
    if (seen.insert(file).second) loss.files.push_back("db/" + file);
  };
  for (const WalDamage& d : stop.damage) add_file(d.file);
  for (const WalDamage& d : all.damage) {
    add_file(d.file);
    loss.unreadable_bytes += d.bytes;
  }
  if (!stop.damage.empty()) {
    loss.reason = stop.damage.front().reason;
    // The skip-any probe does not report an incomplete last record.
    if (all.damage.empty()) loss.unreadable_bytes = stop.damage.front().bytes;
  }
  uint64_t last_seen = 0;
  for (const WalRecord& r : all.records) {
    if (kept.contains(r.sequence)) continue;
    ++loss.records;
    loss.writes += r.writes;
    loss.record_bytes += r.bytes;
    last_seen = std::max(last_seen, r.sequence + r.writes - 1);
  }
  if (reached > 0) {
    if (last_seen > reached) {
      loss.writes = std::max(loss.writes, last_seen - reached);
    }
    if (clean.has_value() && *clean > reached) {
      loss.writes = std::max(loss.writes, *clean - reached);
    }
  }
  return loss;
}

std::string LossSummary(const WalLoss& loss) {
  return absl::StrCat(
      "write-ahead log ", absl::StrJoin(loss.files, ", "), " is damaged (",
      loss.reason.empty() ? "unreadable" : loss.reason,
      "); recovery stops there and drops ", loss.writes,
      " acknowledged writes: ", loss.records, " readable records (",
      loss.record_bytes, " bytes) after ", loss.unreadable_bytes,
      " unreadable bytes");
}

// An exclusive lock (flock) on data_dir/MIM_LOCK, held by the live storage
// from before the open's recovery steps to its destruction: RocksDB's own
// LOCK covers db/ only while it is open, not the renames and deletes of an
// interrupted restore's recovery at open, nor the moment a restore swaps
// directories. A second open of the data dir (another shard process given
// the same --data_dir, or a second store in this one) is refused.
class DataDirLock {
 public:
  static absl::StatusOr<std::unique_ptr<DataDirLock>> Acquire(
      const fs::path& root) {
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("create ", root.string(), ": ", ec.message()));
    }
    const fs::path path = root / kLockFile;
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("open ", path.string(), ": ",
                                              std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            "data dir ", root.string(), " is in use by another shard (",
            kLockFile, " is locked): one data dir serves one shard process"));
      }
      return absl::InternalError(
          absl::StrCat("lock ", path.string(), ": ", std::strerror(err)));
    }
    return std::unique_ptr<DataDirLock>(new DataDirLock(fd));
  }
  ~DataDirLock() { ::close(fd_); }  // releases the flock
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  static constexpr char kLockFile[] = "MIM_LOCK";

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  const int fd_;
};

// Safe for concurrent access: `mu_` is shared by reads and writes and held
// exclusively only while RestoreCheckpoint swaps the database (and by the
// destructor); `create_mu_` serializes CreateCheckpoint so that sequences
// are unique.
class RocksDbStorage : public Storage {
 public:
  // `lock`: the data dir's, for the live storage (null for a read-only
  // checkpoint); released after the database is closed.
  RocksDbStorage(RocksDbStorageOptions options, bool read_only,
                 std::shared_ptr<rocksdb::Env> env,
                 std::unique_ptr<rocksdb::DB> db,
                 std::unique_ptr<DataDirLock> lock = nullptr)
      : lock_(std::move(lock)),
        options_(std::move(options)),
        read_only_(read_only),
        env_(std::move(env)),
        db_(std::move(db)) {
    write_options_.sync = options_.sync_writes;
  }

  // Closes the database; the live one records a clean shutdown when its WAL
  // synced and no write ever failed (a failed write may have left a torn
  // record, which only the crash-tolerant open accepts).
  ~RocksDbStorage() override {
    if (read_only_) return;
    absl::MutexLock lock(&mu_);
    if (db_ == nullptr) return;
    const uint64_t last = db_->GetLatestSequenceNumber();
    // After a failed write RocksDB's WAL writer must not be used again (its
    // debug build asserts), so no sync then: there is no marker anyway.
    const bool failed = write_failed_.load();
    const bool synced = !failed && db_->FlushWAL(/*sync=*/true).ok();
    const bool closed = db_->Close().ok();
    db_.reset();
    if (failed || !synced || !closed) return;
    const fs::path marker = fs::path(options_.data_dir) / kCleanShutdownFile;
    if (!CheckFault(injector(), StorageFaultInjector::Op::kWrite,
                    marker.string())
             .ok()) {
      return;
    }
    // A failure leaves no marker: the next open is as careful as after a
    // crash, which is always correct.
    (void)base::WriteFileAtomically(
        marker.string(),
        absl::StrCat(kCleanShutdownHeader, "\nlast_sequence ", last, "\n"));
  }

  absl::Status Write(const StorageBatch& batch) override {
    if (read_only_) return ReadOnlyError();
    // Through the builder, sized once: a batch of 64k rows grew its buffer
    // by doubling, which copied it repeatedly and briefly held up to 3x
    // its size.
    size_t bytes = 0;
    for (const auto& [k, v] : batch.puts) bytes += k.size() + v.size();
    for (const auto& k : batch.deletes) {
      bytes += 1 + kMaxVarint32Bytes + k.size();
    }
    std::unique_ptr<StorageBatchBuilder> built =
        NewBatchBuilder(batch.puts.size(), bytes);
    for (const auto& [k, v] : batch.puts) built->Put(k, v);
    for (const auto& k : batch.deletes) built->Delete(k);
    for (const auto& p : batch.delete_prefixes) built->DeletePrefix(p);
    return WriteBuilt(std::move(built));
  }

  // Puts go straight into a rocksdb::WriteBatch, each from its parts.
  class Builder : public StorageBatchBuilder {
   public:
    Builder(const RocksDbStorage* owner, size_t reserve_bytes)
        : owner_(owner), wb_(reserve_bytes) {}
    void PutParts(absl::Span<const absl::string_view> key_parts,
                  absl::Span<const absl::string_view> value_parts) override {
      if (!status_.ok()) return;
      // The parts of a row are a handful; more take the slow way.
      constexpr size_t kMaxParts = 8;
      if (key_parts.size() > kMaxParts || value_parts.size() > kMaxParts) {
        const std::string k = absl::StrJoin(key_parts, "");
        const std::string v = absl::StrJoin(value_parts, "");
        status_ = wb_.Put(k, v);
        return;
      }
      rocksdb::Slice k[kMaxParts], v[kMaxParts];
      for (size_t i = 0; i < key_parts.size(); ++i) {
        k[i] = rocksdb::Slice(key_parts[i].data(), key_parts[i].size());
      }
      for (size_t i = 0; i < value_parts.size(); ++i) {
        v[i] = rocksdb::Slice(value_parts[i].data(), value_parts[i].size());
      }
      status_ = wb_.Put(
          rocksdb::SliceParts(k, static_cast<int>(key_parts.size())),
          rocksdb::SliceParts(v, static_cast<int>(value_parts.size())));
    }
    // Kept aside and added last: deletes apply after every put.
    void Delete(absl::string_view key) override {
      deletes_.emplace_back(key);
    }
    void DeletePrefix(absl::string_view prefix) override {
      delete_prefixes_.emplace_back(prefix);
    }

   private:
    friend class RocksDbStorage;
    const RocksDbStorage* const owner_;
    rocksdb::WriteBatch wb_;
    rocksdb::Status status_;  // of the first failed put
    std::vector<std::string> deletes_;
    std::vector<std::string> delete_prefixes_;
  };

  std::unique_ptr<StorageBatchBuilder> NewBatchBuilder(size_t puts,
                                                       size_t bytes) override {
    return std::make_unique<Builder>(
        this, kWriteBatchHeaderBytes + puts * (1 + 2 * kMaxVarint32Bytes) +
                  bytes);
  }

  absl::Status WriteBuilt(
      std::unique_ptr<StorageBatchBuilder> batch) override {
    auto* built = dynamic_cast<Builder*>(batch.get());
    if (built == nullptr || built->owner_ != this) {
      return absl::InvalidArgumentError(
          "WriteBuilt takes a batch from the same storage's NewBatchBuilder");
    }
    if (read_only_) return ReadOnlyError();
    if (!built->status_.ok()) return FromRocks(built->status_, "batch put");
    for (const std::string& k : built->deletes_) {
      rocksdb::Status s = built->wb_.Delete(k);
      if (!s.ok()) return FromRocks(s, "batch delete");
    }
    std::vector<std::pair<std::string, std::string>> ranges;
    for (const std::string& prefix : built->delete_prefixes_) {
      MIM_RETURN_IF_ERROR(ValidateDeletePrefix(prefix));
      std::string end = PrefixEnd(prefix);
      rocksdb::Status s = built->wb_.DeleteRange(prefix, end);
      if (!s.ok()) return FromRocks(s, "batch prefix delete");
      ranges.emplace_back(prefix, std::move(end));
    }
    MIM_RETURN_IF_ERROR(WriteRocks(&built->wb_));
    if (!ranges.empty()) RemoveFilesOfRanges(ranges);
    return absl::OkStatus();
  }

  // The range tombstone into a file (a compaction can only leave out the
  // keys it covers once it is in one), then the files that still hold keys
  // of the prefix (at its ends, and level 0: a leveled database schedules
  // no compaction for a tombstone alone) marked for RocksDB's background
  // compaction. Writers may go on meanwhile.
  absl::Status CompactDeletedPrefix(absl::string_view prefix) override {
    MIM_RETURN_IF_ERROR(ValidateDeletePrefix(prefix));
    const std::string end = PrefixEnd(prefix);
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    if (read_only_) return ReadOnlyError();
    rocksdb::FlushOptions flush;
    flush.allow_write_stall = true;
    MIM_RETURN_IF_ERROR(FromRocks(db_->Flush(flush), "flush"));
    const rocksdb::Slice b(prefix.data(), prefix.size()), e(end);
    return FromRocks(
        rocksdb::experimental::SuggestCompactRange(db_.get(), &b, &e),
        "suggest compaction");
  }

 private:
  // After prefix deletes are written: the SST files (below level 0) that
  // hold only keys of one deleted [begin, end) range are removed at once,
  // so a dropped table's disk space comes back and later opens' scans do
  // not step over its rows. Only once the deletes are durable in the WAL
  // (synced here, once, also without sync_writes): removed files are gone
  // for good, and a crash must not bring back a range's other keys without
  // them. Safe because no key of the range is written meanwhile
  // (storage.h). Best effort: on a failure the files are left to
  // compaction (CompactDeletedPrefix).
  void RemoveFilesOfRanges(
      const std::vector<std::pair<std::string, std::string>>& ranges) {
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return;
    if (!db_->SyncWAL().ok()) return;
    for (const auto& [begin, end] : ranges) {
      const rocksdb::Slice b(begin), e(end);
      (void)rocksdb::DeleteFilesInRange(db_.get(), db_->DefaultColumnFamily(),
                                        &b, &e, /*include_end=*/false);
    }
  }

  // Writes `wb` to the live database (Write's contract).
  absl::Status WriteRocks(rocksdb::WriteBatch* wb) {
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    rocksdb::Status s = db_->Write(write_options_, wb);
    if (s.ok()) return absl::OkStatus();
    write_failed_.store(true);
    if (!s.IsIOError()) return FromRocks(s, "write batch");
    // RocksDB stops taking writes after a failed WAL write or flush
    // (background error): only reopening it clears that.
    return absl::InternalError(absl::StrCat(
        "write batch: ", s.ToString(),
        "; the database takes no more writes after an I/O error: restart "
        "the shard once the cause (disk full, failing disk) is fixed"));
  }

 public:
  absl::StatusOr<std::string> Get(absl::string_view key) const override {
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(),
                                 rocksdb::Slice(key.data(), key.size()), &value);
    absl::Status st = FromRocks(s, absl::StrCat("get '", key, "'"));
    if (!st.ok()) return st;
    return value;
  }

  absl::Status ScanAfter(absl::string_view prefix, absl::string_view after,
                         const Visitor& visit) const override {
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    const bool from_prefix = after.empty() || after < prefix;
    const absl::string_view start = from_prefix ? prefix : after;
    it->Seek(rocksdb::Slice(start.data(), start.size()));
    if (!from_prefix && it->Valid() &&
        absl::string_view(it->key().data(), it->key().size()) == after) {
      it->Next();
    }
    for (; it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      const absl::string_view key(k.data(), k.size());
      if (!absl::StartsWith(key, prefix)) break;
      const rocksdb::Slice v = it->value();
      absl::Status st = visit(key, absl::string_view(v.data(), v.size()));
      if (!st.ok()) return st;
    }
    return FromRocks(it->status(), absl::StrCat("scan '", prefix, "'"));
  }

  absl::Status CreateCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::Status st = ValidateCheckpointName(name);
    if (!st.ok()) return st;
    const fs::path final_path = CheckpointDir() / name;
    const fs::path tmp_path = CheckpointDir() / (name + ".tmp");
    absl::MutexLock create(&create_mu_);
    std::error_code ec;
    if (fs::exists(final_path, ec)) {
      return absl::AlreadyExistsError(
          absl::StrCat("checkpoint '", name, "' already exists"));
    }
    fs::remove_all(tmp_path, ec);  // left over from a crash
    uint64_t sequence = 1;
    for (const CheckpointOrder& c : OrderedCheckpoints()) {
      sequence = std::max(sequence, c.sequence + 1);
    }
    {
      absl::ReaderMutexLock lock(&mu_);
      if (db_ == nullptr) return ClosedError();
      rocksdb::Checkpoint* raw = nullptr;
      st = FromRocks(rocksdb::Checkpoint::Create(db_.get(), &raw),
                     "create checkpoint object");
      if (!st.ok()) return st;
      std::unique_ptr<rocksdb::Checkpoint> cp(raw);
      // log_size_for_flush = 0: flush memtables first, so the checkpoint is
      // self-contained SST files plus an empty WAL.
      st = FromRocks(cp->CreateCheckpoint(tmp_path.string(),
                                          /*log_size_for_flush=*/0),
                     absl::StrCat("checkpoint to ", tmp_path.string()));
      if (!st.ok()) return st;
    }
    // Temp file, fsync, rename, fsync of the checkpoint directory.
    const std::string info_path = (tmp_path / kInfoFile).string();
    st = CheckFault(injector(), StorageFaultInjector::Op::kWrite, info_path);
    if (st.ok()) {
      st = base::WriteFileAtomically(
          info_path, EncodeInfo(sequence, absl::ToUnixMicros(absl::Now())));
    }
    if (st.ok()) {
      st = CheckFault(injector(), StorageFaultInjector::Op::kRename,
                      final_path.string());
    }
    if (st.ok()) {
      fs::rename(tmp_path, final_path, ec);
      st = FromErrorCode(ec, "rename checkpoint");
    }
    if (!st.ok()) {
      fs::remove_all(tmp_path, ec);
      return st;
    }
    return SyncPath(CheckpointDir());
  }

  std::vector<StoredCheckpoint> ListCheckpoints() const override {
    std::vector<StoredCheckpoint> out;
    for (CheckpointOrder& c : OrderedCheckpoints()) {
      out.push_back({std::move(c.name), c.sequence, c.created_micros});
    }
    return out;
  }

  std::string CheckpointPath(const std::string& name) const override {
    return (CheckpointDir() / name).string();
  }

  absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& name) const override {
    absl::Status st = CheckExists(name);
    if (!st.ok()) return st;
    DbOpenMode mode;
    mode.read_only = true;
    auto db = OpenDb(CheckpointPath(name), absl::StrCat("checkpoints/", name),
                     env_.get(), mode);
    if (!db.ok()) return db.status();
    return std::unique_ptr<Storage>(
        new RocksDbStorage(options_, /*read_only=*/true, env_, std::move(*db)));
  }

  absl::Status PrepareRestoreLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(prepare_mu_) {
    prepared_for_.clear();
    MIM_RETURN_IF_ERROR(CheckExists(name));
    const fs::path staged = fs::path(options_.data_dir) / "db.restore";
    std::error_code ec;
    fs::remove_all(staged, ec);
    fs::copy(CheckpointPath(name), staged, fs::copy_options::recursive, ec);
    if (ec) {
      fs::remove_all(staged, ec);
      return absl::InternalError(
          absl::StrCat("copy checkpoint '", name, "': ", ec.message()));
    }
    // The live database is not a checkpoint: it keeps no creation order.
    fs::remove(staged / kInfoFile, ec);
    MIM_RETURN_IF_ERROR(SyncTree(staged));
    prepared_for_ = name;
    return absl::OkStatus();
  }

  // Copies checkpoint `name` to db.restore/ and fsyncs it; the live
  // database is not touched (it runs meanwhile).
  absl::Status PrepareRestore(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::MutexLock prepared(&prepare_mu_);
    return PrepareRestoreLocked(name);
  }

  absl::Status RestoreCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::Status st = CheckExists(name);
    if (!st.ok()) return st;
    // Held through the swap, so that no PrepareRestore replaces the staged
    // copy under it.
    absl::MutexLock prepared(&prepare_mu_);
    if (prepared_for_ != name) MIM_RETURN_IF_ERROR(PrepareRestoreLocked(name));
    prepared_for_.clear();  // used now
    const fs::path root(options_.data_dir);
    const fs::path live = root / "db";
    const fs::path staged = root / "db.restore";
    const fs::path old = root / "db.old";
    std::error_code ec;

    absl::MutexLock lock(&mu_);
    db_.reset();  // closes the live database
    fs::remove_all(old, ec);
    st = Rename(live, old);
    const bool moved_live = st.ok();
    if (st.ok()) st = Rename(staged, live);
    const bool swapped = st.ok();
    // The swap durable before the restored database takes a write: a
    // failure here is undone like a failed open, nothing written yet.
    if (st.ok()) {
      st = CheckFault(injector(), StorageFaultInjector::Op::kSync,
                      root.string());
    }
    if (st.ok()) st = SyncPath(root);
    if (st.ok()) {
      auto db = OpenDb(live.string(), "db/", env_.get(), LiveMode(options_));
      if (db.ok()) {
        db_ = std::move(*db);
        write_failed_.store(false);  // a new WAL; the old one goes
        fs::remove_all(old, ec);
        return absl::OkStatus();
      }
      st = db.status();
    }
    // Put the previous database back so the live state is unchanged. The
    // restored copy is renamed aside rather than deleted in place: a crash
    // in between then leaves db.old/ without db/, which the next open
    // renames back (FinishInterruptedRestore), where a half-deleted db/
    // would have made it delete db.old/.
    if (swapped) {
      fs::rename(live, staged, ec);
      if (ec) fs::remove_all(live, ec);  // last resort: nothing was written
    }
    if (moved_live && !fs::exists(live, ec) && fs::exists(old, ec)) {
      fs::rename(old, live, ec);
    }
    SyncPath(root).IgnoreError();
    fs::remove_all(staged, ec);
    if (moved_live && fs::exists(old, ec)) {
      // The previous database could not be put back: opening db/ would
      // serve the checkpoint under a store that reports no restore.
      return absl::InternalError(absl::StrCat(
          st.message(), "; then the previous database could not be put back "
          "from db.old/ (the shard is closed: move db.old/ to db/ and "
          "restart it)"));
    }
    auto db = OpenDb(live.string(), "db/", env_.get(), LiveMode(options_));
    if (db.ok()) db_ = std::move(*db);
    return st;
  }

  // The checkpoint directory is first renamed to "<name>.deleting.tmp"
  // (ignored by listings, like every "*.tmp"), then removed: a crash in
  // between leaves only that, which the next delete removes.
  absl::Status DeleteCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    MIM_RETURN_IF_ERROR(CheckExists(name));
    {
      // A copy staged from it is stale now (a checkpoint created later
      // under the same name is another one).
      absl::MutexLock prepared(&prepare_mu_);
      if (prepared_for_ == name) prepared_for_.clear();
    }
    absl::MutexLock create(&create_mu_);
    RemoveEntriesEndingWith(CheckpointDir(), ".deleting.tmp");
    const fs::path doomed = CheckpointDir() / (name + ".deleting.tmp");
    MIM_RETURN_IF_ERROR(Rename(CheckpointDir() / name, doomed));
    MIM_RETURN_IF_ERROR(SyncPath(CheckpointDir()));
    std::error_code ec;
    fs::remove_all(doomed, ec);
    return FromErrorCode(
        ec, absl::StrCat("remove checkpoint '", name,
                         "' (no longer listed; its files are left in ",
                         doomed.filename().string(), ")"));
  }

 private:
  static absl::Status ReadOnlyError() {
    return absl::FailedPreconditionError(
        "storage is a read-only checkpoint view");
  }
  static absl::Status ClosedError() {
    return absl::FailedPreconditionError(
        "database is closed: a failed restore could not reopen it");
  }
  StorageFaultInjector* injector() const {
    return options_.fault_injector.get();
  }
  // Renames a directory of the backend (through the test-only fault seam).
  absl::Status Rename(const fs::path& from, const fs::path& to) const {
    MIM_RETURN_IF_ERROR(
        CheckFault(injector(), StorageFaultInjector::Op::kRename, to.string()));
    std::error_code ec;
    fs::rename(from, to, ec);
    return FromErrorCode(
        ec, absl::StrCat("rename ", from.filename().string(), "/ to ",
                         to.filename().string(), "/"));
  }
  fs::path CheckpointDir() const {
    return fs::path(options_.data_dir) / "checkpoints";
  }
  // Every complete checkpoint, oldest first (see the file comment).
  std::vector<CheckpointOrder> OrderedCheckpoints() const {
    std::vector<CheckpointOrder> out;
    std::error_code ec;
    for (const fs::path& entry : ListDir(CheckpointDir(), &ec)) {
      CheckpointOrder c;
      c.name = entry.filename().string();
      std::error_code is_dir;
      if (!fs::is_directory(entry, is_dir) || absl::EndsWith(c.name, ".tmp")) {
        continue;
      }
      if (!ReadInfo(entry, &c)) {
        c.created_micros = MtimeMicros(entry / "CURRENT");
      }
      out.push_back(std::move(c));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  absl::Status CheckExists(const std::string& name) const {
    absl::Status st = ValidateCheckpointName(name);
    if (!st.ok()) return absl::NotFoundError(st.message());
    std::error_code ec;
    if (!fs::is_directory(CheckpointDir() / name, ec)) {
      return absl::NotFoundError(absl::StrCat(
          "no checkpoint named '", name, "' under checkpoints/ of the data "
          "dir; list them with ListCheckpoints (ps_admin checkpoints)"));
    }
    return absl::OkStatus();
  }

  // Declared first, so released last, after the database has closed.
  const std::unique_ptr<DataDirLock> lock_;
  const RocksDbStorageOptions options_;
  const bool read_only_;
  // Outlives db_ (declared first): RocksDB uses it until the database closes.
  // Null unless a fault injector is set.
  const std::shared_ptr<rocksdb::Env> env_;
  rocksdb::WriteOptions write_options_;
  // A write failed since the open: the WAL may end in a torn record.
  std::atomic<bool> write_failed_{false};
  absl::Mutex create_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // The checkpoint PrepareRestore copied to db.restore/, if any.
  absl::Mutex prepare_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::string prepared_for_ ABSL_GUARDED_BY(prepare_mu_);
  mutable absl::Mutex mu_;
  // Null only if reopening after a failed restore also failed.
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(mu_);
};

// The steps of OpenRocksDbStorage; not thread-safe (one open at a time per
// data dir: its DataDirLock, taken before, refuses a second).
class Opener {
 public:
  Opener(const RocksDbStorageOptions& options, StorageRecovery* recovery,
         std::unique_ptr<DataDirLock> lock)
      : lock_(std::move(lock)),
        options_(options),
        root_(options.data_dir),
        live_(root_ / "db"),
        recovery_(*recovery) {
    if (options.fault_injector != nullptr) {
      env_ = rocksdb::NewCompositeEnv(NewFaultInjectingFileSystem(
          rocksdb::FileSystem::Default(), options.fault_injector));
    }
  }

  absl::StatusOr<std::unique_ptr<Storage>> Open() {
    MIM_RETURN_IF_ERROR(FinishInterruptedRestore());
    std::error_code looked;
    const bool has_db = fs::exists(live_ / "CURRENT", looked);
    MIM_RETURN_IF_ERROR(FromErrorCode(looked, "look for db/CURRENT"));
    if (!has_db) MIM_RETURN_IF_ERROR(CheckNothingLost());
    std::error_code ec;
    fs::create_directories(root_ / "checkpoints", ec);
    MIM_RETURN_IF_ERROR(
        FromErrorCode(ec, absl::StrCat("create ", root_.string())));

    const std::optional<uint64_t> clean =
        has_db ? ReadCleanShutdown(root_) : std::nullopt;
    DbOpenMode mode = LiveMode(options_);
    mode.create_if_missing = !has_db;
    if (clean.has_value()) {
      mode.wal_recovery = rocksdb::WALRecoveryMode::kAbsoluteConsistency;
      mode.keep_wal = true;
    }
    auto db = OpenDb(live_.string(), "db/", env_.get(), mode);
    if (db.ok() && clean.has_value()) {
      MIM_RETURN_IF_ERROR(CheckReachedCleanShutdown(db->get(), *clean));
      // Now what the kept WAL holds can go to an SST, and the WAL with it
      // (otherwise each clean start would leave one more log behind).
      MIM_RETURN_IF_ERROR(FromRocks((*db)->Flush(rocksdb::FlushOptions()),
                                    "flush the recovered write-ahead log"));
    } else if (db.status().code() == absl::StatusCode::kDataLoss) {
      db = RecoverDamagedWal(db.status(), clean);
    }
    if (!db.ok()) return db.status();

    // The database is good: the marker goes before anything can be written
    // (a crash from now on is a crash), and the data dir is marked as
    // holding a database.
    if (fs::exists(root_ / kCleanShutdownFile, ec)) {
      fs::remove(root_ / kCleanShutdownFile, ec);
      MIM_RETURN_IF_ERROR(
          FromErrorCode(ec, absl::StrCat("remove ", kCleanShutdownFile)));
      MIM_RETURN_IF_ERROR(SyncPath(root_));
    }
    if (!fs::exists(root_ / kDataDirFile, ec)) {
      const std::string path = (root_ / kDataDirFile).string();
      MIM_RETURN_IF_ERROR(
          CheckFault(options_.fault_injector.get(),
                     StorageFaultInjector::Op::kWrite, path));
      MIM_RETURN_IF_ERROR(base::WriteFileAtomically(path, kDataDirContents));
    }
    SweepCheckpointLeftovers();
    return std::unique_ptr<Storage>(
        new RocksDbStorage(options_, /*read_only=*/false, std::move(env_),
                           std::move(*db), std::move(lock_)));
  }

 private:
  // Removes what checkpoint operations cut short by a crash left behind
  // ("<name>.tmp", RocksDB's "<name>.tmp.tmp", "<name>.deleting.tmp"):
  // never listed or opened, and only holding disk (hard links to the SSTs
  // of their time) until a checkpoint of the same name, which a timestamped
  // name never has. No checkpoint operation runs during an open, and the
  // data dir is locked (DataDirLock). Best effort: what cannot be removed
  // stays for the next open.
  void SweepCheckpointLeftovers() {
    RemoveEntriesEndingWith(root_ / "checkpoints", ".tmp");
  }

  // Crash recovery for RestoreCheckpoint (see the file comment).
  absl::Status FinishInterruptedRestore() {
    const fs::path old = root_ / "db.old";
    std::error_code ec;
    const bool has_live = fs::exists(live_, ec);
    MIM_RETURN_IF_ERROR(FromErrorCode(ec, "look for db/"));
    const bool has_old = fs::exists(old, ec);
    MIM_RETURN_IF_ERROR(FromErrorCode(ec, "look for db.old/"));
    if (!has_live && has_old) {
      fs::rename(old, live_, ec);
      MIM_RETURN_IF_ERROR(FromErrorCode(ec, "recover db.old/"));
    }
    fs::remove_all(old, ec);
    fs::remove_all(root_ / "db.restore", ec);
    return absl::OkStatus();
  }

  // No db/CURRENT: fine for a new or empty data dir, data loss otherwise.
  absl::Status CheckNothingLost() {
    const std::vector<std::string> found = ShardFilesIn(root_);
    if (found.empty()) return absl::OkStatus();
    std::error_code ec;
    const bool db_dir = fs::exists(live_, ec);
    const std::string what = absl::StrCat(
        "the data dir holds this shard's ", absl::StrJoin(found, ", "),
        " but not its live database (",
        db_dir ? "db/ has no CURRENT file" : "db/ is missing", ")");
    if (!options_.accept_data_loss) {
      return absl::DataLossError(absl::StrCat(
          what,
          "; starting would serve empty tables. Put the database back in db/ "
          "(from a backup of the data dir), or start with accept_data_loss "
          "(the shard's --accept_data_loss) to start empty, then restore a "
          "checkpoint (ps_admin restore NAME)"));
    }
    recovery_.data_loss_accepted = true;
    recovery_.started_empty = true;
    recovery_.files = {"db/"};
    recovery_.detail =
        absl::StrCat(what, "; started with an empty database");
    if (db_dir) {
      // Remains of a database RocksDB could not open (it refuses to create
      // one over old WAL files): kept, out of the way.
      MIM_ASSIGN_OR_RETURN(recovery_.salvage_dir, SalvageWal(root_, live_));
      fs::rename(live_, root_ / recovery_.salvage_dir / "db", ec);
      MIM_RETURN_IF_ERROR(FromErrorCode(ec, "move db/ to salvage"));
      absl::StrAppend(&recovery_.detail, "; what was in db/ is in ",
                      recovery_.salvage_dir, "/db");
    }
    // A marker of the lost database says nothing about the new one.
    fs::remove(root_ / kCleanShutdownFile, ec);
    return absl::OkStatus();
  }

  // The first open failed with `error` (DATA_LOSS). If the WAL is damaged,
  // refuses naming what would be lost, or (accept_data_loss) recovers to
  // the last point before the damage.
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> RecoverDamagedWal(
      const absl::Status& error, std::optional<uint64_t> clean) {
    const rocksdb::Options base = BaseOptions(env_.get());
    absl::StatusOr<WalProbe> stop = ProbeWal(
        base, live_.string(), rocksdb::WALRecoveryMode::kPointInTimeRecovery);
    absl::StatusOr<WalProbe> all = ProbeWal(
        base, live_.string(),
        rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords);
    if (!stop.ok() || !all.ok() || stop->damage.empty()) {
      // Not damage in the WAL (an SST or the MANIFEST): dropping log records
      // cannot help.
      return absl::DataLossError(absl::StrCat(
          error.message(),
          "; the database itself is damaged. Put back a backup of the data "
          "dir, or move db/ aside and start with accept_data_loss (the "
          "shard's --accept_data_loss) to start empty and restore a "
          "checkpoint"));
    }
    absl::flat_hash_set<uint64_t> kept;
    uint64_t reached = 0;
    for (const WalRecord& r : stop->records) {
      kept.insert(r.sequence);
      reached = std::max(reached, r.sequence + r.writes - 1);
    }
    WalLoss loss = DescribeLoss(*stop, *all, kept, reached, clean);
    if (!options_.accept_data_loss) {
      return absl::DataLossError(absl::StrCat(
          LossSummary(loss),
          ". The shard did not start and the log was left as it is. To start "
          "anyway without those writes, use accept_data_loss (the shard's "
          "--accept_data_loss; the logs are first copied to salvage/), or "
          "put back a backup of the data dir"));
    }

    MIM_ASSIGN_OR_RETURN(recovery_.salvage_dir, SalvageWal(root_, live_));
    WalRecordLog replayed(/*replay=*/true);
    DbOpenMode mode = LiveMode(options_);
    mode.wal_recovery = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    mode.wal_filter = &replayed;
    auto db = OpenDb(live_.string(), "db/", env_.get(), mode);
    if (!db.ok()) return db.status();
    kept.clear();
    for (const WalRecord& r : replayed.records()) kept.insert(r.sequence);
    loss = DescribeLoss(*stop, *all, kept, (*db)->GetLatestSequenceNumber(),
                        clean);
    recovery_.data_loss_accepted = true;
    recovery_.files = loss.files;
    recovery_.wal_records_dropped = loss.records;
    recovery_.wal_writes_dropped = loss.writes;
    recovery_.wal_bytes_dropped = loss.record_bytes + loss.unreadable_bytes;
    recovery_.detail =
        absl::StrCat(LossSummary(loss), "; started without them (",
                     "accept_data_loss); the logs as they were are in ",
                     recovery_.salvage_dir);
    return db;
  }

  // After a clean shutdown the database must reach the sequence it had then;
  // short of it, the WAL lost whole records (a truncated or deleted file).
  absl::Status CheckReachedCleanShutdown(rocksdb::DB* db, uint64_t clean) {
    const uint64_t reached = db->GetLatestSequenceNumber();
    if (reached >= clean) return absl::OkStatus();
    const std::string what = absl::StrCat(
        "the write-ahead logs in db/ end at write ", reached,
        " but the last clean shutdown recorded write ", clean, " (",
        kCleanShutdownFile, "): ", clean - reached,
        " acknowledged writes are missing (a log was truncated or deleted)");
    if (!options_.accept_data_loss) {
      return absl::DataLossError(absl::StrCat(
          what,
          ". The shard did not start; the logs are kept as they are. To "
          "start anyway without those writes, use accept_data_loss (the "
          "shard's --accept_data_loss), or put back a backup of the data "
          "dir"));
    }
    recovery_.data_loss_accepted = true;
    recovery_.files = {"db/"};
    recovery_.wal_writes_dropped = clean - reached;
    recovery_.detail = absl::StrCat(what, "; started without them");
    return absl::OkStatus();
  }

  std::unique_ptr<DataDirLock> lock_;  // handed to the storage on success
  const RocksDbStorageOptions& options_;
  const fs::path root_;
  const fs::path live_;
  StorageRecovery& recovery_;
  std::shared_ptr<rocksdb::Env> env_;  // null: the default Env
};

}  // namespace

absl::StatusOr<std::unique_ptr<Storage>> OpenRocksDbStorage(
    const RocksDbStorageOptions& options, StorageRecovery* recovery) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("data_dir must not be empty");
  }
  // Before anything in the data dir is touched (see DataDirLock).
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<DataDirLock> lock,
                       DataDirLock::Acquire(options.data_dir));
  StorageRecovery report;
  auto storage = Opener(options, &report, std::move(lock)).Open();
  if (storage.ok() && recovery != nullptr) *recovery = std::move(report);
  return storage;
}

}  // namespace mim::embedding
