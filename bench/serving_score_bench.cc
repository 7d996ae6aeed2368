// The scoring part of one serving request, timed: CiubmModel::Predict on a
// warm workspace, on the batch //serving:server builds for one request (one
// user, one behaviour list shared by every candidate, C candidates; one
// FeatureRow per candidate through model::BatchBuilder, as
// serving/predictor.cc does). Row fetching and the RPC are not timed.
//
//   serving_score_bench --model_dir=DIR [--ps=H:P,H:P] --candidates=100,1000
//       --behaviors=50 --threads=1 --reps=300 [--dump_dir=D]
//
// Rows: with --ps, the batch's ID rows (GetRows) and content rows (Pull)
// come from the shards named in DIR/manifest.json, so the scores are the
// server's; without it they are seeded random values (timing does not
// depend on them). --dump_dir writes each batch, the model's probabilities
// and the timings as JSON (batch_C.json) for bench/serving_score_torch.py,
// which runs the same forward in PyTorch on the same batch.
//
// Prints one "RESULT ..." line per candidate count: median / min / p90 of
// Predict over --reps calls after --warmup calls, and the median time of
// BatchBuilder::Build for the same rows (not part of the Predict figure).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/atomic_file.h"
#include "gflags/gflags.h"
#include "kernels/common.h"
#include "nlohmann/json.hpp"
#include "ps/client.h"
#include "worker/data/sample.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"
#include "worker/model/manifest.h"

DEFINE_string(model_dir, "",
              "Model directory written by //worker:trainer (manifest.json "
              "and the model file it names).");
DEFINE_string(ps, "",
              "If set, shard addresses H:P,...: rows come from the tables in "
              "the manifest; else seeded random rows.");
DEFINE_string(candidates, "100,1000", "Candidate counts, comma-separated.");
DEFINE_int32(behaviors, 50, "Behaviour items per request (the model keeps 50).");
DEFINE_int64(items, 10000,
             "Item ids are drawn from 1..items (gen_synthetic's default).");
DEFINE_int64(users, 5000, "User id drawn from 1..users.");
DEFINE_int32(genres, 18, "Each candidate gets 1-3 genre ids from 1..genres.");
DEFINE_int32(threads, 1,
             "kernels::SetCpuThreads (also puts OpenBLAS at 1 thread).");
DEFINE_int32(reps, 300, "Timed Predict calls per candidate count.");
DEFINE_int32(warmup, 30, "Untimed Predict calls first.");
DEFINE_uint64(seed, 1, "Seed of the request and the random rows.");
DEFINE_string(dump_dir, "", "If set, write batch_<C>.json here.");

namespace mim::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// One request as the server sees it: shared user fields and behaviours,
// distinct candidates with their genres. The spans of the FeatureRows point
// into this struct, so it must outlive them.
struct Request {
  int64_t user_id = 0;
  int32_t age = 0, gender = 0, occupation = 0;
  std::vector<int64_t> behaviors;
  std::vector<int64_t> candidates;
  std::vector<std::vector<int32_t>> genres;
};

