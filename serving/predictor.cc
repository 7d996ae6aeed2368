#include "serving/predictor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "embedding/sharding.h"
#include "absl/synchronization/notification.h"
#include "glog/logging.h"
#include "ps/status_convert.h"
#include "worker/data/content_vectors.h"

namespace mim::serving {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// A shard refused for load (its queue or in-flight budget full), marked
// so: unlike a RESOURCE_EXHAUSTED for a call beyond its limits, retrying
// the same call later may succeed.
bool Overloaded(const absl::Status& s) {
  return absl::IsResourceExhausted(s) && ps::IsRetryLater(s);
}

bool Unreachable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         Overloaded(s);
}

// A failure behind the request (shards, model) as the caller should see it,
// without the internal details (shard addresses, table names), which go to
// the log: unreachable, slow or overloaded shards are UNAVAILABLE (retry;
// a shard that outlasted the tier's own retry budget is not the caller's
// deadline, which gRPC reports to the caller by itself), anything else (a
// shard's limit, a missing table, a token without the role) is INTERNAL.
// Statuses in the log: without their payloads (the failed shard's index,
// which the message names already).
constexpr absl::StatusToStringMode kLogText =
    absl::StatusToStringMode::kWithNoExtraData;

absl::Status ForCaller(absl::string_view what, const absl::Status& s) {
  if (s.ok()) return s;
  if (Unreachable(s)) {
    // Once per 100: a shard that is down fails every request meanwhile.
    LOG_EVERY_N(WARNING, 100) << what << ": " << s.ToString(kLogText) << " ("
                              << google::COUNTER << " such failures so far)";
    return absl::UnavailableError(absl::StrCat(
        what, ": the parameter servers ",
        Overloaded(s) ? "are overloaded" : "did not answer in time", " (",
        absl::StatusCodeToString(s.code()),
        "); retry (details are in the server log)"));
  }
  LOG(WARNING) << what << ": " << s.ToString(kLogText);
  return absl::InternalError(absl::StrCat(
      what, " failed inside the serving tier (", absl::StatusCodeToString(s.code()),
      "); details are in the server log"));
}

}  // namespace

Predictor::Predictor(ModelManager* models, ps::PsClient* ps, RowCache* cache,
                     const Options& options)
    : models_(models), ps_(ps), cache_(cache), options_(options) {
  if (options_.fetch_threads > 0) {
    fetch_executor_ = std::make_unique<base::Executor>(
        options_.fetch_threads, /*max_queue=*/4 * options_.fetch_threads,
        "serving content fetch");
  }
  if (options_.metrics != nullptr) {
    const char* name = "mim_serving_shard_pull_seconds";
    const char* help = "Time of one pull of a request's uncached rows from "
                       "the shards (all shards in parallel), by table";
    pull_seconds_[kIdSide] =
        &options_.metrics->LatencyHistogram(name, help, {{"table", "id"}});
    pull_seconds_[kContentSide] =
        &options_.metrics->LatencyHistogram(name, help, {{"table", "content"}});
    const char* unavailable = "mim_serving_rows_unavailable_total";
    const char* unavailable_help =
        "Rows read as missing because their shard could not be reached "
        "(--degraded_reads), by table";
    rows_unavailable_[kIdSide] = &options_.metrics->Counter(
        unavailable, unavailable_help, {{"table", "id"}});
    rows_unavailable_[kContentSide] = &options_.metrics->Counter(
        unavailable, unavailable_help, {{"table", "content"}});
  }
  if (ps_ != nullptr) {
    const uint32_t shards = ps_->num_shards();
    shard_down_until_ = std::make_unique<std::atomic<int64_t>[]>(shards);
    for (uint32_t i = 0; i < shards; ++i) shard_down_until_[i].store(0);
  }
  if (options_.content_poll_interval > absl::ZeroDuration()) {
    thread_ = std::thread([this] { PollLoop(); });
  }
}

Predictor::~Predictor() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

