#include "worker/csft/csft_trainer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "glog/logging.h"
#include "kernels/csft_ops.h"
#include "kernels/dense_ops.h"
#include "worker/data/content_vectors.h"

namespace mim::csft {
namespace {

int64_t CategoryKey(const std::vector<int32_t>& genres) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int32_t g : genres) {
    h ^= uint64_t(uint32_t(g)) + 1;
    h *= 0x100000001b3ULL;
  }
  return int64_t(h >> 1);
}

std::vector<InterestPair> EvenSubsample(const std::vector<InterestPair>& p,
                                        int max_pairs) {
  if (max_pairs <= 0 || p.size() <= size_t(max_pairs)) return p;
  std::vector<InterestPair> out;
  out.reserve(max_pairs);
  for (int i = 0; i < max_pairs; ++i) {
    out.push_back(p[size_t(double(i) * p.size() / max_pairs)]);
  }
  return out;
}

}  // namespace

absl::StatusOr<Catalog> BuildCatalog(
    const std::vector<std::string>& vector_files,
    const absl::flat_hash_map<int64_t, std::vector<int32_t>>& genres) {
  if (vector_files.empty()) {
    return absl::InvalidArgumentError(
        "no vector file; expected at least the plain content vectors");
  }
  std::vector<std::vector<data::ItemVector>> files;
  Catalog c;
  for (const std::string& path : vector_files) {
    auto v = data::ReadAllContentVectors(path);
    if (!v.ok()) return v.status();
    if (v->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": no vectors; expected one row per item"));
    }
    const int d = static_cast<int>((*v)[0].values.size());
    if (files.empty()) c.dim = d;
    c.input_dim += d;
    files.push_back(std::move(*v));
  }
  const int n = static_cast<int>(files[0].size());
  c.ids.resize(n);
  c.features.assign(int64_t(n) * c.input_dim, 0.0f);
  c.genres.resize(n);
  for (int i = 0; i < n; ++i) {
    std::vector<float> plain = files[0][i].values;
    if (!data::L2Normalize(&plain)) {
      return absl::InvalidArgumentError(absl::StrCat(
          vector_files[0], ": item ", files[0][i].item_id,
          " has an all-zero vector, which has no direction to fine-tune; "
          "leave the item out of the file"));
    }
    c.ids[i] = files[0][i].item_id;
    c.index[c.ids[i]] = i;
    std::copy(plain.begin(), plain.end(),
              c.features.begin() + int64_t(i) * c.input_dim);
    auto g = genres.find(c.ids[i]);
    if (g != genres.end()) c.genres[i] = g->second;
    for (int32_t id : c.genres[i]) {
      // The encoder holds an embedding per genre id up to the largest.
      if (id < 0 || id >= kMaxGenreId) {
        return absl::InvalidArgumentError(absl::StrCat(
            "item ", c.ids[i], " has genre id ", id, "; expected 0 <= id < ",
            kMaxGenreId, " (the encoder keeps one embedding per id up to "
            "the largest)"));
      }
      c.num_genres = std::max(c.num_genres, id + 1);
    }
  }
  int offset = c.dim;
  for (size_t f = 1; f < files.size(); ++f) {
    const int d = static_cast<int>(files[f][0].values.size());
    for (const data::ItemVector& iv : files[f]) {
      const int i = c.IndexOf(iv.item_id);
      if (i < 0) continue;
      std::copy(iv.values.begin(), iv.values.end(),
                c.features.begin() + int64_t(i) * c.input_dim + offset);
    }
    offset += d;
  }
  return c;
}

void CountInteractions(const std::vector<InterestPair>& train,
                       Catalog* catalog) {
  catalog->interactions.assign(catalog->ids.size(), 0);
  for (const InterestPair& p : train) {
    for (int64_t item : {p.query, p.item}) {
      const int i = catalog->IndexOf(item);
      if (i >= 0) ++catalog->interactions[i];
    }
  }
}

