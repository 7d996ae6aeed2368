// DenseSync with the dense parameters in the model: one worker, Adam in
// CiubmModel::TrainStep, no round trip per step.
#ifndef MIM_WORKER_DENSE_SYNC_LOCAL_H_
#define MIM_WORKER_DENSE_SYNC_LOCAL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "worker/dense_sync.h"

namespace mim::worker {

// Step is model->TrainStep; Finish has nothing to do (the model holds the
// trained parameters); no update is ever in doubt. Not thread-safe.
class LocalDenseSync final : public DenseSync {
 public:
  absl::Status Step(const model::Batch& batch, model::CiubmModel* model,
                    float* loss, std::vector<float>* grad_id) override;
  absl::Status Finish(model::CiubmModel* model) override;
  int64_t pushes_in_doubt() const override { return 0; }
  absl::string_view name() const override { return "local"; }
};

}  // namespace mim::worker

#endif  // MIM_WORKER_DENSE_SYNC_LOCAL_H_