absl::Status Predictor::ValidatePredictInput(const PredictInput& in) const {
  if (in.candidates.empty()) {
    return Invalid("candidate_item_ids", "is empty; expected at least one");
  }
  if (static_cast<int64_t>(in.candidates.size()) > options_.max_candidates) {
    return Invalid("candidate_item_ids",
                   absl::StrCat(in.candidates.size(),
                                " candidates, at most --max_candidates=",
                                options_.max_candidates));
  }
  if (static_cast<int64_t>(in.behaviors.size()) > options_.max_behaviors) {
    return Invalid("behavior_item_ids",
                   absl::StrCat(in.behaviors.size(),
                                " behaviours, at most --max_behaviors=",
                                options_.max_behaviors));
  }
  if (in.user_id < 0) {
    return Invalid("user_id", absl::StrCat(in.user_id, " is negative"));
  }
  for (size_t i = 0; i < in.behaviors.size(); ++i) {
    if (in.behaviors[i] < 0) {
      return Invalid(absl::StrCat("behavior_item_ids[", i, "]"),
                     absl::StrCat(in.behaviors[i], " is negative"));
    }
  }
  for (size_t i = 0; i < in.candidates.size(); ++i) {
    if (in.candidates[i] < 0) {
      return Invalid(absl::StrCat("candidate_item_ids[", i, "]"),
                     absl::StrCat(in.candidates[i], " is negative"));
    }
  }
  if (!in.candidate_genres.empty() &&
      in.candidate_genres.size() != in.candidates.size()) {
    return Invalid("candidate_features",
                   absl::StrCat(in.candidate_genres.size(), " entries for ",
                                in.candidates.size(),
                                " candidates; expected none or one each"));
  }
  for (size_t i = 0; i < in.candidate_genres.size(); ++i) {
    if (static_cast<int64_t>(in.candidate_genres[i].size()) >
        options_.max_genres) {
      return Invalid(absl::StrCat("candidate_features[", i, "].genres"),
                     absl::StrCat(in.candidate_genres[i].size(),
                                  " genres, at most ", options_.max_genres));
    }
    for (size_t j = 0; j < in.candidate_genres[i].size(); ++j) {
      const int32_t g = in.candidate_genres[i][j];
      if (g < 0) {
        return Invalid(absl::StrCat("candidate_features[", i, "].genres"),
                       absl::StrCat(g, " is negative"));
      }
      // A set, as in training: a repeat would weigh the genre twice in
      // the mean over the item's genres. (At most max_genres: quadratic
      // is fine.)
      for (size_t k = 0; k < j; ++k) {
        if (in.candidate_genres[i][k] == g) {
          return Invalid(absl::StrCat("candidate_features[", i, "].genres"),
                         absl::StrCat("genre ", g, " appears twice"));
        }
      }
    }
  }
  for (const auto& [name, v] : {std::pair<const char*, int32_t>{
                                    "age_bucket", in.age_bucket},
                                {"gender", in.gender},
                                {"occupation", in.occupation}}) {
    if (v < 0) {
      return Invalid(absl::StrCat("user_features[\"", name, "\"]"),
                     absl::StrCat(v, " is negative"));
    }
  }
  return absl::OkStatus();
}

void Predictor::LookupCached(Side side, const std::string& table,
                             absl::Span<const uint64_t> keys, int dim,
                             float* out, RowFetch* f) {
  f->side = side;
  f->table = &table;
  f->dim = dim;
  f->out = out;
  f->which = cache_->TableId(table);
  f->now = RowCache::Now();  // the cache's own clock
  f->generation = cache_->generation(f->which);
  for (size_t i = 0; i < keys.size(); ++i) {
    bool stale_copy = false;
    switch (cache_->Lookup(f->which, keys[i], dim, f->now, out + i * dim)) {
      case RowCache::Found::kFresh:
        ++f->cache_hits;
        continue;
      case RowCache::Found::kStale:
        stale_copy = true;  // refetched; the copy stays in `out` meanwhile
        break;
      case RowCache::Found::kMiss:
        f->all_misses_have_stale_copy = false;
        break;
    }
    f->miss_keys.push_back(keys[i]);
    f->miss_pos.push_back(i);
    f->miss_stale.push_back(stale_copy);
  }
}

