// EmbeddingStore over EmbeddingTables (memory) and a Storage (RocksDB).
//
// On-disk key layout (one RocksDB key space):
//   "t/" + table name                      -> encoded TableConfig
//   "r/" + table name + "/" + u64 key (big-endian, so a table's rows are
//                                          contiguous and sorted)
//                                          -> encoded row
//   "c/" + u64 client id (big-endian)      -> the client's applied pushes
//                                          (embedding/push_log.h)
// Table names cannot contain '/', so prefixes never collide.
// Row value, little-endian:
//   u8 format (1) | u32 dim | u32 state floats | i64 last_update_micros |
//   u32 update_count | u64 version | f32 values[dim] | f32 state[...] |
//   u32 FNV-1a checksum of everything before it
// A value that fails any check (length, format, dims, checksum, finite
// values, optimizer state finite and in its domain: CheckOptimizerState)
// makes Open/Restore fail with DATA_LOSS naming the table and key.
//
// Durability cost: each Push/Upsert is one RocksDB WriteBatch holding every
// row it changed (the row is rewritten whole: 4 * (dim + state) + 37
// bytes), i.e. one WAL append per request, plus one fsync per request when
// Options::sync_writes. bench/embedding_bench (1024 keys x 64-d Adagrad per
// request, shared 2-core dev VM, noisy): 66k-144k keys/s without sync,
// 68k-118k keys/s with sync; the cost is dominated by encoding and the
// ~140 KB WriteBatch, not the fsync, on this VM's disk. Pull creates no
// rows (an unseen ID key reads as its initial value, a pure function of
// (seed, key)), so every row in memory is also in RocksDB.
//
// Locking: `write_mu_` is shared by writers (Push, Upsert, CreateTable) and
// held exclusively by Checkpoint, by DropTable and by Restore while it swaps
// the database (not while it loads the checkpoint), so a checkpoint sees no
// write half-done across tables. `tables_mu_` guards the table map; readers
// hold it shared for the whole call, Restore and DropTable exclusively while
// they swap tables or erase one.
// Order: write_mu_ before tables_mu_. `admin_mu_` only guards the name of
// the checkpoint operation in progress (one at a time).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/big_endian.h"
#include "base/status_macros.h"
#include "embedding/embedding_store.h"
#include "embedding/embedding_table.h"
#include "embedding/optimizers.h"
#include "embedding/push_log.h"
#include "embedding/storage/storage.h"
#include "embedding/store_with_storage.h"

namespace mim::embedding {
namespace {

constexpr uint8_t kFormat = 1;

uint32_t Fnv1a(const char* data, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 16777619u;
  }
  return h;
}

// Little-endian encoder / bounds-checked decoder.
// (Rows are encoded by PutRows, straight into the storage's batch.)
class Writer {
 public:
  template <typename T>
  void Put(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));  // the supported hosts are little-endian
    out_.append(buf, sizeof(T));
  }
  void PutBytes(absl::string_view s) { out_.append(s.data(), s.size()); }
  std::string Finish() {
    Put<uint32_t>(Fnv1a(out_.data(), out_.size()));
    return std::move(out_);
  }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  // Checks and strips the trailing checksum.
  bool VerifyChecksum() {
    if (in_.size() < 4) return false;
    uint32_t want;
    std::memcpy(&want, in_.data() + in_.size() - 4, 4);
    in_.remove_suffix(4);
    return Fnv1a(in_.data(), in_.size()) == want;
  }
  template <typename T>
  bool Get(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetFloats(float* f, size_t n) {
    if (in_.size() < n * sizeof(float)) return false;
    // A content row has no optimizer state: `f` is then an empty vector's
    // data(), possibly null, and memcpy from or to null is undefined even
    // for 0 bytes (UBSan, tests/fuzz ps_service).
    if (n == 0) return true;
    std::memcpy(f, in_.data(), n * sizeof(float));
    in_.remove_prefix(n * sizeof(float));
    return true;
  }
  bool GetBytes(size_t n, std::string* s) {
    if (in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

std::string TableKey(absl::string_view table) {
  return absl::StrCat("t/", table);
}
std::string RowPrefix(absl::string_view table) {
  return absl::StrCat("r/", table, "/");
}

std::string EncodeConfig(const TableConfig& c) {
  Writer w;
  w.Put<uint8_t>(kFormat);
  w.Put<uint8_t>(static_cast<uint8_t>(c.kind));
  w.Put<uint32_t>(c.dim);
  const OptimizerConfig& o = c.optimizer;
  w.Put<uint8_t>(static_cast<uint8_t>(o.kind));
  for (float f : {o.learning_rate, o.beta1, o.beta2, o.epsilon,
                  o.initial_accumulator, o.l1, o.l2, o.lr_power}) {
    w.Put<float>(f);
  }
  w.Put<uint8_t>(static_cast<uint8_t>(c.initializer.kind));
  w.Put<float>(c.initializer.scale);
  w.Put<uint64_t>(c.initializer.seed);
  w.Put<uint32_t>(static_cast<uint32_t>(c.name.size()));
  w.PutBytes(c.name);
  return w.Finish();
}

absl::StatusOr<TableConfig> DecodeConfig(absl::string_view key,
                                         absl::string_view value) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("stored table config '", key, "' is corrupt: ", why));
  };
  Reader r(value);
  if (!r.VerifyChecksum()) return bad("checksum mismatch or truncated");
  TableConfig c;
  uint8_t format, kind, opt, init;
  uint32_t name_len;
  OptimizerConfig& o = c.optimizer;
  if (!r.Get(&format) || format != kFormat) return bad("unknown format");
  if (!r.Get(&kind) || !r.Get(&c.dim) || !r.Get(&opt) ||
      !r.Get(&o.learning_rate) || !r.Get(&o.beta1) || !r.Get(&o.beta2) ||
      !r.Get(&o.epsilon) || !r.Get(&o.initial_accumulator) || !r.Get(&o.l1) ||
      !r.Get(&o.l2) || !r.Get(&o.lr_power) || !r.Get(&init) ||
      !r.Get(&c.initializer.scale) || !r.Get(&c.initializer.seed) ||
      !r.Get(&name_len) || !r.GetBytes(name_len, &c.name) || !r.done()) {
    return bad("wrong length");
  }
  if (kind > 1 || opt > 3 || init > 2) return bad("enum out of range");
  c.kind = static_cast<TableKind>(kind);
  o.kind = static_cast<OptimizerKind>(opt);
  c.initializer.kind = static_cast<InitializerKind>(init);
  absl::Status st = ValidateTableConfig(c);
  if (!st.ok()) return bad(st.message());
  if (TableKey(c.name) != key) return bad("name does not match its key");
  return c;
}

