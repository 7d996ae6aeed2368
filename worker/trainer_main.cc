// //worker:trainer: trains a CiUBM/baseline CTR model against parameter-
// server shards, evaluates it and writes metrics JSON and a model directory.
//
//   bazel run //worker:trainer -- --ps=127.0.0.1:5000,127.0.0.1:5001
//     --train=train.tsv --test=test.tsv --model=din_mim
//     --content_table=item_content --metrics_out=m.json --model_dir=out/
//
// TLS and token for the shards: --tls_ca, --tls_client_cert,
// --tls_client_key, --auth_token_file (base/client_security.h; an admin
// token, since training pushes).
#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "base/client_security.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "worker/trainer.h"
#include "worker/trainer_report.h"

namespace {
// The defaults of every flag with a TrainerOptions member come from its
// initialiser (one home per default). Defined before the flags: they read
// it during static initialisation of this file, in order.
const mim::worker::TrainerOptions kDefaults;
}  // namespace

DEFINE_string(ps, "", "Shard addresses host:port, comma-separated, in shard order");
DEFINE_string(train, kDefaults.train_path.c_str(),
              "Training sample file (mim-samples v1)");
DEFINE_string(test, kDefaults.test_path.c_str(),
              "Test sample file (ignored with --validation_tail_fraction)");
DEFINE_string(model, kDefaults.model_name.c_str(),
              "avgpool, din, sim, avgpool_ct, din_ct, sim_ct, avgpool_mim, "
              "din_mim or sim_mim");
DEFINE_string(metrics_out, "", "Where to write the metrics JSON (empty: none)");
DEFINE_string(predictions_out, kDefaults.predictions_out.c_str(),
              "Write one line per evaluated sample (user, item, label, score)");
DEFINE_string(model_dir, kDefaults.model_dir.c_str(),
              "Directory for the dense model and manifest.json");
DEFINE_bool(eval_only, kDefaults.eval_only,
            "Do not train: evaluate the model saved in --model_dir (its "
            "manifest names the model, ID table and content table) on "
            "--test with the rows on --ps, and write --metrics_out and "
            "--predictions_out. --train is optional (its items tell cold "
            "test items from warm ones)");
DEFINE_string(init_model_dir, kDefaults.init_model_dir.c_str(),
              "Warm start: --model_dir of an earlier run whose dense params "
              "and Adam state to continue from (its ID table must be this "
              "run's; see --id_table). Needs local dense params: refused "
              "with --dense_params=ps or --num_workers > 1");
DEFINE_int32(epochs, kDefaults.epochs,
             "Passes over the training data (default chosen with --lr on a "
             "MovieLens validation tail, see docs/RESULTS.md)");
DEFINE_int32(batch_size, kDefaults.batch_size,
             "Training batch size (default chosen on a MovieLens validation "
             "tail, see docs/RESULTS.md)");
DEFINE_int32(eval_batch_size, kDefaults.eval_batch_size,
             "Evaluation batch size");
DEFINE_double(lr, kDefaults.lr, "Dense Adam learning rate");
DEFINE_double(id_lr, kDefaults.id_lr,
              "Learning rate of the ID table optimizer on the shards");
DEFINE_string(id_optimizer, kDefaults.id_optimizer.c_str(),
              "ID table optimizer: sgd, adagrad, adam, ftrl");
DEFINE_double(id_init_scale, kDefaults.id_init_scale,
              "Stddev of new ID rows (normal initializer)");
DEFINE_double(target_id_dropout, kDefaults.target_id_dropout,
              "Training only: probability that a sample's target item is "
              "read as an unseen item (zero ID row), so the model learns to "
              "score new items from content; 0: off");
DEFINE_bool(id_grad_sum, kDefaults.id_grad_sum,
            "Push ID-row gradients of the summed batch loss (false: of the "
            "mean loss, i.e. divided by the batch size)");
DEFINE_int32(id_dim, kDefaults.id_dim, "ID embedding dimension");
DEFINE_uint64(seed, kDefaults.seed, "Seed of dense init and ID row init");
DEFINE_string(content_table, kDefaults.content_table.c_str(),
              "Content table on the shards (CONTENT kind, filled by "
              "tools/ingest_content); required by the _ct and _mim models");
DEFINE_string(content_encoder, kDefaults.content_encoder.c_str(),
              "Encoder dir that filled --content_table (tools/content_vectors "
              "--encoder_out); recorded in the manifest for serving");