absl::Status Predictor::FetchRows(const RowFetch& f,
                                  absl::Span<const uint64_t> keys,
                                  std::vector<float>* rows) {
  rows->assign(keys.size() * f.dim, 0.0f);
  if (f.side == kContentSide) {
    return ps_->PullInto(*f.table, keys, absl::MakeSpan(*rows), nullptr);
  }
  absl::StatusOr<ps::PsClient::GetRowsResult> got =
      ps_->GetRows(*f.table, keys);
  if (!got.ok()) return got.status();
  if (got->values.size() != rows->size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "table ", *f.table, " has dim ", got->dim, ", the model expects ",
        f.dim));
  }
  *rows = std::move(got->values);
  return absl::OkStatus();
}

bool Predictor::LeaveOut(uint32_t shard, absl::Time now, int64_t* probe) {
  *probe = 0;
  int64_t until = shard_down_until_[shard].load();
  if (until == 0) return false;  // up
  const int64_t now_micros = absl::ToUnixMicros(now);
  if (until > now_micros) return true;
  // Its interval is over: this pull asks it, unless another claimed that.
  const int64_t next =
      absl::ToUnixMicros(now + options_.shard_down_interval);
  if (!shard_down_until_[shard].compare_exchange_strong(until, next)) {
    return until != 0;  // another pull probes it (or it is back up)
  }
  *probe = next;
  return false;
}

void Predictor::MarkShardDown(uint32_t shard, const absl::Status& why) {
  const int64_t until =
      absl::ToUnixMicros(absl::Now() + options_.shard_down_interval);
  if (shard_down_until_[shard].exchange(until) == 0) {
    LOG(WARNING) << "shard " << shard << "/" << ps_->num_shards()
                 << " left out of pulls (--degraded_reads: its rows read as "
                    "missing), asked again every "
                 << absl::FormatDuration(options_.shard_down_interval) << ": "
                 << why.ToString(kLogText);
  }
}

void Predictor::MarkShardUp(uint32_t shard, int64_t claimed) {
  if (shard_down_until_[shard].compare_exchange_strong(claimed, 0)) {
    LOG(WARNING) << "shard " << shard << "/" << ps_->num_shards()
                 << " answers again; its rows are pulled again";
  }
}

