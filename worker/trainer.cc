#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/atomic_file.h"
#include "base/status_macros.h"
#include "glog/logging.h"
#include "kernels/backend.h"
#include "kernels/common.h"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "worker/data/sample_io.h"
#include "worker/dense_sync.h"
#include "worker/dense_sync_local.h"
#include "worker/dense_sync_nccl.h"
#include "worker/dense_sync_ps.h"
#include "worker/csft/encoder.h"
#include "worker/model/manifest.h"
#include "worker/trainer_pipeline.h"
#include "worker/trainer_progress.h"
#include "worker/trainer_sync.h"

namespace mim::worker {
namespace {

std::string TableBase(const TrainerOptions& o) {
  return absl::StrCat(o.table_prefix, o.model_name, "_s", o.seed);
}

absl::Status ValidateOptions(const TrainerOptions& o) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (o.ps_addresses.empty()) return bad("--ps: no shard addresses");
  if (!o.csft_encoder.empty() && o.content_encoder.empty()) {
    return bad("--csft_encoder=", o.csft_encoder,
               " needs --content_encoder=DIR: the fastText encoder "
               "(tools/content_vectors --encoder_out) whose vectors C-SFT "
               "read");
  }
  if (!(o.ps_retry_seconds >= 0 && o.ps_retry_seconds <= 1e6)) {
    return bad("--ps_retry_seconds = ", o.ps_retry_seconds,
               "; expected in [0, 1e6]");
  }
  if (!(o.ps_timeout_seconds >= 0.001 && o.ps_timeout_seconds <= 1e6)) {
    return bad("--ps_timeout_seconds = ", o.ps_timeout_seconds,
               "; expected in [0.001, 1e6]");
  }
  if (o.eval_only) {
    if (o.model_dir.empty()) {
      return bad("--eval_only needs --model_dir=DIR of a trained model");
    }
    if (o.test_path.empty()) return bad("--eval_only needs --test=FILE");
    if (o.validation_tail_fraction != 0.0 || !o.init_model_dir.empty() ||
        o.num_workers != 1) {
      return bad("--eval_only evaluates --model_dir on --test only: "
                 "--validation_tail_fraction, --init_model_dir and "
                 "--num_workers > 1 do not apply");
    }
    if (o.eval_batch_size < 1) return bad("--eval_batch_size must be >= 1");
    if (o.threads < 1) return bad("--threads must be >= 1");
    if (o.device != "cpu" && o.device != "cuda") {
      return bad("--device = '", o.device, "', expected cpu or cuda");
    }
    if (o.cuda_math != "fp32" && o.cuda_math != "tf32") {
      return bad("--cuda_math = '", o.cuda_math, "', expected fp32 or tf32");
    }
    return absl::OkStatus();
  }
  if (o.train_path.empty()) return bad("--train is required");
  if (o.validation_tail_fraction == 0.0 && o.test_path.empty()) {
    return bad("--test is required unless --validation_tail_fraction > 0");
  }
  if (!(o.validation_tail_fraction >= 0.0 && o.validation_tail_fraction < 1.0)) {
    return bad("--validation_tail_fraction = ", o.validation_tail_fraction,
               "; expected in [0, 1)");
  }
  if (o.epochs < 1) return bad("--epochs = ", o.epochs, "; expected >= 1");
  if (!(o.target_id_dropout >= 0.0 && o.target_id_dropout < 1.0)) {
    return bad("--target_id_dropout = ", o.target_id_dropout,
               "; expected in [0, 1)");
  }
  if (o.batch_size < 1 || o.eval_batch_size < 1) {
    return bad("batch sizes must be >= 1");
  }
  // Checked as the floats the model and the shards use.
  if (!(static_cast<float>(o.lr) > 0) || !(static_cast<float>(o.id_lr) > 0)) {
    return bad("--lr and --id_lr must be > 0");
  }
  if (o.num_workers < 1 || o.worker_index < 0 ||
      o.worker_index >= o.num_workers) {
    return bad("--worker_index = ", o.worker_index, ", --num_workers = ",
               o.num_workers, "; expected 0 <= worker_index < num_workers");
  }
  if (o.dense_params != "auto" && o.dense_params != "local" &&
      o.dense_params != "ps" && o.dense_params != "nccl") {
    return bad("--dense_params = '", o.dense_params,
               "'; expected auto, local, ps or nccl");
  }
  if (o.dense_params == "nccl" && o.device != "cuda") {
    return bad("--dense_params=nccl all-reduces on the GPUs: it needs "
               "--device=cuda (got --device=", o.device, ")");
  }
  if (o.dense_params == "local" && o.num_workers > 1) {
    return bad("--dense_params=local with --num_workers=", o.num_workers,
               ": data-parallel workers must share dense parameters (ps)");
  }
  if (!o.init_model_dir.empty() &&
      (o.dense_params == "ps" || o.num_workers > 1)) {
    // The shards' dense table holds deltas over the seeded initialisation
    // (and its own Adam state), and an earlier run's table is reused: adding
    // its deltas to the loaded params would count that run's update twice.
    return bad("--init_model_dir needs the dense params local (one worker, "
               "--dense_params=auto or local); with them on the shards "
               "(--dense_params=ps or --num_workers > 1) a warm start is not "
               "supported");
  }
  if (o.threads < 1) return bad("--threads must be >= 1");
  if (o.device != "cpu" && o.device != "cuda") {
    return bad("--device = '", o.device, "', expected cpu or cuda");
  }
  if (o.cuda_math != "fp32" && o.cuda_math != "tf32") {
    return bad("--cuda_math = '", o.cuda_math, "', expected fp32 or tf32");
  }
  if (!(o.nccl_timeout_s > 0)) {
    return bad("--nccl_timeout_s = ", o.nccl_timeout_s, ", expected > 0");
  }
  if (o.loss_every < 1) return bad("--loss_every must be >= 1");
  if (o.max_train_samples < 0) return bad("--max_train_samples must be >= 0");
  return absl::OkStatus();
}

// What one streaming pass over the training file tells us.
struct TrainFileSummary {
  int64_t samples = 0;
  int64_t min_ts = std::numeric_limits<int64_t>::max();
  int64_t max_ts = std::numeric_limits<int64_t>::min();
};

absl::StatusOr<TrainFileSummary> SummarizeTrainFile(const std::string& path) {
  absl::StatusOr<std::unique_ptr<data::SampleReader>> reader =
      data::SampleReader::Open(path);
  if (!reader.ok()) return reader.status();
  TrainFileSummary summary;
  std::vector<data::Sample> batch;
  while (true) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(8192, &batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    for (const data::Sample& s : batch) {
      summary.min_ts = std::min(summary.min_ts, s.timestamp);
      summary.max_ts = std::max(summary.max_ts, s.timestamp);
    }
    summary.samples += static_cast<int64_t>(*n);
  }
  if (summary.samples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no training samples"));
  }
  return summary;
}

// Target-item sample counts of the samples `filter` accepts, and how many
// samples it accepts.
absl::StatusOr<std::pair<absl::flat_hash_map<int64_t, int64_t>, int64_t>>
CountTrainItems(const std::string& path, const SampleFilter& filter) {
  absl::StatusOr<std::unique_ptr<data::SampleReader>> reader =
      data::SampleReader::Open(path);
  if (!reader.ok()) return reader.status();
  absl::flat_hash_map<int64_t, int64_t> counts;
  int64_t accepted = 0;
  std::vector<data::Sample> batch;
  while (filter.max_samples == 0 || accepted < filter.max_samples) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(8192, &batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    for (const data::Sample& s : batch) {
      if (!filter.Accepts(s)) continue;
      if (filter.max_samples > 0 && accepted >= filter.max_samples) break;
      ++counts[s.item_id];
      ++accepted;
    }
  }
  return std::make_pair(std::move(counts), accepted);
}

// This worker's share of `total` samples cut into batches of `batch_size`
// and dealt round-robin to `num_workers` workers.
int64_t WorkerShare(int64_t total, int batch_size, int num_workers,
                    int worker_index) {
  const int64_t batches = (total + batch_size - 1) / batch_size;
  int64_t samples = 0;
  for (int64_t b = worker_index; b < batches; b += num_workers) {
    samples += std::min<int64_t>(batch_size, total - b * batch_size);
  }
  return samples;
}

ps::TableConfig IdTableConfig(const TrainerOptions& o, const std::string& name,
                              int dim) {
  ps::TableConfig config;
  config.set_name(name);
  config.set_kind(ps::ID);
  config.set_dim(dim);
  config.mutable_optimizer()->set_name(o.id_optimizer);
  config.mutable_optimizer()->set_learning_rate(static_cast<float>(o.id_lr));
  config.mutable_initializer()->set_name("normal");
  config.mutable_initializer()->set_scale(static_cast<float>(o.id_init_scale));
  config.mutable_initializer()->set_seed(o.seed);
  return config;
}

// Finds the content table, checks its kind, returns (dim, version).
// Uses Stats of that one table rather than ListTables, which also checks
// every other table and so fails while another worker is creating its
// tables on the shards one by one.
absl::StatusOr<std::pair<int, uint64_t>> InspectContentTable(
    ps::PsClient* client, const std::string& name) {
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats =
      client->Stats(name);
  if (absl::IsNotFound(stats.status())) {
    return absl::NotFoundError(absl::StrCat(
        "content table '", name, "' does not exist on the shards (",
        stats.status().message(),
        "); ingest content vectors first or leave --content_table empty"));
  }
  if (!stats.ok()) return stats.status();
  for (const ps::TableStats& t : ps::TotalStats(*stats)) {
    if (t.config().name() != name) continue;
    if (t.config().kind() != ps::CONTENT) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--content_table=", name, " is an ID table; expected CONTENT"));
    }
    return std::make_pair(static_cast<int>(t.config().dim()), t.max_version());
  }
  return absl::NotFoundError(absl::StrCat(
      "content table '", name, "' does not exist on the shards; ingest "
      "content vectors first or leave --content_table empty"));
}