DEFINE_string(csft_encoder, kDefaults.csft_encoder.c_str(),
              "C-SFT encoder file (//worker/csft:csft --encoder_out) when "
              "--content_table holds C-SFT vectors; needs --content_encoder "
              "(the fastText encoder of its input); recorded in the manifest "
              "so serving encodes new items the same way");
DEFINE_string(id_table, kDefaults.id_table.c_str(),
              "ID table name (empty: <table_prefix><model>_s<seed>_id)");
DEFINE_string(table_prefix, kDefaults.table_prefix.c_str(),
              "Prefix of the derived table names");
DEFINE_int32(num_workers, kDefaults.num_workers,
             "Data-parallel worker processes");
DEFINE_int32(worker_index, kDefaults.worker_index,
             "This worker, 0..num_workers-1 (0 evaluates)");
DEFINE_string(dense_params, kDefaults.dense_params.c_str(),
              "Where dense params live: local (one worker), ps (a shared "
              "Adam table on the shards), nccl (on each worker's GPU, "
              "gradients all-reduced with NCCL; --device=cuda), auto (ps "
              "iff num_workers > 1)");
DEFINE_double(validation_tail_fraction, kDefaults.validation_tail_fraction,
              "If > 0, hold out this last fraction of the training period "
              "(by timestamp) and evaluate on it instead of --test");
DEFINE_int32(threads, kDefaults.threads, "CPU threads of the model kernels");
DEFINE_string(device, kDefaults.device.c_str(),
              "Where the model computes: cpu, or cuda (a --config=cuda "
              "build on a GPU machine; //worker:trainer_cuda_emulated runs "
              "the CUDA path on the CPU grid emulator)");
DEFINE_string(cuda_math, kDefaults.cuda_math.c_str(),
              "With --device=cuda, the cuBLAS GEMMs' math: tf32 (TF32 "
              "tensor cores, operands rounded to 10-bit mantissas, fp32 "
              "accumulation) or fp32 (strict); ignored on cpu");
DEFINE_int64(max_train_samples, kDefaults.max_train_samples,
             "Train on at most this many samples per epoch (0: all)");
DEFINE_bool(no_id_interest, kDefaults.no_id_interest,
            "Ablation: drop the ID interest module");
DEFINE_bool(no_content_interest, kDefaults.no_content_interest,
            "Ablation: drop the content interest module");
DEFINE_bool(no_fusion, kDefaults.no_fusion, "Ablation: drop the fusion module");
DEFINE_bool(prefetch, kDefaults.prefetch,
            "Read and pull the next batch on a second thread");
DEFINE_bool(overlap_copies, kDefaults.overlap_copies,
            "With --device=cuda: copy each batch's inputs into the GPU on "
            "the prefetch thread (pinned memory, a copy stream, two input "
            "buffers), overlapping the previous batch's compute; the same "
            "results either way");
DEFINE_int32(loss_every, kDefaults.loss_every, "Batches per loss-curve point");
DEFINE_double(barrier_timeout_s, kDefaults.barrier_timeout_s,
              "Worker 0's wait for the other workers");
DEFINE_double(nccl_timeout_s, kDefaults.nccl_timeout_s,
              "--dense_params=nccl: seconds joining the NCCL group or one "
              "all-reduce may take before the communicator is aborted and "
              "the run fails (a peer died or hung)");
DEFINE_double(ps_retry_seconds, kDefaults.ps_retry_seconds,
              "How long a call to a shard that is unreachable (down, "
              "restarting) or not answering (hung) is retried, with backoff, "
              "before the job fails naming the shard (0: no retries). "
              "Gradient pushes are resent too and applied once by the shard; "
              "one still unanswered when this runs out is counted in the "
              "metrics' pushes_in_doubt");
DEFINE_double(ps_timeout_seconds, kDefaults.ps_timeout_seconds,
              "Deadline of one attempt of a shard call; a shard that does "
              "not answer within it is asked again (within "
              "--ps_retry_seconds)");
DEFINE_bool(progress, true, "Progress bar on stderr");

