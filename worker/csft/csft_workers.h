// Data-parallel C-SFT workers that share everything through the shards
// they already reach (WorkerGroup, csft_trainer.h): N csft processes with
// the same inputs and flags and --worker_index 0..N-1.
//
// Tables, under one prefix (P):
//   P_exchange: a CONTENT table of dim + 3 floats per row. Row
//     w * 2^24 + s holds worker w's s-th positive of its latest step: the
//     item's h_MM, then its id in three 21-bit parts (exact in float);
//     the row version is (generation << 32) | (step + 1). Row 2^40 + w
//     counts worker w's runs over the prefix (its version) and holds its
//     inputs fingerprint (63 bits in three 21-bit parts); row 2^41 + w
//     says which epoch worker w finished (version (generation << 32) |
//     epoch, and epoch 0xfffffffe once it is done with the parameters:
//     Finished); row 2^42 is worker 0's decision after each epoch (version
//     (generation << 32) | (epoch << 1) | stop, or (generation << 32) |
//     0xffffffff when worker 0 ended the run).
//   P_dense_g<generation>: the encoder's parameters as PsDenseParams
//     (trainer_sync.h: an Adam table of 64-float chunks added to the
//     seeded initial vector every worker builds alike), a fresh table per
//     run, so a run never starts from an earlier run's parameters (Create
//     refuses one that holds rows already); worker 0 drops it when the run
//     ends well (DropRunTable).
// The generation is a worker's own run count + 1: workers of one run have
// taken part in the same earlier runs over the prefix, so they agree on
// it without talking (as nccl_id_exchange.h does); an earlier run's rows
// (an older generation) are never read as this run's.
//
// Steps are asynchronous, as the trainer's data-parallel workers are: a
// worker computes on the parameters as the shards hold them when its step
// starts, and takes the other workers' positives of the steps within
// `staleness` of its own (whatever they last published; none before they
// publish). So a run of several workers is not reproducible to the bit.
// Epochs are synchronous: worker 0 evaluates once every worker finished
// the epoch, and every worker waits for its decision. At the start worker
// 0 also compares every worker's inputs fingerprint (kept in its count
// row) with its own. When worker 0 gives up (a worker missing, at another
// generation, or with other inputs) it publishes an abort, and the others
// end ABORTED instead of waiting out their timeout. A wait gives up
// after `timeout` with DEADLINE_EXCEEDED naming the workers missing. The
// start is an epoch too (epoch 0): no worker steps before all are up.
#ifndef MIM_WORKER_CSFT_CSFT_WORKERS_H_
#define MIM_WORKER_CSFT_CSFT_WORKERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ps/client.h"
#include "worker/csft/csft_trainer.h"
#include "worker/trainer_sync.h"

namespace mim::csft {

struct PsWorkerGroupOptions {
  int num_workers = 1;
  int worker_index = 0;
  std::string prefix = "csft_workers";
  int dim = 0;             // h_MM dim
  int max_positives = 0;   // per step (the batch size)
  int64_t staleness = 32;  // steps (of this worker and the other)
  float learning_rate = 3e-4f;  // the shared Adam's
  // Of this worker's inputs (training pairs, catalogue, options: see
  // csft_main.cc); worker 0 refuses to start with a worker whose differs.
  uint64_t fingerprint = 0;
  absl::Duration timeout = absl::Minutes(10);
  absl::Duration poll = absl::Milliseconds(10);
};

// What every worker of a group must share, as one 64-bit FNV-1a value:
// the catalogue (ids, features, genres, interaction counts), the training
// pairs in order and every option that shapes the batches or the model.
// PsWorkerGroupOptions::fingerprint.
uint64_t WorkerInputsFingerprint(const Catalog& catalog,
                                 const std::vector<InterestPair>& train,
                                 const CsftOptions& options);

// Not thread-safe (one training loop); the client may be shared.
class PsWorkerGroup final : public WorkerGroup {
 public:
  // Creates the tables (if_not_exists) and this run's generation.
  // `initial` is the encoder's seeded parameters (the same on every
  // worker). INVALID_ARGUMENT for bad options; FAILED_PRECONDITION when
  // worker 0's decision row is at this worker's generation or later
  // (earlier runs' workers did not all start: use a new prefix) or when
  // another process took this worker's count at the same time; the
  // client's errors. A worker at another generation than worker 0's is
  // found by worker 0's AwaitEpoch (FAILED_PRECONDITION naming both).
  static absl::StatusOr<std::unique_ptr<PsWorkerGroup>> Create(
      ps::PsClient* client, const PsWorkerGroupOptions& options,
      std::vector<float> initial, uint64_t seed);

  int num_workers() const override { return options_.num_workers; }
  int worker_index() const override { return options_.worker_index; }
  absl::Status FetchParams(std::vector<float>* params) override;
  // A push in doubt (ps::IsPushInDoubt) is resent at once
  // (ps::PsClient::ResolvePushesInDoubt); the error names the worker and
  // the table when that fails too.
  absl::Status PushGradient(absl::Span<const float> gradient) override;
  absl::Status ExchangePositives(int64_t step, absl::Span<const int64_t> ids,
                                 absl::Span<const float> vectors,
                                 std::vector<int64_t>* peer_ids,
                                 std::vector<float>* peer_vectors) override;
  absl::Status EndEpoch(int epoch) override;
  absl::Status AwaitEpoch(int epoch) override;
  absl::Status Decide(int epoch, bool stop) override;
  absl::StatusOr<bool> AwaitDecision(int epoch) override;
  absl::Status Finished() override;

  // Worker 0, once the run has ended well: waits (up to the timeout) until
  // every other worker is Finished, then drops this run's parameter table,
  // which no later run reads (each run has its own). Returns the rows
  // dropped; DEADLINE_EXCEEDED naming the workers not done (the table is
  // kept). A run that fails keeps its table for inspection (drop it with
  // ps_admin drop-table). FAILED_PRECONDITION on another worker.
  absl::StatusOr<uint64_t> DropRunTable();

  uint64_t generation() const { return generation_; }
  // Other workers' rows of this run left out by the staleness bound.
  int64_t rows_too_old() const { return rows_too_old_; }
  int64_t rows_too_new() const { return rows_too_new_; }
  const std::string& exchange_table() const { return exchange_table_; }
  const std::string& dense_table() const { return params_->table(); }

 private:
  PsWorkerGroup(ps::PsClient* client, const PsWorkerGroupOptions& options,
                uint64_t generation);

  absl::Status WriteControl(uint64_t key, uint64_t version);
  // Waits (up to the timeout) until every worker's epoch row of this
  // generation has at least `low` in its version's low half; returns the
  // workers still below it (empty: all there). A worker at a later
  // generation passes with `later_generation_passes`, else it is
  // FAILED_PRECONDITION.
  absl::StatusOr<std::vector<int>> AwaitEpochRows(uint64_t low,
                                                  bool later_generation_passes);
  // Worker 0: publishes that the run ends (the others' AwaitDecision then
  // returns ABORTED) and returns `why`.
  absl::Status Abort(const absl::Status& why);

  ps::PsClient* client_;
  PsWorkerGroupOptions options_;
  uint64_t generation_;
  std::string exchange_table_;
  std::unique_ptr<worker::PsDenseParams> params_;
  std::vector<uint64_t> peer_keys_;  // every other worker's slots
  std::vector<float> row_buffer_;
  int64_t rows_too_old_ = 0, rows_too_new_ = 0;
};

}  // namespace mim::csft

#endif  // MIM_WORKER_CSFT_CSFT_WORKERS_H_
