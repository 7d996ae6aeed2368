// The gRPC edge of the serving tier: PredictionService (proto/serving.proto)
// over a Predictor. Handlers parse and validate the request, call the
// Predictor with the caller's deadline, and convert the status; each call
// is counted and timed in base::Metrics (mim_serving_requests_total by
// method and code, mim_serving_request_seconds by method).
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_SERVING_SERVICE_H_
#define MIM_SERVING_SERVICE_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "base/metrics.h"
#include "proto/serving.grpc.pb.h"
#include "serving/model_manager.h"
#include "serving/predictor.h"
#include "serving/row_cache.h"

namespace mim::serving {

// PredictRequest -> PredictInput. INVALID_ARGUMENT naming the field for an
// unknown user feature or a value out of int32 range (bounds and signs are
// checked by Predictor::ValidatePredictInput).
absl::StatusOr<PredictInput> PredictInputFromProto(
    const PredictRequest& request);

class PredictionServiceImpl final : public PredictionService::Service {
 public:
  // Everything must outlive the service. `metrics` may be null.
  PredictionServiceImpl(Predictor* predictor, ModelManager* models,
                        RowCache* cache, base::Metrics* metrics);
  ~PredictionServiceImpl() override;

  grpc::Status Predict(grpc::ServerContext* context,
                       const PredictRequest* request,
                       PredictResponse* response) override;
  grpc::Status UpsertItem(grpc::ServerContext* context,
                          const UpsertItemRequest* request,
                          UpsertItemResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const GetStatusRequest* request,
                         GetStatusResponse* response) override;

 private:
  enum Method { kPredict = 0, kUpsertItem = 1, kGetStatus = 2, kNumMethods };
  grpc::Status Finish(Method method, absl::Time start,
                      const absl::Status& status);

  Predictor* const predictor_;
  ModelManager* const models_;
  RowCache* const cache_;
  base::Metrics* const metrics_;
  int64_t scrape_callback_ = -1;
  prometheus::Histogram* seconds_[kNumMethods] = {};
  std::atomic<int64_t> requests_{0};
};

}  // namespace mim::serving

#endif  // MIM_SERVING_SERVICE_H_
