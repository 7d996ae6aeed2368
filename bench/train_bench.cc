// Training throughput of the C++ CiUBM model (worker/model) on a real
// sample file, with the ID embeddings in a local in-process table: no
// parameter server, no network. The C++ half of the like-for-like
// comparison with bench/train_bench_torch.py (same samples, same model,
// same optimizers); bench/train_bench.sh runs both.
//
// Samples [skip, skip + (warmup + steps) * batch) are read and turned into
// Batches by BatchBuilder before timing (the PyTorch side pre-parses into
// tensors the same way); the builder's cost is reported on its own. A timed
// step is: pull the batch's unique ID rows from the table and its content
// rows from the frozen content table, TrainStep (forward, backward, Adam on
// the dense parameters), push the per-unique-row gradients through Adagrad
// (lr 0.05, initial accumulator 0.1, eps 1e-8: the PS table defaults).
//
// --table=flat: a dense float array plus Adagrad state, rows resolved from
//   keys when the batches are built (what nn.Embedding does on the PyTorch
//   side); the update is AdagradUpdate of embedding/optimizers.h, restated
//   here (that target is private to embedding/).
// --table=ps: embedding::EmbeddingTable, the table a PS shard runs (striped
//   hash map, rows created on first pull, two-phase writes), in process.
//
//   bazel build -c opt //bench:train_bench
//   bazel-bin/bench/train_bench --samples=/tmp/syn/train.tsv
//       --vectors=/tmp/syn/item_vectors.tsv --models=din,din_mim
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "embedding/embedding_table.h"
#include "embedding/table_config.h"
#include "gflags/gflags.h"
#include "kernels/common.h"
#include "worker/data/content_vectors.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"

DEFINE_string(samples, "", "mim-samples v1 file (required)");
DEFINE_string(vectors, "", "mim-vectors v1 content file, dim 64 (required)");
DEFINE_string(models, "din,din_mim", "comma-separated model names");
DEFINE_string(table, "flat", "ID table: flat (dense array) or ps "
                             "(embedding::EmbeddingTable)");
DEFINE_int32(batch, 1024, "batch size");
DEFINE_int64(skip, 120000, "samples skipped at the start of the file");
DEFINE_int32(warmup, 5, "untimed steps first");
DEFINE_int32(steps, 40, "timed steps");
DEFINE_int32(threads, 2, "kernels CPU threads");

namespace mim::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Initialisation and optimizer shared by both tables (and by the PyTorch
// side): N(0, 0.01) rows, Adagrad.
embedding::TableConfig IdTableConfig(int dim) {
  embedding::TableConfig c;
  c.name = "id";
  c.kind = embedding::TableKind::kId;
  c.dim = static_cast<uint32_t>(dim);
  c.optimizer.kind = embedding::OptimizerKind::kAdagrad;
  c.optimizer.learning_rate = 0.05f;
  c.optimizer.initial_accumulator = 0.1f;
  c.optimizer.epsilon = 1e-8f;
  c.initializer.kind = embedding::InitializerKind::kNormal;
  c.initializer.scale = 0.01f;
  return c;
}

// A prepared step: the Batch from BatchBuilder, its unique keys, and for the
// flat table the rows those keys resolve to.
struct PreparedBatch {
  model::Batch batch;
  std::vector<uint64_t> id_keys, content_keys;
  std::vector<int32_t> id_table_rows;       // flat table row per id key
  std::vector<int32_t> content_table_rows;  // -1: no vector (zero row)
};

// Dense local ID table: values and Adagrad accumulators, one row per key
// seen while preparing batches. Not thread-safe.
class FlatTable {
 public:
  explicit FlatTable(const embedding::TableConfig& config) : config_(config) {}

  int32_t RowOf(uint64_t key) {
    auto [it, inserted] = rows_.try_emplace(key, num_rows_);
    if (inserted) ++num_rows_;
    return it->second;
  }
  void Init(uint64_t seed) {
    const int d = config_.dim;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, config_.initializer.scale);
    values_.resize(static_cast<size_t>(num_rows_) * d);
    for (float& v : values_) v = normal(rng);
    state_.assign(values_.size(), config_.optimizer.initial_accumulator);
  }
  void Pull(const std::vector<int32_t>& rows, float* out) const {
    const int d = config_.dim;
    for (size_t i = 0; i < rows.size(); ++i) {
      std::copy_n(values_.data() + static_cast<size_t>(rows[i]) * d, d,
                  out + i * d);
    }
  }
  void Push(const std::vector<int32_t>& rows, const float* grads) {
    const int d = config_.dim;
    const float lr = config_.optimizer.learning_rate;
    const float eps = config_.optimizer.epsilon;
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t off = static_cast<size_t>(rows[i]) * d;
      // acc += g^2; w -= lr * g / (sqrt(acc) + eps), as the PS does.
      const float* g = grads + i * d;
      float* w = values_.data() + off;
      float* acc = state_.data() + off;
      for (int j = 0; j < d; ++j) {
        acc[j] += g[j] * g[j];
        w[j] -= lr * g[j] / (std::sqrt(acc[j]) + eps);
      }
    }
  }
  int32_t num_rows() const { return num_rows_; }

 private:
  embedding::TableConfig config_;
  absl::flat_hash_map<uint64_t, int32_t> rows_;
  int32_t num_rows_ = 0;
  std::vector<float> values_, state_;
};

