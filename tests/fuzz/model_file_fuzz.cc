// Fuzz target: dense model files (model.mimmodel, written by
// CiubmModel::Save), as the serving tier and --init_model_dir load them.
//
// Input: a file that starts with 'M' is used as it is (a real model file is
// a seed). Any other input is a payload that the harness frames as a valid
// file (magic, version 1 or 2 by the first byte's low bit, length, FNV-1a
// checksum), so that most inputs get past the checksum and exercise the
// config and parameter sections.
//
// Invariants for a model that loads: it scores a small batch with
// probabilities in [0, 1] (or refuses with INTERNAL when its weights
// overflow to NaN); saved again it loads with the same parameters and Adam
// step.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/atomic_file.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"

namespace {

using mim::fuzz::Require;
using mim::model::CiubmModel;

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

template <typename T>
void AppendPod(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// The file the harness loads for `input` (see the file comment).
std::string ModelFileFor(absl::string_view input) {
  if (!input.empty() && input[0] == 'M') return std::string(input);
  const uint32_t version = input.empty() ? 2 : 1 + (input[0] & 1);
  const absl::string_view payload = input.empty() ? input : input.substr(1);
  std::string file = "MIMMODEL";
  AppendPod<uint32_t>(&file, version);
  AppendPod<uint64_t>(&file, payload.size());
  file.append(payload.data(), payload.size());
  AppendPod<uint64_t>(&file, Fnv1a64(payload));
  return file;
}

// Two candidates for one user with three behaviours, all rows zero but a
// few, scored with `model`.
void CheckScores(const CiubmModel& model) {
  const mim::model::ModelConfig& c = model.config();
  const std::vector<int64_t> behavior = {11, 12, 11};
  const std::vector<int32_t> genres = {1, 2};
  std::vector<mim::model::FeatureRow> rows(2);
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].user_id = 7;
    rows[i].age_bucket = 1;
    rows[i].behavior = behavior;
    rows[i].item_id = 20 + static_cast<int64_t>(i);
    rows[i].genres = genres;
  }
  mim::model::BatchBuilder builder;
  mim::model::Batch batch;
  std::vector<uint64_t> id_keys, content_keys;
  Require(builder
              .Build(rows, c.id_dim, std::max(1, c.content_dim), &batch,
                     &id_keys, &content_keys)
              .ok(),
          "BatchBuilder refused the dims of a model that loaded");
  for (size_t i = 0; i < batch.id_rows.size(); i += 3) {
    batch.id_rows[i] = 0.25f;
  }
  for (size_t i = 0; i < batch.content_rows.size(); i += 2) {
    batch.content_rows[i] = -0.5f;
  }
  std::unique_ptr<mim::model::ModelWorkspace> ws = model.NewWorkspace();
  std::vector<float> probs;
  const absl::Status scored = model.Predict(batch, ws.get(), &probs);
  if (!scored.ok()) {
    // Finite weights may still overflow to NaN on this batch: refused.
    Require(scored.code() == absl::StatusCode::kInternal,
            "a model that loaded cannot score a well-formed batch");
    return;
  }
  Require(probs.size() == rows.size(), "one score per candidate expected");
  for (float p : probs) {
    // NaN fails both comparisons.
    Require(p >= 0.0f && p <= 1.0f, "score outside [0, 1]");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mim::fuzz::WriteScratchFile(
      "model.mimmodel", ModelFileFor(mim::fuzz::AsStringView(data, size)));
  absl::StatusOr<std::unique_ptr<CiubmModel>> model =
      CiubmModel::LoadFromFile(path);
  if (!model.ok()) {
    Require(model.status().code() == absl::StatusCode::kDataLoss,
            "a damaged model file must be DATA_LOSS");
    return 0;
  }
  CheckScores(**model);

  const std::string saved = mim::fuzz::ScratchDir() + "/saved.mimmodel";
  Require((*model)->Save(saved).ok(), "Save of a loaded model failed");
  absl::StatusOr<std::unique_ptr<CiubmModel>> again =
      CiubmModel::LoadFromFile(saved);
  Require(again.ok(), "a model saved after loading does not load");
  Require((*again)->dense_params() == (*model)->dense_params(),
          "parameters changed in a save/load round trip");
  Require((*again)->adam_step() == (*model)->adam_step(),
          "Adam step changed in a save/load round trip");
  return 0;
}