void Predictor::PullMisses(RowFetch* f) {
  if (f->miss_keys.empty()) return;
  const bool id_table = f->side == kIdSide;
  const int dim = f->dim;
  const uint32_t shards = ps_->num_shards();
  // Positions in miss_keys to pull, and those left out (shard down).
  std::vector<size_t> ask;
  std::vector<size_t> left_out;
  ask.reserve(f->miss_keys.size());
  // Under degraded_reads: each miss's shard, and per shard, decided once
  // per pull for the shards it has keys on: 0 ask, 1 leave out, 2 ask as
  // the probe of a shard marked down (the mark it claimed in probe_mark);
  // -1 no keys.
  std::vector<uint32_t> shard_of;
  std::vector<int8_t> decision;
  std::vector<int64_t> probe_mark;
  if (options_.degraded_reads) {
    shard_of.reserve(f->miss_keys.size());
    for (const uint64_t key : f->miss_keys) {
      shard_of.push_back(embedding::ShardOf(key, shards));
    }
    decision.assign(shards, -1);
    probe_mark.assign(shards, 0);
    for (const uint32_t s : shard_of) decision[s] = 0;
    const absl::Time now = absl::Now();
    for (uint32_t s = 0; s < shards; ++s) {
      if (decision[s] < 0) continue;
      const bool leave_out = LeaveOut(s, now, &probe_mark[s]);
      decision[s] = leave_out ? 1 : (probe_mark[s] != 0 ? 2 : 0);
    }
  }
  for (size_t j = 0; j < f->miss_keys.size(); ++j) {
    if (!decision.empty() && decision[shard_of[j]] == 1) {
      left_out.push_back(j);
    } else {
      ask.push_back(j);
    }
  }
  std::vector<uint64_t> keys;
  std::vector<float> rows;
  absl::Status fetched;
  const absl::Time pull_start = absl::Now();
  while (!ask.empty()) {
    keys.clear();
    for (const size_t j : ask) keys.push_back(f->miss_keys[j]);
    fetched = FetchRows(*f, keys, &rows);
    if (fetched.ok() || !options_.degraded_reads || !Unreachable(fetched)) {
      break;
    }
    // A call cut off by the request's own deadline says nothing about the
    // shard it names (every shard would fail so now); a refused connection
    // or an overload does, even at the deadline.
    const bool out_of_time = absl::Now() >= f->deadline;
    if (out_of_time && (absl::IsDeadlineExceeded(fetched) ||
                        absl::IsCancelled(fetched))) {
      break;
    }
    const std::optional<uint32_t> down = ps::FailedShard(fetched);
    if (!down.has_value() || *down >= shards) break;
    MarkShardDown(*down, fetched);
    decision[*down] = 1;
    if (out_of_time) break;  // marked for the next requests
    // Its keys are left out; the other shards are asked again.
    const auto on_down = std::stable_partition(
        ask.begin(), ask.end(),
        [&](size_t j) { return shard_of[j] != *down; });
    if (on_down == ask.end()) break;  // none of its keys: give up
    left_out.insert(left_out.end(), on_down, ask.end());
    ask.erase(on_down, ask.end());
    fetched = absl::OkStatus();
  }
  if (pull_seconds_[f->side] != nullptr && !keys.empty()) {
    pull_seconds_[f->side]->Observe(
        absl::ToDoubleSeconds(absl::Now() - pull_start));
  }
  if (!fetched.ok()) {
    if (Unreachable(fetched) && f->all_misses_have_stale_copy) {
      f->stale = true;  // serve the stale copies already in `out`
      return;
    }
    f->status = ForCaller(id_table ? "reading ID rows" : "reading content rows",
                          fetched);
    return;
  }
  // A shard probed and answered (its keys were in the call that
  // succeeded) is up again.
  for (uint32_t s = 0; s < decision.size(); ++s) {
    if (decision[s] == 2) MarkShardUp(s, probe_mark[s]);
  }
  f->rows_pulled = static_cast<int32_t>(ask.size());
  for (size_t a = 0; a < ask.size(); ++a) {
    const size_t j = ask[a];
    const float* row = rows.data() + a * dim;
    std::memcpy(f->out + f->miss_pos[j] * dim, row, sizeof(float) * dim);
    // Stamped with the time before the fetch: never fresher than it is.
    cache_->Insert(f->which, f->miss_keys[j], row, dim, f->now, f->generation);
  }
  // Rows of shards that cannot be reached: a stale copy where the cache had
  // one (already in `out`), else read as a key the table does not hold.
  for (const size_t j : left_out) {
    if (f->miss_stale[j]) {
      f->stale = true;
      continue;
    }
    std::fill_n(f->out + f->miss_pos[j] * dim, dim, 0.0f);
    ++f->rows_unavailable;
  }
  if (f->rows_unavailable > 0 && rows_unavailable_[f->side] != nullptr) {
    rows_unavailable_[f->side]->Increment(f->rows_unavailable);
  }
}

