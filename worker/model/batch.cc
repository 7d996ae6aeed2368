#include "worker/model/batch.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "worker/data/feature_key.h"

namespace mim::model {
namespace {

absl::Status CheckSize(const char* field, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Batch.%s has %d entries, expected %d", field, got, want));
  }
  return absl::OkStatus();
}

// Each index must be -1 (zero row) or in [0, rows).
absl::Status CheckIndices(const char* field, const std::vector<int32_t>& v,
                          int64_t rows) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < -1 || v[i] >= rows) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Batch.%s[%d] = %d, expected -1 or in [0, %d)", field, i, v[i],
          rows));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateBatch(const Batch& b, int64_t id_dim,
                           int64_t content_dim) {
  const int64_t B = b.batch_size, L = b.max_len;
  if (B < 1 || L < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Batch: batch_size=%d max_len=%d, expected batch_size >= 1 and "
        "max_len >= 0",
        B, L));
  }
  if (b.num_id_rows < 0) {
    return absl::InvalidArgumentError("Batch.num_id_rows is negative");
  }
  absl::Status st;
  if (!(st = CheckSize("lens", b.lens.size(), B)).ok()) return st;
  for (int64_t i = 0; i < B; ++i) {
    if (b.lens[i] < 0 || b.lens[i] > L) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Batch.lens[%d] = %d, expected in [0, %d]", i, b.lens[i], L));
    }
  }
  if (!(st = CheckSize("id_rows", b.id_rows.size(), b.num_id_rows * id_dim))
           .ok()) {
    return st;
  }
  const std::pair<const char*, const std::vector<int32_t>*> per_row[] = {
      {"user_idx", &b.user_idx},     {"age_idx", &b.age_idx},
      {"gender_idx", &b.gender_idx}, {"occ_idx", &b.occ_idx},
      {"target_idx", &b.target_idx}};
  for (const auto& [name, v] : per_row) {
    if (!(st = CheckSize(name, v->size(), B)).ok()) return st;
    if (!(st = CheckIndices(name, *v, b.num_id_rows)).ok()) return st;
  }
  if (!(st = CheckSize("labels", b.labels.size(), B)).ok()) return st;
  if (!(st = CheckSize("behavior_idx", b.behavior_idx.size(), B * L)).ok()) {
    return st;
  }
  if (!(st = CheckIndices("behavior_idx", b.behavior_idx, b.num_id_rows))
           .ok()) {
    return st;
  }
  if (!(st = CheckSize("genre_offsets", b.genre_offsets.size(), B + 1)).ok()) {
    return st;
  }
  if (b.genre_offsets[0] != 0 ||
      b.genre_offsets[B] != static_cast<int64_t>(b.genre_rows.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Batch.genre_offsets must start at 0 and end at genre_rows.size()=%d",
        b.genre_rows.size()));
  }
  for (int64_t i = 0; i < B; ++i) {
    if (b.genre_offsets[i + 1] < b.genre_offsets[i]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Batch.genre_offsets decreases at %d", i + 1));
    }
  }
  if (!(st = CheckIndices("genre_rows", b.genre_rows, b.num_id_rows)).ok()) {
    return st;
  }
  if (content_dim <= 0) return absl::OkStatus();
  if (b.num_content_rows < 0) {
    return absl::InvalidArgumentError("Batch.num_content_rows is negative");
  }
  if (!(st = CheckSize("content_rows", b.content_rows.size(),
                       b.num_content_rows * content_dim))
           .ok()) {
    return st;
  }
  if (!(st = CheckSize("content_target_idx", b.content_target_idx.size(), B))
           .ok()) {
    return st;
  }
  if (!(st = CheckIndices("content_target_idx", b.content_target_idx,
                          b.num_content_rows))
           .ok()) {
    return st;
  }
  if (!(st = CheckSize("content_behavior_idx", b.content_behavior_idx.size(),
                       B * L))
           .ok()) {
    return st;
  }
  return CheckIndices("content_behavior_idx", b.content_behavior_idx,
                      b.num_content_rows);
}

BatchBuilder::BatchBuilder(int max_behavior)
    : max_behavior_(std::clamp(max_behavior, 0, data::kMaxBehaviorLength)) {}

int32_t BatchBuilder::IdRow(uint64_t key, std::vector<uint64_t>* keys) {
  auto [it, inserted] =
      id_rows_.try_emplace(key, static_cast<int32_t>(keys->size()));
  if (inserted) keys->push_back(key);
  return it->second;
}

int32_t BatchBuilder::ContentRow(uint64_t key, std::vector<uint64_t>* keys) {
  auto [it, inserted] =
      content_rows_.try_emplace(key, static_cast<int32_t>(keys->size()));
  if (inserted) keys->push_back(key);
  return it->second;
}

