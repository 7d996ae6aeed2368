#include "embedding/storage/rocksdb_wal_probe.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/write_batch.h"

namespace mim::embedding {
namespace {

// Collects what RocksDB's log reader reports as dropped. Its reporter logs
// "[(ignoring error) ]<path>: dropping <N> bytes[; <status>]" (the format
// LevelDB introduced, unchanged since) and that line is the only place the
// damaged file's name and the byte count appear.
// Safe for concurrent access.
class DamageLogger : public rocksdb::Logger {
 public:
  DamageLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override {
    if (level < rocksdb::InfoLogLevel::WARN_LEVEL) return;
    char buf[1024];
    std::vsnprintf(buf, sizeof(buf), format, ap);
    absl::string_view line(buf);
    absl::ConsumePrefix(&line, "(ignoring error) ");
    const size_t at = line.find(": dropping ");
    if (at == absl::string_view::npos) return;
    WalDamage d;
    d.file = std::filesystem::path(std::string(line.substr(0, at)))
                 .filename()
                 .string();
    absl::string_view rest = line.substr(at + 11);
    const size_t space = rest.find(' ');
    if (space == absl::string_view::npos ||
        !absl::SimpleAtoi(rest.substr(0, space), &d.bytes)) {
      return;
    }
    rest.remove_prefix(space);
    if (absl::ConsumePrefix(&rest, " bytes; ")) d.reason = std::string(rest);
    absl::MutexLock lock(&mu_);
    damage_.push_back(std::move(d));
  }

  std::vector<WalDamage> damage() const {
    absl::MutexLock lock(&mu_);
    return damage_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<WalDamage> damage_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

rocksdb::WalFilter::WalProcessingOption WalRecordLog::LogRecordFound(
    unsigned long long log_number, const std::string& /*log_file_name*/,
    const rocksdb::WriteBatch& batch, rocksdb::WriteBatch* /*new_batch*/,
    bool* /*batch_changed*/) {
  WalRecord r;
  r.wal_number = log_number;
  // WriteBatch's representation starts with the sequence as a fixed64
  // (rocksdb/write_batch.h); the supported hosts are little-endian.
  const std::string& data = batch.Data();
  if (data.size() >= sizeof(r.sequence)) {
    std::memcpy(&r.sequence, data.data(), sizeof(r.sequence));
  }
  r.writes = batch.Count();
  r.bytes = batch.GetDataSize();
  records_.push_back(r);
  return replay_ ? WalProcessingOption::kContinueProcessing
                 : WalProcessingOption::kIgnoreCurrentRecord;
}

absl::StatusOr<WalProbe> ProbeWal(const rocksdb::Options& base,
                                  const std::string& db_path,
                                  rocksdb::WALRecoveryMode mode) {
  WalRecordLog records(/*replay=*/false);
  auto logger = std::make_shared<DamageLogger>();
  rocksdb::Options options = base;
  options.create_if_missing = false;
  options.wal_recovery_mode = mode;
  options.wal_filter = &records;
  options.info_log = logger;  // also keeps the probe from writing db/LOG
  options.stats_dump_period_sec = 0;
  options.stats_persist_period_sec = 0;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(options, db_path, &raw);
  std::unique_ptr<rocksdb::DB> db(raw);
  if (!s.ok()) {
    return absl::DataLossError(
        absl::StrCat("reading the write-ahead logs: ", s.ToString()));
  }
  db.reset();
  WalProbe probe;
  probe.records = records.records();
  probe.damage = logger->damage();
  return probe;
}

}  // namespace mim::embedding
