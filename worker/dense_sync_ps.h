// DenseSync with the dense parameters on the shards, shared by data-parallel
// workers: each step fetches them, computes, and pushes the dense gradient
// to the shards' Adam table (PsDenseParams, trainer_sync.h, describes the
// scheme and its staleness).
#ifndef MIM_WORKER_DENSE_SYNC_PS_H_
#define MIM_WORKER_DENSE_SYNC_PS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ps/client.h"
#include "worker/dense_sync.h"
#include "worker/trainer_sync.h"

namespace mim::worker {

// Not thread-safe (owned by the training loop; the client is shared).
class PsDenseSync final : public DenseSync {
 public:
  // Creates (if_not_exists) the Adam table `table` on the shards with the
  // model's Adam settings; the model's current dense params (read, not
  // changed) are the seed-deterministic initial vector every worker
  // shares. Errors as PsDenseParams::Create.
  static absl::StatusOr<std::unique_ptr<PsDenseSync>> Create(
      ps::PsClient* client, const std::string& table,
      model::CiubmModel* model, uint64_t seed);

  // Fetch, ForwardBackward, PushGradient; a push in doubt is counted.
  absl::Status Step(const model::Batch& batch, model::CiubmModel* model,
                    float* loss, std::vector<float>* grad_id) override;
  // Fetches the parameters as the shards hold them after every push.
  absl::Status Finish(model::CiubmModel* model) override;
  int64_t pushes_in_doubt() const override { return pushes_in_doubt_; }
  absl::string_view name() const override { return "ps"; }

 private:
  explicit PsDenseSync(std::unique_ptr<PsDenseParams> params);

  std::unique_ptr<PsDenseParams> params_;
  std::vector<float> grad_dense_;  // reused across steps
  int64_t pushes_in_doubt_ = 0;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_DENSE_SYNC_PS_H_