absl::StatusOr<EvalReport> Evaluate(
    ps::PsClient* client, model::CiubmModel* model, const TrainerOptions& o,
    const BatchPipeline::Options& base, const std::string& source,
    const std::string& path, const SampleFilter& filter,
    const std::optional<absl::flat_hash_map<int64_t, int64_t>>&
        train_item_counts) {
  const absl::Time start = absl::Now();
  BatchPipeline::Options options = base;
  options.path = path;
  options.filter = filter;
  options.batch_size = o.eval_batch_size;
  options.num_workers = 1;
  options.worker_index = 0;
  options.create_id_rows = false;
  options.target_id_dropout = 0.0;
  absl::StatusOr<std::unique_ptr<BatchPipeline>> pipeline =
      BatchPipeline::Start(client, options);
  if (!pipeline.ok()) return pipeline.status();
  std::vector<eval::Prediction> predictions;
  PreparedBatch batch;
  std::vector<float> probs;
  while (true) {
    absl::StatusOr<bool> got = (*pipeline)->Next(&batch);
    if (!got.ok()) return got.status();
    if (!*got) break;
    absl::Status forward = model->Forward(batch.batch, &probs);
    if (!forward.ok()) return forward;
    for (size_t i = 0; i < batch.samples.size(); ++i) {
      // A NaN would break the sort the AUC needs and make the logloss NaN
      // while the run reported success.
      if (!std::isfinite(probs[i])) {
        return absl::InternalError(absl::StrCat(
            "evaluating on ", source, " (", path, "): the model scored ",
            probs[i], " for user ", batch.samples[i].user_id, ", item ",
            batch.samples[i].item_id, " (diverged, or damaged parameters)"));
      }
      eval::Prediction p;
      p.prob = probs[i];
      p.label = batch.samples[i].label;
      p.user_id = batch.samples[i].user_id;
      p.item_id = batch.samples[i].item_id;
      predictions.push_back(p);
    }
  }
  if (!o.predictions_out.empty()) {
    std::string text = "#user\titem\tlabel\tscore\n";
    for (const eval::Prediction& p : predictions) {
      absl::StrAppend(&text, p.user_id, "\t", p.item_id, "\t", p.label, "\t",
                      absl::StrFormat("%.9g", p.prob), "\n");
    }
    absl::Status written = base::WriteFileAtomically(o.predictions_out, text);
    if (!written.ok()) return written;
  }
  EvalReport report;
  report.source = source;
  report.path = path;
  report.n = static_cast<int64_t>(predictions.size());
  for (const eval::Prediction& p : predictions) report.positives += p.label;
  std::vector<double> scores;
  std::vector<int> labels;
  for (const eval::Prediction& p : predictions) {
    scores.push_back(p.prob);
    labels.push_back(p.label);
  }
  // A metric that cannot be computed (e.g. one class only) is left unset
  // and reported as null, so the rest of the report survives.
  if (absl::StatusOr<double> auc = eval::Auc(scores, labels); auc.ok()) {
    report.auc = *auc;
  }
  if (absl::StatusOr<eval::GaucResult> g = eval::Gauc(predictions); g.ok()) {
    report.gauc = *g;
  }
  if (absl::StatusOr<double> ll = eval::LogLoss(predictions); ll.ok()) {
    report.logloss = *ll;
  }
  // Without the training items (--eval_only without --train) there is no
  // telling cold from warm: those metrics are left empty.
  if (train_item_counts.has_value()) {
    report.cold = eval::ColdAuc(predictions, *train_item_counts);
    absl::StatusOr<std::vector<eval::GroupAuc>> groups =
        eval::AucByItemFrequency(predictions, *train_item_counts, 10);
    if (!groups.ok()) return groups.status();
    report.by_item_frequency = std::move(*groups);
  }
  report.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return report;
}