Recall EvaluateRecall(const Catalog& catalog, const std::vector<float>& vectors,
                      const std::vector<InterestPair>& pairs) {
  Recall r;
  const int n = static_cast<int>(catalog.ids.size());
  const int d = catalog.dim;
  std::vector<float> scores(n);
  int64_t hit10 = 0, hit50 = 0;
  for (const InterestPair& p : pairs) {
    const int q = catalog.IndexOf(p.query), t = catalog.IndexOf(p.item);
    if (q < 0 || t < 0) {
      ++r.skipped;
      continue;
    }
    const float* vq = vectors.data() + int64_t(q) * d;
    for (int j = 0; j < n; ++j) {
      const float* vj = vectors.data() + int64_t(j) * d;
      float s = 0;
      for (int k = 0; k < d; ++k) s += vq[k] * vj[k];
      scores[j] = s;
    }
    int64_t better = 0;
    for (int j = 0; j < n; ++j) {
      if (j != q && j != t && scores[j] > scores[t]) ++better;
    }
    hit10 += better < 10;
    hit50 += better < 50;
    ++r.pairs;
  }
  if (r.pairs > 0) {
    r.at10 = double(hit10) / r.pairs;
    r.at50 = double(hit50) / r.pairs;
  }
  return r;
}

EncoderConfig EncoderConfigFor(const Catalog& catalog,
                               const CsftOptions& o) {
  EncoderConfig config;
  config.dim = catalog.dim;
  config.input_dim = catalog.input_dim;
  config.num_genres = catalog.num_genres;
  config.genre_dim = o.genre_dim;
  config.hidden = o.hidden;
  config.tensor_fusion = o.tensor_fusion;
  config.residual_gate = static_cast<float>(o.residual_gate);
  return config;
}

absl::StatusOr<std::vector<float>> InitialEncoderParams(
    const Catalog& catalog, const CsftOptions& options) {
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<CsftEncoder> encoder,
      CsftEncoder::Create(EncoderConfigFor(catalog, options), options.seed));
  return encoder->params();
}

CsftTrainer::CsftTrainer(const Catalog* catalog, const CsftOptions& options)
    : catalog_(catalog),
      options_(options),
      rng_(options.seed * 7919 + 17),
      dropout_rng_(options.seed * 104729 + 31) {}

absl::StatusOr<std::unique_ptr<CsftTrainer>> CsftTrainer::Create(
    const Catalog* catalog, const CsftOptions& o,
    const std::vector<int64_t>& train_items) {
  const auto finite_at_least_0 = [](double x) {
    return x >= 0 && std::isfinite(x);
  };
  if (o.batch_size < 1 || !(o.temperature > 0) ||
      !std::isfinite(o.temperature) || !(o.learning_rate > 0) ||
      !std::isfinite(o.learning_rate) || o.queue_batches < 0 ||
      !finite_at_least_0(o.alpha) || !finite_at_least_0(o.beta) ||
      !finite_at_least_0(o.residual_penalty) ||
      !finite_at_least_0(o.residual_gate) ||
      !(o.modality_dropout >= 0 && o.modality_dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C-SFT options batch_size=", o.batch_size, " temperature=",
        o.temperature, " learning_rate=", o.learning_rate, " queue_batches=",
        o.queue_batches, " alpha=", o.alpha, " beta=", o.beta,
        " residual_penalty=", o.residual_penalty, " residual_gate=",
        o.residual_gate, " modality_dropout=", o.modality_dropout,
        "; expected batch_size >= 1, finite temperature and learning_rate "
        "> 0, modality_dropout in [0, 1), the rest finite and >= 0"));
  }
  std::unique_ptr<CsftTrainer> t(new CsftTrainer(catalog, o));
  MIM_ASSIGN_OR_RETURN(t->encoder_,
                       CsftEncoder::Create(EncoderConfigFor(*catalog, o), o.seed));
  const int64_t n = t->encoder_->num_params();
  t->grads_.assign(n, 0.0f);
  t->adam_m_.assign(n, 0.0f);
  t->adam_v_.assign(n, 0.0f);
  for (int64_t item : train_items) {
    const int i = catalog->IndexOf(item);
    if (i < 0) continue;
    t->pool_all_.push_back(i);
    const std::vector<int32_t>& g = catalog->genres[i];
    t->pool_by_genre_[g.empty() ? -1 : g[0]].push_back(i);
  }
  std::sort(t->pool_all_.begin(), t->pool_all_.end());
  for (auto& [g, pool] : t->pool_by_genre_) std::sort(pool.begin(), pool.end());
  return t;
}