// Continues the FNV-1a hashes h[0..n) (1 <= n <= kFnvLanes) of n buffers
// with their next `size` bytes, data[0..n). FNV-1a is one serial chain of
// (xor, multiply) per byte, about 4 cycles a byte, so a row of 64 floats
// took ~1200 cycles alone; kFnvLanes rows hashed together are independent
// chains that the CPU runs side by side in about the time of one (issue 13:
// the checksum was most of a Push's row encoding). Each result is Fnv1a's.
constexpr size_t kFnvLanes = 8;
constexpr uint32_t kFnvBasis = 2166136261u;
void Fnv1aLanes(const char* const* data, size_t n, size_t size, uint32_t* h) {
  const uint8_t* p[kFnvLanes];
  uint32_t x[kFnvLanes];
  for (size_t l = 0; l < kFnvLanes; ++l) {
    // Unused lanes hash the last buffer again: the loop has a fixed width.
    p[l] = reinterpret_cast<const uint8_t*>(data[l < n ? l : n - 1]);
    x[l] = h[l < n ? l : n - 1];
  }
  for (size_t i = 0; i < size; ++i) {
#pragma GCC unroll 8
    for (size_t l = 0; l < kFnvLanes; ++l) x[l] = (x[l] ^ p[l][i]) * 16777619u;
  }
  for (size_t l = 0; l < n; ++l) h[l] = x[l];
}

// Bytes of a row value before its floats (see the file comment).
constexpr size_t kRowHeaderBytes = sizeof(uint8_t) + 2 * sizeof(uint32_t) +
                                   sizeof(int64_t) + sizeof(uint32_t) +
                                   sizeof(uint64_t);

template <typename T>
char* PutLittleEndian(char* out, T v) {
  std::memcpy(out, &v, sizeof(T));  // the supported hosts are little-endian
  return out + sizeof(T);
}

