// The CiUBM trainer: streams a sample file through a model whose ID
// embeddings live on parameter-server shards, then evaluates on a test file
// (or a held-out tail of the training period) and saves the dense model.
//
// Per batch: BatchPipeline (read, BatchBuilder, Pull ID rows / content rows)
// -> model ForwardBackward -> Push the ID-row gradients (the shard's
// optimizer applies them) -> dense update. The dense step goes through a
// DenseSync (dense_sync.h): local (Adam in the model) for one worker, or
// shared through the PS (Adam on the shard) for data-parallel workers.
#ifndef MIM_WORKER_TRAINER_H_
#define MIM_WORKER_TRAINER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/metrics.h"
#include "worker/model/ciubm_model.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace mim::worker {

// Plain value type; mirrors the trainer binary's flags. The member
// initialisers are the one home of the defaults: //worker:trainer's flags
// take theirs from a default-constructed TrainerOptions.
struct TrainerOptions {
  std::vector<std::string> ps_addresses;  // shard order
  std::string train_path;
  std::string test_path;  // unused with validation_tail_fraction > 0
  std::string model_name = "din_mim";
  std::string model_dir;  // empty: nothing saved
  // Warm start: a model_dir of an earlier run. Its dense params and Adam
  // state are loaded before training (the ID rows are already on the
  // shards, in the table that run trained: its manifest must name the same
  // ID table). Empty: start from the seeded initialisation. Refused with
  // the dense params on the shards (dense_params "ps", num_workers > 1).
  std::string init_model_dir;
  // Evaluation without training: load model_dir's manifest and model file,
  // evaluate test_path with the rows on the shards (the manifest's ID table
  // must be there, on as many shards: FAILED_PRECONDITION otherwise) and
  // report it as a run with no training. train_path is optional: when set,
  // its items tell cold from warm test items, as in training. The model,
  // its ID table and content table come from the manifest (content_table,
  // when set, overrides the latter).
  bool eval_only = false;
  // One line per evaluated sample ("user<TAB>item<TAB>label<TAB>score",
  // score as %.9g, after a '#' header), written atomically. Empty: none.
  std::string predictions_out;
  // epochs, lr and batch_size were chosen on a MovieLens validation tail
  // (docs/RESULTS.md).
  int epochs = 2;
  int batch_size = 256;
  int eval_batch_size = 4096;
  // Used as float (by the model and the shards); double here, as the
  // flags are, so that a flag's default prints as written.
  double lr = 3e-3;            // dense Adam
  double id_lr = 0.05;         // ID table optimizer on the shards
  std::string id_optimizer = "adagrad";
  double id_init_scale = 0.01;  // normal(0, scale) for new ID rows
  // Probability that a training sample's target item is read as one the
  // ID table never saw (a zero row, as evaluation reads an unseen item),
  // so the model learns to score new items from content, genres and the
  // user (BatchPipeline::Options::target_id_dropout; drawn per epoch from
  // `seed`). 0: off, the default: on MovieLens it lowered AUC at every
  // rate without raising held-out-item AUC (docs/RESULTS.md, C-SFT fifth
  // round).
  double target_id_dropout = 0.0;
  // Push ID gradients of the summed (not mean) batch loss.
  bool id_grad_sum = true;
  int id_dim = 32;
  uint64_t seed = 1;
  // Needed by the content models (_ct, _mim): INVALID_ARGUMENT without it.
  std::string content_table;
  // The encoder directory that produced the content table's vectors
  // (tools/content_vectors --encoder_out); named in the model manifest so
  // the serving tier encodes new items the same way. Empty: "external".
  std::string content_encoder;
  // The C-SFT encoder file (//worker/csft:csft --encoder_out) when the
  // content table holds C-SFT vectors; then content_encoder is the
  // fastText encoder of its input (required). Recorded as kind "csft".
  std::string csft_encoder;
  std::string id_table;       // empty: <table_prefix><model>_s<seed>_id
  std::string table_prefix;
  int num_workers = 1;
  int worker_index = 0;
  // "auto" (ps when num_workers > 1), "local" or "ps".
  std::string dense_params = "auto";
  double validation_tail_fraction = 0.0;
  int threads = 1;
  // Where the model computes: "cpu" (the CPU twins, --threads of them) or
  // "cuda" (kernels::CudaBackend(): needs a --config=cuda build on a GPU
  // machine, or //worker:trainer_cuda_emulated, which runs the same CUDA
  // path on the grid emulator).
  std::string device = "cpu";
  // The cuBLAS GEMMs' math with --device=cuda (kernels::SetCudaMath):
  // "fp32" (strict) or "tf32" (TF32 tensor cores, fp32 accumulation). The
  // CPU path ignores it. tf32 by default: on the synthetic default it
  // evaluates like fp32 (tests/trainer_cuda_emulated_test; the figures are
  // in docs/ARCHITECTURE.md).
  std::string cuda_math = "tf32";
  int64_t max_train_samples = 0;  // 0: all
  bool no_id_interest = false;
  bool no_content_interest = false;
  bool no_fusion = false;
  bool prefetch = true;
  // With --device=cuda: each batch's inputs are staged into the device as
  // soon as its rows are pulled (model::InputStager: two pinned buffers
  // and two device input sets, a copy stream and events), on the prefetch
  // thread, so the copy overlaps the previous batch's compute. The same
  // bits either way; false: the model copies each batch in at its step.
  bool overlap_copies = true;
  int loss_every = 10;  // batches per loss-curve point
  double barrier_timeout_s = 3600;
  // --dense_params=nccl: how long joining the NCCL group, or one
  // all-reduce, may take before the communicator is aborted and the run
  // fails naming the op and this worker's rank (a peer died or hung).
  double nccl_timeout_s = 600;
  // How long a call to an unavailable shard (down, restarting, or up but
  // not answering) is retried before the job fails naming the shard
  // (PsClient::Options::retry_budget; 0: one attempt). A shard restarted or
  // resumed within it costs only the wait; pushes are resent exactly once.
  double ps_retry_seconds = 60;
  // Deadline of one attempt of a shard call (PsClient::Options::timeout):
  // a shard that does not answer within it (hung) is asked again, within
  // ps_retry_seconds.
  double ps_timeout_seconds = 10;
  // TLS credentials and bearer token for the shards
  // (PsClient::Options::credentials and auth_token; the trainer's
  // --tls_ca, --tls_client_cert, --tls_client_key and --auth_token_file,
  // base/client_security.h). Null / empty: insecure, no token. Training
  // pushes and creates tables, so on shards with --auth_tokens the token
  // needs the admin role.
  std::shared_ptr<grpc::ChannelCredentials> ps_credentials;
  std::string ps_auth_token;
};