Request MakeRequest(int num_candidates, std::mt19937_64& rng) {
  auto draw = [&rng](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Request r;
  r.user_id = draw(1, FLAGS_users);
  r.age = static_cast<int32_t>(draw(1, 7));
  r.gender = static_cast<int32_t>(draw(1, 2));
  r.occupation = static_cast<int32_t>(draw(1, 21));
  for (int i = 0; i < FLAGS_behaviors; ++i) {
    r.behaviors.push_back(draw(1, FLAGS_items));
  }
  absl::flat_hash_set<int64_t> seen;
  const bool distinct = FLAGS_items >= num_candidates;
  for (int i = 0; i < num_candidates; ++i) {
    int64_t item = draw(1, FLAGS_items);
    while (distinct && !seen.insert(item).second) item = draw(1, FLAGS_items);
    r.candidates.push_back(item);
    std::vector<int32_t> g(draw(1, 3));
    for (int32_t& x : g) x = static_cast<int32_t>(draw(1, FLAGS_genres));
    r.genres.push_back(std::move(g));
  }
  return r;
}

// As serving/predictor.cc: one row per candidate sharing the user's spans.
std::vector<model::FeatureRow> RowsOf(const Request& r) {
  std::vector<model::FeatureRow> rows(r.candidates.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    model::FeatureRow& f = rows[i];
    f.user_id = r.user_id;
    f.age_bucket = r.age;
    f.gender = r.gender;
    f.occupation = r.occupation;
    f.behavior = r.behaviors;
    f.item_id = r.candidates[i];
    f.genres = r.genres[i];
  }
  return rows;
}

void FillRandom(model::Batch* b, int64_t id_dim, int64_t content_dim,
                std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (float& x : b->id_rows) x = n(rng);
  // Unit content vectors, as the fastText vectors ingested are.
  for (int64_t r = 0; r < b->num_content_rows; ++r) {
    float* row = b->content_rows.data() + r * content_dim;
    double ss = 0;
    for (int64_t j = 0; j < content_dim; ++j) {
      row[j] = n(rng);
      ss += double{row[j]} * row[j];
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(ss + 1e-12));
    for (int64_t j = 0; j < content_dim; ++j) row[j] *= inv;
  }
}

absl::Status FillFromShards(ps::PsClient& ps, const model::ModelManifest& m,
                            const std::vector<uint64_t>& id_keys,
                            const std::vector<uint64_t>& content_keys,
                            model::Batch* b) {
  absl::StatusOr<ps::PsClient::GetRowsResult> ids =
      ps.GetRows(m.id_table.name, id_keys);
  if (!ids.ok()) return ids.status();
  if (ids->values.size() != b->id_rows.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "table '", m.id_table.name, "' returned ", ids->values.size(),
        " floats for ", id_keys.size(), " keys; expected dim ", m.id_dim));
  }
  b->id_rows = std::move(ids->values);
  if (m.content_table.has_value() && !content_keys.empty()) {
    return ps.PullInto(m.content_table->name, content_keys,
                       absl::MakeSpan(b->content_rows), nullptr);
  }
  return absl::OkStatus();
}

json BatchJson(const model::Batch& b, int64_t id_dim, int64_t content_dim) {
  return {{"batch_size", b.batch_size},
          {"max_len", b.max_len},
          {"id_dim", id_dim},
          {"content_dim", content_dim},
          {"lens", b.lens},
          {"num_id_rows", b.num_id_rows},
          {"id_rows", b.id_rows},
          {"user_idx", b.user_idx},
          {"age_idx", b.age_idx},
          {"gender_idx", b.gender_idx},
          {"occ_idx", b.occ_idx},
          {"target_idx", b.target_idx},
          {"genre_offsets", b.genre_offsets},
          {"genre_rows", b.genre_rows},
          {"behavior_idx", b.behavior_idx},
          {"num_content_rows", b.num_content_rows},
          {"content_rows", b.content_rows},
          {"content_target_idx", b.content_target_idx},
          {"content_behavior_idx", b.content_behavior_idx}};
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "serving_score_bench: %s\n", st.ToString().c_str());
  return 1;
}

