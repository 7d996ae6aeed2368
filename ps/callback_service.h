// ShardCallbackService: the shard binary's gRPC face, on gRPC's callback
// API. Each call is queued on an Executor (fixed threads, bounded queue)
// that runs ParameterServerService's handler for it, so no gRPC thread
// blocks in the store and no call is ever refused for want of a thread:
// a burst, or calls held up behind a long Checkpoint or Restore, wait in
// the queue within their own deadline. A call whose deadline passes while
// it waits gets DEADLINE_EXCEEDED; one that finds the queue full,
// RESOURCE_EXHAUSTED naming the queue (--max_queue). Both change nothing.
// The token check, the metrics and every other error are the handler's
// (ps/service.h).
//
// Pull is served raw: the request is parsed on the executor thread and the
// answer is the wire bytes of HandlePullWire (ps/pull_wire.h), rows
// written straight into the slice gRPC sends. The answer's bytes count
// against --max_inflight_mb until gRPC lets go of them (the call finished
// and the bytes written, or the call dropped), not only while the handler
// runs: a reader that does not take its answers holds the shard's budget,
// not memory beyond it. A request that is not a PullRequest gets
// INVALID_ARGUMENT naming its size. A small Pull (at most
// `inline_pull_keys` keys, judged by its size) runs on gRPC's own thread
// instead: it only reads rows in memory, a few microseconds of work, and
// the hop to the executor and back cost more than that
// (docs/BENCHMARKS.md, "gRPC's own ceiling").
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_PS_CALLBACK_SERVICE_H_
#define MIM_PS_CALLBACK_SERVICE_H_

#include <cstddef>

#include "absl/strings/string_view.h"
#include "base/executor.h"
#include "proto/ps.grpc.pb.h"
#include "ps/service.h"

namespace mim::ps {

class ShardCallbackService final
    : public ParameterServer::WithRawCallbackMethod_Pull<
          ParameterServer::CallbackService> {
 public:
  // `handlers` and `executor` must outlive the server this is registered
  // with (destroy the executor after the server, so that a call queued at
  // shutdown is still answered).
  // Pulls of at most `inline_pull_keys` keys run on gRPC's thread (0:
  // every call goes through the executor).
  ShardCallbackService(ParameterServerService* handlers,
                       base::Executor* executor, size_t inline_pull_keys = 0)
      : handlers_(handlers),
        executor_(executor),
        inline_pull_bytes_(inline_pull_keys == 0
                               ? 0
                               : 8 * inline_pull_keys + kPullOverheadBytes) {}

  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* context,
                                 const PushRequest* request,
                                 PushResponse* response) override;
  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* context,
                                   const UpsertRequest* request,
                                   UpsertResponse* response) override;
  grpc::ServerUnaryReactor* CreateTable(grpc::CallbackServerContext* context,
                                        const CreateTableRequest* request,
                                        CreateTableResponse* response) override;
  grpc::ServerUnaryReactor* ListTables(grpc::CallbackServerContext* context,
                                       const ListTablesRequest* request,
                                       ListTablesResponse* response) override;
  grpc::ServerUnaryReactor* TableStats(grpc::CallbackServerContext* context,
                                       const TableStatsRequest* request,
                                       TableStatsResponse* response) override;
  grpc::ServerUnaryReactor* GetRows(grpc::CallbackServerContext* context,
                                    const GetRowsRequest* request,
                                    GetRowsResponse* response) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* context,
                                       const CheckpointRequest* request,
                                       CheckpointResponse* response) override;
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* context,
                                    const RestoreRequest* request,
                                    RestoreResponse* response) override;
  grpc::ServerUnaryReactor* ListCheckpoints(
      grpc::CallbackServerContext* context,
      const ListCheckpointsRequest* request,
      ListCheckpointsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteCheckpoint(
      grpc::CallbackServerContext* context,
      const DeleteCheckpointRequest* request,
      DeleteCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* DropTable(grpc::CallbackServerContext* context,
                                      const DropTableRequest* request,
                                      DropTableResponse* response) override;

 private:
  template <typename Request, typename Response>
  using Handler = grpc::Status (ParameterServerService::*)(
      grpc::ServerContextBase*, const Request*, Response*);

  // Queues `run` (returning the call's status) on the executor and returns
  // the call's reactor, finished by run's status or by a refusal: the
  // in-flight budget (the request's `request_bytes`, held while it waits,
  // named `what` in the error) or the executor's.
  template <typename Run>
  grpc::ServerUnaryReactor* Enqueue(grpc::CallbackServerContext* context,
                                    absl::string_view what,
                                    size_t request_bytes, Run run);

  // Enqueue for a generated handler of a parsed request.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Queue(grpc::CallbackServerContext* context,
                                  const Request* request, Response* response,
                                  Handler<Request, Response> handler);

  // Parses `request` as a PullRequest and runs HandlePullWire.
  grpc::Status PullNow(grpc::CallbackServerContext* context,
                       const grpc::ByteBuffer* request,
                       grpc::ByteBuffer* response);

  // A PullRequest's bytes beyond its keys' 8 each: the table name (at most
  // 128 bytes) and the field tags and lengths.
  static constexpr size_t kPullOverheadBytes = 160;

  ParameterServerService* const handlers_;
  base::Executor* const executor_;
  const size_t inline_pull_bytes_;  // 0: none inline
};

}  // namespace mim::ps

#endif  // MIM_PS_CALLBACK_SERVICE_H_
