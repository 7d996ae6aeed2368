#include "ps/service.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/grpc_auth.h"
#include "base/metrics.h"
#include "base/status_macros.h"
#include "embedding/sharding.h"
#include "embedding/table_config.h"
#include "glog/logging.h"
#include "ps/pull_wire.h"
#include "ps/status_convert.h"
#include "ps/table_config_convert.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "rows travel as little-endian float32 bytes");

namespace mim::ps {
namespace {

absl::Span<const uint64_t> KeySpan(
    const google::protobuf::RepeatedField<uint64_t>& keys) {
  return absl::MakeConstSpan(keys.data(), static_cast<size_t>(keys.size()));
}

// Packed float32 rows, read in place. The bytes come from a std::string,
// whose buffer is allocated with operator new (aligned for float).
absl::Span<const float> FloatSpan(const std::string& bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const float*>(bytes.data()),
                             bytes.size() / sizeof(float));
}

// The `method` label of each Method, as in proto/ps.proto.
constexpr const char* kMethodNames[] = {
    "Pull",       "Push",    "Upsert",     "CreateTable", "ListTables",
    "TableStats", "GetRows", "Checkpoint", "Restore",     "ListCheckpoints",
    "DeleteCheckpoint", "DropTable"};

// The role each Method needs: admin for everything that writes or
// restores, read for the rest. Same order as kMethodNames.
constexpr base::Role kMethodRoles[] = {
    base::Role::kRead,  base::Role::kAdmin, base::Role::kAdmin,
    base::Role::kAdmin, base::Role::kRead,  base::Role::kRead,
    base::Role::kRead,  base::Role::kAdmin, base::Role::kAdmin,
    base::Role::kRead,  base::Role::kAdmin, base::Role::kAdmin};

// Paths in it are relative to the data dir already (storage.h).
void SetRecovery(const embedding::StartupRecovery& r, StartupRecovery* out) {
  out->set_data_loss_accepted(r.data_loss_accepted);
  out->set_started_empty(r.started_empty);
  out->set_wal_records_dropped(r.wal_records_dropped);
  out->set_wal_writes_dropped(r.wal_writes_dropped);
  out->set_wal_bytes_dropped(r.wal_bytes_dropped);
  for (const std::string& f : r.files) out->add_files(f);
  out->set_salvage_dir(r.salvage_dir);
  out->set_detail(r.detail);
}

// grpc::StatusCode values 0..16 (the same numbers as absl::StatusCode).
constexpr int kNumCodes = 17;

// Longer than any checkpoint name the storage accepts (storage.h, contract
// 3), so a longer one is refused quoted capped before the storage quotes it.
constexpr size_t kMaxCheckpointNameBytes = 128;

}  // namespace

// Safe for concurrent access: metric objects are thread-safe, `errors`
// slots are atomic, `tables` is guarded.
struct ParameterServerService::Instruments {
  static_assert(sizeof(kMethodNames) / sizeof(kMethodNames[0]) == kNumMethods,
                "one method label per Method");
  static_assert(sizeof(kMethodRoles) / sizeof(kMethodRoles[0]) == kNumMethods,
                "one role per Method");

  struct PerMethod {
    prometheus::Counter* requests = nullptr;
    prometheus::Histogram* duration = nullptr;
    prometheus::Counter* keys = nullptr;  // null: the method has no row keys
    // By grpc::StatusCode, added to the family on the first error of that
    // code, so a scrape lists only the codes that happened.
    std::array<std::atomic<prometheus::Counter*>, kNumCodes> errors{};
  };
  struct TableGauges {
    prometheus::Gauge* rows = nullptr;
    prometheus::Gauge* bytes = nullptr;
  };

  prometheus::Family<prometheus::Counter>* error_family = nullptr;
  prometheus::Family<prometheus::Gauge>* table_rows = nullptr;
  prometheus::Family<prometheus::Gauge>* table_bytes = nullptr;
  std::array<PerMethod, kNumMethods> methods;
  int64_t scrape_callback = 0;

