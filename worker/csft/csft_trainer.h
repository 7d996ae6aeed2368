// C-SFT training: contrastive fine-tuning of the item encoder (encoder.h)
// on interest pairs with the multi-level loss
//   L = L_q2item + alpha L_q2txt + beta L_q2cat + lambda mean |r|^2
// (InfoNCE at temperature tau; q2item over in-batch, one same-category hard
// negative per pair and a queue of the last k batches' items; q2txt and
// q2cat contrast the query's h_MM with the positives' text and category
// heads in the batch), with early stopping and selection on held-out pairs
// whose positive item never appears in training (pairs.h). Epoch 0, the
// untrained encoder, is a candidate too: it is the plain vectors, so the
// selected vectors never score below them on that validation.
//
// Data parallelism (WorkerGroup below; csft_workers.h shares it through
// the shards): worker w of N takes every N-th batch, computes on the
// group's shared encoder parameters and hands its gradient to the group's
// optimizer, and its q2item candidates also hold the other workers'
// latest positives (the paper's "space" negatives beside the queue's
// "time" ones). Worker 0 evaluates and selects after every epoch, once
// every worker finished it; the first step waits for every worker and
// for worker 0's evaluation of the untrained encoder.
#ifndef MIM_WORKER_CSFT_CSFT_TRAINER_H_
#define MIM_WORKER_CSFT_CSFT_TRAINER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/csft/encoder.h"
#include "worker/csft/pairs.h"

