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
// Options::max_keys_per_request, an answer larger than
// Options::max_response_bytes, or a call that would take the bytes of calls
// in progress past Options::max_inflight_bytes (each message names the
// limit and its flag); FAILED_PRECONDITION a key owned by another shard
// (the message names this shard "I/N", the key and its owner); UNAVAILABLE
// a Checkpoint, Restore or DeleteCheckpoint while another one runs (the
// message names it; retry when it is done).
//
// Reads never wait for a restore: Pull, GetRows and the stats read the
// tables as they are until the restored ones replace them at once (the
// store swaps them in a moment), so a long Restore holds no read up.
//
// Authentication (Options::authorizer set): every call is checked before
// anything else (base/grpc_auth.h); read calls (Pull, GetRows, TableStats,
// ListTables, ListCheckpoints) need the read role, calls that write or
// restore (CreateTable, DropTable, Push, Upsert, Checkpoint, Restore,
// DeleteCheckpoint) the admin role.
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
// Thread-safety: safe for concurrent access (the handlers run on the
// executor threads of ShardCallbackService, or on a sync server's threads).
#ifndef MIM_PS_SERVICE_H_
#define MIM_PS_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "embedding/embedding_store.h"
#include "google/protobuf/repeated_field.h"
#include "proto/ps.grpc.pb.h"
#include "ps/limits.h"

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
    size_t max_keys_per_request = kDefaultMaxKeysPerRequest;
    // Pull and GetRows refuse (RESOURCE_EXHAUSTED) before allocating rows
    // that could not be sent anyway: an answer that may be larger than
    // this (ps/limits.h bounds; the server's gRPC message limit).
    size_t max_response_bytes = kDefaultMaxMessageBytes;
    // Memory of the calls waiting for a thread (their requests) and of the
    // Pull, GetRows, Push and Upsert calls in progress (request and answer;
    // a Push or Upsert kWriteMemoryFactor times its request): a call that
    // would take the total past this while others hold some is refused
    // RESOURCE_EXHAUSTED (retry later); 0: no limit.
    size_t max_inflight_bytes = kDefaultMaxInflightBytes;
    // Where the service records its metrics; null: none. Must outlive the
    // service. The service reads `store` from a scrape callback until it
    // is destroyed, so destroy the service before the store.
    base::Metrics* metrics = nullptr;
    // Checks every call's token; null: authentication off. Must outlive
    // the service.
    const base::Authorizer* authorizer = nullptr;
    // Tests only: abort() once this many tagged pushes have been applied
    // and made durable, before the last one is answered (0: never), to
    // test a crash between apply and acknowledgement.
    uint64_t test_crash_after_push_applied = 0;
    // Tests only: the first successful DropTable is answered this many
    // milliseconds after the table is dropped (a lost answer, for a client
    // with a shorter deadline). 0: at once.
    uint32_t test_delay_first_drop_answer_ms = 0;
    // The store's data directory: removed from messages sent to clients,
    // and checkpoint paths are sent relative to it (empty: paths are not
    // sent).
    std::string data_dir;
  };

  // `store` must outlive the service.
  ParameterServerService(embedding::EmbeddingStore* store,
                         const Options& options);
  ~ParameterServerService() override;

  // Bytes of Options::max_inflight_bytes held by one call. Not
  // thread-safe (owned by the call).
  class InflightLease {
   public:
    InflightLease(InflightBytes* budget, size_t bytes)
        : budget_(budget), bytes_(bytes) {}
    InflightLease(InflightLease&& other) noexcept
        : budget_(other.budget_), bytes_(other.bytes_) {
      other.budget_ = nullptr;
    }
    InflightLease& operator=(InflightLease&&) = delete;
    ~InflightLease() {
      if (budget_ != nullptr) budget_->Release(bytes_);
    }

   private:
    InflightBytes* budget_;
    size_t bytes_;
  };
  // Memory of a call that waits for an executor thread
  // (ShardCallbackService): gRPC has parsed its request, which holds its
  // bytes before any handler runs, so a queue of large requests is bounded
  // by the same budget. Reserves `request_bytes` of
  // Options::max_inflight_bytes; the caller drops the lease as the handler
  // starts (the handler then reserves what it needs). RESOURCE_EXHAUSTED
  // naming `method` and --max_inflight_mb when it does not fit.
  absl::StatusOr<InflightLease> AdmitQueued(absl::string_view method,
                                            size_t request_bytes);

  // Before a call is admitted and queued (ShardCallbackService): the
  // caller's token checked for the method whose request message is
  // `request_type` (e.g. "PushRequest"), so a caller without the role
  // takes no queue place and no in-flight bytes; OK with authentication
  // off. The handler checks again (Observe), at the cost of one lookup.
  grpc::Status CheckCallerEarly(absl::string_view request_type,
                                const grpc::ServerContextBase& context);
  // Records in the metrics a call refused before its handler ran (by
  // CheckCallerEarly, AdmitQueued, a full queue, a deadline passed while it
  // waited, or a request that did not parse), as the handler's own
  // refusals are.
  void RecordRefused(absl::string_view request_type,
                     const grpc::Status& status);

  // The handlers, callable with the context of either server API:
  // ShardCallbackService (the shard binary) runs them on its executor, the
  // sync overrides below (in-process servers in tests) on gRPC's threads.
  grpc::Status HandlePull(grpc::ServerContextBase* context,
                          const PullRequest* request, PullResponse* response);
  // As HandlePull, answering with the message's wire bytes (ps/pull_wire.h):
  // the rows are written straight into the slice gRPC sends. Same checks,
  // errors and metrics; `response` is set only on success. The answer's
  // bytes count against Options::max_inflight_bytes for as long as its
  // memory lives: until gRPC lets go of it (the call finished and the
  // bytes written to the connection, or the call dropped), so that answers
  // a slow reader has not taken yet still count.
  grpc::Status HandlePullWire(grpc::ServerContextBase* context,
                              const PullRequest* request,
                              grpc::ByteBuffer* response);
  grpc::Status HandlePush(grpc::ServerContextBase* context,
                          const PushRequest* request, PushResponse* response);
  grpc::Status HandleUpsert(grpc::ServerContextBase* context,
                            const UpsertRequest* request,
                            UpsertResponse* response);
  grpc::Status HandleCreateTable(grpc::ServerContextBase* context,
                                 const CreateTableRequest* request,
                                 CreateTableResponse* response);
  grpc::Status HandleListTables(grpc::ServerContextBase* context,
                                const ListTablesRequest* request,
                                ListTablesResponse* response);
  grpc::Status HandleTableStats(grpc::ServerContextBase* context,
                                const TableStatsRequest* request,
                                TableStatsResponse* response);
  grpc::Status HandleGetRows(grpc::ServerContextBase* context,
                             const GetRowsRequest* request,
                             GetRowsResponse* response);
  grpc::Status HandleCheckpoint(grpc::ServerContextBase* context,
                                const CheckpointRequest* request,
                                CheckpointResponse* response);
  grpc::Status HandleRestore(grpc::ServerContextBase* context,
                             const RestoreRequest* request,
                             RestoreResponse* response);
  grpc::Status HandleListCheckpoints(grpc::ServerContextBase* context,
                                     const ListCheckpointsRequest* request,
                                     ListCheckpointsResponse* response);
  grpc::Status HandleDeleteCheckpoint(grpc::ServerContextBase* context,
                                      const DeleteCheckpointRequest* request,
                                      DeleteCheckpointResponse* response);
  grpc::Status HandleDropTable(grpc::ServerContextBase* context,
                               const DropTableRequest* request,
                               DropTableResponse* response);

  // ParameterServer::Service (sync API).
  grpc::Status Pull(grpc::ServerContext* c, const PullRequest* request,
                    PullResponse* response) override {
    return HandlePull(c, request, response);
  }
  grpc::Status Push(grpc::ServerContext* c, const PushRequest* request,
                    PushResponse* response) override {
    return HandlePush(c, request, response);
  }
  grpc::Status Upsert(grpc::ServerContext* c, const UpsertRequest* request,
                      UpsertResponse* response) override {
    return HandleUpsert(c, request, response);
  }
  grpc::Status CreateTable(grpc::ServerContext* c,
                           const CreateTableRequest* request,
                           CreateTableResponse* response) override {
    return HandleCreateTable(c, request, response);
  }
  grpc::Status ListTables(grpc::ServerContext* c,
                          const ListTablesRequest* request,
                          ListTablesResponse* response) override {
    return HandleListTables(c, request, response);
  }
  grpc::Status TableStats(grpc::ServerContext* c,
                          const TableStatsRequest* request,
                          TableStatsResponse* response) override {
    return HandleTableStats(c, request, response);
  }
  grpc::Status GetRows(grpc::ServerContext* c, const GetRowsRequest* request,
                       GetRowsResponse* response) override {
    return HandleGetRows(c, request, response);
  }
  grpc::Status Checkpoint(grpc::ServerContext* c,
                          const CheckpointRequest* request,
                          CheckpointResponse* response) override {
    return HandleCheckpoint(c, request, response);
  }
  grpc::Status Restore(grpc::ServerContext* c, const RestoreRequest* request,
                       RestoreResponse* response) override {
    return HandleRestore(c, request, response);
  }
  grpc::Status ListCheckpoints(grpc::ServerContext* c,
                               const ListCheckpointsRequest* request,
                               ListCheckpointsResponse* response) override {
    return HandleListCheckpoints(c, request, response);
  }
  grpc::Status DeleteCheckpoint(grpc::ServerContext* c,
                                const DeleteCheckpointRequest* request,
                                DeleteCheckpointResponse* response) override {
    return HandleDeleteCheckpoint(c, request, response);
  }
  grpc::Status DropTable(grpc::ServerContext* c,
                         const DropTableRequest* request,
                         DropTableResponse* response) override {
    return HandleDropTable(c, request, response);
  }

 private:
  using Keys = google::protobuf::RepeatedField<uint64_t>;

  enum Method {
    kPull, kPush, kUpsert, kCreateTable, kListTables, kTableStats, kGetRows,
    kCheckpoint, kRestore, kListCheckpoints, kDeleteCheckpoint, kDropTable,
    kNumMethods
  };
  // Metric objects, resolved once in the constructor (defined in service.cc).
  struct Instruments;

  // Checks the caller's role for `method` (Options::authorizer), runs
  // `handler`, makes its error fit to send (ClientStatus) and records the
  // call in the metrics (if any): count, latency, error code, and `keys`
  // when it succeeded.
  grpc::Status Observe(Method method, int keys,
                       const grpc::ServerContextBase& context,
                       absl::FunctionRef<grpc::Status()> handler);
  // `status` as a client may see it (see the file comment); logs what it
  // leaves out.
  grpc::Status ClientStatus(Method method, const grpc::Status& status) const;
  // `path` relative to Options::data_dir; empty when it is not under it.
  std::string RelativePath(const std::string& path) const;

  // Pull's engine under Observe: the checks, admission and the store read.
  // `rows(dim)` returns where keys_size() rows of `dim` floats go; it is
  // called at most once, after the checks, under the store's lock. With
  // `keep_lease`, the call's lease is moved to *keep_lease before `rows`
  // is called (for `rows` to keep it as long as the answer's memory lives);
  // without, it is released when this returns.
  grpc::Status ServePull(grpc::ServerContextBase* context,
                         const PullRequest& request,
                         absl::FunctionRef<float*(uint32_t dim)> rows,
                         std::vector<uint32_t>* missing,
                         std::optional<InflightLease>* keep_lease = nullptr);

  // RESOURCE_EXHAUSTED for too many keys, FAILED_PRECONDITION for the first
  // key this shard does not own.
  absl::Status CheckKeys(const Keys& keys) const;
  // Dim of `table` after checking that `bytes` holds keys.size() rows of it.
  absl::StatusOr<uint32_t> CheckRows(const std::string& table,
                                     const Keys& keys,
                                     const std::string& bytes,
                                     const char* field) const;
  // RESOURCE_EXHAUSTED when the answer may exceed max_response_bytes
  // (`bytes` its bound, ps/limits.h).
  absl::Status CheckResponseSize(Method method, const Keys& keys,
                                 uint32_t dim, size_t bytes) const;
  // Reserves `bytes` of Options::max_inflight_bytes for a call until the
  // returned lease is destroyed; RESOURCE_EXHAUSTED when it does not fit.
  absl::StatusOr<InflightLease> Admit(Method method, size_t bytes);
  absl::StatusOr<InflightLease> AdmitBytes(absl::string_view method,
                                           size_t bytes);
  // INVALID_ARGUMENT quoting `name` capped when it is longer than any
  // valid table (or checkpoint) name, so no later message quotes it whole.
  static absl::Status CheckTableName(const std::string& name);
  static absl::Status CheckCheckpointName(const std::string& name);

  // Runs `run` for the admin call `request_id` once (0: every time): a
  // repeat of one that succeeded gets its response (`response` overwritten
  // with the stored bytes); one of a call still running, UNAVAILABLE; one
  // of a call that failed (which changed nothing) runs again. The last
  // kRememberedAnswers answers are kept.
  grpc::Status Once(uint64_t request_id, absl::string_view what,
                    google::protobuf::Message* response,
                    absl::FunctionRef<grpc::Status()> run);
  static constexpr size_t kRememberedAnswers = 256;
  struct Answer {
    bool done = false;
    std::string response;  // serialized, once done
  };

  embedding::EmbeddingStore* const store_;
  const Options options_;
  absl::Mutex answers_mu_;
  absl::flat_hash_map<uint64_t, Answer> answers_ ABSL_GUARDED_BY(answers_mu_);
  std::deque<uint64_t> answer_order_ ABSL_GUARDED_BY(answers_mu_);
  // Options::data_dir as given, absolute and canonical, longest first.
  std::vector<std::string> data_dir_forms_;
  // Shared with the Pull answers still in gRPC's hands (HandlePullWire),
  // which may be freed after this service is gone.
  const std::shared_ptr<InflightBytes> inflight_;
  std::atomic<uint64_t> tagged_pushes_applied_{0};
  std::atomic<bool> drop_answer_delayed_{false};
  // Null when Options::metrics is null.
  std::unique_ptr<Instruments> instruments_;
};

}  // namespace mim::ps

#endif  // MIM_PS_SERVICE_H_
