#include "worker/dense_sync_nccl.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace mim::worker {

NcclDenseSync::NcclDenseSync(std::unique_ptr<kernels::DeviceCollective> group)
    : group_(std::move(group)) {}

absl::StatusOr<std::unique_ptr<NcclDenseSync>> NcclDenseSync::Create(
    ps::PsClient* client, const std::string& id_table, int num_workers,
    int worker_index, model::CiubmModel* model,
    const NcclIdExchangeOptions& options) {
  if (model->backend().host_memory()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--dense_params=nccl needs the model on a GPU (--device=cuda); it "
        "computes on '", model->backend().name(), "'"));
  }
  MIM_ASSIGN_OR_RETURN(
      const std::string id,
      ExchangeNcclId(client, id_table, num_workers, worker_index,
                     kernels::NewCollectiveId, options));
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<kernels::DeviceCollective> group,
      kernels::JoinCollective(id, worker_index, num_workers));
  return std::unique_ptr<NcclDenseSync>(new NcclDenseSync(std::move(group)));
}

absl::Status NcclDenseSync::Step(const model::Batch& batch,
                                 model::CiubmModel* model, float* loss,
                                 std::vector<float>* grad_id) {
  MIM_RETURN_IF_ERROR(model->ForwardBackward(batch, loss, grad_id, nullptr));
  MIM_RETURN_IF_ERROR(group_->AllReduceMean(model->backend_dense_gradients(),
                                            model->num_dense_params()));
  return model->ApplyBackendDenseGradients();
}

absl::Status NcclDenseSync::Finish(model::CiubmModel*) {
  return absl::OkStatus();
}

}  // namespace mim::worker