  absl::Mutex tables_mu;
  // Tables seen at the last scrape; a table gone since is removed.
  absl::flat_hash_map<std::string, TableGauges> tables
      ABSL_GUARDED_BY(tables_mu);

  // `seconds` < 0: a call refused before its handler ran, counted without
  // a duration (the histogram is the handlers' time).
  void Record(Method method, int keys, const grpc::Status& status,
              double seconds) {
    PerMethod& m = methods[method];
    m.requests->Increment();
    if (seconds >= 0) m.duration->Observe(seconds);
    if (status.ok()) {
      if (m.keys != nullptr) m.keys->Increment(keys);
      return;
    }
    int code = static_cast<int>(status.error_code());
    if (code < 0 || code >= kNumCodes) code = grpc::StatusCode::UNKNOWN;
    prometheus::Counter* counter =
        m.errors[code].load(std::memory_order_acquire);
    if (counter == nullptr) {
      // Family::Add returns the existing counter when another thread got
      // here first, so the race only repeats the lookup.
      counter = &error_family->Add(
          {{"method", kMethodNames[method]},
           {"code",
            absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
      m.errors[code].store(counter, std::memory_order_release);
    }
    counter->Increment();
  }

  // Sets each table's gauges from the store (a scrape callback).
  void RefreshTables(const embedding::EmbeddingStore& store) {
    absl::StatusOr<std::vector<embedding::TableStats>> stats = store.Stats("");
    if (!stats.ok()) return;  // keeps the last values
    absl::MutexLock lock(&tables_mu);
    absl::flat_hash_set<std::string> present;
    for (const embedding::TableStats& t : *stats) {
      TableGauges& g = tables[t.config.name];
      if (g.rows == nullptr) {
        g.rows = &table_rows->Add({{"table", t.config.name}});
        g.bytes = &table_bytes->Add({{"table", t.config.name}});
      }
      g.rows->Set(static_cast<double>(t.rows));
      g.bytes->Set(static_cast<double>(t.bytes));
      present.insert(t.config.name);
    }
    for (auto it = tables.begin(); it != tables.end();) {
      if (present.contains(it->first)) {
        ++it;
        continue;
      }
      table_rows->Remove(it->second.rows);
      table_bytes->Remove(it->second.bytes);
      tables.erase(it++);
    }
  }
};

static_assert(kMaxRowDim == embedding::kMaxDim,
              "PsClient sizes calls by the largest dim a table may have");

ParameterServerService::ParameterServerService(
    embedding::EmbeddingStore* store, const Options& options)
    : store_(store),
      options_(options),
      inflight_(std::make_shared<InflightBytes>(options.max_inflight_bytes)) {
  if (!options_.data_dir.empty()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    data_dir_forms_.push_back(options_.data_dir);
    const fs::path absolute = fs::absolute(options_.data_dir, ec);
    if (!ec) data_dir_forms_.push_back(absolute.lexically_normal().string());
    const fs::path canonical = fs::weakly_canonical(options_.data_dir, ec);
    if (!ec) data_dir_forms_.push_back(canonical.string());
    for (std::string& d : data_dir_forms_) {
      while (d.size() > 1 && d.back() == '/') d.pop_back();
    }
    std::sort(data_dir_forms_.begin(), data_dir_forms_.end(),
              [](const std::string& a, const std::string& b) {
                return a.size() > b.size();
              });
  }
  base::Metrics* metrics = options_.metrics;
  if (metrics == nullptr) return;
  instruments_ = std::make_unique<Instruments>();
  Instruments& in = *instruments_;
  auto& requests = metrics->CounterFamily(
      "mim_ps_requests_total", "RPCs handled by this shard, by method.");
  auto& duration = metrics->HistogramFamily(
      "mim_ps_request_duration_seconds",
      "Time spent in the handler (excluding transfer and message parsing), "
      "by method.");
  auto& keys = metrics->CounterFamily(
      "mim_ps_keys_total",
      "Keys received in successful Pull, Push, Upsert and GetRows calls, by "
      "method.");
  in.error_family = &metrics->CounterFamily(
      "mim_ps_request_errors_total",
      "RPCs that failed, by method and gRPC status code.");
  in.table_rows = &metrics->GaugeFamily(
      "mim_ps_table_rows", "Rows held by this shard, by table (at scrape).");
  in.table_bytes = &metrics->GaugeFamily(
      "mim_ps_table_bytes",
      "Memory held for a table's rows, optimizer state, metadata and index "
      "on this shard, by table (at scrape).");
  for (int m = 0; m < kNumMethods; ++m) {
    const prometheus::Labels labels = {{"method", kMethodNames[m]}};
    in.methods[m].requests = &requests.Add(labels);
    in.methods[m].duration =
        &duration.Add(labels, base::Metrics::LatencyBuckets());
    if (m == kPull || m == kPush || m == kUpsert || m == kGetRows) {
      in.methods[m].keys = &keys.Add(labels);
    }
  }
  in.scrape_callback = metrics->AddScrapeCallback(
      [this] { instruments_->RefreshTables(*store_); });
  // Fixed at start: what opening the data dir dropped (--accept_data_loss).
  const embedding::StartupRecovery recovery = store_->Recovery();
  metrics
      ->Gauge("mim_ps_startup_data_loss_accepted",
              "1 when this shard started by accepting the loss of "
              "acknowledged writes (--accept_data_loss), else 0.")
      .Set(recovery.data_loss_accepted ? 1 : 0);
  metrics
      ->Counter("mim_ps_startup_wal_records_dropped_total",
                "Readable write-ahead-log records this start dropped.")
      .Increment(static_cast<double>(recovery.wal_records_dropped));
  metrics
      ->Counter("mim_ps_startup_wal_writes_dropped_total",
                "Row writes this start dropped from the write-ahead log.")
      .Increment(static_cast<double>(recovery.wal_writes_dropped));
  metrics
      ->Counter("mim_ps_startup_wal_bytes_dropped_total",
                "Write-ahead-log bytes this start dropped.")
      .Increment(static_cast<double>(recovery.wal_bytes_dropped));
}

ParameterServerService::~ParameterServerService() {
  // After this, no scrape reads store_ through this service.
  if (instruments_ != nullptr) {
    options_.metrics->RemoveScrapeCallback(instruments_->scrape_callback);
  }
}

namespace {

// The method whose request message is `request_type` ("PushRequest" ->
// kPush); kNumMethods for none.
int MethodOfRequest(absl::string_view request_type) {
  absl::string_view name = request_type;
  if (!absl::ConsumeSuffix(&name, "Request")) return -1;
  for (int m = 0; m < static_cast<int>(sizeof(kMethodNames) /
                                       sizeof(kMethodNames[0]));
       ++m) {
    if (name == kMethodNames[m]) return m;
  }
  return -1;
}

}  // namespace

grpc::Status ParameterServerService::CheckCallerEarly(
    absl::string_view request_type, const grpc::ServerContextBase& context) {
  if (options_.authorizer == nullptr) return grpc::Status::OK;
  const int method = MethodOfRequest(request_type);
  if (method < 0) return grpc::Status::OK;  // the handler checks it
  return ToGrpcStatus(options_.authorizer->Check(
      context, kMethodRoles[method], kMethodNames[method]));
}

void ParameterServerService::RecordRefused(absl::string_view request_type,
                                           const grpc::Status& status) {
  const int method = MethodOfRequest(request_type);
  if (instruments_ == nullptr || method < 0 || status.ok()) return;
  instruments_->Record(static_cast<Method>(method), 0, status, -1.0);
}

grpc::Status ParameterServerService::Observe(
    Method method, int keys, const grpc::ServerContextBase& context,
    absl::FunctionRef<grpc::Status()> handler) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status;
  if (options_.authorizer != nullptr) {
    status = ToGrpcStatus(options_.authorizer->Check(
        context, kMethodRoles[method], kMethodNames[method]));
  }
  if (status.ok()) status = ClientStatus(method, handler());
  if (instruments_ != nullptr) {
    instruments_->Record(
        method, keys, status,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
  }
  return status;
}

grpc::Status ParameterServerService::ClientStatus(
    Method method, const grpc::Status& status) const {
  if (status.ok()) return status;
  switch (status.error_code()) {
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::UNKNOWN: {
      // Storage failures: their messages name files under the data dir.
      LOG(ERROR) << kMethodNames[method] << " failed: "
                 << absl::StatusCodeToString(
                        static_cast<absl::StatusCode>(status.error_code()))
                 << ": " << status.error_message();
      return grpc::Status(
          status.error_code(),
          absl::StrFormat("%s failed on shard %d/%d: %s error in the shard's "
                          "storage; the shard's log has the details",
                          kMethodNames[method], options_.shard_index,
                          options_.num_shards,
                          absl::StatusCodeToString(static_cast<absl::StatusCode>(
                              status.error_code()))));
    }
    default:
      break;
  }
  std::string message = status.error_message();
  bool replaced = false;
  for (const std::string& dir : data_dir_forms_) {
    replaced |= ReplacePath(dir, "<data_dir>", &message) > 0;
  }
  if (!replaced) return status;
  // The details travel unchanged: a busy refusal's retry-later mark is in
  // them.
  return grpc::Status(status.error_code(), message, status.error_details());
}

std::string ParameterServerService::RelativePath(
    const std::string& path) const {
  if (data_dir_forms_.empty() || path.empty()) return "";
  for (const std::string& dir : data_dir_forms_) {
    if (path.size() > dir.size() + 1 && path.compare(0, dir.size(), dir) == 0 &&
        path[dir.size()] == '/') {
      return path.substr(dir.size() + 1);
    }
  }
  return "";
}

absl::Status ParameterServerService::CheckTableName(const std::string& name) {
  if (name.size() <= embedding::kMaxTableNameLength) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("table name '", QuoteInput(name),
                   "' is too long: names are 1..",
                   embedding::kMaxTableNameLength, " characters"));
}

absl::Status ParameterServerService::CheckCheckpointName(
    const std::string& name) {
  if (name.size() <= kMaxCheckpointNameBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("checkpoint name '", QuoteInput(name),
                   "' is too long: names are 1..", kMaxCheckpointNameBytes,
                   " characters"));
}

absl::Status ParameterServerService::CheckKeys(const Keys& keys) const {
  if (static_cast<size_t>(keys.size()) > options_.max_keys_per_request) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "request has %d keys; shard %d/%d accepts at most %d per request "
        "(--max_keys_per_request); split the batch",
        keys.size(), options_.shard_index, options_.num_shards,
        options_.max_keys_per_request));
  }
  if (options_.num_shards <= 1) return absl::OkStatus();
  for (int i = 0; i < keys.size(); ++i) {
    const uint32_t owner = embedding::ShardOf(keys[i], options_.num_shards);
    if (owner != options_.shard_index) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "key %d (index %d) belongs to shard %d, not to this shard %d/%d; "
          "route keys with ShardOf(key, %d)",
          keys[i], i, owner, options_.shard_index, options_.num_shards,
          options_.num_shards));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ParameterServerService::CheckRows(
    const std::string& table, const Keys& keys, const std::string& bytes,
    const char* field) const {
  absl::StatusOr<uint32_t> dim = store_->Dim(table);
  if (!dim.ok()) return dim.status();
  const size_t expected = sizeof(float) * size_t{*dim} * keys.size();
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d bytes; %d keys x dim %d of table '%s' need %d (float32)",
        field, bytes.size(), keys.size(), *dim, table, expected));
  }
  return *dim;
}

