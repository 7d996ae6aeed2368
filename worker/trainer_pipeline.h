// Turns a sample file into model batches with their parameter-server rows
// already pulled, optionally one batch ahead on a prefetch thread so that
// reading, key building and pulls overlap the caller's compute.
//
// Staleness, the same with prefetch on and off: batch k+1's rows are pulled
// after the consumer has taken batch k and before batch k's gradients
// are pushed, so a row shared by consecutive batches misses exactly batch
// k's push (one step) and includes every earlier one. Gradients handed over
// with PushAfter are pushed right before the pull of the batch after next:
// with prefetch on the prefetch thread, overlapping the compute of the next
// batch; without, on the caller's thread. Either way the shards see the
// same calls in the same order, so a run is bit-identical with prefetch on
// and off, and does not depend on which thread was faster. (Before, a push
// handed over while the prefetch thread was still reading went out before
// the next pull: the rows, and the run's metrics, depended on timing.)
// Pulling further ahead was measured to hurt: with a queue of two ready
// batches, two data-parallel workers lost 0.045 AUC on the synthetic data
// (rows up to ~6 global pushes old).
#ifndef MIM_WORKER_TRAINER_PIPELINE_H_
#define MIM_WORKER_TRAINER_PIPELINE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ps/client.h"
#include "worker/data/sample.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"

namespace mim::worker {

// Which samples of a file a pass uses, in file order.
struct SampleFilter {
  int64_t min_timestamp = std::numeric_limits<int64_t>::min();  // inclusive
  int64_t max_timestamp = std::numeric_limits<int64_t>::max();  // exclusive
  int64_t max_samples = 0;  // 0: no cap; else the first N that pass
  bool Accepts(const data::Sample& s) const {
    return s.timestamp >= min_timestamp && s.timestamp < max_timestamp;
  }
};

// A batch ready for the model, plus the keys its rows came from.
struct PreparedBatch {
  int64_t index = 0;  // Batch number in the pass (before worker striding).
  std::vector<data::Sample> samples;
  model::Batch batch;
  std::vector<uint64_t> id_keys;
  std::vector<uint64_t> content_keys;
};

// Options::target_id_dropout: sets target_idx[b] = -1 for the rows b of
// `batch` drawn with `probability`, each draw a pure function of (seed,
// batch_index, b). probability <= 0 changes nothing.
void DropTargetIds(double probability, uint64_t seed, int64_t batch_index,
                   model::Batch* batch);

// Removes from `batch` the ID rows no index of it refers to any more (a
// dropped target's row, unless a behaviour or another row uses it), and
// their keys from `id_keys` (id_keys[r] is row r's key), renumbering the
// indices of the rows kept in their order. So a dropped target is neither
// pulled nor pushed: it gets no zero-gradient push, which would create its
// row on the shard or move an existing row's optimizer state, as a row
// the batch does not use must not. Call before the rows are pulled
// (id_rows is resized to the rows kept, its values not kept).
void DropUnreferencedIdRows(model::Batch* batch, std::vector<uint64_t>* id_keys);

// Not thread-safe: one consumer calls Next; the prefetch thread is private.
class BatchPipeline {
 public:
  struct Options {
    std::string path;
    SampleFilter filter;
    int batch_size = 1024;
    // Data parallelism: this pipeline yields batches with
    // index % num_workers == worker_index only.
    int num_workers = 1;
    int worker_index = 0;
    std::string id_table;
    int id_dim = 32;
    // Empty: content rows stay zero (and no content pull is made).
    std::string content_table;
    int content_dim = 64;
    // true: Pull (unseen ID rows read as their initial values, which their
    // first push starts from; for training); false: GetRows (unseen rows
    // read as zeros, for evaluation). Neither creates rows.
    bool create_id_rows = true;
    // Training only (0 for evaluation): each row's target item is read as
    // an item the ID table has never seen, with this probability: its
    // target_idx becomes -1 (a zero row, no gradient), which is exactly
    // what evaluation's GetRows gives an item training never saw. So the
    // model learns to score a target from its content, genres and the
    // user when the item's ID says nothing (DropoutNet's item dropout).
    // Which rows is a pure function of (dropout_seed, batch index, row):
    // the same with prefetch on or off and with any thread count.
    double target_id_dropout = 0.0;
    uint64_t dropout_seed = 0;
    bool prefetch = true;
    // When set, each batch's inputs go into the model's backend
    // (InputStager::Stage) right after its rows are pulled: with prefetch
    // on the prefetch thread, so that on a GPU the copy overlaps the
    // model's compute of the previous batch. The consumer must compute
    // each batch before taking the one after next (a training or
    // evaluation loop does). Not owned; outlives the pipeline.
    model::InputStager* stager = nullptr;
  };

  // Opens the file (NOT_FOUND / INVALID_ARGUMENT as data::SampleReader) and,
  // with prefetch, starts the thread. INVALID_ARGUMENT for a bad batch size
  // or worker striding.
  static absl::StatusOr<std::unique_ptr<BatchPipeline>> Start(
      ps::PsClient* client, const Options& options);

  // Stops and joins the prefetch thread.
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // Replaces *out with the next batch and returns true, or returns false at
  // the end of the pass. Errors from reading (INVALID_ARGUMENT, DATA_LOSS)
  // or from the shards (as PsClient) end the pass: they are returned here
  // and every later call returns them again.
  absl::StatusOr<bool> Next(PreparedBatch* out);

  // Queues `gradients` (keys.size() * dim floats) for `keys` to be pushed to
  // the ID table. A push handed over before the Next call that returns batch
  // j is applied before batch j+1's rows are pulled, and not before: with
  // one PushAfter per batch, batch j+1 sees the pushes of batches 0..j-1.
  // With prefetch the push runs on the prefetch thread, overlapping the
  // caller's next step; without, in the caller's next Next. A failed push
  // ends the pass: Next returns its error. Pushes still pending when Next
  // returns false are done before it returns.
  // A push in doubt (ps::IsPushInDoubt: no answer within the retry limits
  // after it was sent) is logged and counted instead, and the pass goes on;
  // the client keeps it and it is resent (ps::PsClient::
  // ResolvePushesInDoubt) after the due pushes, before the next pull: the
  // shard applies it exactly once. If that resend gets no answer either,
  // the pass fails.
  void PushAfter(std::vector<uint64_t> keys, std::vector<float> gradients);

  // Pushes in doubt so far (see PushAfter). Thread-safe.
  int64_t pushes_in_doubt() const;

 private:
  class Impl;
  explicit BatchPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_TRAINER_PIPELINE_H_
