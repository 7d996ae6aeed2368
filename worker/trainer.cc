#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "kernels/common.h"
#include "nlohmann/json.hpp"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "worker/data/sample_io.h"
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
  if (o.train_path.empty()) return bad("--train is required");
  if (o.validation_tail_fraction == 0.0 && o.test_path.empty()) {
    return bad("--test is required unless --validation_tail_fraction > 0");
  }
  if (!(o.validation_tail_fraction >= 0.0 && o.validation_tail_fraction < 1.0)) {
    return bad("--validation_tail_fraction = ", o.validation_tail_fraction,
               "; expected in [0, 1)");
  }
  if (o.epochs < 1) return bad("--epochs = ", o.epochs, "; expected >= 1");
  if (!(o.ps_retry_seconds >= 0 && o.ps_retry_seconds <= 1e6)) {
    return bad("--ps_retry_seconds = ", o.ps_retry_seconds,
               "; expected in [0, 1e6]");
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
      o.dense_params != "ps") {
    return bad("--dense_params = '", o.dense_params,
               "'; expected auto, local or ps");
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
    const absl::flat_hash_map<int64_t, int64_t>& train_item_counts) {
  const absl::Time start = absl::Now();
  BatchPipeline::Options options = base;
  options.path = path;
  options.filter = filter;
  options.batch_size = o.eval_batch_size;
  options.num_workers = 1;
  options.worker_index = 0;
  options.create_id_rows = false;
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
  report.cold = eval::ColdAuc(predictions, train_item_counts);
  absl::StatusOr<std::vector<eval::GroupAuc>> groups =
      eval::AucByItemFrequency(predictions, train_item_counts, 10);
  if (!groups.ok()) return groups.status();
  report.by_item_frequency = std::move(*groups);
  report.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return report;
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
      std::error_code ec;
      const std::filesystem::path abs =
          std::filesystem::absolute(o.content_encoder, ec);
      c.encoder.path = ec ? o.content_encoder : abs.lexically_normal().string();
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

// RunTrainer's body, on validated options. `*barrier` is set once the
// shared barrier exists, so that the caller can report a failure to worker 0.
absl::StatusOr<TrainReport> RunTrainerImpl(
    const TrainerOptions& o, std::ostream* progress, ps::PsClient* ps,
    std::unique_ptr<FinishBarrier>* barrier_out) {
  kernels::SetCpuThreads(o.threads);

  TrainReport report;
  absl::StatusOr<model::ModelConfig> config =
      model::ModelConfigFromName(o.model_name);
  if (!config.ok()) return config.status();
  config->seed = o.seed;
  config->id_dim = o.id_dim;
  config->adam.learning_rate = static_cast<float>(o.lr);
  config->use_id_interest = !o.no_id_interest;
  config->use_content_interest = !o.no_content_interest;
  config->use_fusion = !o.no_fusion;

  if (!o.content_table.empty()) {
    absl::StatusOr<std::pair<int, uint64_t>> content =
        InspectContentTable(ps, o.content_table);
    if (!content.ok()) return content.status();
    config->content_dim = content->first;
    report.content_table = o.content_table;
    report.content_version = content->second;
  } else if (model::UsesContent(*config)) {
    LOG(WARNING) << "model " << o.model_name
                 << " reads content but --content_table is empty: content "
                    "vectors are zeros";
  }
  absl::StatusOr<std::unique_ptr<model::CiubmModel>> model =
      model::CiubmModel::Create(*config);
  if (!model.ok()) return model.status();
  report.config = (*model)->config();

  report.id_table = IdTableName(o);
  if (!o.init_model_dir.empty()) {
    absl::Status warm = WarmStart(o, report.id_table, ps, model->get(), &report);
    if (!warm.ok()) return warm;
  }
  absl::Status created = ps->CreateTable(
      IdTableConfig(o, report.id_table, config->id_dim), true);
  if (!created.ok()) return created;

  const bool dense_on_ps = o.dense_params == "ps" ||
                           (o.dense_params == "auto" && o.num_workers > 1);
  report.dense_mode = dense_on_ps ? "ps" : "local";
  std::unique_ptr<PsDenseParams> dense;
  std::unique_ptr<FinishBarrier>& barrier = *barrier_out;
  if (dense_on_ps) {
    report.dense_table = TableBase(o) + "_dense";
    PsDenseParams::AdamOptions adam;
    adam.learning_rate = config->adam.learning_rate;
    adam.beta1 = config->adam.beta1;
    adam.beta2 = config->adam.beta2;
    adam.epsilon = config->adam.epsilon;
    absl::StatusOr<std::unique_ptr<PsDenseParams>> d = PsDenseParams::Create(
        ps, report.dense_table, (*model)->dense_params(), adam, o.seed);
    if (!d.ok()) return d.status();
    dense = std::move(*d);
  }
  if (o.num_workers > 1) {
    absl::StatusOr<std::unique_ptr<FinishBarrier>> b = FinishBarrier::Create(
        ps, TableBase(o) + "_sync", o.num_workers, o.worker_index);
    if (!b.ok()) return b.status();
    barrier = std::move(*b);
  }

  // Training portion of the train file (and the held-out tail).
  absl::StatusOr<TrainFileSummary> summary = SummarizeTrainFile(o.train_path);
  if (!summary.ok()) return summary.status();
  SampleFilter train_filter;
  train_filter.max_samples = o.max_train_samples;
  SampleFilter validation_filter;
  if (o.validation_tail_fraction > 0) {
    const double span =
        static_cast<double>(summary->max_ts - summary->min_ts);
    const int64_t cutoff =
        summary->min_ts + static_cast<int64_t>(std::ceil(
                              (1.0 - o.validation_tail_fraction) * span));
    if (cutoff <= summary->min_ts || cutoff > summary->max_ts) {
      return absl::InvalidArgumentError(absl::StrCat(
          o.train_path, ": timestamps span [", summary->min_ts, ", ",
          summary->max_ts, "]; too narrow to hold out a tail of ",
          o.validation_tail_fraction));
    }
    train_filter.max_timestamp = cutoff;
    validation_filter.min_timestamp = cutoff;
    report.validation_cutoff = cutoff;
  }
  absl::StatusOr<std::pair<absl::flat_hash_map<int64_t, int64_t>, int64_t>>
      item_counts = CountTrainItems(o.train_path, train_filter);
  if (!item_counts.ok()) return item_counts.status();
  report.train_items = static_cast<int64_t>(item_counts->first.size());
  const int64_t epoch_samples = WorkerShare(
      item_counts->second, o.batch_size, o.num_workers, o.worker_index);

  BatchPipeline::Options pipe;
  pipe.path = o.train_path;
  pipe.filter = train_filter;
  pipe.batch_size = o.batch_size;
  pipe.num_workers = o.num_workers;
  pipe.worker_index = o.worker_index;
  pipe.id_table = report.id_table;
  pipe.id_dim = config->id_dim;
  pipe.content_table = o.content_table;
  pipe.content_dim = config->content_dim;
  pipe.create_id_rows = true;
  pipe.prefetch = o.prefetch;

  // Training loop.
  const absl::Time train_start = absl::Now();
  std::vector<float> grad_id;
  std::vector<float> grad_dense;
  double window_loss = 0.0;
  int64_t window_batches = 0;
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    absl::StatusOr<std::unique_ptr<BatchPipeline>> pipeline =
        BatchPipeline::Start(ps, pipe);
    if (!pipeline.ok()) return pipeline.status();
    ProgressBar bar(progress, epoch, o.epochs, epoch_samples);
    int64_t epoch_done = 0;
    double smoothed = std::numeric_limits<double>::quiet_NaN();
    PreparedBatch batch;
    while (true) {
      absl::StatusOr<bool> got = (*pipeline)->Next(&batch);
      if (!got.ok()) return got.status();
      if (!*got) break;
      float loss = 0.0f;
      absl::Status step;
      if (dense != nullptr) {
        step = dense->Fetch(&(*model)->dense_params());
        if (step.ok()) {
          step = (*model)->ForwardBackward(batch.batch, &loss, &grad_id,
                                           &grad_dense);
        }
        if (step.ok()) {
          step = dense->PushGradient(grad_dense);
          if (ps::IsPushInDoubt(step)) {
            LOG(WARNING) << "dense gradient push in doubt, not resent: "
                         << step;
            ++report.pushes_in_doubt;
            step = absl::OkStatus();
          }
        }
      } else {
        step = (*model)->TrainStep(batch.batch, &loss, &grad_id);
      }
      if (!step.ok()) return step;
      if (!std::isfinite(loss)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "training diverged: loss ", loss, " at batch ", batch.index,
            " of epoch ", epoch, "; lower --lr or --id_lr"));
      }
      // The model's loss is the batch mean; rows get the gradient of the
      // summed loss, so that a row's step does not shrink with the batch
      // size (Adagrad's initial accumulator would otherwise swamp it).
      if (o.id_grad_sum) {
        const float scale = static_cast<float>(batch.samples.size());
        for (float& g : grad_id) g *= scale;
      }
      // Pushed before the next pull; with prefetch, while the next batch
      // computes (see BatchPipeline).
      (*pipeline)->PushAfter(std::move(batch.id_keys), grad_id);

      const int64_t n = static_cast<int64_t>(batch.samples.size());
      epoch_done += n;
      report.train_samples += n;
      ++report.train_batches;
      smoothed = std::isnan(smoothed) ? loss : 0.98 * smoothed + 0.02 * loss;
      window_loss += loss;
      if (++window_batches == o.loss_every) {
        report.loss_curve.push_back({epoch, report.train_batches,
                                     report.train_samples,
                                     window_loss / window_batches});
        window_loss = 0.0;
        window_batches = 0;
      }
      bar.Update(epoch_done, smoothed);
    }
    bar.Finish(epoch_done, std::isnan(smoothed) ? 0.0 : smoothed);
    report.pushes_in_doubt += (*pipeline)->pushes_in_doubt();
  }
  if (window_batches > 0) {
    report.loss_curve.push_back({o.epochs, report.train_batches,
                                 report.train_samples,
                                 window_loss / window_batches});
  }
  report.train_seconds = absl::ToDoubleSeconds(absl::Now() - train_start);
  report.train_samples_per_sec =
      report.train_seconds > 0 ? report.train_samples / report.train_seconds
                               : 0.0;

  if (barrier != nullptr) {
    absl::Status arrived = barrier->Arrive();
    if (!arrived.ok()) return arrived;
  }
  if (o.worker_index != 0) return report;  // Worker 0 evaluates and saves.
  if (barrier != nullptr) {
    absl::Status all = barrier->WaitAll(absl::Seconds(o.barrier_timeout_s));
    if (!all.ok()) return all;
  }
  if (dense != nullptr) {
    absl::Status fetched = dense->Fetch(&(*model)->dense_params());
    if (!fetched.ok()) return fetched;
  }

  const bool validation = o.validation_tail_fraction > 0;
  absl::StatusOr<EvalReport> evaluated = Evaluate(
      ps, model->get(), o, pipe, validation ? "validation_tail" : "test",
      validation ? o.train_path : o.test_path,
      validation ? validation_filter : SampleFilter(), item_counts->first);
  if (!evaluated.ok()) return evaluated.status();
  report.eval = std::move(*evaluated);

  if (!o.model_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.model_dir, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot create --model_dir=",
                                              o.model_dir, ": ", ec.message()));
    }
    const std::string model_path = o.model_dir + "/" + model::kModelFileName;
    absl::Status saved = (*model)->Save(model_path);
    if (!saved.ok()) return saved;
    const std::string manifest_path =
        o.model_dir + "/" + model::kManifestFileName;
    absl::Status written = WriteModelManifest(o.model_dir, o, report, ps);
    if (!written.ok()) return written;
    report.model_files = {model_path, manifest_path};
  }
  return report;
}

}  // namespace

