#include "ps/service.h"

#include <array>
#include <atomic>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/metrics.h"
#include "embedding/sharding.h"
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
    "TableStats", "GetRows", "Checkpoint", "Restore",     "ListCheckpoints"};

// grpc::StatusCode values 0..16 (the same numbers as absl::StatusCode).
constexpr int kNumCodes = 17;

}  // namespace

// Safe for concurrent access: metric objects are thread-safe, `errors`
// slots are atomic, `tables` is guarded.
struct ParameterServerService::Instruments {
  static_assert(sizeof(kMethodNames) / sizeof(kMethodNames[0]) == kNumMethods,
                "one method label per Method");

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

  void Record(Method method, int keys, const grpc::Status& status,
              double seconds) {
    PerMethod& m = methods[method];
    m.requests->Increment();
    m.duration->Observe(seconds);
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

ParameterServerService::ParameterServerService(
    embedding::EmbeddingStore* store, const Options& options)
    : store_(store), options_(options) {
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
}

ParameterServerService::~ParameterServerService() {
  // After this, no scrape reads store_ through this service.
  if (instruments_ != nullptr) {
    options_.metrics->RemoveScrapeCallback(instruments_->scrape_callback);
  }
}

grpc::Status ParameterServerService::Observe(
    Method method, int keys, absl::FunctionRef<grpc::Status()> handler) {
  if (instruments_ == nullptr) return handler();
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = handler();
  instruments_->Record(
      method, keys, status,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return status;
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

absl::Status ParameterServerService::CheckResponseSize(const Keys& keys,
                                                       uint32_t dim) const {
  const size_t bytes = sizeof(float) * size_t{dim} * keys.size();
  if (bytes <= options_.max_response_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%d keys x dim %d need %d response bytes; the limit is %d "
      "(--max_message_mb); split the batch",
      keys.size(), dim, bytes, options_.max_response_bytes));
}

grpc::Status ParameterServerService::Pull(grpc::ServerContext*,
                                          const PullRequest* request,
                                          PullResponse* response) {
  return Observe(kPull, request->keys_size(), [&]() -> grpc::Status {
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::ReaderMutexLock lock(&restore_mu_);
    absl::StatusOr<uint32_t> dim = store_->Dim(request->table());
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    if (absl::Status s = CheckResponseSize(request->keys(), *dim); !s.ok()) {
      return ToGrpcStatus(s);
    }
    response->set_dim(*dim);
    // The store writes the rows straight into the response's bytes.
    std::string* values = response->mutable_values();
    values->resize(sizeof(float) * size_t{*dim} * request->keys_size());
    std::vector<uint32_t> missing;
    absl::Status s =
        store_->Pull(request->table(), KeySpan(request->keys()),
                     reinterpret_cast<float*>(values->data()), &missing);
    if (!s.ok()) {
      response->Clear();
      return ToGrpcStatus(s);
    }
    response->mutable_missing()->Add(missing.begin(), missing.end());
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::Push(grpc::ServerContext*,
                                          const PushRequest* request,
                                          PushResponse* response) {
  return Observe(kPush, request->keys_size(), [&]() -> grpc::Status {
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::ReaderMutexLock lock(&restore_mu_);
    absl::StatusOr<uint32_t> dim = CheckRows(request->table(), request->keys(),
                                             request->gradients(), "gradients");
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    absl::StatusOr<uint64_t> updated =
        store_->Push(request->table(), KeySpan(request->keys()),
                     FloatSpan(request->gradients()));
    if (!updated.ok()) return ToGrpcStatus(updated.status());
    response->set_rows_updated(*updated);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::Upsert(grpc::ServerContext*,
                                            const UpsertRequest* request,
                                            UpsertResponse* response) {
  return Observe(kUpsert, request->keys_size(), [&]() -> grpc::Status {
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::ReaderMutexLock lock(&restore_mu_);
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

grpc::Status ParameterServerService::CreateTable(
    grpc::ServerContext*, const CreateTableRequest* request,
    CreateTableResponse*) {
  return Observe(kCreateTable, 0, [&]() -> grpc::Status {
    absl::StatusOr<embedding::TableConfig> config =
        FromProto(request->config());
    if (!config.ok()) return ToGrpcStatus(config.status());
    return ToGrpcStatus(store_->CreateTable(*config, request->if_not_exists()));
  });
}

grpc::Status ParameterServerService::ListTables(grpc::ServerContext*,
                                                const ListTablesRequest*,
                                                ListTablesResponse* response) {
  return Observe(kListTables, 0, [&]() -> grpc::Status {
    for (const embedding::TableConfig& config : store_->ListTables()) {
      *response->add_tables() = ToProto(config);
    }
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::TableStats(
    grpc::ServerContext*, const TableStatsRequest* request,
    TableStatsResponse* response) {
  return Observe(kTableStats, 0, [&]() -> grpc::Status {
    absl::StatusOr<std::vector<embedding::TableStats>> stats =
        store_->Stats(request->table());
    if (!stats.ok()) return ToGrpcStatus(stats.status());
    response->set_shard_index(options_.shard_index);
    response->set_num_shards(options_.num_shards);
    for (const embedding::TableStats& t : *stats) {
      *response->add_tables() = ToProto(t);
    }
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::GetRows(grpc::ServerContext*,
                                             const GetRowsRequest* request,
                                             GetRowsResponse* response) {
  return Observe(kGetRows, request->keys_size(), [&]() -> grpc::Status {
    if (absl::Status s = CheckKeys(request->keys()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    absl::ReaderMutexLock lock(&restore_mu_);
    absl::StatusOr<uint32_t> dim = store_->Dim(request->table());
    if (!dim.ok()) return ToGrpcStatus(dim.status());
    if (absl::Status s = CheckResponseSize(request->keys(), *dim); !s.ok()) {
      return ToGrpcStatus(s);
    }
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

grpc::Status ParameterServerService::Checkpoint(
    grpc::ServerContext*, const CheckpointRequest* request,
    CheckpointResponse* response) {
  return Observe(kCheckpoint, 0, [&]() -> grpc::Status {
    absl::StatusOr<embedding::CheckpointInfo> info =
        store_->Checkpoint(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    response->set_name(info->name);
    response->set_path(info->path);
    response->set_rows(info->rows);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::Restore(grpc::ServerContext*,
                                             const RestoreRequest* request,
                                             RestoreResponse* response) {
  return Observe(kRestore, 0, [&]() -> grpc::Status {
    absl::WriterMutexLock lock(&restore_mu_);
    absl::StatusOr<embedding::CheckpointInfo> info =
        store_->Restore(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    response->set_name(info->name);
    response->set_rows(info->rows);
    return grpc::Status::OK;
  });
}

grpc::Status ParameterServerService::ListCheckpoints(
    grpc::ServerContext*, const ListCheckpointsRequest*,
    ListCheckpointsResponse* response) {
  return Observe(kListCheckpoints, 0, [&]() -> grpc::Status {
    response->set_shard_index(options_.shard_index);
    response->set_num_shards(options_.num_shards);
    for (embedding::CheckpointEntry& c : store_->ListCheckpoints()) {
      CheckpointEntry* out = response->add_checkpoints();
      out->set_name(std::move(c.name));
      out->set_path(std::move(c.path));
      out->set_sequence(c.sequence);
      out->set_created_micros(c.created_micros);
    }
    return grpc::Status::OK;
  });
}

}  // namespace mim::ps