absl::Status ParameterServerService::CheckResponseSize(Method method,
                                                       const Keys& keys,
                                                       uint32_t dim,
                                                       size_t bytes) const {
  if (bytes <= options_.max_response_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s of %d keys x dim %d needs an answer of up to %d bytes; shard %d/%d "
      "sends at most %d (--max_message_mb=%d); split the call (PsClient "
      "does)",
      kMethodNames[method], keys.size(), dim, bytes, options_.shard_index,
      options_.num_shards, options_.max_response_bytes,
      options_.max_response_bytes >> 20));
}

absl::StatusOr<ParameterServerService::InflightLease>
ParameterServerService::Admit(Method method, size_t bytes) {
  return AdmitBytes(kMethodNames[method], bytes);
}

absl::StatusOr<ParameterServerService::InflightLease>
ParameterServerService::AdmitQueued(absl::string_view method,
                                    size_t request_bytes) {
  return AdmitBytes(method, request_bytes);
}

absl::StatusOr<ParameterServerService::InflightLease>
ParameterServerService::AdmitBytes(absl::string_view method, size_t bytes) {
  if (inflight_->TryAcquire(bytes)) {
    return InflightLease(inflight_.get(), bytes);
  }
  constexpr double kMiB = 1 << 20;
  return MarkRetryLater(absl::ResourceExhaustedError(absl::StrFormat(
      "shard %d/%d is busy: calls waiting or in progress hold %.1f MiB of "
      "requests and answers, and this %s needs %.1f MiB more, over the "
      "limit of %.0f MiB (--max_inflight_mb); retry later or send smaller "
      "calls",
      options_.shard_index, options_.num_shards,
      static_cast<double>(inflight_->in_flight()) / kMiB, method,
      static_cast<double>(bytes) / kMiB,
      static_cast<double>(inflight_->limit()) / kMiB)));
}

