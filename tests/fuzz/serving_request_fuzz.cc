// Fuzz target: the serving tier's Predict request handling
// (serving/service.h, serving/predictor.h) up to the model, without shards.
//
// The input is a serialized mim.serving.PredictRequest, parsed as gRPC
// would. It goes through PredictInputFromProto and
// Predictor::ValidatePredictInput (the server's default limits); an
// accepted request is turned into one FeatureRow per candidate as
// Predictor::Predict does, batched with BatchBuilder and scored by a small
// in-process model (din_mim, sim_mim or avgpool_ct by user_id % 3) with
// made-up rows in place of the shards' rows.
//
// Invariants: an accepted request yields one score in [0, 1] per candidate;
// every refusal is INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/serving.pb.h"
#include "serving/predictor.h"
#include "serving/service.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"

namespace {

using mim::fuzz::Require;
using mim::model::CiubmModel;

std::unique_ptr<CiubmModel> SmallModel(const char* name) {
  absl::StatusOr<mim::model::ModelConfig> c =
      mim::model::ModelConfigFromName(name);
  Require(c.ok(), "unknown model name in the harness");
  c->id_dim = 4;
  c->content_dim = 3;
  c->sim_k = 3;
  c->mlp_hidden = {8, 4};
  c->att_hidden = {6, 3};
  absl::StatusOr<std::unique_ptr<CiubmModel>> m = CiubmModel::Create(*c);
  Require(m.ok(), "the harness could not create its model");
  return std::move(*m);
}

const std::vector<std::unique_ptr<CiubmModel>>& Models() {
  static const auto* models = [] {
    auto* v = new std::vector<std::unique_ptr<CiubmModel>>();
    v->push_back(SmallModel("din_mim"));
    v->push_back(SmallModel("sim_mim"));
    v->push_back(SmallModel("avgpool_ct"));
    return v;
  }();
  return *models;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mim::serving::PredictRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;

  absl::StatusOr<mim::serving::PredictInput> in =
      mim::serving::PredictInputFromProto(request);
  if (!in.ok()) {
    Require(in.status().code() == absl::StatusCode::kInvalidArgument,
            "PredictInputFromProto refused with a code other than "
            "INVALID_ARGUMENT");
    return 0;
  }
  mim::serving::Predictor::Options options;
  options.content_poll_interval = absl::ZeroDuration();  // no shards here
  // Validation reads only the options: no models, shards or cache needed.
  const mim::serving::Predictor predictor(nullptr, nullptr, nullptr, options);
  const absl::Status valid = predictor.ValidatePredictInput(*in);
  if (!valid.ok()) {
    Require(valid.code() == absl::StatusCode::kInvalidArgument,
            "ValidatePredictInput refused with a code other than "
            "INVALID_ARGUMENT");
    return 0;
  }

  // As Predictor::Predict builds the batch.
  const CiubmModel& model =
      *Models()[static_cast<uint64_t>(in->user_id) % Models().size()];
  const mim::model::ModelConfig& config = model.config();
  const size_t n = in->candidates.size();
  std::vector<mim::model::FeatureRow> rows(n);
  for (size_t i = 0; i < n; ++i) {
    mim::model::FeatureRow& r = rows[i];
    r.user_id = in->user_id;
    r.age_bucket = in->age_bucket;
    r.gender = in->gender;
    r.occupation = in->occupation;
    r.behavior = in->behaviors;
    r.item_id = in->candidates[i];
    if (!in->candidate_genres.empty()) r.genres = in->candidate_genres[i];
  }
  mim::model::BatchBuilder builder;
  mim::model::Batch batch;
  std::vector<uint64_t> id_keys, content_keys;
  Require(builder
              .Build(rows, config.id_dim, config.content_dim, &batch, &id_keys,
                     &content_keys)
              .ok(),
          "BatchBuilder refused a validated request");
  Require(batch.id_rows.size() == id_keys.size() * config.id_dim,
          "id_rows does not hold one row per ID key");
  Require(batch.content_rows.size() == content_keys.size() * config.content_dim,
          "content_rows does not hold one row per content key");
  // Rows as the shards might hold them: a function of the key.
  for (size_t k = 0; k < id_keys.size(); ++k) {
    for (int d = 0; d < config.id_dim; ++d) {
      batch.id_rows[k * config.id_dim + d] =
          static_cast<float>((id_keys[k] >> (d * 8)) & 0xff) / 256.0f - 0.5f;
    }
  }
  for (size_t k = 0; k < content_keys.size(); ++k) {
    for (int d = 0; d < config.content_dim; ++d) {
      batch.content_rows[k * config.content_dim + d] =
          static_cast<float>((content_keys[k] >> (d * 5)) & 0x1f) / 32.0f;
    }
  }
  std::unique_ptr<mim::model::ModelWorkspace> ws = model.NewWorkspace();
  std::vector<float> probs;
  const absl::Status scored = model.Predict(batch, ws.get(), &probs);
  Require(scored.ok(), "a validated request's batch does not score");
  Require(probs.size() == n, "one score per candidate expected");
  for (float p : probs) Require(p >= 0.0f && p <= 1.0f, "score outside [0, 1]");
  return 0;
}
