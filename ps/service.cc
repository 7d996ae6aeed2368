#include "ps/service.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
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

}  // namespace

ParameterServerService::ParameterServerService(
    embedding::EmbeddingStore* store, const Options& options)
    : store_(store), options_(options) {}

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
  absl::Status s = store_->Pull(request->table(), KeySpan(request->keys()),
                                reinterpret_cast<float*>(values->data()),
                                &missing);
  if (!s.ok()) {
    response->Clear();
    return ToGrpcStatus(s);
  }
  response->mutable_missing()->Add(missing.begin(), missing.end());
  return grpc::Status::OK;
}

grpc::Status ParameterServerService::Push(grpc::ServerContext*,
                                          const PushRequest* request,
                                          PushResponse* response) {
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
}

grpc::Status ParameterServerService::Upsert(grpc::ServerContext*,
                                            const UpsertRequest* request,
                                            UpsertResponse* response) {
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
}

grpc::Status ParameterServerService::CreateTable(
    grpc::ServerContext*, const CreateTableRequest* request,
    CreateTableResponse*) {
  absl::StatusOr<embedding::TableConfig> config = FromProto(request->config());
  if (!config.ok()) return ToGrpcStatus(config.status());
  return ToGrpcStatus(store_->CreateTable(*config, request->if_not_exists()));
}

grpc::Status ParameterServerService::ListTables(grpc::ServerContext*,
                                                const ListTablesRequest*,
                                                ListTablesResponse* response) {
  for (const embedding::TableConfig& config : store_->ListTables()) {
    *response->add_tables() = ToProto(config);
  }
  return grpc::Status::OK;
}

grpc::Status ParameterServerService::TableStats(
    grpc::ServerContext*, const TableStatsRequest* request,
    TableStatsResponse* response) {
  absl::StatusOr<std::vector<embedding::TableStats>> stats =
      store_->Stats(request->table());
  if (!stats.ok()) return ToGrpcStatus(stats.status());
  response->set_shard_index(options_.shard_index);
  response->set_num_shards(options_.num_shards);
  for (const embedding::TableStats& t : *stats) {
    *response->add_tables() = ToProto(t);
  }
  return grpc::Status::OK;
}

grpc::Status ParameterServerService::GetRows(grpc::ServerContext*,
                                             const GetRowsRequest* request,
                                             GetRowsResponse* response) {
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
}

grpc::Status ParameterServerService::Checkpoint(
    grpc::ServerContext*, const CheckpointRequest* request,
    CheckpointResponse* response) {
  absl::StatusOr<embedding::CheckpointInfo> info =
      store_->Checkpoint(request->name());
  if (!info.ok()) return ToGrpcStatus(info.status());
  response->set_name(info->name);
  response->set_path(info->path);
  response->set_rows(info->rows);
  return grpc::Status::OK;
}

grpc::Status ParameterServerService::Restore(grpc::ServerContext*,
                                             const RestoreRequest* request,
                                             RestoreResponse* response) {
  absl::WriterMutexLock lock(&restore_mu_);
  absl::StatusOr<embedding::CheckpointInfo> info =
      store_->Restore(request->name());
  if (!info.ok()) return ToGrpcStatus(info.status());
  response->set_name(info->name);
  response->set_rows(info->rows);
  return grpc::Status::OK;
}

grpc::Status ParameterServerService::ListCheckpoints(
    grpc::ServerContext*, const ListCheckpointsRequest*,
    ListCheckpointsResponse* response) {
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
}

}  // namespace mim::ps
