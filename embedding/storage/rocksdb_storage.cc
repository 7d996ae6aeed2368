// RocksDB Storage backend: the only file in the project that includes
// RocksDB headers; rocksdb::Status is converted to absl::Status here.
//
// Layout under data_dir:
//   db/                    live database (WAL always on)
//   checkpoints/<name>/    rocksdb::Checkpoint (hard links to SST files)
//                          plus MIM_CHECKPOINT, its place in creation order
//   checkpoints/<name>.tmp checkpoint being written (renamed when complete)
//   db.restore/            copy of a checkpoint about to replace db/
//   db.old/                previous db/ while a restore swaps directories
// Restore copies the checkpoint to db.restore/, fsyncs it, closes the live
// DB, renames db/ -> db.old/ and db.restore/ -> db/, reopens, then deletes
// db.old/. Open() finishes or undoes a restore interrupted by a crash.
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
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/atomic_file.h"
#include "embedding/storage/storage.h"
#include "rocksdb/db.h"
#include "rocksdb/memtablerep.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace mim::embedding {
namespace {

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

absl::Status SyncTree(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    absl::Status st = SyncPath(entry.path());
    if (!st.ok()) return st;
  }
  if (ec) return FromErrorCode(ec, absl::StrCat("list ", dir.string()));
  return SyncPath(dir);
}

constexpr char kInfoFile[] = "MIM_CHECKPOINT";
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

// Safe for concurrent access: `mu_` is shared by reads and writes and held
// exclusively only while RestoreCheckpoint swaps the database;
// `create_mu_` serializes CreateCheckpoint so that sequences are unique.
class RocksDbStorage : public Storage {
 public:
  RocksDbStorage(RocksDbStorageOptions options, bool read_only,
                 std::unique_ptr<rocksdb::DB> db)
      : options_(std::move(options)), read_only_(read_only), db_(std::move(db)) {
    write_options_.sync = options_.sync_writes;
  }

  static absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(
      const std::string& path, bool read_only) {
    rocksdb::Options options;
    options.create_if_missing = !read_only;
    options.paranoid_checks = true;
    // Rows are served from memory (EmbeddingTable); RocksDB is written on
    // every push and read back only by a full scan at open. A vector
    // memtable appends each put and sorts once at flush, where the default
    // skip list pays a random O(log n) insert per row: with pushes of
    // thousands of random keys that insert was the largest cost of a push.
    options.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
    options.allow_concurrent_memtable_write = false;
    // Rows are random float32 values and optimizer state, which snappy
    // barely shrinks; skip its CPU cost at every flush and compaction.
    options.compression = rocksdb::kNoCompression;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s =
        read_only ? rocksdb::DB::OpenForReadOnly(options, path, &db)
                  : rocksdb::DB::Open(options, path, &db);
    absl::Status st = FromRocks(s, absl::StrCat("open rocksdb at ", path));
    if (!st.ok()) return st;
    return std::unique_ptr<rocksdb::DB>(db);
  }

  absl::Status Write(const StorageBatch& batch) override {
    if (read_only_) return ReadOnlyError();
    rocksdb::WriteBatch wb;
    for (const auto& [k, v] : batch.puts) {
      rocksdb::Status s = wb.Put(k, v);
      if (!s.ok()) return FromRocks(s, "batch put");
    }
    for (const auto& k : batch.deletes) {
      rocksdb::Status s = wb.Delete(k);
      if (!s.ok()) return FromRocks(s, "batch delete");
    }
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    return FromRocks(db_->Write(write_options_, &wb), "write batch");
  }

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

  absl::Status Scan(absl::string_view prefix,
                    const Visitor& visit) const override {
    absl::ReaderMutexLock lock(&mu_);
    if (db_ == nullptr) return ClosedError();
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid();
         it->Next()) {
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
    st = base::WriteFileAtomically(
        (tmp_path / kInfoFile).string(),
        EncodeInfo(sequence, absl::ToUnixMicros(absl::Now())));
    if (!st.ok()) {
      fs::remove_all(tmp_path, ec);
      return st;
    }
    fs::rename(tmp_path, final_path, ec);
    if (ec) return FromErrorCode(ec, "rename checkpoint");
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
    auto db = OpenDb(CheckpointPath(name), /*read_only=*/true);
    if (!db.ok()) return db.status();
    return std::unique_ptr<Storage>(
        new RocksDbStorage(options_, /*read_only=*/true, std::move(*db)));
  }

  absl::Status RestoreCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::Status st = CheckExists(name);
    if (!st.ok()) return st;
    const fs::path root(options_.data_dir);
    const fs::path live = root / "db";
    const fs::path staged = root / "db.restore";
    const fs::path old = root / "db.old";
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
    st = SyncTree(staged);
    if (!st.ok()) return st;

    absl::MutexLock lock(&mu_);
    db_.reset();  // closes the live database
    fs::remove_all(old, ec);
    fs::rename(live, old, ec);
    if (!ec) fs::rename(staged, live, ec);
    if (!ec) {
      auto db = OpenDb(live.string(), /*read_only=*/false);
      if (db.ok()) {
        db_ = std::move(*db);
        fs::remove_all(old, ec);
        return SyncPath(root);
      }
      st = db.status();
      fs::remove_all(live, ec);
    } else {
      st = FromErrorCode(ec, "swap database directories");
    }
    // Put the previous database back so the live state is unchanged.
    if (!fs::exists(live) && fs::exists(old)) fs::rename(old, live, ec);
    auto db = OpenDb(live.string(), /*read_only=*/false);
    if (db.ok()) db_ = std::move(*db);
    return st;
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
  fs::path CheckpointDir() const {
    return fs::path(options_.data_dir) / "checkpoints";
  }
  // Every complete checkpoint, oldest first (see the file comment).
  std::vector<CheckpointOrder> OrderedCheckpoints() const {
    std::vector<CheckpointOrder> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(CheckpointDir(), ec)) {
      CheckpointOrder c;
      c.name = entry.path().filename().string();
      if (!entry.is_directory(ec) || absl::EndsWith(c.name, ".tmp")) continue;
      if (!ReadInfo(entry.path(), &c)) {
        c.created_micros = MtimeMicros(entry.path() / "CURRENT");
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
      return absl::NotFoundError(
          absl::StrCat("no checkpoint named '", name, "' under ",
                       CheckpointDir().string()));
    }
    return absl::OkStatus();
  }

  const RocksDbStorageOptions options_;
  const bool read_only_;
  rocksdb::WriteOptions write_options_;
  absl::Mutex create_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  // Null only if reopening after a failed restore also failed.
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Storage>> OpenRocksDbStorage(
    const RocksDbStorageOptions& options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("data_dir must not be empty");
  }
  const fs::path root(options.data_dir);
  std::error_code ec;
  fs::create_directories(root / "checkpoints", ec);
  if (ec) {
    return FromErrorCode(ec, absl::StrCat("create ", root.string()));
  }
  // Crash recovery for RestoreCheckpoint (see the file comment).
  const fs::path live = root / "db", old = root / "db.old";
  if (!fs::exists(live) && fs::exists(old)) {
    fs::rename(old, live, ec);
    if (ec) return FromErrorCode(ec, "recover db.old");
  }
  fs::remove_all(old, ec);
  fs::remove_all(root / "db.restore", ec);

  auto db = RocksDbStorage::OpenDb(live.string(), /*read_only=*/false);
  if (!db.ok()) return db.status();
  return std::unique_ptr<Storage>(
      new RocksDbStorage(options, /*read_only=*/false, std::move(*db)));
}

}  // namespace mim::embedding
