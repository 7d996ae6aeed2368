#include "worker/cold_items.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "worker/data/feature_key.h"

namespace mim::worker {
namespace {

double Norm(const float* v, int n) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(v[i]) * v[i];
  return std::sqrt(ss);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ColdItemImputer>> ColdItemImputer::FromRows(
    int k, int content_dim, int id_dim, absl::Span<const int64_t> items,
    absl::Span<const float> content_rows, absl::Span<const float> id_rows) {
  if (k < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cold item neighbours k = ", k, "; expected >= 1"));
  }
  if (content_dim < 1 || id_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cold items: content_dim ", content_dim, ", id_dim ", id_dim,
        "; expected >= 1"));
  }
  if (content_rows.size() != items.size() * content_dim ||
      id_rows.size() != items.size() * id_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cold items: ", items.size(), " items with ", content_rows.size(),
        " content floats (dim ", content_dim, ") and ", id_rows.size(),
        " ID floats (dim ", id_dim, ")"));
  }
  std::unique_ptr<ColdItemImputer> imp(
      new ColdItemImputer(k, content_dim, id_dim));
  for (size_t i = 0; i < items.size(); ++i) {
    const float* c = content_rows.data() + i * content_dim;
    const double n = Norm(c, content_dim);
    if (!(n > 0) || !std::isfinite(n)) continue;  // no content to match on
    imp->items_.push_back(items[i]);
    for (int j = 0; j < content_dim; ++j) {
      imp->unit_content_.push_back(static_cast<float>(c[j] / n));
    }
    const float* h = id_rows.data() + i * id_dim;
    imp->id_rows_.insert(imp->id_rows_.end(), h, h + id_dim);
  }
  return imp;
}

absl::StatusOr<std::unique_ptr<ColdItemImputer>> ColdItemImputer::Build(
    ps::PsClient* client, int k, const std::string& content_table,
    int content_dim, const std::string& id_table, int id_dim,
    std::vector<int64_t> items) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  std::vector<uint64_t> content_keys, id_keys;
  for (int64_t item : items) {
    content_keys.push_back(static_cast<uint64_t>(item));
    id_keys.push_back(data::FeatureKey(data::FeatureField::kItem, item));
  }
  std::vector<float> content(items.size() * content_dim);
  absl::Status pulled = client->PullInto(content_table, content_keys,
                                         absl::MakeSpan(content), nullptr);
  if (!pulled.ok()) return pulled;
  absl::StatusOr<ps::PsClient::GetRowsResult> ids =
      client->GetRows(id_table, id_keys);
  if (!ids.ok()) return ids.status();
  if (ids->values.size() != items.size() * id_dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        "table ", id_table, " returned ", ids->values.size(), " floats for ",
        items.size(), " keys; expected dim ", id_dim));
  }
  // Items the ID table has no row for are not "trained": left out.
  std::vector<char> missing(items.size(), 0);
  for (uint32_t m : ids->missing) missing[m] = 1;
  std::vector<int64_t> kept;
  std::vector<float> kept_content, kept_ids;
  for (size_t i = 0; i < items.size(); ++i) {
    if (missing[i]) continue;
    kept.push_back(items[i]);
    kept_content.insert(kept_content.end(), content.begin() + i * content_dim,
                        content.begin() + (i + 1) * content_dim);
    kept_ids.insert(kept_ids.end(), ids->values.begin() + i * id_dim,
                    ids->values.begin() + (i + 1) * id_dim);
  }
  return FromRows(k, content_dim, id_dim, kept, kept_content, kept_ids);
}

bool ColdItemImputer::Impute(const float* content, float* out) const {
  const double n = Norm(content, content_dim_);
  if (!(n > 0) || !std::isfinite(n)) return false;
  // The k most similar trained items with positive cosine; ties go to the
  // earlier (smaller) item, so the result does not depend on anything but
  // the rows.
  std::vector<std::pair<double, size_t>> best;  // (similarity, index)
  best.reserve(k_ + 1);
  for (size_t i = 0; i < items_.size(); ++i) {
    const float* u = unit_content_.data() + i * content_dim_;
    double dot = 0;
    for (int j = 0; j < content_dim_; ++j) dot += double(u[j]) * content[j];
    const double sim = dot / n;
    if (!(sim > 0)) continue;
    if (static_cast<int>(best.size()) == k_ && sim <= best.back().first) {
      continue;
    }
    auto at = std::upper_bound(
        best.begin(), best.end(), sim,
        [](double s, const std::pair<double, size_t>& e) { return s > e.first; });
    best.insert(at, {sim, i});
    if (static_cast<int>(best.size()) > k_) best.pop_back();
  }
  if (best.empty()) return false;
  std::vector<double> acc(id_dim_, 0.0);
  double total = 0;
  for (const auto& [sim, i] : best) {
    const float* h = id_rows_.data() + i * id_dim_;
    for (int j = 0; j < id_dim_; ++j) acc[j] += sim * h[j];
    total += sim;
  }
  for (int j = 0; j < id_dim_; ++j) out[j] = static_cast<float>(acc[j] / total);
  return true;
}

absl::Status ColdItemImputer::Fill(PreparedBatch* batch) const {
  if (batch->missing_id_rows.empty() || batch->content_keys.empty()) {
    return absl::OkStatus();
  }
  if (batch->batch.content_rows.size() !=
          batch->content_keys.size() * content_dim_ ||
      batch->batch.id_rows.size() != batch->id_keys.size() * id_dim_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cold items: a batch of ", batch->content_keys.size(),
        " content keys with ", batch->batch.content_rows.size(),
        " floats and ", batch->id_keys.size(), " ID keys with ",
        batch->batch.id_rows.size(), " floats; the imputer has content dim ",
        content_dim_, " and ID dim ", id_dim_));
  }
  absl::flat_hash_map<uint64_t, uint32_t> missing_item_rows;
  for (uint32_t r : batch->missing_id_rows) {
    const uint64_t key = batch->id_keys[r];
    if (data::FeatureKeyField(key) == data::FeatureField::kItem) {
      missing_item_rows.emplace(key, r);
    }
  }
  if (missing_item_rows.empty()) return absl::OkStatus();
  for (size_t c = 0; c < batch->content_keys.size(); ++c) {
    const uint64_t key = data::FeatureKey(
        data::FeatureField::kItem, static_cast<int64_t>(batch->content_keys[c]));
    auto it = missing_item_rows.find(key);
    if (it == missing_item_rows.end()) continue;
    Impute(batch->batch.content_rows.data() + c * content_dim_,
           batch->batch.id_rows.data() + size_t{it->second} * id_dim_);
  }
  return absl::OkStatus();
}

}  // namespace mim::worker
