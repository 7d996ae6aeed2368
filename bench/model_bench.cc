// CiUBM model training/inference throughput on the CPU (kernels/ CPU twins):
// TrainStep (forward + backward + Adam) and Forward on a synthetic batch at
// the paper's shapes (default din_mim, B=1024, L=50, d=32, dm=64, MLP
// 200-80-1). Prints one "RESULT ..." line per model.
//
//   bazel run -c opt //bench:model_bench -- --threads=2 --models=din_mim
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gflags/gflags.h"
#include "kernels/common.h"
#include "worker/model/ciubm_model.h"

DEFINE_string(models, "din_mim", "comma-separated model names");
DEFINE_int32(batch, 1024, "batch size");
DEFINE_int32(len, 50, "behaviour positions per row (all full)");
DEFINE_int32(unique_rows, 20000, "unique ID rows in the batch");
DEFINE_int32(threads, 2, "kernels CPU threads");
DEFINE_int32(steps, 20, "timed steps (after 3 warm-up steps)");

namespace mim::model {
namespace {

Batch SyntheticBatch(int B, int L, int U, int d, int dm, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> row(0, U - 1);
  std::uniform_real_distribution<float> val(-0.1f, 0.1f);
  Batch b;
  b.batch_size = B;
  b.max_len = L;
  b.num_id_rows = U;
  b.id_rows.resize(static_cast<size_t>(U) * d);
  for (float& x : b.id_rows) x = val(rng);
  b.num_content_rows = U;
  b.content_rows.resize(static_cast<size_t>(U) * dm);
  for (float& x : b.content_rows) x = val(rng);
  b.genre_offsets.push_back(0);
  for (int r = 0; r < B; ++r) {
    b.lens.push_back(L - (r % 5));
    b.user_idx.push_back(row(rng));
    b.age_idx.push_back(row(rng));
    b.gender_idx.push_back(row(rng));
    b.occ_idx.push_back(row(rng));
    b.target_idx.push_back(row(rng));
    b.content_target_idx.push_back(b.target_idx.back());
    for (int g = 0; g < 2; ++g) b.genre_rows.push_back(row(rng));
    b.genre_offsets.push_back(static_cast<int32_t>(b.genre_rows.size()));
    for (int i = 0; i < L; ++i) {
      b.behavior_idx.push_back(row(rng));
      b.content_behavior_idx.push_back(b.behavior_idx.back());
    }
    b.labels.push_back(static_cast<float>(r % 2));
  }
  return b;
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

int Run() {
  kernels::SetCpuThreads(FLAGS_threads);
  for (absl::string_view name : absl::StrSplit(FLAGS_models, ',')) {
    absl::StatusOr<ModelConfig> c = ModelConfigFromName(name);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
      return 1;
    }
    auto model = CiubmModel::Create(*c);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    const Batch batch = SyntheticBatch(FLAGS_batch, FLAGS_len,
                                       FLAGS_unique_rows, c->id_dim,
                                       c->content_dim, 1);
    float loss = 0;
    std::vector<float> grad_rows, probs;
    for (int i = 0; i < 3; ++i) {
      absl::Status st = (*model)->TrainStep(batch, &loss, &grad_rows);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        return 1;
      }
    }
    double train_best = 1e30, train_sum = 0;
    for (int i = 0; i < FLAGS_steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      (void)(*model)->TrainStep(batch, &loss, &grad_rows);
      const double s = Seconds(t0);
      train_best = std::min(train_best, s);
      train_sum += s;
    }
    double fwd_best = 1e30;
    for (int i = 0; i < FLAGS_steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      (void)(*model)->Forward(batch, &probs);
      fwd_best = std::min(fwd_best, Seconds(t0));
    }
    std::printf(
        "RESULT model=%s B=%d L=%d threads=%d dense_params=%lld "
        "train_step_ms(best)=%.2f train_step_ms(mean)=%.2f "
        "train_samples_per_s=%.0f forward_ms(best)=%.2f loss=%.4f\n",
        std::string(name).c_str(), FLAGS_batch, FLAGS_len, FLAGS_threads,
        static_cast<long long>((*model)->num_dense_params()),
        train_best * 1e3, train_sum / FLAGS_steps * 1e3,
        FLAGS_batch / (train_sum / FLAGS_steps), fwd_best * 1e3, loss);
  }
  return 0;
}

}  // namespace
}  // namespace mim::model

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return mim::model::Run();
}
