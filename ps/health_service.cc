#include "ps/health_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ps/status_convert.h"

namespace mim::ps {

HealthService::HealthService(std::vector<std::string> services,
                             const base::Authorizer* authorizer)
    : services_(std::move(services)), authorizer_(authorizer) {}

grpc::ServerUnaryReactor* HealthService::Check(
    grpc::CallbackServerContext* context,
    const grpc::health::v1::HealthCheckRequest* request,
    grpc::health::v1::HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Answer(*context, *request, response));
  return reactor;
}

grpc::Status HealthService::Answer(
    const grpc::ServerContextBase& context,
    const grpc::health::v1::HealthCheckRequest& request,
    grpc::health::v1::HealthCheckResponse* response) const {
  if (authorizer_ != nullptr) {
    absl::Status s =
        authorizer_->Check(context, base::Role::kRead, "Health.Check");
    if (!s.ok()) return ToGrpcStatus(s);
  }
  const std::string& service = request.service();
  if (!service.empty() &&
      std::find(services_.begin(), services_.end(), service) ==
          services_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no service named '", QuoteInput(service),
                                     "' on this server"));
  }
  response->set_status(
      serving_.load() ? grpc::health::v1::HealthCheckResponse::SERVING
                      : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  return grpc::Status::OK;
}

}  // namespace mim::ps