// Puts every row into `batch`: key RowPrefix + the u64 key big-endian,
// value the file comment's row format. Each row goes in as parts (key
// prefix and bytes; header, values, state, checksum) from where they
// already are, kFnvLanes rows at a time so that their checksums are
// computed together.
void PutRows(absl::string_view table, const ChangedRows& rows, uint32_t dim,
             uint32_t state_floats, StorageBatchBuilder* batch) {
  const std::string prefix = RowPrefix(table);
  const size_t value_bytes = size_t{dim} * sizeof(float);
  const size_t state_bytes = size_t{state_floats} * sizeof(float);
  for (size_t first = 0; first < rows.size(); first += kFnvLanes) {
    const size_t n = std::min(kFnvLanes, rows.size() - first);
    char header[kFnvLanes][kRowHeaderBytes];
    char key[kFnvLanes][sizeof(uint64_t)];
    char checksum[kFnvLanes][sizeof(uint32_t)];
    const char* part[kFnvLanes];
    uint32_t h[kFnvLanes];
    for (size_t l = 0; l < n; ++l) {
      const size_t i = first + l;
      const uint64_t k = rows.key(i);
      base::StoreBigEndian64(k, key[l]);
      const RowMeta m = rows.meta(i);
      char* p = header[l];
      p = PutLittleEndian<uint8_t>(p, kFormat);
      p = PutLittleEndian<uint32_t>(p, dim);
      p = PutLittleEndian<uint32_t>(p, state_floats);
      p = PutLittleEndian<int64_t>(p, m.last_update_micros);
      p = PutLittleEndian<uint32_t>(p, m.update_count);
      PutLittleEndian<uint64_t>(p, m.version);
      h[l] = kFnvBasis;
    }
    for (size_t l = 0; l < n; ++l) part[l] = header[l];
    Fnv1aLanes(part, n, kRowHeaderBytes, h);
    for (size_t l = 0; l < n; ++l) {
      part[l] = reinterpret_cast<const char*>(rows.values(first + l));
    }
    Fnv1aLanes(part, n, value_bytes, h);
    if (state_floats > 0) {  // a content row's state() may be past its end
      for (size_t l = 0; l < n; ++l) {
        part[l] = reinterpret_cast<const char*>(rows.state(first + l));
      }
      Fnv1aLanes(part, n, state_bytes, h);
    }
    for (size_t l = 0; l < n; ++l) {
      PutLittleEndian<uint32_t>(checksum[l], h[l]);
      const absl::string_view key_parts[] = {
          prefix, absl::string_view(key[l], sizeof(key[l]))};
      const absl::string_view value_parts[] = {
          absl::string_view(header[l], kRowHeaderBytes),
          absl::string_view(
              reinterpret_cast<const char*>(rows.values(first + l)),
              value_bytes),
          absl::string_view(
              state_floats > 0
                  ? reinterpret_cast<const char*>(rows.state(first + l))
                  : header[l],
              state_bytes),
          absl::string_view(checksum[l], sizeof(checksum[l]))};
      batch->PutParts(key_parts, value_parts);
    }
  }
}

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

using TableMap =
    std::map<std::string, std::unique_ptr<EmbeddingTable>, std::less<>>;

// Checks one stored row and loads it into its table. `values` and `state`
// are scratch space.
absl::Status LoadRow(const TableMap& tables, absl::string_view key,
                     absl::string_view value, std::vector<float>* values,
                     std::vector<float>* state) {
  // "r/" + name + "/" + 8 key bytes.
  if (key.size() < 2 + 1 + 1 + 8 || key[key.size() - 9] != '/') {
    return absl::DataLossError(
        absl::StrCat("malformed row key of ", key.size(), " bytes"));
  }
  const absl::string_view name = key.substr(2, key.size() - 11);
  const uint64_t k = base::LoadBigEndian64(key.data() + key.size() - 8);
  auto it = tables.find(name);
  if (it == tables.end()) {
    return absl::DataLossError(absl::StrCat(
        "row for key ", k, " belongs to unknown table '", name, "'"));
  }
  EmbeddingTable& table = *it->second;
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("stored row of table '", name, "' key ", k,
                     " is corrupt: ", why));
  };
  Reader r(value);
  if (!r.VerifyChecksum()) return bad("checksum mismatch or truncated");
  uint8_t format;
  uint32_t dim, state_floats;
  RowMeta meta;
  if (!r.Get(&format) || format != kFormat) return bad("unknown format");
  if (!r.Get(&dim) || !r.Get(&state_floats)) return bad("truncated");
  if (dim != table.dim() || state_floats != table.state_floats()) {
    return bad(absl::StrCat("has dim ", dim, " and ", state_floats,
                            " state floats, table expects ",
                            table.dim(), " and ", table.state_floats()));
  }
  values->resize(dim);
  state->resize(state_floats);
  if (!r.Get(&meta.last_update_micros) || !r.Get(&meta.update_count) ||
      !r.Get(&meta.version) || !r.GetFloats(values->data(), dim) ||
      !r.GetFloats(state->data(), state_floats) || !r.done()) {
    return bad("wrong length");
  }
  for (uint32_t d = 0; d < dim; ++d) {
    if (!std::isfinite((*values)[d])) {
      return bad(absl::StrCat("value[", d, "] is ", (*values)[d],
                              ", must be finite"));
    }
  }
  if (state_floats > 0) {
    const std::string problem = CheckOptimizerState(
        table.config().optimizer, dim, state->data());
    if (!problem.empty()) {
      return bad(absl::StrCat("optimizer state ", problem));
    }
  }
  return table.LoadRow(k, meta, *values, *state);
}