grpc::Status ParameterServerService::ServePull(
    grpc::ServerContextBase* context, const PullRequest& request,
    absl::FunctionRef<float*(uint32_t dim)> rows,
    std::vector<uint32_t>* missing, std::optional<InflightLease>* keep_lease) {
  return Observe(kPull, request.keys_size(), *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request.table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (absl::Status s = CheckKeys(request.keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    // The store writes the rows straight into the answer, sized under its
    // lock for the dim the table has then (a Restore may change it at any
    // time).
    std::optional<InflightLease> lease;
    absl::Status s = store_->PullInto(
        request.table(), KeySpan(request.keys()),
        [&](uint32_t dim) -> absl::StatusOr<float*> {
          const size_t answer = PullResponseBytes(request.keys_size(), dim);
          MIM_RETURN_IF_ERROR(
              CheckResponseSize(kPull, request.keys(), dim, answer));
          MIM_ASSIGN_OR_RETURN(InflightLease admitted,
                               Admit(kPull, request.ByteSizeLong() + answer));
          (keep_lease != nullptr ? *keep_lease : lease)
              .emplace(std::move(admitted));
          return rows(dim);
        },
        missing);
    return ToGrpcStatus(s);
  });
}

grpc::Status ParameterServerService::HandlePull(grpc::ServerContextBase* context,
                                          const PullRequest* request,
                                          PullResponse* response) {
  std::vector<uint32_t> missing;
  grpc::Status status = ServePull(
      context, *request,
      [&](uint32_t dim) {
        response->set_dim(dim);
        std::string* values = response->mutable_values();
        values->resize(sizeof(float) * size_t{dim} * request->keys_size());
        return reinterpret_cast<float*>(values->data());
      },
      &missing);
  if (!status.ok()) {
    response->Clear();
    return status;
  }
  response->mutable_missing()->Add(missing.begin(), missing.end());
  return status;
}

namespace {

// A lease kept by an answer's buffer, with the budget it returns to: the
// buffer may be freed after the service is gone. Members are destroyed in
// reverse order, the lease before its budget.
struct HeldLease {
  std::shared_ptr<InflightBytes> budget;
  ParameterServerService::InflightLease lease;
  void operator()() {
    ParameterServerService::InflightLease released = std::move(lease);
  }
};

}  // namespace

grpc::Status ParameterServerService::HandlePullWire(
    grpc::ServerContextBase* context, const PullRequest* request,
    grpc::ByteBuffer* response) {
  PullResponseWriter writer;
  std::vector<uint32_t> missing;
  std::optional<InflightLease> lease;
  grpc::Status status = ServePull(
      context, *request,
      [&](uint32_t dim) {
        // The lease goes with the answer's memory: released when gRPC has
        // freed it (the call finished and the bytes written out, or the
        // call dropped), not when this returns. ServePull set *lease.
        return writer.Start(dim, static_cast<size_t>(request->keys_size()),
                            HeldLease{inflight_, std::move(*lease)});
      },
      &missing, &lease);
  if (status.ok()) *response = writer.Finish(missing);
  return status;
}

grpc::Status ParameterServerService::HandlePush(grpc::ServerContextBase* context,
                                          const PushRequest* request,
                                          PushResponse* response) {
  return Observe(kPush, request->keys_size(), *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request->table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    // Sized by the table as it is now; an unknown table is refused below.
    const absl::StatusOr<uint32_t> state =
        store_->StateFloatsPerDim(request->table());
    // At most half the budget, as the largest SGD push (4 x the 64 MiB
    // message limit) was: a larger reservation would let a big Adam push
    // run only on an idle shard, and a busy one would refuse it until the
    // client gave up.
    size_t reservation =
        WriteReservationBytes(request->ByteSizeLong(), state.ok() ? *state : 0);
    if (inflight_->limit() != 0) {
      reservation = std::min(reservation, inflight_->limit() / 2);
    }
    absl::StatusOr<InflightLease> lease = Admit(kPush, reservation);
    if (!lease.ok()) return ToGrpcStatus(lease.status());
    // The store checks the length again under its lock (a Restore may
    // change the table's dim after this check).
    absl::StatusOr<uint32_t> dim = CheckRows(request->table(), request->keys(),
                                             request->gradients(), "gradients");
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    absl::StatusOr<embedding::PushOutcome> pushed = store_->PushOnce(
        request->table(), KeySpan(request->keys()),
        FloatSpan(request->gradients()),
        embedding::PushTag{request->client_id(), request->sequence()});
    if (absl::IsAborted(pushed.status())) {
      // Refused before anything was done (the push log is evicting this
      // client's record): a busy refusal, which every client resends.
      return ToGrpcStatus(MarkRetryLater(
          absl::ResourceExhaustedError(pushed.status().message())));
    }
    if (!pushed.ok()) return ToGrpcStatus(pushed.status());
    if (options_.test_crash_after_push_applied > 0 && !pushed->duplicate &&
        request->client_id() != 0 &&
        tagged_pushes_applied_.fetch_add(1) + 1 ==
            options_.test_crash_after_push_applied) {
      LOG(ERROR) << "--test_crash_after_apply_before_ack: aborting after "
                    "applying push "
                 << request->sequence() << " of client "
                 << request->client_id() << ", before answering it";
      std::abort();
    }
    response->set_rows_updated(pushed->rows_updated);
    response->set_duplicate(pushed->duplicate);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleUpsert(grpc::ServerContextBase* context,
                                            const UpsertRequest* request,
                                            UpsertResponse* response) {
  return Observe(kUpsert, request->keys_size(), *context,
                 [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request->table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::StatusOr<InflightLease> lease =
        Admit(kUpsert, kWriteMemoryFactor * request->ByteSizeLong());
    if (!lease.ok()) return ToGrpcStatus(lease.status());
    absl::StatusOr<uint32_t> dim = CheckRows(request->table(), request->keys(),
                                             request->values(), "values");
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    absl::StatusOr<embedding::UpsertResult> result =
        store_->Upsert(request->table(), KeySpan(request->keys()),
                       FloatSpan(request->values()), request->version());
    if (!result.ok()) return ToGrpcStatus(result.status());
    response->set_rows_written(result->rows_written);
    response->set_rows_stale(result->rows_stale);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleCreateTable(
    grpc::ServerContextBase* context, const CreateTableRequest* request,
    CreateTableResponse*) {
  return Observe(kCreateTable, 0, *context, [&]() -> grpc::Status {
    absl::StatusOr<embedding::TableConfig> config =
        FromProto(request->config());
    if (!config.ok()) return ToGrpcStatus(config.status());
    return ToGrpcStatus(store_->CreateTable(*config, request->if_not_exists()));
  });
}

grpc::Status ParameterServerService::HandleListTables(grpc::ServerContextBase* context,
                                                const ListTablesRequest*,
                                                ListTablesResponse* response) {
  return Observe(kListTables, 0, *context, [&]() -> grpc::Status {
    for (const embedding::TableConfig& config : store_->ListTables()) {
      *response->add_tables() = ToProto(config);
    }
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleTableStats(
    grpc::ServerContextBase* context, const TableStatsRequest* request,
    TableStatsResponse* response) {
  return Observe(kTableStats, 0, *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request->table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::StatusOr<std::vector<embedding::TableStats>> stats =
        store_->Stats(request->table());
    if (!stats.ok()) return ToGrpcStatus(stats.status());
    response->set_shard_index(options_.shard_index);
    response->set_num_shards(options_.num_shards);
    for (const embedding::TableStats& t : *stats) {
      *response->add_tables() = ToProto(t);
    }
    SetRecovery(store_->Recovery(), response->mutable_recovery());
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleGetRows(grpc::ServerContextBase* context,
                                             const GetRowsRequest* request,
                                             GetRowsResponse* response) {
  return Observe(kGetRows, request->keys_size(), *context,
                 [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request->table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    // A Restore may change the dim after this check; the store sizes the
    // rows itself, so at worst the answer exceeds the estimate and gRPC
    // refuses to send it.
    absl::StatusOr<uint32_t> dim = store_->Dim(request->table());
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    const size_t answer = GetRowsResponseBytes(request->keys_size(), *dim);
    if (absl::Status s =
            CheckResponseSize(kGetRows, request->keys(), *dim, answer);
        !s.ok()) {
      return ToGrpcStatus(s);
    }
    // The rows are copied once more into the answer.
    absl::StatusOr<InflightLease> lease =
        Admit(kGetRows, request->ByteSizeLong() + 2 * answer);
    if (!lease.ok()) return ToGrpcStatus(lease.status());
    std::vector<float> values;
    std::vector<embedding::RowMeta> meta;
    std::vector<uint32_t> missing;
    absl::Status s = store_->GetRows(request->table(), KeySpan(request->keys()),
                                     &values, &meta, &missing);
    if (!s.ok()) return ToGrpcStatus(s);
    response->set_dim(*dim);
    response->set_values(reinterpret_cast<const char*>(values.data()),
                         sizeof(float) * values.size());
    for (const embedding::RowMeta& m : meta) *response->add_meta() = ToProto(m);
    response->mutable_missing()->Add(missing.begin(), missing.end());
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleCheckpoint(
    grpc::ServerContextBase* context, const CheckpointRequest* request,
    CheckpointResponse* response) {
  return Observe(kCheckpoint, 0, *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckCheckpointName(request->name()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::StatusOr<embedding::CheckpointInfo> info =
        store_->Checkpoint(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    response->set_name(info->name);
    response->set_path(RelativePath(info->path));
    response->set_rows(info->rows);
    for (const std::string& d : info->deleted) {
      LOG(INFO) << "deleted checkpoint '" << d << "' (--keep_checkpoints)";
      response->add_deleted(d);
    }
    if (!info->retention_error.empty()) {
      LOG(WARNING) << "checkpoint '" << info->name
                   << "' taken, but retention failed: "
                   << info->retention_error;
    }
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleRestore(grpc::ServerContextBase* context,
                                             const RestoreRequest* request,
                                             RestoreResponse* response) {
  return Observe(kRestore, 0, *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckCheckpointName(request->name()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    return Once(request->request_id(), "restore", response,
                [&]() -> grpc::Status {
                  absl::StatusOr<embedding::CheckpointInfo> info =
                      store_->Restore(request->name());
                  if (!info.ok()) return ToGrpcStatus(info.status());
                  response->set_name(info->name);
                  response->set_rows(info->rows);
                  return grpc::Status::OK;
                });
  });
}

grpc::Status ParameterServerService::Once(
    uint64_t request_id, absl::string_view what,
    google::protobuf::Message* response,
    absl::FunctionRef<grpc::Status()> run) {
  if (request_id == 0) return run();
  {
    absl::MutexLock lock(&answers_mu_);
    auto [it, fresh] = answers_.try_emplace(request_id);
    if (!fresh) {
      if (!it->second.done) {
        return grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            absl::StrCat("the ", what, " with request id ", request_id,
                         " is still running here; send it again to get its "
                         "answer"));
      }
      response->ParseFromString(it->second.response);
      return grpc::Status::OK;
    }
    answer_order_.push_back(request_id);
    while (answer_order_.size() > kRememberedAnswers) {
      auto oldest = answers_.find(answer_order_.front());
      if (oldest != answers_.end()) {
        if (!oldest->second.done) break;  // running: kept until it ends
        answers_.erase(oldest);
      }
      answer_order_.pop_front();
    }
  }
  const grpc::Status status = run();
  absl::MutexLock lock(&answers_mu_);
  if (!status.ok()) {
    // A failed restore or drop changed nothing (a busy refusal, a missing
    // checkpoint, a storage error): a resend runs it again rather than
    // getting this answer. Out of answer_order_ too: left there, it would
    // evict a later success of the same id before its turn.
    answers_.erase(request_id);
    const auto at = std::find(answer_order_.rbegin(), answer_order_.rend(),
                              request_id);
    if (at != answer_order_.rend()) answer_order_.erase(std::next(at).base());
    return status;
  }
  Answer& answer = answers_[request_id];
  response->SerializeToString(&answer.response);
  answer.done = true;
  return status;
}

grpc::Status ParameterServerService::HandleListCheckpoints(
    grpc::ServerContextBase* context, const ListCheckpointsRequest*,
    ListCheckpointsResponse* response) {
  return Observe(kListCheckpoints, 0, *context, [&]() -> grpc::Status {
    response->set_shard_index(options_.shard_index);
    response->set_num_shards(options_.num_shards);
    for (embedding::CheckpointEntry& c : store_->ListCheckpoints()) {
      CheckpointEntry* out = response->add_checkpoints();
      out->set_name(std::move(c.name));
      out->set_path(RelativePath(c.path));
      out->set_sequence(c.sequence);
      out->set_created_micros(c.created_micros);
    }
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleDeleteCheckpoint(
    grpc::ServerContextBase* context, const DeleteCheckpointRequest* request,
    DeleteCheckpointResponse* response) {
  return Observe(kDeleteCheckpoint, 0, *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckCheckpointName(request->name()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::Status s = store_->DeleteCheckpoint(request->name());
    if (s.code() == absl::StatusCode::kNotFound) {
      response->set_deleted(false);  // absent: a retry after a lost answer
      return grpc::Status::OK;
    }
    if (!s.ok()) return ToGrpcStatus(s);
    LOG(INFO) << "deleted checkpoint '" << request->name() << "'";
    response->set_deleted(true);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::HandleDropTable(
    grpc::ServerContextBase* context, const DropTableRequest* request,
    DropTableResponse* response) {
  return Observe(kDropTable, 0, *context, [&]() -> grpc::Status {
    if (absl::Status s = CheckTableName(request->table()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    return Once(request->request_id(), "drop", response,
                [&]() -> grpc::Status {
      absl::StatusOr<uint64_t> rows = store_->DropTable(request->table());
      if (rows.status().code() == absl::StatusCode::kNotFound) {
        response->set_dropped(false);  // absent: a retry after a lost answer
        return grpc::Status::OK;
      }
      if (!rows.ok()) return ToGrpcStatus(rows.status());
      LOG(INFO) << "dropped table '" << request->table() << "' (" << *rows
                << " rows)";
      response->set_dropped(true);
      response->set_rows(*rows);
      if (options_.test_delay_first_drop_answer_ms > 0 &&
          !drop_answer_delayed_.exchange(true)) {
        absl::SleepFor(
            absl::Milliseconds(options_.test_delay_first_drop_answer_ms));
      }
      return grpc::Status::OK;
    });
  });
}

}  // namespace mim::ps
