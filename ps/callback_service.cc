#include "ps/callback_service.h"

#include <chrono>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ps/status_convert.h"

namespace mim::ps {
namespace {

// The call's deadline; InfiniteFuture when the client set none.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

template <typename Run>
grpc::ServerUnaryReactor* ShardCallbackService::Enqueue(
    grpc::CallbackServerContext* context, absl::string_view what,
    size_t request_bytes, Run run) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ParameterServerService* handlers = handlers_;
  const auto refuse = [reactor, handlers, what](const grpc::Status& status) {
    handlers->RecordRefused(what, status);
    reactor->Finish(status);
  };
  // A caller without the role takes no queue place and no bytes.
  if (grpc::Status caller = handlers_->CheckCallerEarly(what, *context);
      !caller.ok()) {
    refuse(caller);
    return reactor;
  }
  // The parsed request's memory counts while it waits (dropped as the
  // handler starts, which reserves what it needs itself).
  absl::StatusOr<ParameterServerService::InflightLease> waiting =
      handlers_->AdmitQueued(what, request_bytes);
  if (!waiting.ok()) {
    refuse(ToGrpcStatus(waiting.status()));
    return reactor;
  }
  using Hold = std::optional<ParameterServerService::InflightLease>;
  auto hold = std::make_shared<Hold>(std::move(*waiting));
  absl::Status queued = executor_->Submit(
      DeadlineOf(*context), [refuse, reactor, hold, run = std::move(run)](
                                const absl::Status& admitted) {
        hold->reset();
        if (!admitted.ok()) {
          refuse(ToGrpcStatus(admitted));  // its deadline passed waiting
          return;
        }
        reactor->Finish(run());
      });
  // A full queue ran nothing: the caller may send the call again.
  if (!queued.ok()) refuse(ToGrpcStatus(MarkRetryLater(queued)));
  return reactor;
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* ShardCallbackService::Queue(
    grpc::CallbackServerContext* context, const Request* request,
    Response* response, Handler<Request, Response> handler) {
  return Enqueue(context, Request::descriptor()->name(),
                 request->ByteSizeLong(),
                 [this, context, request, response, handler] {
                   return (handlers_->*handler)(context, request, response);
                 });
}

grpc::Status ShardCallbackService::PullNow(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) {
  grpc::ByteBuffer bytes(*request);  // shares the slices
  PullRequest pull;
  if (!grpc::SerializationTraits<PullRequest>::Deserialize(&bytes, &pull)
           .ok()) {
    // Without the role, the caller learns that and nothing more.
    grpc::Status refused =
        handlers_->CheckCallerEarly("PullRequest", *context);
    if (refused.ok()) {
      refused = grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("Pull request of ", request->Length(),
                       " bytes is not a mim.ps.PullRequest"));
    }
    handlers_->RecordRefused("PullRequest", refused);
    return refused;
  }
  return handlers_->HandlePullWire(context, &pull, response);
}

grpc::ServerUnaryReactor* ShardCallbackService::Pull(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (request->Length() <= inline_pull_bytes_) {
    // Nothing waits, so nothing is held for waiting; the handler reserves
    // its answer's bytes itself.
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(PullNow(context, request, response));
    return reactor;
  }
  return Enqueue(context, "PullRequest", request->Length(),
                 [this, context, request, response]() -> grpc::Status {
                   // Parsed here, not on gRPC's thread.
                   return PullNow(context, request, response);
                 });
}

grpc::ServerUnaryReactor* ShardCallbackService::Push(
    grpc::CallbackServerContext* context, const PushRequest* request,
    PushResponse* response) {
  return Queue(context, request, response, &ParameterServerService::HandlePush);
}

grpc::ServerUnaryReactor* ShardCallbackService::Upsert(
    grpc::CallbackServerContext* context, const UpsertRequest* request,
    UpsertResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleUpsert);
}

grpc::ServerUnaryReactor* ShardCallbackService::CreateTable(
    grpc::CallbackServerContext* context, const CreateTableRequest* request,
    CreateTableResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleCreateTable);
}

grpc::ServerUnaryReactor* ShardCallbackService::ListTables(
    grpc::CallbackServerContext* context, const ListTablesRequest* request,
    ListTablesResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleListTables);
}

grpc::ServerUnaryReactor* ShardCallbackService::TableStats(
    grpc::CallbackServerContext* context, const TableStatsRequest* request,
    TableStatsResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleTableStats);
}

grpc::ServerUnaryReactor* ShardCallbackService::GetRows(
    grpc::CallbackServerContext* context, const GetRowsRequest* request,
    GetRowsResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleGetRows);
}

grpc::ServerUnaryReactor* ShardCallbackService::Checkpoint(
    grpc::CallbackServerContext* context, const CheckpointRequest* request,
    CheckpointResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleCheckpoint);
}

grpc::ServerUnaryReactor* ShardCallbackService::Restore(
    grpc::CallbackServerContext* context, const RestoreRequest* request,
    RestoreResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleRestore);
}

grpc::ServerUnaryReactor* ShardCallbackService::ListCheckpoints(
    grpc::CallbackServerContext* context,
    const ListCheckpointsRequest* request,
    ListCheckpointsResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleListCheckpoints);
}

grpc::ServerUnaryReactor* ShardCallbackService::DeleteCheckpoint(
    grpc::CallbackServerContext* context,
    const DeleteCheckpointRequest* request,
    DeleteCheckpointResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleDeleteCheckpoint);
}

grpc::ServerUnaryReactor* ShardCallbackService::DropTable(
    grpc::CallbackServerContext* context, const DropTableRequest* request,
    DropTableResponse* response) {
  return Queue(context, request, response,
               &ParameterServerService::HandleDropTable);
}

}  // namespace mim::ps