absl::Status Check(const absl::Status& st, const char* what) {
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
}

struct Data {
  std::vector<PreparedBatch> batches;
  std::vector<float> content;  // frozen content table, row-major
  double build_seconds = 0;
  double mean_len = 0;
};

absl::StatusOr<Data> Prepare(int id_dim, int content_dim, FlatTable* flat) {
  Data data;
  absl::StatusOr<std::vector<data::ItemVector>> vecs =
      data::ReadAllContentVectors(FLAGS_vectors, content_dim);
  if (!vecs.ok()) return Check(vecs.status(), "content vectors");
  absl::flat_hash_map<int64_t, int32_t> content_row;
  data.content.reserve(vecs->size() * content_dim);
  for (const data::ItemVector& v : *vecs) {
    content_row[v.item_id] = static_cast<int32_t>(content_row.size());
    data.content.insert(data.content.end(), v.values.begin(), v.values.end());
  }

  absl::StatusOr<std::unique_ptr<data::SampleReader>> reader =
      data::SampleReader::Open(FLAGS_samples);
  if (!reader.ok()) return Check(reader.status(), "samples");
  std::vector<data::Sample> samples;
  for (int64_t left = FLAGS_skip; left > 0;) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(
        static_cast<size_t>(std::min<int64_t>(left, 65536)), &samples);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    left -= static_cast<int64_t>(*n);
  }
  model::BatchBuilder builder;
  const int total = FLAGS_warmup + FLAGS_steps;
  int64_t behaviours = 0, rows = 0;
  for (int s = 0; s < total; ++s) {
    absl::StatusOr<size_t> n = (*reader)->ReadBatch(FLAGS_batch, &samples);
    if (!n.ok()) return n.status();
    if (static_cast<int>(*n) < FLAGS_batch) {
      return absl::OutOfRangeError(absl::StrCat(
          FLAGS_samples, ": fewer than skip + (warmup + steps) * batch = ",
          FLAGS_skip + int64_t{total} * FLAGS_batch, " samples"));
    }
    PreparedBatch p;
    const Clock::time_point t0 = Clock::now();
    absl::Status st = builder.Build(samples, id_dim, content_dim, &p.batch,
                                    &p.id_keys, &p.content_keys);
    data.build_seconds += Seconds(t0);
    if (!st.ok()) return st;
    for (uint64_t k : p.id_keys) p.id_table_rows.push_back(flat->RowOf(k));
    for (uint64_t item : p.content_keys) {
      auto it = content_row.find(static_cast<int64_t>(item));
      p.content_table_rows.push_back(it == content_row.end() ? -1
                                                             : it->second);
    }
    for (int32_t len : p.batch.lens) behaviours += len;
    rows += p.batch.batch_size;
    data.batches.push_back(std::move(p));
  }
  data.mean_len = static_cast<double>(behaviours) / rows;
  return data;
}

void PullContent(const std::vector<float>& table, int dim,
                 const std::vector<int32_t>& rows, float* out) {
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0) {
      std::fill_n(out + i * dim, dim, 0.0f);
    } else {
      std::copy_n(table.data() + static_cast<size_t>(rows[i]) * dim, dim,
                  out + i * dim);
    }
  }
}