// Builds tables from everything in `storage`.
absl::StatusOr<TableMap> LoadTables(const Storage& storage) {
  TableMap tables;
  MIM_RETURN_IF_ERROR(storage.Scan(
      "t/", [&](absl::string_view key, absl::string_view value) {
        auto config = DecodeConfig(key, value);
        if (!config.ok()) return config.status();
        auto table = EmbeddingTable::Create(*config);
        if (!table.ok()) return table.status();
        tables[config->name] = std::move(*table);
        return absl::OkStatus();
      }));
  // Rows are read a page at a time and loaded once the scan has returned:
  // the scan holds the storage's lock, which every write takes inside a
  // table's stripe locks (storage.h, contract 2).
  constexpr size_t kPage = 4096;
  std::vector<std::pair<std::string, std::string>> page;
  std::vector<float> values, state;
  std::string after;
  for (bool more = true; more;) {
    page.clear();
    more = false;
    absl::Status st = storage.ScanAfter(
        "r/", after, [&](absl::string_view key, absl::string_view value) {
          page.emplace_back(key, value);
          if (page.size() < kPage) return absl::OkStatus();
          more = true;
          return absl::CancelledError("page full");
        });
    if (!more) MIM_RETURN_IF_ERROR(st);
    for (const auto& [key, value] : page) {
      MIM_RETURN_IF_ERROR(LoadRow(tables, key, value, &values, &state));
    }
    if (more) after = page.back().first;
  }
  return tables;
}

// Loads every client's push log record from `storage` into `log`. The
// records are decoded during the scan and loaded after it: the scan holds
// the storage's lock, and a push holds its client's lock around a write
// (storage.h, contract 2).
absl::Status LoadPushLog(const Storage& storage, PushLog* log) {
  struct Record {
    uint64_t client;
    ClientWindow window;
    int64_t last_used;
  };
  std::vector<Record> records;
  MIM_RETURN_IF_ERROR(storage.Scan(
      kPushLogPrefix, [&](absl::string_view key, absl::string_view value) {
        Record r;
        if (!ParsePushLogKey(key, &r.client)) {
          return absl::DataLossError(
              absl::StrCat("malformed push log key of ", key.size(), " bytes"));
        }
        absl::StatusOr<ClientWindow> window =
            ClientWindow::Decode(r.client, value, &r.last_used);
        if (!window.ok()) return window.status();
        r.window = *window;
        records.push_back(r);
        return absl::OkStatus();
      }));
  for (const Record& r : records) log->Load(r.client, r.window, r.last_used);
  return absl::OkStatus();
}

// Safe for concurrent access (see the locking note at the top).
class StoreImpl : public EmbeddingStore {
 public:
  StoreImpl(const Options& options, std::unique_ptr<Storage> storage,
            TableMap tables, std::unique_ptr<PushLog> push_log,
            StartupRecovery recovery)
      : options_(options),
        recovery_(std::move(recovery)),
        storage_(std::move(storage)),
        push_log_(std::move(push_log)),
        tables_(std::move(tables)) {}