size_t CsftTrainer::queue_rows() const {
  size_t rows = 0;
  for (const QueueEntry& e : queue_) rows += e.ids.size();
  return rows;
}

int CsftTrainer::HardNegative(int positive, int query) {
  const std::vector<int32_t>& g = catalog_->genres[positive];
  auto it = pool_by_genre_.find(g.empty() ? -1 : g[0]);
  const std::vector<int>* pool =
      it != pool_by_genre_.end() && it->second.size() > 2 ? &it->second
                                                          : &pool_all_;
  if (pool->empty()) return positive;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int pick = (*pool)[rng_() % pool->size()];
    if (pick != positive && pick != query) return pick;
  }
  return (*pool)[rng_() % pool->size()];  // masked by the loss if equal
}

absl::StatusOr<CsftTrainer::BatchRows> CsftTrainer::DrawRows(
    absl::Span<const InterestPair> batch) {
  const Catalog& cat = *catalog_;
  const int64_t b = static_cast<int64_t>(batch.size());
  const bool hard = options_.hard_negatives;
  const int64_t rows = b * (hard ? 3 : 2);
  BatchRows out;
  out.pairs = b;
  out.inputs.resize(rows);
  out.ids.resize(rows);
  std::vector<ItemInput>& inputs = out.inputs;
  std::vector<int64_t>& ids = out.ids;
  for (int64_t i = 0; i < b; ++i) {
    const int q = cat.IndexOf(batch[i].query), p = cat.IndexOf(batch[i].item);
    if (q < 0 || p < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pair (", batch[i].query, ", ", batch[i].item,
          ") has an item without content vectors; expected both items in "
          "the catalogue"));
    }
    inputs[i] = cat.Input(q);
    ids[i] = batch[i].query;
    inputs[b + i] = cat.Input(p);
    ids[b + i] = batch[i].item;
    if (hard) {
      const int h = HardNegative(p, q);
      inputs[2 * b + i] = cat.Input(h);
      ids[2 * b + i] = cat.ids[h];
    }
  }
  if (options_.modality_dropout > 0) {
    std::bernoulli_distribution drop(options_.modality_dropout);
    for (ItemInput& in : inputs) in.drop_modalities = drop(dropout_rng_);
  }
  return out;
}

absl::StatusOr<StepStats> CsftTrainer::Step(
    absl::Span<const InterestPair> batch, int64_t exchange_step) {
  const int d = catalog_->dim;
  const int64_t b = static_cast<int64_t>(batch.size());
  if (b == 0) return StepStats{};
  MIM_ASSIGN_OR_RETURN(const BatchRows rows, DrawRows(batch));
  if (group_ != nullptr) MIM_RETURN_IF_ERROR(FetchGroupParams());
  EncoderPass pass;
  MIM_RETURN_IF_ERROR(encoder_->Forward(rows.inputs, &pass));
  // Other workers' latest positives (detached, like the queue's rows).
  std::vector<int64_t> peer_ids;
  std::vector<float> peer_vectors;
  if (group_ != nullptr && group_->num_workers() > 1 &&
      options_.worker_negatives) {
    MIM_RETURN_IF_ERROR(group_->ExchangePositives(
        exchange_step >= 0 ? exchange_step : step_,
        absl::MakeConstSpan(rows.ids.data() + b, b),
        absl::MakeConstSpan(pass.v.data() + b * d, b * d), &peer_ids,
        &peer_vectors));
    if (peer_vectors.size() != peer_ids.size() * size_t(d)) {
      return absl::InternalError(absl::StrCat(
          "worker group returned ", peer_ids.size(), " peer ids and ",
          peer_vectors.size(), " floats; expected dim ", d, " per id"));
    }
  }
  MIM_ASSIGN_OR_RETURN(
      const StepStats stats,
      LossAndGradient(rows, pass, peer_ids, peer_vectors, &grads_));
  ++step_;
  if (group_ != nullptr) {
    MIM_RETURN_IF_ERROR(group_->PushGradient(grads_));
  } else {
    kernels::AdamConfig adam;
    adam.learning_rate = static_cast<float>(options_.learning_rate);
    MIM_RETURN_IF_ERROR(kernels::AdamUpdateCpu(
        adam, step_, encoder_->num_params(), grads_.data(),
        encoder_->mutable_params()->data(), adam_m_.data(), adam_v_.data()));
  }

  if (options_.queue_batches > 0) {
    QueueEntry e;
    e.vectors.assign(pass.v.begin() + b * d, pass.v.begin() + 2 * b * d);
    e.ids.assign(rows.ids.begin() + b, rows.ids.begin() + 2 * b);
    queue_.push_back(std::move(e));
    while (queue_.size() > size_t(options_.queue_batches)) queue_.pop_front();
  }
  return stats;
}