namespace {

// Under `bazel run` the working directory is the runfiles tree; relative
// paths are meant relative to where the user typed the command.
std::string UserPath(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

// Every flag defined in this file, as name -> current value.
std::vector<std::pair<std::string, std::string>> OwnFlags() {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::vector<std::pair<std::string, std::string>> own;
  for (const gflags::CommandLineFlagInfo& f : all) {
    if (f.filename.find("trainer_main.cc") != std::string::npos) {
      own.emplace_back(f.name, f.current_value);
    }
  }
  return own;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("Trains and evaluates a CiUBM CTR model on the PS");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  mim::worker::TrainerOptions o;
  for (absl::string_view a : absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty())) {
    o.ps_addresses.emplace_back(a);
  }
  o.train_path = UserPath(FLAGS_train);
  o.test_path = UserPath(FLAGS_test);
  o.model_name = FLAGS_model;
  o.model_dir = UserPath(FLAGS_model_dir);
  o.init_model_dir = UserPath(FLAGS_init_model_dir);
  o.eval_only = FLAGS_eval_only;
  o.epochs = FLAGS_epochs;
  o.batch_size = FLAGS_batch_size;
  o.eval_batch_size = FLAGS_eval_batch_size;
  o.lr = FLAGS_lr;
  o.id_lr = FLAGS_id_lr;
  o.id_optimizer = FLAGS_id_optimizer;
  o.id_init_scale = FLAGS_id_init_scale;
  o.target_id_dropout = FLAGS_target_id_dropout;
  o.id_dim = FLAGS_id_dim;
  o.id_grad_sum = FLAGS_id_grad_sum;
  o.seed = FLAGS_seed;
  o.content_table = FLAGS_content_table;
  o.content_encoder = UserPath(FLAGS_content_encoder);
  o.csft_encoder = UserPath(FLAGS_csft_encoder);
  o.predictions_out = UserPath(FLAGS_predictions_out);
  o.id_table = FLAGS_id_table;
  o.table_prefix = FLAGS_table_prefix;
  o.num_workers = FLAGS_num_workers;
  o.worker_index = FLAGS_worker_index;
  o.dense_params = FLAGS_dense_params;
  o.device = FLAGS_device;
  o.cuda_math = FLAGS_cuda_math;
  o.validation_tail_fraction = FLAGS_validation_tail_fraction;
  o.threads = FLAGS_threads;
  o.max_train_samples = FLAGS_max_train_samples;
  o.no_id_interest = FLAGS_no_id_interest;
  o.no_content_interest = FLAGS_no_content_interest;
  o.no_fusion = FLAGS_no_fusion;
  o.prefetch = FLAGS_prefetch;
  o.overlap_copies = FLAGS_overlap_copies;
  o.loss_every = FLAGS_loss_every;
  o.barrier_timeout_s = FLAGS_barrier_timeout_s;
  o.nccl_timeout_s = FLAGS_nccl_timeout_s;
  o.ps_retry_seconds = FLAGS_ps_retry_seconds;
  o.ps_timeout_seconds = FLAGS_ps_timeout_seconds;
  absl::StatusOr<mim::base::ClientSecurity> security =
      mim::base::ClientSecurityFromFlags();
  if (!security.ok()) {
    std::cerr << "trainer: " << security.status() << "\n";
    return 2;
  }
  o.ps_credentials = security->credentials;
  o.ps_auth_token = security->auth_token;

  absl::StatusOr<mim::worker::TrainReport> report =
      mim::worker::RunTrainer(o, FLAGS_progress ? &std::cerr : nullptr);
  if (!report.ok()) {
    std::cerr << "trainer: "
              << report.status().ToString(
                     absl::StatusToStringMode::kWithNoExtraData)
              << "\n";
    return 1;
  }
  if (!FLAGS_metrics_out.empty()) {
    absl::Status written =
        mim::worker::WriteMetricsJson(UserPath(FLAGS_metrics_out), *report, o,
                                      OwnFlags());
    if (!written.ok()) {
      std::cerr << "trainer: " << written << "\n";
      return 1;
    }
  }
  const auto& r = *report;
  std::cout << "model " << r.config.name << ": " << r.train_samples
            << " samples in " << r.train_seconds << " s ("
            << r.train_samples_per_sec << " samples/s)";
  if (r.eval.has_value() && r.eval->auc.has_value()) {
    std::cout << "; " << r.eval->source << " auc " << *r.eval->auc;
    if (r.eval->gauc.has_value()) std::cout << " gauc " << r.eval->gauc->gauc;
    if (r.eval->logloss.has_value()) std::cout << " logloss " << *r.eval->logloss;
  }
  std::cout << std::endl;
  return 0;
}