absl::Status RunModel(const std::string& name) {
  absl::StatusOr<model::ModelConfig> config = model::ModelConfigFromName(name);
  if (!config.ok()) return config.status();
  const int d = config->id_dim, dm = config->content_dim;
  const embedding::TableConfig table_config = IdTableConfig(d);
  FlatTable flat(table_config);
  absl::StatusOr<Data> data = Prepare(d, dm, &flat);
  if (!data.ok()) return data.status();
  flat.Init(1);
  std::unique_ptr<embedding::EmbeddingTable> ps_table;
  if (FLAGS_table == "ps") {
    auto t = embedding::EmbeddingTable::Create(table_config);
    if (!t.ok()) return t.status();
    ps_table = std::move(*t);
  } else if (FLAGS_table != "flat") {
    return absl::InvalidArgumentError(
        absl::StrCat("--table=", FLAGS_table, ", expected flat or ps"));
  }
  absl::StatusOr<std::unique_ptr<model::CiubmModel>> m =
      model::CiubmModel::Create(*config);
  if (!m.ok()) return m.status();

  std::vector<float> grad_rows;
  std::vector<uint32_t> missing;
  float loss = 0;
  double t_pull = 0, t_compute = 0, t_push = 0, best = 1e30;
  for (int s = 0; s < FLAGS_warmup + FLAGS_steps; ++s) {
    PreparedBatch& p = data->batches[s];
    model::Batch& b = p.batch;
    const Clock::time_point t0 = Clock::now();
    if (ps_table) {
      absl::Status st = ps_table->Pull(p.id_keys, b.id_rows.data(), &missing);
      if (!st.ok()) return Check(st, "pull");
    } else {
      flat.Pull(p.id_table_rows, b.id_rows.data());
    }
    if (model::UsesContent(*config)) {
      PullContent(data->content, dm, p.content_table_rows,
                  b.content_rows.data());
    }
    const Clock::time_point t1 = Clock::now();
    absl::Status st = (*m)->TrainStep(b, &loss, &grad_rows);
    if (!st.ok()) return Check(st, "TrainStep");
    const Clock::time_point t2 = Clock::now();
    if (ps_table) {
      absl::StatusOr<uint64_t> pushed =
          ps_table->Push(p.id_keys, grad_rows, /*now_micros=*/0, {});
      if (!pushed.ok()) return Check(pushed.status(), "push");
    } else {
      flat.Push(p.id_table_rows, grad_rows.data());
    }
    if (s < FLAGS_warmup) continue;
    const Clock::time_point t3 = Clock::now();
    t_pull += std::chrono::duration<double>(t1 - t0).count();
    t_compute += std::chrono::duration<double>(t2 - t1).count();
    t_push += std::chrono::duration<double>(t3 - t2).count();
    best = std::min(best, std::chrono::duration<double>(t3 - t0).count());
  }
  const double total = t_pull + t_compute + t_push;
  const double n = FLAGS_steps;
  std::printf(
      "RESULT side=cpp model=%s table=%s B=%d steps=%d threads=%d "
      "mean_len=%.1f step_ms(mean)=%.2f step_ms(best)=%.2f "
      "samples_per_s=%.0f pull_ms=%.2f compute_ms=%.2f push_ms=%.2f "
      "build_ms=%.2f samples_per_s_with_build=%.0f loss=%.4f\n",
      name.c_str(), FLAGS_table.c_str(), FLAGS_batch, FLAGS_steps,
      FLAGS_threads, data->mean_len, total / n * 1e3, best * 1e3,
      FLAGS_batch * n / total, t_pull / n * 1e3, t_compute / n * 1e3,
      t_push / n * 1e3,
      data->build_seconds / (FLAGS_warmup + FLAGS_steps) * 1e3,
      FLAGS_batch * n /
          (total + data->build_seconds * n / (FLAGS_warmup + FLAGS_steps)),
      loss);
  std::fflush(stdout);
  return absl::OkStatus();
}

int Run() {
  if (FLAGS_samples.empty() || FLAGS_vectors.empty()) {
    std::fprintf(stderr, "--samples and --vectors are required\n");
    return 2;
  }
  kernels::SetCpuThreads(FLAGS_threads);
  for (absl::string_view name : absl::StrSplit(FLAGS_models, ',')) {
    absl::Status st = RunModel(std::string(name));
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", std::string(name).c_str(),
                   st.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace mim::bench

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return mim::bench::Run();
}