absl::Status Predictor::PullBoth(RowFetch* id, RowFetch* content,
                                 absl::Time deadline) {
  if (id->miss_keys.empty() || content->miss_keys.empty() ||
      fetch_executor_ == nullptr) {
    PullMisses(id);
    if (id->status.ok()) PullMisses(content);
    return id->status.ok() ? content->status : id->status;
  }
  // Both sides miss: the content pull runs on the fetch executor while this
  // thread pulls the ID rows, so the request waits for the slower of the
  // two round trips, not their sum.
  absl::Notification done;
  const absl::Status queued = fetch_executor_->Submit(
      deadline, [this, content, deadline, &done](const absl::Status& admitted) {
        if (admitted.ok()) {
          ps::PsClient::ScopedDeadline scoped(deadline);
          PullMisses(content);
        } else if (content->all_misses_have_stale_copy) {
          // The deadline passed while queued: as a pull past its deadline
          // would, serve the stale copies already in place.
          content->stale = true;
        } else {
          content->status = admitted;
        }
        done.Notify();
      });
  if (!queued.ok()) {  // the fetch queue is full: one after the other
    PullMisses(id);
    if (id->status.ok()) PullMisses(content);
    return id->status.ok() ? content->status : id->status;
  }
  PullMisses(id);
  done.WaitForNotification();
  return id->status.ok() ? content->status : id->status;
}

namespace {

// A candidate as (item id, its genres): equal when both are.
struct CandidateHash {
  size_t operator()(
      const std::pair<int64_t, const std::vector<int32_t>*>& c) const {
    return absl::HashOf(c.first, *c.second);
  }
};
struct CandidateEq {
  bool operator()(
      const std::pair<int64_t, const std::vector<int32_t>*>& a,
      const std::pair<int64_t, const std::vector<int32_t>*>& b) const {
    return a.first == b.first && *a.second == *b.second;
  }
};

}  // namespace

absl::StatusOr<PredictOutput> Predictor::Predict(const PredictInput& in,
                                                 absl::Time deadline) {
  MIM_RETURN_IF_ERROR(ValidatePredictInput(in));
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError("deadline passed before scoring");
  }
  ps::PsClient::ScopedDeadline scoped(deadline);
  const std::shared_ptr<const ServableModel> servable = models_->Current();
  const model::ModelManifest& manifest = servable->manifest();
  const model::ModelConfig& config = servable->model().config();
  std::unique_ptr<ScoringScratch> s = servable->Acquire();
  PredictOutput result;
  result.model_version = manifest.model_version;

  // One row per distinct candidate (item and features): a repeat gets the
  // very score of its first occurrence (a batched matrix product may round
  // a row differently by where it sits) and costs nothing more.
  const size_t n = in.candidates.size();
  static const std::vector<int32_t> kNoGenres;
  absl::flat_hash_map<std::pair<int64_t, const std::vector<int32_t>*>,
                      uint32_t, CandidateHash, CandidateEq>
      first_row;
  s->rows.clear();
  s->row_of_candidate.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::vector<int32_t>* genres =
        in.candidate_genres.empty() ? &kNoGenres : &in.candidate_genres[i];
    auto [it, fresh] = first_row.try_emplace(
        {in.candidates[i], genres}, static_cast<uint32_t>(s->rows.size()));
    s->row_of_candidate[i] = it->second;
    if (!fresh) continue;
    model::FeatureRow& r = s->rows.emplace_back();
    r.user_id = in.user_id;
    r.age_bucket = in.age_bucket;
    r.gender = in.gender;
    r.occupation = in.occupation;
    r.behavior = in.behaviors;
    r.item_id = in.candidates[i];
    r.genres = *genres;
  }
  const int64_t content_dim = std::max(1, config.content_dim);
  absl::Status st = s->builder.Build(s->rows, config.id_dim, content_dim,
                                     &s->batch, &s->id_keys, &s->content_keys);
  if (st.ok()) {
    RowFetch id;
    RowFetch content;
    id.deadline = deadline;
    content.deadline = deadline;
    LookupCached(kIdSide, manifest.id_table.name, s->id_keys, config.id_dim,
                 s->batch.id_rows.data(), &id);
    if (model::UsesContent(config)) {
      LookupCached(kContentSide, manifest.content_table->name,
                   s->content_keys, config.content_dim,
                   s->batch.content_rows.data(), &content);
    }
    st = PullBoth(&id, &content, deadline);
    for (const RowFetch* f : {&id, &content}) {
      result.cache_hits += f->cache_hits;
      result.rows_pulled += f->rows_pulled;
      result.rows_unavailable += f->rows_unavailable;
      result.stale = result.stale || f->stale;
    }
  }
  if (st.ok()) {
    st = ForCaller("scoring",
                   servable->model().Predict(s->batch, s->workspace.get(),
                                             &s->probs));
  }
  if (st.ok()) {
    result.scores.resize(n);
    for (size_t i = 0; i < n; ++i) {
      result.scores[i] = s->probs[s->row_of_candidate[i]];
    }
  }
  servable->Release(std::move(s));
  if (!st.ok()) return st;
  return result;
}