FeatureRow FeatureRowOf(const data::Sample& s) {
  FeatureRow r;
  r.user_id = s.user_id;
  r.age_bucket = s.age_bucket;
  r.gender = s.gender;
  r.occupation = s.occupation;
  r.behavior = s.behavior;
  r.item_id = s.item_id;
  r.genres = s.genres;
  r.label = s.label;
  return r;
}

absl::Status BatchBuilder::Build(absl::Span<const data::Sample> samples,
                                 int64_t id_dim, int64_t content_dim,
                                 Batch* batch, std::vector<uint64_t>* id_keys,
                                 std::vector<uint64_t>* content_keys) {
  rows_.clear();
  for (const data::Sample& s : samples) rows_.push_back(FeatureRowOf(s));
  return Build(absl::MakeConstSpan(rows_), id_dim, content_dim, batch, id_keys,
               content_keys);
}

absl::Status BatchBuilder::Build(absl::Span<const FeatureRow> samples,
                                 int64_t id_dim, int64_t content_dim,
                                 Batch* batch, std::vector<uint64_t>* id_keys,
                                 std::vector<uint64_t>* content_keys) {
  using data::FeatureField;
  using data::FeatureKey;
  if (samples.empty() || id_dim <= 0 || content_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BatchBuilder::Build: %d samples, id_dim %d, content_dim %d; "
        "expected at least one sample and positive dims",
        samples.size(), id_dim, content_dim));
  }
  id_rows_.clear();
  content_rows_.clear();
  id_keys->clear();
  content_keys->clear();
  const int32_t B = static_cast<int32_t>(samples.size());
  int32_t L = 0;
  for (const FeatureRow& s : samples) {
    L = std::max<int32_t>(
        L, std::min<int32_t>(max_behavior_,
                             static_cast<int32_t>(s.behavior.size())));
  }
  Batch& b = *batch;
  b.staged = StagedInputs{};  // the fields change: staged inputs are stale
  b.batch_size = B;
  b.max_len = L;
  b.lens.resize(B);
  b.user_idx.resize(B);
  b.age_idx.resize(B);
  b.gender_idx.resize(B);
  b.occ_idx.resize(B);
  b.target_idx.resize(B);
  b.labels.resize(B);
  b.genre_offsets.resize(B + 1);
  b.genre_rows.clear();
  b.behavior_idx.assign(static_cast<size_t>(B) * L, -1);
  b.content_target_idx.resize(B);
  b.content_behavior_idx.assign(static_cast<size_t>(B) * L, -1);
  b.genre_offsets[0] = 0;
  for (int32_t r = 0; r < B; ++r) {
    const FeatureRow& s = samples[r];
    b.user_idx[r] = IdRow(FeatureKey(FeatureField::kUser, s.user_id), id_keys);
    b.age_idx[r] =
        IdRow(FeatureKey(FeatureField::kAgeBucket, s.age_bucket), id_keys);
    b.gender_idx[r] =
        IdRow(FeatureKey(FeatureField::kGender, s.gender), id_keys);
    b.occ_idx[r] =
        IdRow(FeatureKey(FeatureField::kOccupation, s.occupation), id_keys);
    b.target_idx[r] = IdRow(FeatureKey(FeatureField::kItem, s.item_id), id_keys);
    for (int32_t g : s.genres) {
      b.genre_rows.push_back(IdRow(FeatureKey(FeatureField::kGenre, g), id_keys));
    }
    b.genre_offsets[r + 1] = static_cast<int32_t>(b.genre_rows.size());
    b.content_target_idx[r] =
        ContentRow(static_cast<uint64_t>(s.item_id), content_keys);
    const int32_t n = std::min<int32_t>(
        max_behavior_, static_cast<int32_t>(s.behavior.size()));
    const size_t first = s.behavior.size() - n;  // keep the most recent
    b.lens[r] = n;
    for (int32_t i = 0; i < n; ++i) {
      const int64_t item = s.behavior[first + i];
      b.behavior_idx[static_cast<size_t>(r) * L + i] =
          IdRow(FeatureKey(FeatureField::kItem, item), id_keys);
      b.content_behavior_idx[static_cast<size_t>(r) * L + i] =
          ContentRow(static_cast<uint64_t>(item), content_keys);
    }
    b.labels[r] = s.label != 0 ? 1.0f : 0.0f;
  }
  b.num_id_rows = static_cast<int64_t>(id_keys->size());
  b.num_content_rows = static_cast<int64_t>(content_keys->size());
  b.id_rows.assign(b.num_id_rows * id_dim, 0.0f);
  b.content_rows.assign(b.num_content_rows * content_dim, 0.0f);
  return absl::OkStatus();
}

}  // namespace mim::model