// The `id` of the encoder directory tools/content_vectors --encoder_out
// wrote (its encoder.txt: "#mim-content-encoder v1", then key=value lines),
// checked to be a fastText encoder of the content table's dim.
absl::StatusOr<std::string> EncoderId(const std::string& dir, int dim) {
  const std::string path = dir + "/encoder.txt";
  std::string text;
  absl::Status read = base::ReadFileToString(path, &text);
  if (!read.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--content_encoder=", dir, ": ", read.message(),
        " (expected the directory tools/content_vectors --encoder_out wrote)"));
  }
  std::string id, kind, file_dim;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, "id=")) id = std::string(line);
    if (absl::ConsumePrefix(&line, "kind=")) kind = std::string(line);
    if (absl::ConsumePrefix(&line, "dim=")) file_dim = std::string(line);
  }
  if (!absl::StartsWith(text, "#mim-content-encoder v1") || id.empty() ||
      kind != "fasttext") {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a fastText content encoder descriptor"));
  }
  if (file_dim != absl::StrCat(dim)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has dim ", file_dim, "; the content table has dim ", dim));
  }
  return id;
}

// The id (16 hex digits of its parameter fingerprint) of the C-SFT encoder
// file //worker/csft:csft --encoder_out wrote, checked to map the content
// table's dim to itself.
absl::StatusOr<std::string> CsftEncoderId(const std::string& path, int dim) {
  absl::StatusOr<std::unique_ptr<csft::CsftEncoder>> e =
      csft::CsftEncoder::Load(path);
  if (!e.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--csft_encoder=", path, ": ", e.status().message(),
        " (expected the file //worker/csft:csft --encoder_out wrote)"));
  }
  if ((*e)->config().dim != dim) {
    return absl::FailedPreconditionError(
        absl::StrCat("--csft_encoder=", path, " has dim ", (*e)->config().dim,
                     "; the content table has dim ", dim));
  }
  return absl::StrFormat("%016x", (*e)->Fingerprint());
}

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

// The manifest of the model saved in `dir`: what the dense parameters were
// trained with, pinned for the serving tier and for warm starts.
absl::Status WriteModelManifest(const std::string& dir, const TrainerOptions& o,
                                const TrainReport& r, ps::PsClient* ps) {
  model::ModelManifest m;
  m.model_version = model::NewModelVersion(r.config.name);
  m.model_name = r.config.name;
  m.model_file = model::kModelFileName;
  absl::StatusOr<uint64_t> checksum =
      model::FileChecksum(dir + "/" + model::kModelFileName);
  if (!checksum.ok()) return checksum.status();
  m.model_file_checksum = *checksum;
  m.id_dim = r.config.id_dim;
  m.content_dim = r.config.content_dim;
  m.uses_content = model::UsesContent(r.config);
  m.use_id_interest = r.config.use_id_interest;
  m.use_content_interest = r.config.use_content_interest;
  m.use_fusion = r.config.use_fusion;
  m.seed = r.config.seed;
  m.num_shards = static_cast<int>(o.ps_addresses.size());
  m.id_table.name = r.id_table;
  m.id_table.dim = r.config.id_dim;
  m.id_table.optimizer = o.id_optimizer;
  m.id_table.learning_rate = static_cast<float>(o.id_lr);  // as on the shards
  // Pin the ID table as it is now (other runs may train it further).
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats =
      ps->Stats(r.id_table);
  if (!stats.ok()) return stats.status();
  for (const ps::TableStats& t : ps::TotalStats(*stats)) {
    if (t.config().name() != r.id_table) continue;
    m.id_table.rows = t.rows();
    m.id_table.pushes = t.pushes();
  }
  if (m.uses_content) {
    model::ModelManifest::ContentTable c;
    c.name = r.content_table;
    c.dim = r.config.content_dim;
    c.version = r.content_version;
    if (o.content_encoder.empty()) {
      c.encoder.kind = "external";
    } else {
      c.encoder.kind = "fasttext";
      c.encoder.path = AbsolutePath(o.content_encoder);
      absl::StatusOr<std::string> id =
          EncoderId(o.content_encoder, r.config.content_dim);
      if (!id.ok()) return id.status();
      c.encoder.id = *id;
    }
    if (!o.csft_encoder.empty()) {
      absl::StatusOr<std::string> id =
          CsftEncoderId(o.csft_encoder, r.config.content_dim);
      if (!id.ok()) return id.status();
      c.encoder.text_path = c.encoder.path;
      c.encoder.text_id = c.encoder.id;
      c.encoder.kind = "csft";
      c.encoder.path = AbsolutePath(o.csft_encoder);
      c.encoder.id = *id;
    }
    m.content_table = std::move(c);
  }
  m.dense_params = r.dense_mode;
  m.dense_table = r.dense_table;
  m.train_samples = r.train_samples;
  m.init_model = r.init_model;
  m.created_unix = absl::ToUnixSeconds(absl::Now());
  return model::WriteManifest(dir, m);
}