absl::StatusOr<StepStats> CsftTrainer::LossAndGradient(
    const BatchRows& batch_rows, const EncoderPass& pass,
    const std::vector<int64_t>& peer_ids,
    const std::vector<float>& peer_vectors, std::vector<float>* grads) const {
  const int d = catalog_->dim;
  const int64_t b = batch_rows.pairs;
  const int64_t rows = static_cast<int64_t>(batch_rows.inputs.size());
  const std::vector<int64_t>& ids = batch_rows.ids;
  const bool hard = options_.hard_negatives;
  if (rows != b * (hard ? 3 : 2) ||
      batch_rows.ids.size() != size_t(rows) ||
      pass.v.size() != size_t(rows) * d ||
      peer_vectors.size() != peer_ids.size() * size_t(d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C-SFT loss of ", b, " pairs: ", rows, " rows, ", ids.size(),
        " ids, ", pass.v.size(), " encoded floats and ", peer_ids.size(),
        " peer ids with ", peer_vectors.size(),
        " floats do not match (dim ", d, ", hard negatives ",
        hard ? "on" : "off", ")"));
  }
  std::vector<float> grad_v(rows * d, 0.0f), grad_t(rows * d, 0.0f),
      grad_c(rows * d, 0.0f);
  std::vector<int64_t> cat_keys(rows);
  for (int64_t r = 0; r < rows; ++r) {
    cat_keys[r] = CategoryKey(pass.genres[r] ? *pass.genres[r]
                                             : std::vector<int32_t>());
  }

  StepStats stats;
  stats.rows = b;
  stats.peer_rows = static_cast<int64_t>(peer_ids.size());
  // Query groups: the whole batch shares its candidates (in-batch
  // negatives), or each query stands alone (ablation).
  std::vector<std::vector<int64_t>> groups;
  if (options_.in_batch_negatives) {
    groups.emplace_back(b);
    std::iota(groups[0].begin(), groups[0].end(), 0);
  } else {
    for (int64_t i = 0; i < b; ++i) groups.push_back({i});
  }
  const float tau = static_cast<float>(options_.temperature);
  // One InfoNCE over `group`'s queries against `cand_rows` of `source`
  // (rows of this pass) plus, with `queue`, the queue's rows and the other
  // workers' positives; gradients go to grad_v (queries) and `grad_source`
  // (candidates; the detached queue and peer rows get none).
  auto level = [&](const std::vector<int64_t>& group,
                   const std::vector<int64_t>& cand_rows,
                   const std::vector<float>& source,
                   const std::vector<int64_t>& cand_key, bool use_query_ids,
                   bool queue, double weight, std::vector<float>* grad_source,
                   int64_t* negatives) -> absl::Status {
    const int64_t g = static_cast<int64_t>(group.size());
    int64_t qrows = 0;
    if (queue) qrows = static_cast<int64_t>(queue_rows() + peer_ids.size());
    const int64_t n = static_cast<int64_t>(cand_rows.size()) + qrows;
    std::vector<float> qv(g * d), cv(n * d), prob(g * n), gq(g * d),
        gc(n * d);
    std::vector<int64_t> qid(g), cid(n);
    for (int64_t i = 0; i < g; ++i) {
      std::copy_n(pass.v.begin() + group[i] * d, d, qv.begin() + i * d);
      qid[i] = ids[group[i]];
    }
    for (size_t j = 0; j < cand_rows.size(); ++j) {
      std::copy_n(source.begin() + cand_rows[j] * d, d, cv.begin() + j * d);
      cid[j] = cand_key[cand_rows[j]];
    }
    int64_t j = static_cast<int64_t>(cand_rows.size());
    if (queue) {
      for (const QueueEntry& e : queue_) {
        std::copy(e.vectors.begin(), e.vectors.end(), cv.begin() + j * d);
        std::copy(e.ids.begin(), e.ids.end(), cid.begin() + j);
        j += static_cast<int64_t>(e.ids.size());
      }
      std::copy(peer_vectors.begin(), peer_vectors.end(), cv.begin() + j * d);
      std::copy(peer_ids.begin(), peer_ids.end(), cid.begin() + j);
    }
    float loss = 0;
    std::vector<int32_t> neg(g);
    const kernels::InfoNceShape s{g, n, d};
    MIM_RETURN_IF_ERROR(kernels::InfoNceForwardCpu(
        s, tau, qv.data(), cv.data(), use_query_ids ? qid.data() : nullptr,
        cid.data(), &loss, prob.data(), neg.data()));
    const double share = weight * double(g) / double(b);
    stats.loss += share * loss;
    MIM_RETURN_IF_ERROR(kernels::InfoNceBackwardCpu(
        s, tau, qv.data(), cv.data(), prob.data(), float(share), gq.data(),
        gc.data()));
    for (int64_t i = 0; i < g; ++i) {
      for (int k = 0; k < d; ++k) grad_v[group[i] * d + k] += gq[i * d + k];
    }
    for (size_t c = 0; c < cand_rows.size(); ++c) {
      for (int k = 0; k < d; ++k) {
        (*grad_source)[cand_rows[c] * d + k] += gc[c * d + k];
      }
    }
    if (negatives != nullptr) {
      for (int32_t x : neg) *negatives += x;
    }
    return absl::OkStatus();
  };

  for (const std::vector<int64_t>& group : groups) {
    std::vector<int64_t> pos_rows, item_rows;
    for (int64_t i : group) pos_rows.push_back(b + i);
    item_rows = pos_rows;
    if (hard) {
      for (int64_t i : group) item_rows.push_back(2 * b + i);
    }
    MIM_RETURN_IF_ERROR(level(group, item_rows, pass.v, ids,
                              /*use_query_ids=*/true,
                              options_.queue_batches > 0 || !peer_ids.empty(),
                              1.0, &grad_v, &stats.negatives));
    if (options_.alpha > 0) {
      MIM_RETURN_IF_ERROR(level(group, pos_rows, pass.t, ids, true, false,
                                options_.alpha, &grad_t, nullptr));
    }
    if (options_.beta > 0) {
      MIM_RETURN_IF_ERROR(level(group, pos_rows, pass.c, cat_keys, false,
                                false, options_.beta, &grad_c, nullptr));
    }
  }
  double pen = 0;
  for (float x : pass.r) pen += double(x) * x;
  stats.loss += options_.residual_penalty * pen / double(rows);

  if (grads == nullptr) return stats;
  grads->assign(encoder_->num_params(), 0.0f);
  MIM_RETURN_IF_ERROR(encoder_->Backward(
      pass, grad_v.data(), options_.alpha > 0 ? grad_t.data() : nullptr,
      options_.beta > 0 ? grad_c.data() : nullptr,
      static_cast<float>(options_.residual_penalty), grads->data()));
  return stats;
}

