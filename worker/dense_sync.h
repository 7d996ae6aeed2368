// Where a training step's dense update goes: the one interface between the
// trainer's step loop and the ways of keeping dense parameters in step.
//
// Implementations, one file each:
//   LocalDenseSync (dense_sync_local.h): Adam in the model, one worker.
//   PsDenseSync (dense_sync_ps.h): a shared Adam table on the shards,
//     data-parallel workers (PsDenseParams, trainer_sync.h).
//   NcclDenseSync (dense_sync_nccl.h): each GPU worker's own copy, the
//     dense gradient all-reduced with NCCL every step.
// A new mode is a new implementation in its own file plus one case where
// the trainer chooses it (CreateDenseSync in trainer.cc); the step loop
// does not change.
#ifndef MIM_WORKER_DENSE_SYNC_H_
#define MIM_WORKER_DENSE_SYNC_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"

namespace mim::worker {

// Contract every implementation meets:
//  1. Step(batch, model, ...) runs one training step of `model` on `batch`:
//     it brings model->dense_params() to the parameters this worker is to
//     compute on, runs ForwardBackward, and applies or hands over the dense
//     update, each at most once. On success *loss is the batch's mean loss
//     and *grad_id its per-unique-row ID gradients (CiubmModel::
//     ForwardBackward's layout); the ID rows are the caller's to push.
//  2. An update that may or may not have arrived (ps::IsPushInDoubt) is not
//     an error: Step logs it, counts it in pushes_in_doubt() and succeeds.
//     The client keeps it and the trainer resends it (ps::PsClient::
//     ResolvePushesInDoubt) with its next ID pushes and at the end.
//     Any other error is returned and ends the run; the model's dense state
//     is then unspecified.
//  3. Finish(model), called on the evaluating worker once every worker has
//     made its last Step, leaves model->dense_params() holding the trained
//     parameters, so that evaluation and Save see them. Errors as Step.
//  4. name() is the mode's name in reports and the model manifest.
//  5. EndEpoch(model) is called by every worker after its last Step of an
//     epoch (workers may have one batch more or less than others); a mode
//     whose Step waits for every worker (an all-reduce) takes part there
//     in the rounds of the workers that still step. Errors as Step.
// Not thread-safe: owned and called by the training loop.
class DenseSync {
 public:
  virtual ~DenseSync() = default;

  virtual absl::Status Step(const model::Batch& batch,
                            model::CiubmModel* model, float* loss,
                            std::vector<float>* grad_id) = 0;

  virtual absl::Status Finish(model::CiubmModel* model) = 0;

  virtual absl::Status EndEpoch(model::CiubmModel* model) {
    (void)model;
    return absl::OkStatus();
  }

  // Dense updates in doubt so far (contract 2).
  virtual int64_t pushes_in_doubt() const = 0;

  virtual absl::string_view name() const = 0;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_DENSE_SYNC_H_