// Loads init_model_dir's dense params and Adam state into `model`, after
// checking that the earlier run trained the ID table this run will use
// (dense weights on top of fresh ID rows would be silently wrong).
absl::Status WarmStart(const TrainerOptions& o, const std::string& id_table,
                       ps::PsClient* ps, model::CiubmModel* model,
                       TrainReport* report) {
  absl::StatusOr<model::ModelManifest> manifest =
      model::ReadManifest(o.init_model_dir);
  if (absl::IsNotFound(manifest.status())) {
    return absl::NotFoundError(absl::StrCat("--init_model_dir: ",
                                            manifest.status().message()));
  }
  if (!manifest.ok()) {
    return absl::DataLossError(absl::StrCat(
        "--init_model_dir: not a trainer manifest: ",
        manifest.status().message()));
  }
  const std::string& trained = manifest->id_table.name;
  if (trained != id_table) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--init_model_dir=", o.init_model_dir, " was trained with ID table '",
        trained, "' but this run uses '", id_table,
        "'; pass --id_table=", trained, " (or the same --model, --seed and "
        "--table_prefix) to continue it"));
  }
  // The same name is not enough: on shards that lost it (a fresh
  // deployment, a dropped table) CreateTable would make fresh rows.
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats =
      ps->Stats(id_table);
  if (absl::IsNotFound(stats.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--init_model_dir=", o.init_model_dir, " was trained with ID table '",
        id_table, "', which is not on the shards (", stats.status().message(),
        "); its dense params would meet fresh ID rows"));
  }
  if (!stats.ok()) return stats.status();
  const std::string path = o.init_model_dir + "/" + manifest->model_file;
  MIM_RETURN_IF_ERROR(
      model::CheckModelFile(path, *manifest, "--init_model_dir: "));
  if (manifest->dense_params != "local") {
    // Adam ran on the shards (or per GPU worker): the saved moments are
    // not its state, so the optimizer starts over on loaded weights.
    LOG(WARNING) << "--init_model_dir=" << o.init_model_dir
                 << " was trained with dense params '"
                 << manifest->dense_params
                 << "': its file holds the weights but not the Adam state, "
                    "which starts over (the first steps are full-size)";
  }
  absl::Status loaded = model->Load(path);
  if (!loaded.ok()) return loaded;
  report->init_model = path;
  report->init_adam_step = model->adam_step();
  return absl::OkStatus();
}

}  // namespace

std::string IdTableName(const TrainerOptions& options) {
  return options.id_table.empty() ? TableBase(options) + "_id"
                                  : options.id_table;
}

namespace {

// What a run sets up before its first batch. The barrier is set as soon as
// it exists, so that RunTrainer can report any later failure to worker 0.
// Not thread-safe.
struct TrainerSetup {
  std::unique_ptr<model::CiubmModel> model;
  std::unique_ptr<DenseSync> dense;
  std::unique_ptr<FinishBarrier> barrier;  // num_workers > 1 only
  // --overlap_copies on a device: the pipelines stage inputs with it.
  std::unique_ptr<model::InputStager> stager;
  BatchPipeline::Options train_pipe;       // this worker's training pass
  // The evaluated samples: the held-out tail of the train file with
  // validation_tail_fraction > 0, else all of the test file.
  SampleFilter eval_filter;
  std::optional<absl::flat_hash_map<int64_t, int64_t>> train_item_counts;
  int64_t epoch_samples = 0;  // this worker's, for the progress bar
};

// The model config `o` asks for; with a content table, its dim (the table
// and its version go into *report).
absl::StatusOr<model::ModelConfig> ConfigureModel(const TrainerOptions& o,
                                                  ps::PsClient* ps,
                                                  TrainReport* report) {
  MIM_ASSIGN_OR_RETURN(model::ModelConfig config,
                       model::ModelConfigFromName(o.model_name));
  config.seed = o.seed;
  config.id_dim = o.id_dim;
  config.adam.learning_rate = static_cast<float>(o.lr);
  config.use_id_interest = !o.no_id_interest;
  config.use_content_interest = !o.no_content_interest;
  config.use_fusion = !o.no_fusion;
  if (!o.content_table.empty()) {
    using DimAndVersion = std::pair<int, uint64_t>;
    MIM_ASSIGN_OR_RETURN(const DimAndVersion content,
                         InspectContentTable(ps, o.content_table));
    config.content_dim = content.first;
    report->content_table = o.content_table;
    report->content_version = content.second;
  } else if (model::UsesContent(config)) {
    // Zero content vectors would train and evaluate a content model that
    // silently has no content.
    return absl::InvalidArgumentError(absl::StrCat(
        "--model=", o.model_name, " reads item content but --content_table "
        "is empty; pass --content_table=TABLE (a CONTENT table on the "
        "shards, filled by tools/ingest_content), or train a model without "
        "content (", o.model_name.substr(0, o.model_name.find('_')), ")"));
  }
  return config;
}

// The compute backend of --device; FAILED_PRECONDITION naming the reason
// when --device=cuda finds no usable device (or the build has no CUDA).
absl::StatusOr<const kernels::ComputeBackend*> DeviceBackend(
    const TrainerOptions& o) {
  if (o.device == "cpu") return &kernels::CpuBackend();
  const absl::Status st = kernels::CudaDeviceStatus();
  if (!st.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device=cuda: ", st.message(),
        "; build the trainer with --config=cuda and run it on a GPU "
        "machine, or use //worker:trainer_cuda_emulated (the CUDA path on "
        "the CPU grid emulator, for tests)"));
  }
  kernels::SetCudaMath(o.cuda_math == "tf32" ? kernels::CudaMath::kTf32
                                             : kernels::CudaMath::kFp32);
  return &kernels::CudaBackend();
}

