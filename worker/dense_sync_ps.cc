#include "worker/dense_sync_ps.h"

#include <utility>

#include "base/status_macros.h"
#include "glog/logging.h"
#include "kernels/dense_ops.h"

namespace mim::worker {

PsDenseSync::PsDenseSync(std::unique_ptr<PsDenseParams> params)
    : params_(std::move(params)) {}

absl::StatusOr<std::unique_ptr<PsDenseSync>> PsDenseSync::Create(
    ps::PsClient* client, const std::string& table, model::CiubmModel* model,
    uint64_t seed) {
  const kernels::AdamConfig& config = model->config().adam;
  PsDenseParams::AdamOptions adam;
  adam.learning_rate = config.learning_rate;
  adam.beta1 = config.beta1;
  adam.beta2 = config.beta2;
  adam.epsilon = config.epsilon;
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<PsDenseParams> params,
      PsDenseParams::Create(client, table, model->dense_params(), adam, seed));
  return std::unique_ptr<PsDenseSync>(new PsDenseSync(std::move(params)));
}

absl::Status PsDenseSync::Step(const model::Batch& batch,
                               model::CiubmModel* model, float* loss,
                               std::vector<float>* grad_id) {
  MIM_RETURN_IF_ERROR(params_->Fetch(&model->dense_params()));
  MIM_RETURN_IF_ERROR(
      model->ForwardBackward(batch, loss, grad_id, &grad_dense_));
  const absl::Status pushed = params_->PushGradient(grad_dense_);
  if (ps::IsPushInDoubt(pushed)) {
    LOG(WARNING) << "dense gradient push in doubt; the trainer resends it with its next ID pushes: " << pushed;
    ++pushes_in_doubt_;
    return absl::OkStatus();
  }
  return pushed;
}

absl::Status PsDenseSync::Finish(model::CiubmModel* model) {
  return params_->Fetch(&model->dense_params());
}

}  // namespace mim::worker
