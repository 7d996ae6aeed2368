// DenseSync over NCCL: data-parallel GPU workers (--device=cuda) each hold
// the dense parameters on their device and keep them equal by averaging
// the dense gradient with an all-reduce every step, then taking the same
// Adam step (synchronous data parallelism; the sparse ID rows still go
// through the shards). The NCCL unique id comes from worker 0 through the
// shards (nccl_id_exchange.h).
#ifndef MIM_WORKER_DENSE_SYNC_NCCL_H_
#define MIM_WORKER_DENSE_SYNC_NCCL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/collective.h"
#include "ps/client.h"
#include "worker/dense_sync.h"
#include "worker/nccl_id_exchange.h"

namespace mim::worker {

// Not thread-safe (owned by the training loop).
class NcclDenseSync final : public DenseSync {
 public:
  // Exchanges the NCCL id through `id_table` on the shards and joins the
  // group of `num_workers`. The workers start from equal dense params
  // because the initialisation is seeded (--seed) and the trainer refuses
  // a warm start with more than one worker. UNIMPLEMENTED in
  // a build without NCCL (the default build, the emulated trainer);
  // FAILED_PRECONDITION when `model` does not compute on a device; else
  // the exchange's and NCCL's errors.
  static absl::StatusOr<std::unique_ptr<NcclDenseSync>> Create(
      ps::PsClient* client, const std::string& id_table, int num_workers,
      int worker_index, model::CiubmModel* model,
      const NcclIdExchangeOptions& options = {});

  // ForwardBackward, all-reduce (mean) of the dense gradient on the
  // device, one Adam step with it. Every worker must call Step the same
  // number of times (the all-reduce waits for all of them): the trainer's
  // pipeline gives each worker an equal share of batches per epoch.
  absl::Status Step(const model::Batch& batch, model::CiubmModel* model,
                    float* loss, std::vector<float>* grad_id) override;
  // Nothing to do: every worker holds the same trained parameters.
  absl::Status Finish(model::CiubmModel* model) override;
  int64_t pushes_in_doubt() const override { return 0; }
  absl::string_view name() const override { return "nccl"; }

 private:
  explicit NcclDenseSync(std::unique_ptr<kernels::DeviceCollective> group);

  std::unique_ptr<kernels::DeviceCollective> group_;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_DENSE_SYNC_NCCL_H_