// A run that is not a warm start must begin on an ID table without rows:
// one an earlier run trained (the same --model, --seed and --table_prefix,
// or --id_table) would meet newly seeded dense weights, and the run would
// neither reproduce nor continue anything. FAILED_PRECONDITION saying what
// to do instead. (Data-parallel workers share their table as it fills, so
// only a single worker checks.)
absl::Status CheckFreshIdTable(const std::string& id_table,
                               ps::PsClient* ps) {
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats = ps->Stats("");
  if (!stats.ok()) return stats.status();
  const ps::TableOnShards on = ps::FindTableOnShards(*stats, id_table);
  if (on.total_rows() == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "ID table '", id_table, "' already holds ", on.total_rows(),
      " rows trained by an earlier run: a fresh run would put newly seeded "
      "dense weights on them. Continue that run with --init_model_dir=<its "
      "--model_dir>, drop the table (ps_admin drop-table ", id_table,
      " --yes), or train into another one (--table_prefix or --id_table)"));
}

// The model (warm-started from init_model_dir if given) and its ID table
// on the shards.
absl::StatusOr<std::unique_ptr<model::CiubmModel>> CreateModel(
    const TrainerOptions& o, ps::PsClient* ps, TrainReport* report) {
  MIM_ASSIGN_OR_RETURN(const model::ModelConfig config,
                       ConfigureModel(o, ps, report));
  MIM_ASSIGN_OR_RETURN(const kernels::ComputeBackend* backend,
                       DeviceBackend(o));
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<model::CiubmModel> model,
                       model::CiubmModel::Create(config, *backend));
  report->config = model->config();
  report->id_table = IdTableName(o);
  if (!o.init_model_dir.empty()) {
    MIM_RETURN_IF_ERROR(
        WarmStart(o, report->id_table, ps, model.get(), report));
  } else if (o.num_workers == 1) {
    MIM_RETURN_IF_ERROR(CheckFreshIdTable(report->id_table, ps));
  }
  MIM_RETURN_IF_ERROR(ps->CreateTable(
      IdTableConfig(o, report->id_table, config.id_dim), true));
  return model;
}

// The one place that picks a DenseSync for `o` (its name and table go into
// *report); a new mode adds its case here.
absl::StatusOr<std::unique_ptr<DenseSync>> CreateDenseSync(
    const TrainerOptions& o, ps::PsClient* ps, model::CiubmModel* model,
    TrainReport* report) {
  const bool on_ps = o.dense_params == "ps" ||
                     (o.dense_params == "auto" && o.num_workers > 1);
  std::unique_ptr<DenseSync> dense;
  if (o.dense_params == "nccl") {
    // The params stay on the GPUs (and in the model file); the shards only
    // carry the NCCL id.
    MIM_ASSIGN_OR_RETURN(
        dense, NcclDenseSync::Create(ps, TableBase(o) + "_nccl_id",
                                     o.num_workers, o.worker_index, model,
                                     absl::Seconds(o.nccl_timeout_s)));
  } else if (on_ps) {
    report->dense_table = TableBase(o) + "_dense";
    MIM_ASSIGN_OR_RETURN(
        dense, PsDenseSync::Create(ps, report->dense_table, model, o.seed));
  } else {
    dense = std::make_unique<LocalDenseSync>();
  }
  report->dense_mode = std::string(dense->name());
  return dense;
}

// The first timestamp of the held-out tail of a file spanning `summary`.
absl::StatusOr<int64_t> ValidationCutoff(const TrainerOptions& o,
                                         const TrainFileSummary& summary) {
  const double span = static_cast<double>(summary.max_ts - summary.min_ts);
  const int64_t cutoff =
      summary.min_ts + static_cast<int64_t>(std::ceil(
                           (1.0 - o.validation_tail_fraction) * span));
  if (cutoff <= summary.min_ts || cutoff > summary.max_ts) {
    return absl::InvalidArgumentError(absl::StrCat(
        o.train_path, ": timestamps span [", summary.min_ts, ", ",
        summary.max_ts, "]; too narrow to hold out a tail of ",
        o.validation_tail_fraction));
  }
  return cutoff;
}