namespace {

// `plain` (a unit fastText vector) through the C-SFT encoder, with the
// arithmetic of //worker/csft:csft: BuildCatalog L2-normalises the plain
// vector (data::L2Normalize), then CsftEncoder::Encode, and the vectors
// writer L2-normalises the output once more (what csft puts in its table).
// INVALID_ARGUMENT naming the first genre id `encoder` does not know, or
// one given twice (a set, as in C-SFT's catalogue and Predict: a repeat
// would weigh the genre twice in the encoder's mean over the item's
// genres). At most max_genres ids: the repeat check is quadratic.
absl::Status CheckCsftGenres(const csft::CsftEncoder& encoder,
                             absl::Span<const int32_t> genres) {
  const int num_genres = encoder.config().num_genres;
  for (size_t i = 0; i < genres.size(); ++i) {
    if (genres[i] < 0 || genres[i] >= num_genres) {
      return Invalid(absl::StrCat("genres[", i, "]"),
                     absl::StrCat(genres[i], " is not a genre id the C-SFT "
                                  "encoder knows (0..", num_genres - 1, ")"));
    }
    for (size_t k = 0; k < i; ++k) {
      if (genres[k] == genres[i]) {
        return Invalid(absl::StrCat("genres[", i, "]"),
                       absl::StrCat("genre ", genres[i], " appears twice"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CsftEncode(
    const csft::CsftEncoder& encoder, std::vector<float> plain,
    absl::Span<const int32_t> genres) {
  MIM_RETURN_IF_ERROR(CheckCsftGenres(encoder, genres));
  data::L2Normalize(&plain);
  const std::vector<int32_t> ids(genres.begin(), genres.end());
  std::vector<float> out(encoder.config().dim);
  MIM_RETURN_IF_ERROR(encoder.Encode({{plain.data(), &ids}}, out.data()));
  data::L2Normalize(&out);
  return out;
}

}  // namespace

absl::StatusOr<UpsertItemOutput> Predictor::UpsertItem(
    int64_t item_id, const std::string& text, absl::Span<const float> vector,
    absl::Span<const int32_t> genres, absl::Time deadline) {
  if (item_id < 0) {
    return Invalid("item_id", absl::StrCat(item_id, " is negative"));
  }
  if (static_cast<int>(genres.size()) > options_.max_genres) {
    return Invalid("genres", absl::StrCat(genres.size(), " genres; at most ",
                                          options_.max_genres));
  }
  ps::PsClient::ScopedDeadline scoped(deadline);
  const std::shared_ptr<const ServableModel> servable = models_->Current();
  const model::ModelManifest& manifest = servable->manifest();
  if (!manifest.content_table.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", manifest.model_version, " (",
                     manifest.model_name, ") reads no content table"));
  }
  const int dim = manifest.content_table->dim;
  UpsertItemOutput out;
  std::vector<float> row;
  if (!vector.empty()) {
    if (static_cast<int>(vector.size()) != dim) {
      return Invalid("vector", absl::StrCat(vector.size(),
                                            " values; the content table '",
                                            manifest.content_table->name,
                                            "' has dim ", dim));
    }
    float squared_norm = 0;
    size_t largest = 0;
    for (size_t i = 0; i < vector.size(); ++i) {
      if (!std::isfinite(vector[i])) {
        return Invalid(absl::StrCat("vector[", i, "]"), "is not finite");
      }
      squared_norm += vector[i] * vector[i];
      if (std::fabs(vector[i]) > std::fabs(vector[largest])) largest = i;
    }
    // The content module squares the values (its cosine), in float: past
    // this every score with the item as candidate or behaviour is NaN.
    if (!std::isfinite(squared_norm)) {
      return Invalid("vector",
                     absl::StrCat("has a squared norm past float's range "
                                  "(vector[", largest, "] = ",
                                  vector[largest],
                                  "): the content module's cosine would "
                                  "overflow"));
    }
    row.assign(vector.begin(), vector.end());
    out.encoder = "caller";
  } else {
    if (servable->encoder() == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the content table '", manifest.content_table->name,
          "' was filled by an encoder this server does not have (",
          manifest.content_table->encoder.kind,
          "); pass the item's vector instead of its text"));
    }
    if (text.empty()) return Invalid("text", "is empty and no vector given");
    // Checked whether or not the text has a known word (without one the
    // genres are not used, but they are still the caller's mistake).
    if (servable->csft_encoder() != nullptr) {
      MIM_RETURN_IF_ERROR(CheckCsftGenres(*servable->csft_encoder(), genres));
    }
    MIM_ASSIGN_OR_RETURN(EncodeOutcome outcome,
                         servable->encoder()->Encode(text, &row));
    out.encoder = servable->encoder()->id();
    // A text with no known word writes zeros: "no content", for C-SFT too.
    if (servable->csft_encoder() != nullptr && outcome == EncodeOutcome::kEncoded) {
      MIM_ASSIGN_OR_RETURN(row, CsftEncode(*servable->csft_encoder(), row,
                                           genres));
      out.encoder = absl::StrFormat("csft:%016x+%s",
                                    servable->csft_encoder()->Fingerprint(),
                                    servable->encoder()->id());
    }
  }
  for (float v : row) out.norm += v * v;
  const uint64_t key = static_cast<uint64_t>(item_id);
  // The version must exceed the item's own row's (a newer write of it
  // wins), and otherwise follows the wall clock in seconds, the unit
  // ingest_content and csft write with by default: a later re-ingest of the
  // catalogue stays newer than these rows however many items were upserted
  // meanwhile (a version one above the table's newest would run ahead of
  // the clock under a steady stream of upserts and make that re-ingest
  // stale for every item written here).
  uint64_t row_version = 0;
  const auto read_row_version = [&]() -> absl::Status {
    absl::StatusOr<ps::PsClient::GetRowsResult> rows = ps_->GetRows(
        manifest.content_table->name, absl::MakeConstSpan(&key, 1));
    if (!rows.ok()) return rows.status();
    row_version = rows->meta.empty() ? 0 : rows->meta[0].version();
    return absl::OkStatus();
  };
  MIM_RETURN_IF_ERROR(
      ForCaller("reading the item's content version", read_row_version()));
  for (int attempt = 0;; ++attempt) {
    const uint64_t version =
        std::max<uint64_t>(row_version + 1, absl::ToUnixSeconds(absl::Now()));
    absl::StatusOr<ps::PsClient::UpsertResult> upserted =
        ps_->Upsert(manifest.content_table->name, absl::MakeConstSpan(&key, 1),
                    row, version);
    if (!upserted.ok()) {
      // The write may have landed (a deadline after sending): drop the
      // cached row either way.
      cache_->Invalidate(cache_->TableId(manifest.content_table->name), key);
      return ForCaller("writing the content row", upserted.status());
    }
    const ps::PsClient::UpsertResult& written = *upserted;
    if (written.rows_written == 1) {
      uint64_t seen = content_version_.load();
      while (seen < version &&
             !content_version_.compare_exchange_weak(seen, version)) {
      }
      out.content_version = version;
      break;
    }
    // Someone wrote a newer version of this row: catch up and go above it.
    if (attempt >= 2) {
      return absl::AbortedError(absl::StrCat(
          "item ", item_id, ": a newer content version keeps being written "
          "by another writer; retry"));
    }
    MIM_RETURN_IF_ERROR(
        ForCaller("reading the item's content version", read_row_version()));
  }
  cache_->Invalidate(cache_->TableId(manifest.content_table->name), key);
  return out;
}

absl::Status Predictor::RefreshContentVersion() {
  const std::shared_ptr<const ServableModel> servable = models_->Current();
  if (!servable->manifest().content_table.has_value()) return absl::OkStatus();
  const std::string& table = servable->manifest().content_table->name;
  MIM_ASSIGN_OR_RETURN(std::vector<ps::PsClient::ShardStats> stats,
                       ps_->Stats(table));
  uint64_t newest = 0;
  uint64_t writes = 0;  // rows upserted since each shard started, summed
  for (const ps::PsClient::ShardStats& shard : stats) {
    for (const ps::TableStats& t : shard.stats.tables()) {
      if (t.config().name() == table) {
        newest = std::max<uint64_t>(newest, t.max_version());
        writes += t.pushes();
      }
    }
  }
  uint64_t known = content_version_.load();
  while (known < newest &&
         !content_version_.compare_exchange_weak(known, newest)) {
  }
  // The table moved since the last poll: rows written by someone else
  // (ingest_content, another replica, even at a version this server also
  // wrote, or below the table's newest) may be newer than the cached ones.
  // The write count tells of writes that leave the newest version where it
  // is (a shard's restart resets it, which only flushes once more).
  const uint64_t previous = last_polled_version_.exchange(newest);
  const uint64_t previous_writes = last_polled_writes_.exchange(writes);
  if (newest != previous || writes != previous_writes) {
    cache_->InvalidateTable(cache_->TableId(table));
  }
  return absl::OkStatus();
}

void Predictor::PollLoop() {
  std::string last_error;
  do {
    absl::Status st = RefreshContentVersion();
    if (!st.ok() && st.ToString() != last_error) {
      LOG(WARNING) << "content version poll: " << st;
      last_error = st.ToString();
    } else if (st.ok()) {
      last_error.clear();
    }
  } while (!stop_.WaitForNotificationWithTimeout(
      options_.content_poll_interval));
}

absl::Status CheckModelTables(ps::PsClient* ps, const ServableModel& model) {
  const model::ModelManifest& m = model.manifest();
  absl::StatusOr<std::vector<ps::PsClient::ShardStats>> stats = ps->Stats("");
  if (!stats.ok()) {
    LOG(WARNING) << "model " << m.model_version
                 << ": its tables could not be checked on the shards: "
                 << stats.status();
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, int>> wanted = {
      {m.id_table.name, m.id_table.dim}};
  if (m.content_table.has_value()) {
    wanted.emplace_back(m.content_table->name, m.content_table->dim);
  }
  for (const auto& [name, dim] : wanted) {
    const ps::TableOnShards on = ps::FindTableOnShards(*stats, name);
    if (on.shards_with_table() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", m.model_version, " (", m.model_name, ") reads table '",
          name, "', which is on no shard (tables there: ",
          on.names.empty() ? "none" : absl::StrJoin(on.names, ", "), ")"));
    }
    std::string wrong;
    for (size_t s = 0; s < stats->size(); ++s) {
      const std::string& address = (*stats)[s].address;
      if (on.rows[s] < 0) {
        absl::StrAppend(&wrong, wrong.empty() ? "" : "; ", "shard ", s, " (",
                        address, ") lacks it");
      } else if (static_cast<int>(on.dims[s]) != dim) {
        absl::StrAppend(&wrong, wrong.empty() ? "" : "; ", "shard ", s, " (",
                        address, ") has it with dim ", on.dims[s]);
      }
    }
    if (!wrong.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", m.model_version, " (", m.model_name, ") reads table '",
          name, "' with dim ", dim, ": ", wrong));
    }
  }
  return absl::OkStatus();
}

}  // namespace mim::serving