  absl::Status CreateTable(const TableConfig& config,
                           bool if_not_exists) override {
    MIM_RETURN_IF_ERROR(ValidateTableConfig(config));
    absl::ReaderMutexLock writers(&write_mu_);
    // One create at a time: the check, the durable write and the insert
    // below are one step for creates, while pulls (tables_mu_ shared) go on
    // through the storage write (an fsync with sync_writes); a drop or a
    // restore needs write_mu_ exclusively, so neither runs meanwhile.
    absl::MutexLock creating(&create_table_mu_);
    {
      absl::ReaderMutexLock lock(&tables_mu_);
      const EmbeddingTable* existing = Find(config.name);
      if (existing != nullptr) {
        if (if_not_exists && existing->config() == config) {
          return absl::OkStatus();
        }
        return absl::AlreadyExistsError(absl::StrCat(
            "table '", config.name, "' already exists",
            if_not_exists ? " with a different config" : ""));
      }
    }
    auto table = EmbeddingTable::Create(config);
    if (!table.ok()) return table.status();
    StorageBatch batch;
    batch.puts.emplace_back(TableKey(config.name), EncodeConfig(config));
    MIM_RETURN_IF_ERROR(storage_->Write(batch));
    absl::MutexLock lock(&tables_mu_);
    tables_[config.name] = std::move(*table);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> DropTable(absl::string_view table) override {
    std::unique_ptr<EmbeddingTable> dropped;  // freed outside the locks
    {
      absl::MutexLock writers(&write_mu_);
      {
        absl::ReaderMutexLock lock(&tables_mu_);
        if (Find(table) == nullptr) return NoTable(table);
      }
      // The table cannot go meanwhile: only a writer (or a Restore's swap,
      // under write_mu_ too) changes the map.
      StorageBatch batch;
      batch.deletes.push_back(TableKey(table));
      batch.delete_prefixes.push_back(RowPrefix(table));
      MIM_RETURN_IF_ERROR(storage_->Write(batch));
      absl::MutexLock lock(&tables_mu_);
      auto it = tables_.find(table);
      dropped = std::move(it->second);
      tables_.erase(it);
    }
    // The space the rows still take on disk, with writers going on. A
    // failure frees it later (compaction), and a failed flush shows in the
    // next write's error: the drop itself is done either way.
    (void)storage_->CompactDeletedPrefix(RowPrefix(table));
    return dropped->Stats().rows;
  }

  std::vector<TableConfig> ListTables() const override {
    absl::ReaderMutexLock lock(&tables_mu_);
    std::vector<TableConfig> out;
    for (const auto& [name, table] : tables_) out.push_back(table->config());
    return out;
  }

  absl::Status Pull(absl::string_view table, absl::Span<const uint64_t> keys,
                    float* values, std::vector<uint32_t>* missing) override {
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock lock(&tables_mu_);
    EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    return t->Pull(keys, values, missing);
  }

  absl::Status PullInto(absl::string_view table,
                        absl::Span<const uint64_t> keys,
                        const RowBuffer& buffer,
                        std::vector<uint32_t>* missing) override {
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock lock(&tables_mu_);
    EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    absl::StatusOr<float*> values = buffer(t->dim());
    if (!values.ok()) return values.status();
    return t->Pull(keys, *values, missing);
  }

  absl::StatusOr<uint32_t> Dim(absl::string_view table) const override {
    absl::ReaderMutexLock lock(&tables_mu_);
    const EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    return t->dim();
  }

  absl::StatusOr<uint32_t> StateFloatsPerDim(
      absl::string_view table) const override {
    absl::ReaderMutexLock lock(&tables_mu_);
    const EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    return ::mim::embedding::StateFloatsPerDim(t->config());
  }

  absl::StatusOr<uint64_t> Push(absl::string_view table,
                                absl::Span<const uint64_t> keys,
                                absl::Span<const float> gradients) override {
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock writers(&write_mu_);
    absl::ReaderMutexLock lock(&tables_mu_);
    EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    return t->Push(keys, gradients, NowMicros(), PersistFor(*t));
  }

  absl::StatusOr<PushOutcome> PushOnce(absl::string_view table,
                                       absl::Span<const uint64_t> keys,
                                       absl::Span<const float> gradients,
                                       const PushTag& tag) override {
    if (tag.client_id == 0) {
      MIM_ASSIGN_OR_RETURN(uint64_t updated, Push(table, keys, gradients));
      return PushOutcome{updated, false};
    }
    if (tag.sequence == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "push of client ", tag.client_id,
          " has sequence 0; tagged pushes number from 1"));
    }
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock writers(&write_mu_);
    absl::ReaderMutexLock lock(&tables_mu_);
    EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    const int64_t now = NowMicros();
    std::vector<PushLog::Evicted> evicted;
    absl::StatusOr<PushLog::Pinned> client =
        push_log_->Get(tag.client_id, now, &evicted);
    if (!client.ok()) return client.status();
    absl::StatusOr<PushOutcome> outcome =
        PushAs(**client, t, keys, gradients, tag, now, evicted);
    // Outside the client's mutex: the log's comes first.
    if (!evicted.empty()) {
      if (outcome.ok() && !outcome->duplicate) {
        push_log_->EvictionsWritten(evicted);
      } else {
        // Nothing was written (refused, or a duplicate acknowledged), the
        // evicted clients' deletions neither: keep the log as storage has
        // it.
        push_log_->Reinstate(std::move(evicted));
      }
    }
    return outcome;
  }

  absl::StatusOr<UpsertResult> Upsert(absl::string_view table,
                                      absl::Span<const uint64_t> keys,
                                      absl::Span<const float> values,
                                      uint64_t version) override {
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock writers(&write_mu_);
    absl::ReaderMutexLock lock(&tables_mu_);
    EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    return t->Upsert(keys, values, version, NowMicros(), PersistFor(*t));
  }

  // PushOnce's part under the client's mutex: the push applied once, its
  // record (and the deletions of `evicted`) in the rows' storage batch.
  absl::StatusOr<PushOutcome> PushAs(
      PushLog::Entry& client, EmbeddingTable* t,
      absl::Span<const uint64_t> keys, absl::Span<const float> gradients,
      const PushTag& tag, int64_t now,
      const std::vector<PushLog::Evicted>& evicted)
      ABSL_SHARED_LOCKS_REQUIRED(write_mu_, tables_mu_) {
    absl::MutexLock client_lock(&client.mu);
    switch (client.window.Check(tag.sequence)) {
      case ClientWindow::Seen::kApplied: {
        client.last_used_micros = now;  // in memory only: nothing changed
        absl::flat_hash_set<uint64_t> distinct(keys.begin(), keys.end());
        return PushOutcome{distinct.size(), true};
      }
      case ClientWindow::Seen::kTooOld:
        return absl::FailedPreconditionError(absl::StrCat(
            "push ", tag.sequence, " of client ", tag.client_id,
            " is more than ", ClientWindow::kWindow,
            " pushes older than its newest (", client.window.highest(),
            "): the shard cannot tell whether it was applied, so it is not "
            "applied again"));
      case ClientWindow::Seen::kNew:
        break;
    }
    ClientWindow next = client.window;
    next.Mark(tag.sequence);
    StorageBatch extra;
    extra.puts.emplace_back(PushLogKey(tag.client_id), next.Encode(now));
    for (const PushLog::Evicted& gone : evicted) {
      extra.deletes.push_back(PushLogKey(gone.client_id));
    }
    EmbeddingTable::PersistFn persist = PersistFor(*t, std::move(extra));
    MIM_ASSIGN_OR_RETURN(uint64_t updated,
                         t->Push(keys, gradients, now, persist));
    if (keys.empty()) {
      // No rows, so the table wrote nothing; the window mark and the
      // evictions still go to storage, as with any push.
      MIM_RETURN_IF_ERROR(persist(ChangedRows()));
    }
    client.window = next;
    client.last_used_micros = now;
    if (options_.test_after_push_applied) options_.test_after_push_applied();
    return PushOutcome{updated, false};
  }

  absl::Status GetRows(absl::string_view table,
                       absl::Span<const uint64_t> keys,
                       std::vector<float>* values, std::vector<RowMeta>* meta,
                       std::vector<uint32_t>* missing) override {
    MIM_RETURN_IF_ERROR(CheckSize(keys.size()));
    absl::ReaderMutexLock lock(&tables_mu_);
    const EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    t->GetRows(keys, values, meta, missing);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<TableStats>> Stats(
      absl::string_view table) const override {
    absl::ReaderMutexLock lock(&tables_mu_);
    std::vector<TableStats> out;
    if (table.empty()) {
      for (const auto& [name, t] : tables_) out.push_back(t->Stats());
      return out;
    }
    const EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    out.push_back(t->Stats());
    return out;
  }

  absl::StatusOr<CheckpointInfo> Checkpoint(const std::string& name) override {
    std::string chosen = name;
    if (chosen.empty()) {
      chosen = absl::FormatTime("ckpt-%Y%m%d-%H%M%E6S", absl::Now(),
                                absl::UTCTimeZone());
    }
    MIM_RETURN_IF_ERROR(ValidateCheckpointName(chosen));
    MIM_ASSIGN_OR_RETURN(AdminOperation op,
                         BeginAdmin(absl::StrCat("Checkpoint '", chosen, "'")));
    CheckpointInfo info;
    {
      absl::MutexLock writers(&write_mu_);
      MIM_RETURN_IF_ERROR(storage_->CreateCheckpoint(chosen));
      info.name = chosen;
      info.path = storage_->CheckpointPath(chosen);
      absl::ReaderMutexLock lock(&tables_mu_);
      for (const auto& [n, t] : tables_) info.rows += t->Stats().rows;
    }
    if (options_.keep_checkpoints > 0) {
      std::vector<StoredCheckpoint> all = storage_->ListCheckpoints();
      const size_t excess = all.size() > options_.keep_checkpoints
                                ? all.size() - options_.keep_checkpoints
                                : 0;
      for (size_t i = 0; i < excess; ++i) {
        if (all[i].name == chosen) continue;  // never the one just taken
        absl::Status st = storage_->DeleteCheckpoint(all[i].name);
        if (!st.ok()) {
          info.retention_error = absl::StrCat(
              "keeping the newest ", options_.keep_checkpoints,
              " checkpoints: could not delete '", all[i].name, "': ",
              st.message());
          break;
        }
        info.deleted.push_back(all[i].name);
      }
    }
    return info;
  }

  absl::Status DeleteCheckpoint(const std::string& name) override {
    MIM_RETURN_IF_ERROR(ValidateCheckpointName(name));
    MIM_ASSIGN_OR_RETURN(
        AdminOperation op,
        BeginAdmin(absl::StrCat("DeleteCheckpoint '", name, "'")));
    return storage_->DeleteCheckpoint(name);
  }

  absl::StatusOr<CheckpointInfo> Restore(const std::string& name) override {
    MIM_ASSIGN_OR_RETURN(
        AdminOperation op,
        BeginAdmin(absl::StrCat("Restore '", name.empty() ? "<newest>" : name,
                                "'")));
    std::string chosen = name;
    if (chosen.empty()) {
      const std::vector<StoredCheckpoint> all = storage_->ListCheckpoints();
      if (all.empty()) return absl::NotFoundError("there are no checkpoints");
      chosen = all.back().name;  // the most recently created, not the greatest
    }
    // The checkpoint does not change (no other checkpoint operation runs),
    // so it is loaded while reads and writes go on.
    auto snapshot = storage_->OpenCheckpoint(chosen);
    if (!snapshot.ok()) return snapshot.status();
    auto tables = LoadTables(**snapshot);
    if (!tables.ok()) return tables.status();
    PushLog push_log(options_.max_push_clients);
    MIM_RETURN_IF_ERROR(LoadPushLog(**snapshot, &push_log));
    snapshot->reset();
    // The slow half (the copy) while writes go on; only the swap below
    // holds them.
    MIM_RETURN_IF_ERROR(storage_->PrepareRestore(chosen));
    // Writes acknowledged until here are replaced by the checkpoint, as if
    // they had come before the restore.
    absl::MutexLock writers(&write_mu_);
    MIM_RETURN_IF_ERROR(storage_->RestoreCheckpoint(chosen));
    CheckpointInfo info;
    info.name = chosen;
    info.path = storage_->CheckpointPath(chosen);
    for (const auto& [n, t] : *tables) info.rows += t->Stats().rows;
    TableMap old;
    {
      absl::MutexLock lock(&tables_mu_);
      old.swap(tables_);
      tables_ = std::move(*tables);
    }
    push_log_->Swap(&push_log);  // no push runs: write_mu_ is held
    return info;  // `old` is freed outside tables_mu_
  }

  std::vector<CheckpointEntry> ListCheckpoints() const override {
    std::vector<CheckpointEntry> out;
    for (StoredCheckpoint& c : storage_->ListCheckpoints()) {
      CheckpointEntry e;
      e.path = storage_->CheckpointPath(c.name);
      e.name = std::move(c.name);
      e.sequence = c.sequence;
      e.created_micros = c.created_micros;
      out.push_back(std::move(e));
    }
    return out;
  }

  absl::Status ExportRows(absl::string_view table,
                          const RowVisitor& visit) const override {
    absl::ReaderMutexLock lock(&tables_mu_);
    const EmbeddingTable* t = Find(table);
    if (t == nullptr) return NoTable(table);
    t->ForEachRow(visit);
    return absl::OkStatus();
  }

  StartupRecovery Recovery() const override { return recovery_; }

 private:
  // The checkpoint operation in progress, for as long as this lives.
  class AdminOperation {
   public:
    explicit AdminOperation(StoreImpl* store) : store_(store) {}
    AdminOperation(AdminOperation&& other) noexcept : store_(other.store_) {
      other.store_ = nullptr;
    }
    AdminOperation& operator=(AdminOperation&&) = delete;
    ~AdminOperation() {
      if (store_ == nullptr) return;
      absl::MutexLock lock(&store_->admin_mu_);
      store_->admin_op_.clear();
    }

   private:
    StoreImpl* store_;
  };

  // UNAVAILABLE while another checkpoint operation runs (see the header).
  absl::StatusOr<AdminOperation> BeginAdmin(std::string what) {
    absl::MutexLock lock(&admin_mu_);
    if (!admin_op_.empty()) {
      return absl::UnavailableError(absl::StrCat(
          "busy with ", admin_op_, " (running for ",
          absl::FormatDuration(
              absl::Trunc(absl::Now() - admin_start_, absl::Milliseconds(1))),
          "); checkpoint operations run one at a time: retry when it is "
          "done"));
    }
    admin_op_ = std::move(what);
    admin_start_ = absl::Now();
    return AdminOperation(this);
  }

  static absl::Status NoTable(absl::string_view table) {
    return absl::NotFoundError(absl::StrCat("no table named '", table, "'"));
  }

  absl::Status CheckSize(size_t n) const {
    if (n <= options_.max_keys_per_request) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat("request has ", n, " keys, the limit is ",
                     options_.max_keys_per_request));
  }

  EmbeddingTable* Find(absl::string_view table) const
      ABSL_SHARED_LOCKS_REQUIRED(tables_mu_) {
    auto it = tables_.find(table);
    return it == tables_.end() ? nullptr : it->second.get();
  }

  // Writes the changed rows of one request as one batch, with `extra`
  // (a push log record) in the same batch.
  EmbeddingTable::PersistFn PersistFor(const EmbeddingTable& t,
                                       StorageBatch extra = {}) {
    return [this, &t, extra = std::move(extra)](const ChangedRows& rows) {
      const std::string& name = t.config().name;
      // Key ("r/" name "/" u64) and value (header, floats, checksum).
      const size_t row_bytes = name.size() + 3 + sizeof(uint64_t) +
                               kRowHeaderBytes +
                               (size_t{t.dim()} + t.state_floats()) *
                                   sizeof(float) +
                               sizeof(uint32_t);
      std::unique_ptr<StorageBatchBuilder> batch = storage_->NewBatchBuilder(
          rows.size() + extra.puts.size(), rows.size() * row_bytes);
      PutRows(name, rows, t.dim(), t.state_floats(), batch.get());
      for (const auto& [k, v] : extra.puts) batch->Put(k, v);
      for (const std::string& k : extra.deletes) batch->Delete(k);
      return storage_->WriteBuilt(std::move(batch));
    };
  }

  const Options options_;
  const StartupRecovery recovery_;
  const std::unique_ptr<Storage> storage_;
  absl::Mutex admin_mu_;
  std::string admin_op_ ABSL_GUARDED_BY(admin_mu_);  // empty: none
  absl::Time admin_start_ ABSL_GUARDED_BY(admin_mu_);
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(tables_mu_);
  // Held by CreateTable through its check, storage write and insert.
  absl::Mutex create_table_mu_ ABSL_ACQUIRED_AFTER(write_mu_)
      ABSL_ACQUIRED_BEFORE(tables_mu_);
  // Guarded by write_mu_ for replacement (Restore holds it exclusively);
  // the log is itself safe for concurrent access.
  const std::unique_ptr<PushLog> push_log_;
  mutable absl::Mutex tables_mu_;
  TableMap tables_ ABSL_GUARDED_BY(tables_mu_);
};

}  // namespace