BatchPipeline::Options TrainPipelineOptions(const TrainerOptions& o,
                                            const SampleFilter& filter,
                                            const TrainReport& report) {
  BatchPipeline::Options pipe;
  pipe.path = o.train_path;
  pipe.filter = filter;
  pipe.batch_size = o.batch_size;
  pipe.num_workers = o.num_workers;
  pipe.worker_index = o.worker_index;
  pipe.id_table = report.id_table;
  pipe.id_dim = report.config.id_dim;
  pipe.content_table = o.content_table;
  pipe.content_dim = report.config.content_dim;
  pipe.create_id_rows = true;
  pipe.target_id_dropout = o.target_id_dropout;
  pipe.prefetch = o.prefetch;
  return pipe;
}

// Which samples train and which evaluate, and what the training portion
// holds (item counts for cold and per-frequency AUC, this worker's share).
absl::Status PlanData(const TrainerOptions& o, TrainerSetup* setup,
                      TrainReport* report) {
  MIM_ASSIGN_OR_RETURN(const TrainFileSummary summary,
                       SummarizeTrainFile(o.train_path));
  SampleFilter train_filter;
  train_filter.max_samples = o.max_train_samples;
  if (o.validation_tail_fraction > 0) {
    MIM_ASSIGN_OR_RETURN(const int64_t cutoff, ValidationCutoff(o, summary));
    train_filter.max_timestamp = cutoff;
    setup->eval_filter.min_timestamp = cutoff;
    report->validation_cutoff = cutoff;
  }
  MIM_ASSIGN_OR_RETURN(auto counts,
                       CountTrainItems(o.train_path, train_filter));
  report->train_items = static_cast<int64_t>(counts.first.size());
  setup->train_item_counts = std::move(counts.first);
  setup->epoch_samples = WorkerShare(counts.second, o.batch_size,
                                     o.num_workers, o.worker_index);
  setup->train_pipe = TrainPipelineOptions(o, train_filter, *report);
  setup->train_pipe.stager = setup->stager.get();  // evaluation's too
  return absl::OkStatus();
}

// Everything before the first batch, filling *setup in this order: model
// and ID table, dense sync, barrier, data.
absl::Status SetUp(const TrainerOptions& o, ps::PsClient* ps,
                   TrainerSetup* setup, TrainReport* report) {
  kernels::SetCpuThreads(o.threads);
  MIM_ASSIGN_OR_RETURN(setup->model, CreateModel(o, ps, report));
  // The encoders go into the manifest of a content model at the end; a
  // bad one is found now, not after the whole run.
  const bool content = model::UsesContent(report->config);
  if (content && !o.content_encoder.empty()) {
    MIM_RETURN_IF_ERROR(
        EncoderId(o.content_encoder, report->config.content_dim).status());
  }
  if (content && !o.csft_encoder.empty()) {
    MIM_RETURN_IF_ERROR(
        CsftEncoderId(o.csft_encoder, report->config.content_dim).status());
  }
  if (o.overlap_copies && !setup->model->backend().host_memory()) {
    setup->stager = setup->model->NewInputStager();
  }
  MIM_ASSIGN_OR_RETURN(setup->dense,
                       CreateDenseSync(o, ps, setup->model.get(), report));
  if (o.num_workers > 1) {
    MIM_ASSIGN_OR_RETURN(
        setup->barrier,
        FinishBarrier::Create(ps, TableBase(o) + "_sync", o.num_workers,
                              o.worker_index));
  }
  return PlanData(o, setup, report);
}

// Loss-curve points: the mean loss of every `every` batches. Not
// thread-safe.
class LossCurve {
 public:
  explicit LossCurve(int every) : every_(every) {}

  void Add(int epoch, float loss, TrainReport* report) {
    sum_ += loss;
    if (++batches_ == every_) Flush(epoch, report);
  }

  // Adds the point of the batches since the last one, if any.
  void Flush(int epoch, TrainReport* report) {
    if (batches_ == 0) return;
    report->loss_curve.push_back({epoch, report->train_batches,
                                  report->train_samples, sum_ / batches_});
    sum_ = 0.0;
    batches_ = 0;
  }

 private:
  int every_;
  double sum_ = 0.0;
  int64_t batches_ = 0;
};

// One training step on `batch`: the dense update through `dense`, the
// ID-row gradients handed to `pipeline` to push. Returns the batch loss.
absl::StatusOr<float> TrainBatch(const TrainerOptions& o, int epoch,
                                 DenseSync* dense, model::CiubmModel* model,
                                 PreparedBatch* batch,
                                 std::vector<float>* grad_id,
                                 BatchPipeline* pipeline) {
  float loss = 0.0f;
  MIM_RETURN_IF_ERROR(dense->Step(batch->batch, model, &loss, grad_id));
  if (!std::isfinite(loss)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training diverged: loss ", loss, " at batch ", batch->index,
        " of epoch ", epoch, "; lower --lr or --id_lr"));
  }
  // The model's loss is the batch mean; rows get the gradient of the
  // summed loss, so that a row's step does not shrink with the batch
  // size (Adagrad's initial accumulator would otherwise swamp it).
  if (o.id_grad_sum) {
    const float scale = static_cast<float>(batch->samples.size());
    for (float& g : *grad_id) g *= scale;
  }
  // Pushed before the next pull; with prefetch, while the next batch
  // computes (see BatchPipeline).
  pipeline->PushAfter(std::move(batch->id_keys), *grad_id);
  return loss;
}

