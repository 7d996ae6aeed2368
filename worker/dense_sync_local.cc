#include "worker/dense_sync_local.h"

namespace mim::worker {

absl::Status LocalDenseSync::Step(const model::Batch& batch,
                                  model::CiubmModel* model, float* loss,
                                  std::vector<float>* grad_id) {
  return model->TrainStep(batch, loss, grad_id);
}

absl::Status LocalDenseSync::Finish(model::CiubmModel* /*model*/) {
  return absl::OkStatus();
}

}  // namespace mim::worker