namespace {

absl::StatusOr<std::unique_ptr<EmbeddingStore>> OpenStore(
    std::unique_ptr<Storage> storage, const EmbeddingStore::Options& options,
    StartupRecovery recovery) {
  if (storage == nullptr) {
    return absl::InvalidArgumentError("storage must not be null");
  }
  auto tables = LoadTables(*storage);
  if (!tables.ok()) return tables.status();
  auto push_log = std::make_unique<PushLog>(options.max_push_clients);
  MIM_RETURN_IF_ERROR(LoadPushLog(*storage, push_log.get()));
  return std::unique_ptr<EmbeddingStore>(
      new StoreImpl(options, std::move(storage), std::move(*tables),
                    std::move(push_log), std::move(recovery)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingStore>> OpenEmbeddingStoreWithStorage(
    std::unique_ptr<Storage> storage, const EmbeddingStore::Options& options) {
  return OpenStore(std::move(storage), options, StartupRecovery());
}

absl::StatusOr<std::unique_ptr<EmbeddingStore>> EmbeddingStore::Open(
    const Options& options) {
  RocksDbStorageOptions storage_options;
  storage_options.data_dir = options.data_dir;
  storage_options.sync_writes = options.sync_writes;
  storage_options.accept_data_loss = options.accept_data_loss;
  if (options.memtable_mb < 0 || options.memtable_mb > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memtable size ", options.memtable_mb,
        " MiB; expected 0 (RocksDB's default) to 65536"));
  }
  storage_options.memtable_bytes = size_t(options.memtable_mb) << 20;
  StorageRecovery dropped;
  auto storage = OpenRocksDbStorage(storage_options, &dropped);
  if (!storage.ok()) return storage.status();
  StartupRecovery recovery;
  recovery.data_loss_accepted = dropped.data_loss_accepted;
  recovery.started_empty = dropped.started_empty;
  recovery.wal_records_dropped = dropped.wal_records_dropped;
  recovery.wal_writes_dropped = dropped.wal_writes_dropped;
  recovery.wal_bytes_dropped = dropped.wal_bytes_dropped;
  recovery.files = std::move(dropped.files);
  recovery.salvage_dir = std::move(dropped.salvage_dir);
  recovery.detail = std::move(dropped.detail);
  return OpenStore(std::move(*storage), options, std::move(recovery));
}

}  // namespace mim::embedding