// One point of the training loss curve: mean loss of the batches since the
// previous point.
struct LossPoint {
  int epoch = 0;
  int64_t batch = 0;    // this worker's batches so far
  int64_t samples = 0;  // this worker's samples so far
  double loss = 0.0;
};

struct EvalReport {
  std::string source;  // "test" or "validation_tail"
  std::string path;
  int64_t n = 0;
  int64_t positives = 0;
  std::optional<double> auc;
  std::optional<eval::GaucResult> gauc;
  std::optional<double> logloss;
  eval::GroupAuc cold;
  std::vector<eval::GroupAuc> by_item_frequency;
  double seconds = 0.0;
};

struct TrainReport {
  model::ModelConfig config;
  std::string dense_mode;  // "local" or "ps"
  std::string id_table;
  std::string content_table;
  uint64_t content_version = 0;
  std::string dense_table;  // empty for local
  int64_t train_samples = 0;  // this worker, all epochs
  int64_t train_batches = 0;
  // Gradient pushes (ID rows or dense chunks) that got no answer within the
  // retry limits after they were sent (ps::IsPushInDoubt). Each was resent
  // later and applied exactly once (ps::PsClient::ResolvePushesInDoubt); a
  // run that cannot settle one fails instead of reporting it here.
  int64_t pushes_in_doubt = 0;
  int64_t train_items = 0;    // distinct target items in the train portion
  int64_t validation_cutoff = 0;  // first held-out timestamp, 0 if none
  double train_seconds = 0.0;
  double train_samples_per_sec = 0.0;
  std::vector<LossPoint> loss_curve;
  std::optional<EvalReport> eval;  // worker 0 only
  std::vector<std::string> model_files;  // written under model_dir
  std::string init_model;       // model file loaded for a warm start
  int64_t init_adam_step = 0;   // its Adam step (0 without a warm start)
};

// Runs the whole job. `progress` (may be null) gets the progress bar.
// Errors: INVALID_ARGUMENT for bad options or data; NOT_FOUND for a missing
// file or content table; shard errors as PsClient (UNAVAILABLE naming the
// shard when it stayed unreachable for ps_retry_seconds); INTERNAL for write
// failures in model_dir; DEADLINE_EXCEEDED if other workers do not finish
// within barrier_timeout_s. With eval_only: NOT_FOUND / DATA_LOSS for a
// missing or bad manifest or model file, FAILED_PRECONDITION when the
// manifest's ID table is not on the shards (or they are not as many).
absl::StatusOr<TrainReport> RunTrainer(const TrainerOptions& options,
                                       std::ostream* progress);

// The ID table name RunTrainer uses for `options`.
std::string IdTableName(const TrainerOptions& options);

}  // namespace mim::worker

#endif  // MIM_WORKER_TRAINER_H_