namespace mim::csft {

// Items with their encoder inputs. Plain value type.
struct Catalog {
  int dim = 0;        // plain vector dim
  int input_dim = 0;  // all modalities
  int num_genres = 1; // max genre id + 1
  std::vector<int64_t> ids;
  std::vector<float> features;  // [ids.size(), input_dim]
  std::vector<std::vector<int32_t>> genres;
  // Training pairs per item (CountInteractions); empty: all 0.
  std::vector<int64_t> interactions;
  absl::flat_hash_map<int64_t, int> index;
  int IndexOf(int64_t item) const {
    auto it = index.find(item);
    return it == index.end() ? -1 : it->second;
  }
  ItemInput Input(int i) const {
    return {features.data() + int64_t(i) * input_dim, &genres[i],
            interactions.empty() ? 0 : interactions[i]};
  }
};

// Sets catalog->interactions: per item, the pairs of `train` it is in (as
// query or positive; an item in both sides of a pair counts twice). Items
// held out of training keep 0, as a new item has (the residual gate).
void CountInteractions(const std::vector<InterestPair>& train,
                       Catalog* catalog);

// Genre ids a catalogue may use: [0, kMaxGenreId).
inline constexpr int32_t kMaxGenreId = 1 << 20;

// The first file's items are the catalogue (its vectors are the plain ones,
// L2-normalised here); later files are extra modalities appended to the
// encoder input (zeros for an item a file lacks). Errors as the vector
// reader; INVALID_ARGUMENT for no file, an all-zero plain vector (naming
// the item) or a genre id outside [0, kMaxGenreId).
absl::StatusOr<Catalog> BuildCatalog(
    const std::vector<std::string>& vector_files,
    const absl::flat_hash_map<int64_t, std::vector<int32_t>>& genres);

// Recall@10 and @50 over the whole catalogue: for a pair (q, p), every item
// but q is ranked by cosine to q; a hit when fewer than K items beat p.
// Pairs with an item outside the catalogue are skipped (counted).
struct Recall {
  double at10 = 0;
  double at50 = 0;
  int64_t pairs = 0;
  int64_t skipped = 0;
};
Recall EvaluateRecall(const Catalog& catalog, const std::vector<float>& vectors,
                      const std::vector<InterestPair>& pairs);

// Plain value type. Defaults are the ones docs/RESULTS.md (C-SFT) used.
struct CsftOptions {
  int epochs = 3;
  int patience = 2;  // epochs without a better valid-new recall
  int batch_size = 256;
  double learning_rate = 3e-4;
  double temperature = 0.1;
  double alpha = 0.5;          // q2txt weight
  double beta = 0.2;           // q2cat weight
  double residual_penalty = 10.0;
  bool in_batch_negatives = true;
  bool hard_negatives = true;
  int queue_batches = 4;       // 0: no queue
  int genre_dim = 8;
  int hidden = 128;
  bool tensor_fusion = true;
  double residual_gate = 0;    // K of g = n / (n + K) (encoder.h); 0: off
  // Probability that a training row's modality vectors are hidden from the
  // fusion (ItemInput::drop_modalities), drawn per row and step from its
  // own seeded stream: the residual must then come from the genres, so it
  // leans less on recognising an item by its text. In [0, 1); 0: off.
  // Encoding (the table, new items) never drops.
  double modality_dropout = 0;
  // Keep the last epoch's encoder instead of the best on valid-new (for
  // tests that need a trained encoder; not for choosing vectors).
  bool select_last_epoch = false;
  int max_eval_pairs = 5000;   // deterministic subsample of each valid set
  uint64_t seed = 1;
  // With a WorkerGroup of several workers: the other workers' latest
  // positives join q2item's candidates (detached, masked as the queue's).
  bool worker_negatives = true;
};

// The encoder CsftTrainer::Create builds for `catalog` and `options`, and
// its seeded parameters before any step (the same in every process given
// the same catalogue and options: a worker group's initial vector).
EncoderConfig EncoderConfigFor(const Catalog& catalog,
                               const CsftOptions& options);
absl::StatusOr<std::vector<float>> InitialEncoderParams(
    const Catalog& catalog, const CsftOptions& options);

// What one step did. Plain value type.
struct StepStats {
  double loss = 0;
  int64_t rows = 0;
  // q2item negatives summed over the batch's queries (after masking).
  int64_t negatives = 0;
  // Rows of other workers' batches among q2item's candidates.
  int64_t peer_rows = 0;
};

// What data-parallel C-SFT workers share: the encoder's parameters and
// optimizer, each step's positives, and the end of every epoch.
// csft_workers.h implements it through the shards; tests may use their
// own. Calls come from one training loop.
class WorkerGroup {
 public:
  virtual ~WorkerGroup() = default;
  virtual int num_workers() const = 0;
  virtual int worker_index() const = 0;
  // The shared parameters now, into *params (resized to their count; the
  // trainer refuses a count other than its encoder's, INTERNAL).
  virtual absl::Status FetchParams(std::vector<float>* params) = 0;
  // This worker's gradient of one step, for the shared optimizer.
  virtual absl::Status PushGradient(absl::Span<const float> gradient) = 0;
  // Publishes this worker's positives of step `step` (ids, [n, dim]) and
  // returns the other workers' latest published ones of this run (within
  // the group's staleness bound), appended to *peer_ids / *peer_vectors.
  virtual absl::Status ExchangePositives(int64_t step,
                                         absl::Span<const int64_t> ids,
                                         absl::Span<const float> vectors,
                                         std::vector<int64_t>* peer_ids,
                                         std::vector<float>* peer_vectors) = 0;
  // Every worker, after its last step of `epoch` (epoch 0: before its
  // first step).
  virtual absl::Status EndEpoch(int epoch) = 0;
  // Worker 0: waits until every worker ended `epoch` (epoch 0: also
  // checks that their inputs match), then (after its evaluation)
  // publishes whether the run stops there.
  virtual absl::Status AwaitEpoch(int epoch) = 0;
  virtual absl::Status Decide(int epoch, bool stop) = 0;
  // Other workers: worker 0's decision for `epoch` (true: stop).
  virtual absl::StatusOr<bool> AwaitDecision(int epoch) = 0;
  // Other workers, last: done with the shared parameters (after the stop,
  // each takes them once more as its result's encoder).
  virtual absl::Status Finished() = 0;
};

// One encoder, its Adam state, the queue and the hard-negative pools.
// Not thread-safe.
class CsftTrainer {
 public:
  // `train_items`: items hard negatives are drawn from (those of training
  // pairs). INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<CsftTrainer>> Create(
      const Catalog* catalog, const CsftOptions& options,
      const std::vector<int64_t>& train_items);

  // One Adam step on `batch` (items must be in the catalogue: pairs with
  // an unknown item are INVALID_ARGUMENT naming it). With a group set, the
  // step computes on the group's parameters and pushes its gradient there
  // instead (the group's errors are returned); `exchange_step` is the step
  // its positives are published under and peers' are compared with (-1:
  // this trainer's own step count; TrainCsft passes an epoch-aligned one).
  absl::StatusOr<StepStats> Step(absl::Span<const InterestPair> batch,
                                 int64_t exchange_step = -1);