// One pass over this worker's training batches.
absl::Status RunEpoch(const TrainerOptions& o, ps::PsClient* ps,
                      std::ostream* progress, int epoch, TrainerSetup* setup,
                      LossCurve* curve, TrainReport* report) {
  BatchPipeline::Options pipe = setup->train_pipe;
  // A fresh draw of dropped targets each epoch, the same in every run.
  pipe.dropout_seed =
      o.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch);
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<BatchPipeline> pipeline,
                       BatchPipeline::Start(ps, pipe));
  ProgressBar bar(progress, epoch, o.epochs, setup->epoch_samples);
  int64_t epoch_done = 0;
  double smoothed = std::numeric_limits<double>::quiet_NaN();
  PreparedBatch batch;
  std::vector<float> grad_id;
  while (true) {
    MIM_ASSIGN_OR_RETURN(const bool got, pipeline->Next(&batch));
    if (!got) break;
    MIM_ASSIGN_OR_RETURN(
        const float loss,
        TrainBatch(o, epoch, setup->dense.get(), setup->model.get(), &batch,
                   &grad_id, pipeline.get()));
    const int64_t n = static_cast<int64_t>(batch.samples.size());
    epoch_done += n;
    report->train_samples += n;
    ++report->train_batches;
    smoothed = std::isnan(smoothed) ? loss : 0.98 * smoothed + 0.02 * loss;
    curve->Add(epoch, loss, report);
    bar.Update(epoch_done, smoothed);
  }
  bar.Finish(epoch_done, std::isnan(smoothed) ? 0.0 : smoothed);
  report->pushes_in_doubt += pipeline->pushes_in_doubt();
  return absl::OkStatus();
}

absl::Status RunEpochs(const TrainerOptions& o, ps::PsClient* ps,
                       std::ostream* progress, TrainerSetup* setup,
                       TrainReport* report) {
  const absl::Time start = absl::Now();
  LossCurve curve(o.loss_every);
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    MIM_RETURN_IF_ERROR(
        RunEpoch(o, ps, progress, epoch, setup, &curve, report));
    MIM_RETURN_IF_ERROR(setup->dense->EndEpoch(setup->model.get()));
  }
  curve.Flush(o.epochs, report);
  report->pushes_in_doubt += setup->dense->pushes_in_doubt();
  // Every push in doubt is resent (ps::PsClient::ResolvePushesInDoubt) and
  // so applied exactly once, or the run fails here: it never ends "done"
  // with a gradient that may be missing.
  if (absl::Status settled = ps->ResolvePushesInDoubt(); !settled.ok()) {
    return absl::Status(
        settled.code(),
        absl::StrCat("training ended with pushes whose outcome is unknown: ",
                     settled.message()));
  }
  report->train_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  report->train_samples_per_sec =
      report->train_seconds > 0 ? report->train_samples / report->train_seconds
                                : 0.0;
  return absl::OkStatus();
}

// Marks this worker finished; worker 0 then waits for all the others.
absl::Status JoinWorkers(const TrainerOptions& o, FinishBarrier* barrier) {
  if (barrier == nullptr) return absl::OkStatus();
  MIM_RETURN_IF_ERROR(barrier->Arrive());
  if (o.worker_index != 0) return absl::OkStatus();
  return barrier->WaitAll(absl::Seconds(o.barrier_timeout_s));
}

// Writes the model file and its manifest into model_dir.
absl::Status SaveModel(const TrainerOptions& o, ps::PsClient* ps,
                       const model::CiubmModel& model, TrainReport* report) {
  std::error_code ec;
  std::filesystem::create_directories(o.model_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create --model_dir=",
                                            o.model_dir, ": ", ec.message()));
  }
  const std::string model_path = o.model_dir + "/" + model::kModelFileName;
  MIM_RETURN_IF_ERROR(model.Save(model_path));
  MIM_RETURN_IF_ERROR(WriteModelManifest(o.model_dir, o, *report, ps));
  report->model_files = {model_path,
                         o.model_dir + "/" + model::kManifestFileName};
  return absl::OkStatus();
}

// Worker 0's part after training: the trained dense params, evaluation,
// and the model directory.
absl::Status EvaluateAndSave(const TrainerOptions& o, ps::PsClient* ps,
                             TrainerSetup* setup, TrainReport* report) {
  MIM_RETURN_IF_ERROR(setup->dense->Finish(setup->model.get()));
  const bool validation = o.validation_tail_fraction > 0;
  MIM_ASSIGN_OR_RETURN(
      report->eval,
      Evaluate(ps, setup->model.get(), o, setup->train_pipe,
               validation ? "validation_tail" : "test",
               validation ? o.train_path : o.test_path, setup->eval_filter,
               setup->train_item_counts));
  if (o.model_dir.empty()) return absl::OkStatus();
  return SaveModel(o, ps, *setup->model, report);
}

// RunTrainer's body, on validated options.
absl::Status Train(const TrainerOptions& o, std::ostream* progress,
                   ps::PsClient* ps, TrainerSetup* setup,
                   TrainReport* report) {
  MIM_RETURN_IF_ERROR(SetUp(o, ps, setup, report));
  MIM_RETURN_IF_ERROR(RunEpochs(o, ps, progress, setup, report));
  MIM_RETURN_IF_ERROR(JoinWorkers(o, setup->barrier.get()));
  if (o.worker_index != 0) return absl::OkStatus();  // Worker 0 evaluates.
  return EvaluateAndSave(o, ps, setup, report);
}

// The model saved in o.model_dir and checked against its manifest.
absl::StatusOr<std::unique_ptr<model::CiubmModel>> LoadSavedModel(
    const TrainerOptions& o, model::ModelManifest* manifest) {
  absl::StatusOr<model::ModelManifest> read = model::ReadManifest(o.model_dir);
  if (!read.ok()) {
    return absl::Status(read.status().code(),
                        absl::StrCat("--eval_only: --model_dir=", o.model_dir,
                                     " has no readable manifest: ",
                                     read.status().message()));
  }
  *manifest = std::move(*read);
  const std::string path = o.model_dir + "/" + manifest->model_file;
  MIM_RETURN_IF_ERROR(model::CheckModelFile(path, *manifest));
  MIM_ASSIGN_OR_RETURN(const kernels::ComputeBackend* backend,
                       DeviceBackend(o));
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<model::CiubmModel> m,
                       model::CiubmModel::LoadFromFile(path, *backend));
  const model::ModelConfig& c = m->config();
  if (c.id_dim != manifest->id_dim ||
      model::UsesContent(c) != manifest->uses_content) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " holds model '", c.name, "' (id_dim ", c.id_dim,
        ") which does not match its manifest (", manifest->model_name,
        ", id_dim ", manifest->id_dim, ")"));
  }
  return m;
}

