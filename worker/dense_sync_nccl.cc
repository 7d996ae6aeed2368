#include "worker/dense_sync_nccl.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace mim::worker {
namespace {

// A collective that timed out names the flag that bounds it.
absl::Status NameTimeoutFlag(absl::Status st) {
  if (!absl::IsDeadlineExceeded(st)) return st;
  return absl::DeadlineExceededError(absl::StrCat(
      st.message(), "; raise --nccl_timeout_s if the workers are only slow"));
}

}  // namespace

NcclDenseSync::NcclDenseSync(std::unique_ptr<kernels::DeviceCollective> group,
                             kernels::BackendArray<float> flag)
    : group_(std::move(group)), flag_(std::move(flag)) {}

absl::StatusOr<std::unique_ptr<NcclDenseSync>> NcclDenseSync::Create(
    ps::PsClient* client, const std::string& id_table, int num_workers,
    int worker_index, model::CiubmModel* model, absl::Duration timeout,
    const NcclIdExchangeOptions& options) {
  const kernels::ComputeBackend& backend = model->backend();
  if (backend.host_memory()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--dense_params=nccl needs the model on a GPU (--device=cuda); it "
        "computes on '", backend.name(), "'"));
  }
  kernels::BackendArray<float> flag(&backend);
  MIM_RETURN_IF_ERROR(flag.Resize(1));
  MIM_ASSIGN_OR_RETURN(
      const std::string id,
      ExchangeNcclId(client, id_table, num_workers, worker_index,
                     kernels::NewCollectiveId, options));
  absl::StatusOr<std::unique_ptr<kernels::DeviceCollective>> group =
      kernels::JoinCollective(id, worker_index, num_workers, timeout);
  if (!group.ok()) return NameTimeoutFlag(group.status());
  return std::unique_ptr<NcclDenseSync>(
      new NcclDenseSync(std::move(*group), std::move(flag)));
}

absl::StatusOr<bool> NcclDenseSync::AnyStepping(
    const kernels::ComputeBackend& backend, bool stepping) {
  float v = stepping ? 1.0f : 0.0f;
  MIM_RETURN_IF_ERROR(backend.CopyToBackend(flag_.data(), &v, sizeof(v)));
  MIM_RETURN_IF_ERROR(NameTimeoutFlag(group_->AllReduceMean(flag_.data(), 1)));
  MIM_RETURN_IF_ERROR(backend.CopyToHost(&v, flag_.data(), sizeof(v)));
  return v > 0.0f;
}

absl::Status NcclDenseSync::Reduce(model::CiubmModel* model) {
  MIM_RETURN_IF_ERROR(NameTimeoutFlag(group_->AllReduceMean(
      model->backend_dense_gradients(), model->num_dense_params())));
  return model->ApplyBackendDenseGradients();
}

absl::Status NcclDenseSync::Step(const model::Batch& batch,
                                 model::CiubmModel* model, float* loss,
                                 std::vector<float>* grad_id) {
  MIM_RETURN_IF_ERROR(AnyStepping(model->backend(), true).status());
  MIM_RETURN_IF_ERROR(model->ForwardBackward(batch, loss, grad_id, nullptr));
  return Reduce(model);
}

absl::Status NcclDenseSync::EndEpoch(model::CiubmModel* model) {
  const kernels::ComputeBackend& backend = model->backend();
  while (true) {
    MIM_ASSIGN_OR_RETURN(const bool any, AnyStepping(backend, false));
    if (!any) return absl::OkStatus();
    MIM_RETURN_IF_ERROR(backend.Zero(
        model->backend_dense_gradients(),
        static_cast<size_t>(model->num_dense_params()) * sizeof(float)));
    MIM_RETURN_IF_ERROR(Reduce(model));
  }
}

absl::Status NcclDenseSync::Finish(model::CiubmModel*) {
  return absl::OkStatus();
}

}  // namespace mim::worker