absl::StatusOr<TrainReport> RunTrainer(const TrainerOptions& options,
                                       std::ostream* progress) {
  if (absl::Status valid = ValidateOptions(options); !valid.ok()) {
    return valid;
  }
  ps::PsClient::Options client_options;
  client_options.timeout = absl::Seconds(60);
  client_options.channels_per_shard = 2;  // trainer thread + prefetch thread
  // Ride through a shard restart: retries are bounded by time, not count.
  // Pushes are sent only over a connected channel and never resent
  // (PushRetry::kUnsent): a push in doubt is counted, not applied twice.
  client_options.max_attempts = std::numeric_limits<int>::max();
  client_options.retry_budget = absl::Seconds(options.ps_retry_seconds);
  client_options.on_retry = [budget = options.ps_retry_seconds](
                                const absl::Status& error, int attempt) {
    if (attempt == 1) {
      LOG(WARNING) << error << "; retrying for up to " << budget
                   << " s (--ps_retry_seconds)";
    }
  };
  absl::StatusOr<std::unique_ptr<ps::PsClient>> client =
      ps::PsClient::Create(options.ps_addresses, client_options);
  if (!client.ok()) return client.status();
  // Declared after the client: the barrier uses it, so it must go first.
  std::unique_ptr<FinishBarrier> barrier;
  absl::StatusOr<TrainReport> report =
      RunTrainerImpl(options, progress, client->get(), &barrier);
  if (!report.ok() && barrier != nullptr) {
    // Best effort: worker 0 then stops waiting with ABORTED instead of
    // running into its barrier timeout.
    absl::Status marked = barrier->Fail();
    if (!marked.ok()) LOG(WARNING) << "could not report failure: " << marked;
  }
  return report;
}

}  // namespace mim::worker
