// The grpc.health.v1 Health service of the shards and the serving tier.
//
// gRPC's built-in health service (EnableDefaultHealthCheckService) answers
// anyone; this one checks the caller's token first (role read), as every
// other RPC of these servers does. Check("") and Check(name) of a service
// the server registered answer SERVING until SetServing(false) (at
// shutdown), NOT_SERVING after; any other name is NOT_FOUND (the health
// protocol's rule). Watch is UNIMPLEMENTED (ps/health.proto). Check runs
// on gRPC's callback API (it never blocks), so it adds no threads to a
// sync server (the shards) nor a sync queue to a callback one (serving).
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_PS_HEALTH_SERVICE_H_
#define MIM_PS_HEALTH_SERVICE_H_

#include <atomic>
#include <string>
#include <vector>

#include "base/grpc_auth.h"
#include "ps/health.grpc.pb.h"

namespace mim::ps {

class HealthService final
    : public grpc::health::v1::Health::CallbackService {
 public:
  // `services`: the full names Check answers for besides "". `authorizer`
  // (null: authentication off) must outlive the service.
  HealthService(std::vector<std::string> services,
                const base::Authorizer* authorizer);

  void SetServing(bool serving) { serving_.store(serving); }

  // What Check answers (the reactor-free part, for the handler and tests).
  grpc::Status Answer(const grpc::ServerContextBase& context,
                      const grpc::health::v1::HealthCheckRequest& request,
                      grpc::health::v1::HealthCheckResponse* response) const;

  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;

 private:
  const std::vector<std::string> services_;
  const base::Authorizer* const authorizer_;
  std::atomic<bool> serving_{true};
};

}  // namespace mim::ps

#endif  // MIM_PS_HEALTH_SERVICE_H_
