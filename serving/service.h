// The gRPC edge of the serving tier: PredictionService (proto/serving.proto)
// over a Predictor, on gRPC's callback API. A handler parses the request
// and hands the work to an Executor (bounded queue, fixed threads), so no
// gRPC thread blocks on the shards; the work calls the Predictor with the
// caller's deadline and finishes the call with the converted status. A
// request that waits past its deadline gets DEADLINE_EXCEEDED; a full queue
// RESOURCE_EXHAUSTED. Each call is counted and timed in base::Metrics
// (mim_serving_requests_total by method and code,
// mim_serving_request_seconds by method, mim_serving_queue_length).
//
// With an Authorizer every call's token is checked first (base/grpc_auth.h):
// Predict and GetStatus need the read role, UpsertItem (it writes to the
// content table) the admin role; a refused call (UNAUTHENTICATED,
// PERMISSION_DENIED) is not queued and changes nothing. INTERNAL, DATA_LOSS
// and UNKNOWN errors reach the client as "<Method> failed: ..." with the
// full message in the server's log.
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_SERVING_SERVICE_H_
#define MIM_SERVING_SERVICE_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "base/grpc_auth.h"
#include "base/metrics.h"
#include "proto/serving.grpc.pb.h"
#include "serving/model_manager.h"
#include "base/executor.h"
#include "serving/predictor.h"
#include "serving/row_cache.h"

namespace mim::serving {

// PredictRequest -> PredictInput. INVALID_ARGUMENT naming the field for an
// unknown user feature or a value out of int32 range (bounds and signs are
// checked by Predictor::ValidatePredictInput).
absl::StatusOr<PredictInput> PredictInputFromProto(
    const PredictRequest& request);

class PredictionServiceImpl final
    : public PredictionService::CallbackService {
 public:
  // Everything must outlive the service. `metrics` may be null;
  // `authorizer` null: authentication off.
  PredictionServiceImpl(Predictor* predictor, ModelManager* models,
                        RowCache* cache, base::Executor* executor,
                        base::Metrics* metrics,
                        const base::Authorizer* authorizer = nullptr);
  ~PredictionServiceImpl() override;

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const PredictRequest* request,
                                    PredictResponse* response) override;
  grpc::ServerUnaryReactor* UpsertItem(grpc::CallbackServerContext* context,
                                       const UpsertItemRequest* request,
                                       UpsertItemResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const GetStatusRequest* request,
                                      GetStatusResponse* response) override;

 private:
  enum Method { kPredict = 0, kUpsertItem = 1, kGetStatus = 2, kNumMethods };
  // OK when the call's token allows `method` (or there is no authorizer).
  absl::Status Authorize(Method method,
                         const grpc::CallbackServerContext& context) const;
  // Finishes the call through `reactor` with `status`, recording metrics.
  void Finish(Method method, absl::Time start, grpc::ServerUnaryReactor* reactor,
              const absl::Status& status);
  // Runs `work` on the executor within the call's deadline; the reactor is
  // finished with work's status, or with the executor's refusal.
  grpc::ServerUnaryReactor* Dispatch(
      Method method, grpc::CallbackServerContext* context,
      std::function<absl::Status()> work);

  Predictor* const predictor_;
  ModelManager* const models_;
  RowCache* const cache_;
  base::Executor* const executor_;
  base::Metrics* const metrics_;
  const base::Authorizer* const authorizer_;
  int64_t scrape_callback_ = -1;
  prometheus::Histogram* seconds_[kNumMethods] = {};
  std::atomic<int64_t> requests_{0};
};

}  // namespace mim::serving

#endif  // MIM_SERVING_SERVICE_H_
