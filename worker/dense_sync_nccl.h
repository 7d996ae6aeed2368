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
#include "absl/time/time.h"
#include "kernels/backend_buffer.h"
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
  // a warm start with more than one worker. `timeout` bounds the join and
  // every all-reduce (kernels::JoinCollective): a worker that died or hung
  // makes the others fail with DEADLINE_EXCEEDED naming the op, their rank
  // and the timeout (--nccl_timeout_s) instead of waiting forever.
  // UNIMPLEMENTED in a build without NCCL (the default build, the emulated
  // trainer); FAILED_PRECONDITION when `model` does not compute on a
  // device; else the exchange's and NCCL's errors.
  static absl::StatusOr<std::unique_ptr<NcclDenseSync>> Create(
      ps::PsClient* client, const std::string& id_table, int num_workers,
      int worker_index, model::CiubmModel* model, absl::Duration timeout,
      const NcclIdExchangeOptions& options = {});

  // Each round all-reduces a "still stepping" flag, then the dense
  // gradient (mean), then takes one Adam step with it on the device. Step:
  // a round with this worker's ForwardBackward gradient. EndEpoch: rounds
  // with a zero gradient while any other worker still steps (batches go
  // round-robin, so workers' counts differ by one), so that every worker
  // takes the same Adam steps and the parameters stay equal.
  absl::Status Step(const model::Batch& batch, model::CiubmModel* model,
                    float* loss, std::vector<float>* grad_id) override;
  absl::Status EndEpoch(model::CiubmModel* model) override;
  // Nothing to do: every worker holds the same trained parameters.
  absl::Status Finish(model::CiubmModel* model) override;
  int64_t pushes_in_doubt() const override { return 0; }
  absl::string_view name() const override { return "nccl"; }

 private:
  NcclDenseSync(std::unique_ptr<kernels::DeviceCollective> group,
                kernels::BackendArray<float> flag);

  // All-reduces `stepping` (1 or 0) and returns whether any worker steps.
  absl::StatusOr<bool> AnyStepping(const kernels::ComputeBackend& backend,
                                   bool stepping);
  // All-reduce of the model's dense gradient and the Adam step.
  absl::Status Reduce(model::CiubmModel* model);

  std::unique_ptr<kernels::DeviceCollective> group_;
  kernels::BackendArray<float> flag_;  // one float on the device
};

}  // namespace mim::worker

#endif  // MIM_WORKER_DENSE_SYNC_NCCL_H_