  // A batch's encoder rows as Step draws them: queries, positives, then
  // (with hard negatives) one same-category negative per pair, with their
  // item ids and modality dropout. Plain value type.
  struct BatchRows {
    int64_t pairs = 0;
    std::vector<ItemInput> inputs;
    std::vector<int64_t> ids;
  };
  // Draws `batch`'s rows from the trainer's seeded streams, as Step does
  // (so it moves them). INVALID_ARGUMENT naming a pair with an item
  // outside the catalogue.
  absl::StatusOr<BatchRows> DrawRows(absl::Span<const InterestPair> batch);

  // The multi-level loss (file comment) of `rows`, encoded as `pass` (the
  // encoder's Forward of rows.inputs), with the queue and the peers' rows
  // as extra q2item candidates; with `grads`, also its gradient with
  // respect to the encoder's parameters (resized to num_params). Changes
  // nothing: a Step is DrawRows, Forward, the peers' exchange, this and
  // the update, so tests check the gradient against finite differences of
  // the loss. INVALID_ARGUMENT when the sizes do not match each other.
  absl::StatusOr<StepStats> LossAndGradient(
      const BatchRows& rows, const EncoderPass& pass,
      const std::vector<int64_t>& peer_ids,
      const std::vector<float>& peer_vectors,
      std::vector<float>* grads) const;

  // Data-parallel steps through `group` (not owned; null: alone), before
  // the first step. A worker other than 0 reseeds its hard-negative and
  // dropout streams with its index, so the workers do not draw alike.
  void set_group(WorkerGroup* group);
  // Loads the group's current parameters into the encoder.
  absl::Status FetchGroupParams();

  // Every catalogue item's h_MM, [n, dim].
  absl::StatusOr<std::vector<float>> EncodeAll() const;

  const CsftEncoder& encoder() const { return *encoder_; }
  CsftEncoder* mutable_encoder() { return encoder_.get(); }
  size_t queue_rows() const;

 private:
  CsftTrainer(const Catalog* catalog, const CsftOptions& options);
  int HardNegative(int positive, int query);

  const Catalog* catalog_;
  CsftOptions options_;
  std::unique_ptr<CsftEncoder> encoder_;
  std::vector<float> grads_, adam_m_, adam_v_;
  int64_t step_ = 0;
  std::mt19937_64 rng_;
  std::mt19937_64 dropout_rng_;  // modality dropout only, so rng_ is unchanged
  absl::flat_hash_map<int32_t, std::vector<int>> pool_by_genre_;
  std::vector<int> pool_all_;
  struct QueueEntry {
    std::vector<float> vectors;
    std::vector<int64_t> ids;
  };
  std::deque<QueueEntry> queue_;
  WorkerGroup* group_ = nullptr;
};

struct EpochLog {
  int epoch = 0;  // 0: before training (the plain vectors)
  double loss = 0;
  double pairs_per_second = 0;
  Recall valid_new, valid_warm;
};

struct TrainResult {
  // The selected epoch's; on a worker other than 0 of a group, the shared
  // parameters at its end (selection is worker 0's).
  std::unique_ptr<CsftEncoder> encoder;
  int best_epoch = 0;
  std::vector<EpochLog> log;
  int64_t train_pairs = 0;
  double pairs_per_second = 0;  // over all training steps (this worker)
  int64_t steps = 0;            // this worker's
  int64_t peer_rows = 0;        // StepStats::peer_rows summed
  bool chief = true;            // worker 0 (or alone): evaluated, selected
};

// Trains on split.train, evaluates after every epoch on split.valid_new
// (selection: recall@50, then @10) and split.valid_warm (reported), stops
// after `patience` epochs without improvement; logs one line per epoch.
// With `group` (not owned), this process is one of its workers (see the
// file comment): every worker must pass the same catalogue, split and
// options; only worker 0 evaluates, and the log of the others holds
// their losses only.
absl::StatusOr<TrainResult> TrainCsft(const Catalog& catalog,
                                      const PairSplit& split,
                                      const CsftOptions& options,
                                      WorkerGroup* group = nullptr);

}  // namespace mim::csft

#endif  // MIM_WORKER_CSFT_CSFT_TRAINER_H_
