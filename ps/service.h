// ParameterServerService: the gRPC face of one shard.
//
// Handlers are thin: check what only the RPC edge knows (key ownership under
// the shard's place in the cluster, request size, byte lengths of packed
// rows), call the EmbeddingStore, convert its absl::Status to grpc::Status.
// A rejected request changes nothing (the checks run before the store call,
// and the store validates its whole input before writing).
//
// Error codes: NOT_FOUND unknown table; INVALID_ARGUMENT wrong byte length or
// non-finite values; RESOURCE_EXHAUSTED more keys than
// Options::max_keys_per_request; FAILED_PRECONDITION a key owned by another
// shard (the message names this shard "I/N", the key and its owner).
//
// Authentication (Options::authorizer set): every call is checked before
// anything else (base/grpc_auth.h); read calls (Pull, GetRows, TableStats,
// ListTables, ListCheckpoints) need the read role, calls that write or
// restore (CreateTable, Push, Upsert, Checkpoint, Restore) the admin role.
// UNAUTHENTICATED (no or unknown token) and PERMISSION_DENIED (read token on
// an admin call) change nothing.
//
// What a client sees of an error: never a server path nor unbounded input.
// INTERNAL, DATA_LOSS and UNKNOWN errors (storage failures, whose messages
// name files) reach the client as "<Method> failed on shard I/N: ..." with
// the full message in the shard's log; in other messages Options::data_dir
// reads "<data_dir>". Names longer than any valid one are refused before
// the store sees them, quoted capped (ps/status_convert.h); checkpoint
// paths in responses are relative to the data dir.
//
// Metrics (when Options::metrics is set; names in docs/OPERATIONS.md): every
// call counts in mim_ps_requests_total and mim_ps_request_duration_seconds by
// method, a failed one in mim_ps_request_errors_total by method and code;
// the keys of successful Pull, Push, Upsert and GetRows calls count in
// mim_ps_keys_total; each table's rows and bytes are read at scrape time.
//
// Thread-safety: safe for concurrent access (the sync gRPC server calls the
// handlers from its thread pool).
#ifndef MIM_PS_SERVICE_H_
#define MIM_PS_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "embedding/embedding_store.h"
#include "google/protobuf/repeated_field.h"
#include "proto/ps.grpc.pb.h"

namespace mim::base {
class Authorizer;
class Metrics;
}  // namespace mim::base

namespace mim::ps {

class ParameterServerService final : public ParameterServer::Service {
 public:
  struct Options {
    uint32_t shard_index = 0;
    uint32_t num_shards = 1;
    size_t max_keys_per_request = 1 << 20;
    // Pull and GetRows refuse (RESOURCE_EXHAUSTED) before allocating rows
    // that could not be sent anyway: keys x dim x 4 bytes above this.
    size_t max_response_bytes = size_t{256} << 20;
    // Where the service records its metrics; null: none. Must outlive the
    // service. The service reads `store` from a scrape callback until it
    // is destroyed, so destroy the service before the store.
    base::Metrics* metrics = nullptr;
    // Checks every call's token; null: authentication off. Must outlive
    // the service.
    const base::Authorizer* authorizer = nullptr;
    // The store's data directory: removed from messages sent to clients,
    // and checkpoint paths are sent relative to it (empty: paths are not
    // sent).
    std::string data_dir;
  };

  // `store` must outlive the service.
  ParameterServerService(embedding::EmbeddingStore* store,
                         const Options& options);
  ~ParameterServerService() override;

  grpc::Status Pull(grpc::ServerContext* context, const PullRequest* request,
                    PullResponse* response) override;
  grpc::Status Push(grpc::ServerContext* context, const PushRequest* request,
                    PushResponse* response) override;
  grpc::Status Upsert(grpc::ServerContext* context,
                      const UpsertRequest* request,
                      UpsertResponse* response) override;
  grpc::Status CreateTable(grpc::ServerContext* context,
                           const CreateTableRequest* request,
                           CreateTableResponse* response) override;
  grpc::Status ListTables(grpc::ServerContext* context,
                          const ListTablesRequest* request,
                          ListTablesResponse* response) override;
  grpc::Status TableStats(grpc::ServerContext* context,
                          const TableStatsRequest* request,
                          TableStatsResponse* response) override;
  grpc::Status GetRows(grpc::ServerContext* context,
                       const GetRowsRequest* request,
                       GetRowsResponse* response) override;
  grpc::Status Checkpoint(grpc::ServerContext* context,
                          const CheckpointRequest* request,
                          CheckpointResponse* response) override;
  grpc::Status Restore(grpc::ServerContext* context,
                       const RestoreRequest* request,
                       RestoreResponse* response) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const ListCheckpointsRequest* request,
                               ListCheckpointsResponse* response) override;

 private:
  using Keys = google::protobuf::RepeatedField<uint64_t>;

  enum Method {
    kPull, kPush, kUpsert, kCreateTable, kListTables, kTableStats, kGetRows,
    kCheckpoint, kRestore, kListCheckpoints, kNumMethods
  };
  // Metric objects, resolved once in the constructor (defined in service.cc).
  struct Instruments;

  // Checks the caller's role for `method` (Options::authorizer), runs
  // `handler`, makes its error fit to send (ClientStatus) and records the
  // call in the metrics (if any): count, latency, error code, and `keys`
  // when it succeeded.
  grpc::Status Observe(Method method, int keys,
                       const grpc::ServerContext& context,
                       absl::FunctionRef<grpc::Status()> handler);
  // `status` as a client may see it (see the file comment); logs what it
  // leaves out.
  grpc::Status ClientStatus(Method method, const grpc::Status& status) const;
  // `path` relative to Options::data_dir; empty when it is not under it.
  std::string RelativePath(const std::string& path) const;

  // RESOURCE_EXHAUSTED for too many keys, FAILED_PRECONDITION for the first
  // key this shard does not own.
  absl::Status CheckKeys(const Keys& keys) const;
  // Dim of `table` after checking that `bytes` holds keys.size() rows of it.
  absl::StatusOr<uint32_t> CheckRows(const std::string& table,
                                     const Keys& keys,
                                     const std::string& bytes,
                                     const char* field) const
      ABSL_SHARED_LOCKS_REQUIRED(restore_mu_);
  // RESOURCE_EXHAUSTED when keys x dim rows exceed max_response_bytes.
  absl::Status CheckResponseSize(const Keys& keys, uint32_t dim) const;
  // INVALID_ARGUMENT quoting `name` capped when it is longer than any
  // valid table (or checkpoint) name, so no later message quotes it whole.
  static absl::Status CheckTableName(const std::string& name);
  static absl::Status CheckCheckpointName(const std::string& name);

  embedding::EmbeddingStore* const store_;
  const Options options_;
  // Options::data_dir as given, absolute and canonical, longest first.
  std::vector<std::string> data_dir_forms_;
  // Row calls hold this shared, Restore exclusively: a restore may replace a
  // table with one of another dim, and Pull sizes its buffer from Dim()
  // before the store writes dim floats per key into it.
  mutable absl::Mutex restore_mu_;
  // Null when Options::metrics is null.
  std::unique_ptr<Instruments> instruments_;
};

}  // namespace mim::ps

#endif  // MIM_PS_SERVICE_H_