int Run() {
  if (FLAGS_model_dir.empty()) {
    return Fail(absl::InvalidArgumentError("--model_dir is required"));
  }
  if (FLAGS_reps < 1 || FLAGS_warmup < 0 || FLAGS_behaviors < 0) {
    return Fail(absl::InvalidArgumentError(
        "--reps >= 1, --warmup >= 0 and --behaviors >= 0 expected"));
  }
  std::vector<int> counts;
  for (absl::string_view s : absl::StrSplit(FLAGS_candidates, ',')) {
    int c = 0;
    if (!absl::SimpleAtoi(s, &c) || c < 1) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--candidates='", FLAGS_candidates,
          "': expected positive counts separated by commas")));
    }
    counts.push_back(c);
  }
  absl::StatusOr<model::ModelManifest> manifest =
      model::ReadManifest(FLAGS_model_dir);
  if (!manifest.ok()) return Fail(manifest.status());
  const std::string model_path =
      FLAGS_model_dir + "/" + manifest->model_file;
  absl::StatusOr<std::unique_ptr<model::CiubmModel>> model =
      model::CiubmModel::LoadFromFile(model_path);
  if (!model.ok()) return Fail(model.status());
  const model::ModelConfig& config = (*model)->config();
  std::unique_ptr<ps::PsClient> ps;
  if (!FLAGS_ps.empty()) {
    absl::StatusOr<std::unique_ptr<ps::PsClient>> c =
        ps::PsClient::Create(absl::StrSplit(FLAGS_ps, ','));
    if (!c.ok()) return Fail(c.status());
    ps = std::move(*c);
  }
  kernels::SetCpuThreads(FLAGS_threads);

  std::mt19937_64 rng(FLAGS_seed);
  for (int num_candidates : counts) {
    const Request request = MakeRequest(num_candidates, rng);
    const std::vector<model::FeatureRow> rows = RowsOf(request);
    const int64_t content_dim = std::max(1, config.content_dim);
    model::BatchBuilder builder(data::kMaxBehaviorLength);
    model::Batch batch;
    std::vector<uint64_t> id_keys, content_keys;
    std::vector<double> build_ms;
    for (int i = 0; i < std::max(10, FLAGS_reps / 10); ++i) {
      const Clock::time_point t0 = Clock::now();
      absl::Status st = builder.Build(rows, config.id_dim, content_dim, &batch,
                                      &id_keys, &content_keys);
      build_ms.push_back(Ms(Clock::now() - t0));
      if (!st.ok()) return Fail(st);
    }
    if (ps != nullptr) {
      absl::Status st =
          FillFromShards(*ps, *manifest, id_keys, content_keys, &batch);
      if (!st.ok()) return Fail(st);
    } else {
      FillRandom(&batch, config.id_dim, content_dim, rng);
    }

    std::unique_ptr<model::ModelWorkspace> workspace = (*model)->NewWorkspace();
    std::vector<float> probs;
    for (int i = 0; i < FLAGS_warmup; ++i) {
      absl::Status st = (*model)->Predict(batch, workspace.get(), &probs);
      if (!st.ok()) return Fail(st);
    }
    std::vector<double> predict_ms;
    predict_ms.reserve(FLAGS_reps);
    for (int i = 0; i < FLAGS_reps; ++i) {
      const Clock::time_point t0 = Clock::now();
      (void)(*model)->Predict(batch, workspace.get(), &probs);
      predict_ms.push_back(Ms(Clock::now() - t0));
    }
    const double median = Quantile(predict_ms, 0.5);
    const double best = *std::min_element(predict_ms.begin(), predict_ms.end());
    const double p90 = Quantile(predict_ms, 0.9);
    const double build = Quantile(build_ms, 0.5);
    std::printf(
        "RESULT side=cpp model=%s candidates=%d behaviors=%d B=%d L=%d "
        "id_rows=%lld content_rows=%lld threads=%d reps=%d rows=%s "
        "predict_ms(median)=%.4f predict_ms(min)=%.4f predict_ms(p90)=%.4f "
        "build_ms(median)=%.4f\n",
        config.name.c_str(), num_candidates, FLAGS_behaviors, batch.batch_size,
        batch.max_len, static_cast<long long>(batch.num_id_rows),
        static_cast<long long>(batch.num_content_rows), FLAGS_threads,
        FLAGS_reps, ps != nullptr ? "shards" : "random", median, best, p90,
        build);
    std::fflush(stdout);
    if (!FLAGS_dump_dir.empty()) {
      json j = BatchJson(batch, config.id_dim, content_dim);
      j["model"] = config.name;
      j["model_file"] = model_path;
      j["candidates"] = num_candidates;
      j["probs"] = probs;
      j["predict_ms"] = {{"median", median}, {"min", best}, {"p90", p90}};
      const std::string path =
          absl::StrCat(FLAGS_dump_dir, "/batch_", num_candidates, ".json");
      absl::Status st = base::WriteFileAtomically(path, j.dump() + "\n");
      if (!st.ok()) return Fail(st);
    }
  }
  return 0;
}

}  // namespace
}  // namespace mim::bench

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "serving_score_bench --model_dir=DIR [--ps=H:P,...] "
      "[--candidates=100,1000] [--threads=1] [--reps=300] [--dump_dir=D]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return mim::bench::Run();
}