void CsftTrainer::set_group(WorkerGroup* group) {
  group_ = group;
  const int w = group != nullptr ? group->worker_index() : 0;
  if (w > 0) {
    const uint64_t mix = 0x9e3779b97f4a7c15ULL * uint64_t(w);
    rng_.seed((options_.seed * 7919 + 17) ^ mix);
    dropout_rng_.seed((options_.seed * 104729 + 31) ^ mix);
  }
}

absl::Status CsftTrainer::FetchGroupParams() {
  if (group_ == nullptr) return absl::OkStatus();
  std::vector<float>* params = encoder_->mutable_params();
  const size_t n = params->size();
  MIM_RETURN_IF_ERROR(group_->FetchParams(params));
  if (params->size() != n) {
    return absl::InternalError(absl::StrCat(
        "worker group returned ", params->size(), " parameters; the encoder has ", n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CsftTrainer::EncodeAll() const {
  const int n = static_cast<int>(catalog_->ids.size());
  std::vector<float> out(int64_t(n) * catalog_->dim);
  std::vector<ItemInput> inputs;
  for (int start = 0; start < n; start += 1024) {
    inputs.clear();
    const int end = std::min(n, start + 1024);
    for (int i = start; i < end; ++i) inputs.push_back(catalog_->Input(i));
    MIM_RETURN_IF_ERROR(encoder_->Encode(
        inputs, out.data() + int64_t(start) * catalog_->dim));
  }
  return out;
}

absl::StatusOr<TrainResult> TrainCsft(const Catalog& catalog,
                                      const PairSplit& split,
                                      const CsftOptions& options,
                                      WorkerGroup* group) {
  const int num_workers = group != nullptr ? group->num_workers() : 1;
  const int worker = group != nullptr ? group->worker_index() : 0;
  if (num_workers < 1 || worker < 0 || worker >= num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C-SFT worker ", worker, " of ", num_workers,
        "; expected 0 <= worker < num_workers"));
  }
  const bool chief = worker == 0;
  std::vector<InterestPair> train;
  absl::flat_hash_set<int64_t> items;
  for (const InterestPair& p : split.train) {
    if (catalog.IndexOf(p.query) < 0 || catalog.IndexOf(p.item) < 0) continue;
    train.push_back(p);
    items.insert(p.query);
    items.insert(p.item);
  }
  if (train.empty()) {
    return absl::InvalidArgumentError(
        "no training pair has both items in the catalogue; expected pairs "
        "of items with content vectors");
  }
  if (options.epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "epochs = ", options.epochs, "; expected >= 1"));
  }
  const std::vector<InterestPair> valid_new =
      EvenSubsample(split.valid_new, options.max_eval_pairs);
  // The epoch is picked by held-out new-item recall: with no such pair in
  // the catalogue nothing can beat epoch 0, and the run would end writing
  // the untrained (plain) vectors as if C-SFT had found nothing better.
  if (!options.select_last_epoch &&
      std::none_of(valid_new.begin(), valid_new.end(),
                   [&](const InterestPair& p) {
                     return catalog.IndexOf(p.query) >= 0 &&
                            catalog.IndexOf(p.item) >= 0;
                   })) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no held-out new-item pair (of ", split.valid_new.size(),
        ") has both items in the catalogue, so no epoch can be selected; "
        "hold out more items (--holdout_items) or keep the last epoch "
        "(--select_last_epoch)"));
  }
  const std::vector<InterestPair> valid_warm =
      EvenSubsample(split.valid_warm, options.max_eval_pairs);
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<CsftTrainer> trainer,
      CsftTrainer::Create(&catalog, options,
                          std::vector<int64_t>(items.begin(), items.end())));
  trainer->set_group(group);
  TrainResult result;
  result.chief = chief;
  result.train_pairs = static_cast<int64_t>(train.size());
  auto evaluate = [&](EpochLog* log) -> absl::Status {
    MIM_ASSIGN_OR_RETURN(std::vector<float> v, trainer->EncodeAll());
    log->valid_new = EvaluateRecall(catalog, v, valid_new);
    log->valid_warm = EvaluateRecall(catalog, v, valid_warm);
    return absl::OkStatus();
  };
  auto better = [](const Recall& a, const Recall& b) {
    return a.at50 > b.at50 || (a.at50 == b.at50 && a.at10 > b.at10);
  };
  // Epoch 0 is the untrained encoder (every worker starts from the same
  // seeded parameters), evaluated before any step.
  EpochLog start;
  if (chief) MIM_RETURN_IF_ERROR(evaluate(&start));
  result.log.push_back(start);
  std::vector<float> best_params = trainer->encoder().params();
  Recall best = start.valid_new;
  if (chief) {
    LOG(INFO) << "csft epoch 0 (plain): valid_new recall@10 "
              << start.valid_new.at10 << " @50 " << start.valid_new.at50
              << ", valid_warm @10 " << start.valid_warm.at10 << " @50 "
              << start.valid_warm.at50;
  }
  // A start barrier: every worker starts its first step once all are up
  // and worker 0 has evaluated epoch 0, so their steps run side by side
  // (the other workers' positives are taken within a step bound).
  if (group != nullptr) {
    MIM_RETURN_IF_ERROR(group->EndEpoch(0));
    if (chief) {
      MIM_RETURN_IF_ERROR(group->AwaitEpoch(0));
      MIM_RETURN_IF_ERROR(group->Decide(0, false));
    } else {
      MIM_RETURN_IF_ERROR(group->AwaitDecision(0).status());
    }
  }
  int since_best = 0;
  double train_seconds = 0;
  int64_t pairs_done = 0;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    std::mt19937_64 shuffle(options.seed * 1000003 + epoch);
    std::shuffle(train.begin(), train.end(), shuffle);
    EpochLog log;
    log.epoch = epoch;
    const absl::Time t0 = absl::Now();
    int64_t steps = 0, epoch_pairs = 0;
    int64_t batch_number = 0;
    // Epoch-aligned step for the exchange: the k-th step of every worker
    // in an epoch has the same number, however the batches divide.
    const int64_t batches =
        (static_cast<int64_t>(train.size()) + options.batch_size - 1) /
        options.batch_size;
    const int64_t epoch_base =
        (epoch - 1) * ((batches + num_workers - 1) / num_workers);
    for (size_t i = 0; i < train.size();
         i += options.batch_size, ++batch_number) {
      if (batch_number % num_workers != worker) continue;  // another's
      const size_t n = std::min(train.size() - i, size_t(options.batch_size));
      MIM_ASSIGN_OR_RETURN(StepStats s,
                           trainer->Step(absl::MakeConstSpan(&train[i], n),
                                         epoch_base + steps));
      log.loss += s.loss;
      result.peer_rows += s.peer_rows;
      epoch_pairs += static_cast<int64_t>(n);
      ++steps;
    }
    const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    train_seconds += secs;
    pairs_done += epoch_pairs;
    result.steps += steps;
    log.loss /= std::max<int64_t>(steps, 1);
    log.pairs_per_second = secs > 0 ? epoch_pairs / secs : 0;
    if (group != nullptr) MIM_RETURN_IF_ERROR(group->EndEpoch(epoch));
    if (!chief) {
      LOG(INFO) << "csft worker " << worker << " epoch " << epoch
                << ": loss " << log.loss << ", " << log.pairs_per_second
                << " pairs/s";
      result.log.push_back(log);
      MIM_ASSIGN_OR_RETURN(const bool stop, group->AwaitDecision(epoch));
      if (stop) break;
      continue;
    }
    if (group != nullptr) {
      MIM_RETURN_IF_ERROR(group->AwaitEpoch(epoch));
      MIM_RETURN_IF_ERROR(trainer->FetchGroupParams());
    }
    MIM_RETURN_IF_ERROR(evaluate(&log));
    LOG(INFO) << "csft epoch " << epoch << ": loss " << log.loss
              << ", valid_new recall@10 " << log.valid_new.at10 << " @50 "
              << log.valid_new.at50 << ", valid_warm @10 "
              << log.valid_warm.at10 << " @50 " << log.valid_warm.at50
              << ", " << log.pairs_per_second << " pairs/s";
    result.log.push_back(log);
    bool stop = epoch == options.epochs;
    if (options.select_last_epoch) {
      best_params = trainer->encoder().params();
      result.best_epoch = epoch;
    } else if (better(log.valid_new, best)) {
      best = log.valid_new;
      best_params = trainer->encoder().params();
      result.best_epoch = epoch;
      since_best = 0;
    } else if (++since_best >= options.patience) {
      stop = true;
    }
    if (group != nullptr) MIM_RETURN_IF_ERROR(group->Decide(epoch, stop));
    if (stop) break;
  }
  if (!chief) {
    MIM_RETURN_IF_ERROR(trainer->FetchGroupParams());
    best_params = trainer->encoder().params();
    // Only lets worker 0 drop the run's table sooner: a failure to say so
    // costs worker 0 a wait, not this worker its result.
    if (absl::Status s = group->Finished(); !s.ok()) {
      LOG(WARNING) << "csft worker " << worker
                   << ": could not mark itself finished (" << s
                   << "); worker 0 keeps the run's table after its wait";
    }
  }
  result.pairs_per_second = train_seconds > 0 ? pairs_done / train_seconds : 0;
  *trainer->mutable_encoder()->mutable_params() = best_params;
  MIM_ASSIGN_OR_RETURN(result.encoder,
                       CsftEncoder::Create(trainer->encoder().config(), 0));
  *result.encoder->mutable_params() = best_params;
  return result;
}

}  // namespace mim::csft