// --eval_only: evaluates the saved model on o.test_path with the ID rows
// (and content rows) on the shards, which must be the ones it was trained
// with: the manifest's ID table must be there, on as many shards.
absl::Status EvaluateSavedModel(const TrainerOptions& o, ps::PsClient* ps,
                                TrainReport* report) {
  kernels::SetCpuThreads(o.threads);
  model::ModelManifest manifest;
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<model::CiubmModel> model,
                       LoadSavedModel(o, &manifest));
  if (manifest.num_shards != static_cast<int>(o.ps_addresses.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--eval_only: ", o.model_dir, " was trained on ", manifest.num_shards,
        " shards, --ps names ", o.ps_addresses.size(),
        "; pass the shards it was trained on (rows are routed by shard "
        "count)"));
  }
  const std::string& id_table = manifest.id_table.name;
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats =
      ps->Stats(id_table);
  if (absl::IsNotFound(stats.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--eval_only: ", o.model_dir, "/manifest.json names ID table '",
        id_table, "', which is not on the shards (", stats.status().message(),
        "); evaluate against the shards (and data_dirs) the model was "
        "trained on"));
  }
  if (!stats.ok()) return stats.status();
  report->config = model->config();
  report->id_table = id_table;
  report->dense_mode = manifest.dense_params;
  report->dense_table = manifest.dense_table;
  BatchPipeline::Options pipe;
  pipe.id_table = id_table;
  pipe.id_dim = report->config.id_dim;
  pipe.prefetch = o.prefetch;
  if (model::UsesContent(report->config)) {
    // --content_table overrides the manifest's (e.g. a new table version).
    const std::string table = !o.content_table.empty() ? o.content_table
                              : manifest.content_table.has_value()
                                  ? manifest.content_table->name
                                  : std::string();
    if (table.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--eval_only: ", o.model_dir, " holds a content model whose "
          "manifest names no content table; pass --content_table=TABLE"));
    }
    using DimAndVersion = std::pair<int, uint64_t>;
    MIM_ASSIGN_OR_RETURN(const DimAndVersion content,
                         InspectContentTable(ps, table));
    if (content.first != report->config.content_dim) {
      return absl::FailedPreconditionError(absl::StrCat(
          "content table ", table, " has dim ", content.first, "; the model ",
          "in ", o.model_dir, " reads content of dim ",
          report->config.content_dim));
    }
    report->content_table = table;
    report->content_version = content.second;
    pipe.content_table = table;
    pipe.content_dim = content.first;
  }
  std::optional<absl::flat_hash_map<int64_t, int64_t>> train_items;
  if (!o.train_path.empty()) {
    SampleFilter train_filter;
    train_filter.max_samples = o.max_train_samples;
    MIM_ASSIGN_OR_RETURN(auto counts,
                         CountTrainItems(o.train_path, train_filter));
    report->train_items = static_cast<int64_t>(counts.first.size());
    train_items = std::move(counts.first);
  }
  MIM_ASSIGN_OR_RETURN(report->eval,
                       Evaluate(ps, model.get(), o, pipe, "test", o.test_path,
                                SampleFilter(), train_items));
  return absl::OkStatus();
}

ps::PsClient::Options ClientOptions(const TrainerOptions& options) {
  ps::PsClient::Options client_options;
  client_options.timeout = absl::Seconds(options.ps_timeout_seconds);
  client_options.channels_per_shard = 2;  // trainer thread + prefetch thread
  client_options.credentials = options.ps_credentials;
  client_options.auth_token = options.ps_auth_token;
  // Ride through a shard restart or hang: retries are bounded by time, not
  // count. Pushes are resent too (PushRetry::kAlways): the shards apply
  // each once, so no step is lost; only a push still unanswered when the
  // budget runs out is in doubt (counted in pushes_in_doubt).
  client_options.max_attempts = std::numeric_limits<int>::max();
  client_options.retry_budget = absl::Seconds(options.ps_retry_seconds);
  client_options.on_retry = [budget = options.ps_retry_seconds](
                                const absl::Status& error, int attempt) {
    if (attempt == 1) {
      LOG(WARNING) << error.ToString(absl::StatusToStringMode::kWithNoExtraData)
                   << "; retrying for up to " << budget
                   << " s (--ps_retry_seconds)";
    }
  };
  return client_options;
}

}  // namespace

absl::StatusOr<TrainReport> RunTrainer(const TrainerOptions& options,
                                       std::ostream* progress) {
  MIM_RETURN_IF_ERROR(ValidateOptions(options));
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<ps::PsClient> client,
      ps::PsClient::Create(options.ps_addresses, ClientOptions(options)));
  // Declared after the client: its barrier and dense sync use it.
  TrainerSetup setup;
  TrainReport report;
  if (options.eval_only) {
    MIM_RETURN_IF_ERROR(EvaluateSavedModel(options, client.get(), &report));
    return report;
  }
  const absl::Status trained =
      Train(options, progress, client.get(), &setup, &report);
  if (!trained.ok()) {
    if (setup.barrier != nullptr) {
      // Best effort: worker 0 then stops waiting with ABORTED instead of
      // running into its barrier timeout.
      absl::Status marked = setup.barrier->Fail();
      if (!marked.ok()) LOG(WARNING) << "could not report failure: " << marked;
    }
    return trained;
  }
  return report;
}

}  // namespace mim::worker
