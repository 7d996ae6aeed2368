#include "worker/csft/csft_workers.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/fnv1a.h"
#include "base/status_macros.h"
#include "proto/ps.pb.h"

namespace mim::csft {
namespace {

constexpr uint64_t kSlotStride = uint64_t{1} << 24;
constexpr uint64_t kCountBase = uint64_t{1} << 40;
constexpr uint64_t kEpochBase = uint64_t{1} << 41;
constexpr uint64_t kDecisionKey = uint64_t{1} << 42;
constexpr int kIdParts = 3;
constexpr int kIdPartBits = 21;
constexpr uint64_t kIdPartMask = (uint64_t{1} << kIdPartBits) - 1;
constexpr int kMaxWorkers = 4096;

uint64_t SlotKey(int worker, int slot) {
  return static_cast<uint64_t>(worker) * kSlotStride +
         static_cast<uint64_t>(slot);
}

uint64_t Versioned(uint64_t generation, uint64_t low) {
  return (generation << 32) | low;
}

// Worker 0's decision that ends the run for everyone (a worker's inputs
// differ): the low half of the decision row's version.
constexpr uint64_t kAbortLow = 0xffffffffu;

// The low half of a worker's epoch row once it is done with the run's
// parameters (Finished): above every epoch.
constexpr uint64_t kFinishedLow = 0xfffffffeu;

// The bits of a value that PutParts keeps: three parts of kIdPartBits.
constexpr uint64_t kPartsMask = (uint64_t{1} << (kIdParts * kIdPartBits)) - 1;

// A 63-bit value as three 21-bit integers (exact in float), and back
// (false for anything else).
void PutParts(uint64_t value, float* out) {
  for (int p = 0; p < kIdParts; ++p) {
    out[p] = static_cast<float>((value >> (p * kIdPartBits)) & kIdPartMask);
  }
}
bool GetParts(const float* in, uint64_t* value) {
  *value = 0;
  for (int p = 0; p < kIdParts; ++p) {
    const float part = in[p];
    if (!(part >= 0.0f && part <= float(kIdPartMask)) ||
        part != static_cast<float>(static_cast<uint64_t>(part))) {
      return false;
    }
    *value |= static_cast<uint64_t>(part) << (p * kIdPartBits);
  }
  return true;
}

// base::Fnv1a64 over pieces: bytes, or a value's own bytes.
class Fnv {
 public:
  void Add(const void* data, size_t bytes) {
    h_ = base::Fnv1a64(data, bytes, h_);
  }
  template <typename T>
  void Add(const T& value) {
    Add(&value, sizeof(value));
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = base::kFnv1a64Basis;
};

}  // namespace

uint64_t WorkerInputsFingerprint(const Catalog& catalog,
                                 const std::vector<InterestPair>& train,
                                 const CsftOptions& o) {
  Fnv f;
  f.Add(catalog.dim);
  f.Add(catalog.input_dim);
  f.Add(catalog.num_genres);
  f.Add(catalog.ids.size());
  f.Add(catalog.ids.data(), catalog.ids.size() * sizeof(int64_t));
  f.Add(catalog.features.data(), catalog.features.size() * sizeof(float));
  for (const std::vector<int32_t>& g : catalog.genres) {
    f.Add(g.size());
    f.Add(g.data(), g.size() * sizeof(int32_t));
  }
  f.Add(catalog.interactions.data(),
        catalog.interactions.size() * sizeof(int64_t));
  f.Add(train.size());
  for (const InterestPair& p : train) {
    f.Add(p.query);
    f.Add(p.item);
  }
  for (const int v : {o.epochs, o.patience, o.batch_size, o.queue_batches,
                      o.genre_dim, o.hidden, o.max_eval_pairs}) {
    f.Add(v);
  }
  for (const double v : {o.learning_rate, o.temperature, o.alpha, o.beta,
                         o.residual_penalty, o.residual_gate,
                         o.modality_dropout}) {
    f.Add(v);
  }
  for (const bool v : {o.in_batch_negatives, o.hard_negatives, o.tensor_fusion,
                       o.select_last_epoch, o.worker_negatives}) {
    f.Add(v);
  }
  f.Add(o.seed);
  return f.value();
}

PsWorkerGroup::PsWorkerGroup(ps::PsClient* client,
                             const PsWorkerGroupOptions& options,
                             uint64_t generation)
    : client_(client),
      options_(options),
      generation_(generation),
      exchange_table_(options.prefix + "_exchange") {
  for (int w = 0; w < options_.num_workers; ++w) {
    if (w == options_.worker_index) continue;
    for (int s = 0; s < options_.max_positives; ++s) {
      peer_keys_.push_back(SlotKey(w, s));
    }
  }
}

absl::StatusOr<std::unique_ptr<PsWorkerGroup>> PsWorkerGroup::Create(
    ps::PsClient* client, const PsWorkerGroupOptions& o,
    std::vector<float> initial, uint64_t seed) {
  if (o.num_workers < 1 || o.num_workers > kMaxWorkers ||
      o.worker_index < 0 || o.worker_index >= o.num_workers || o.dim < 1 ||
      o.max_positives < 1 || uint64_t(o.max_positives) > kSlotStride ||
      o.staleness < 0 || !(o.learning_rate > 0) || o.prefix.empty() ||
      o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C-SFT worker group: worker ", o.worker_index, " of ", o.num_workers,
        ", prefix '", o.prefix, "', dim ", o.dim, ", max_positives ",
        o.max_positives, ", staleness ", o.staleness, ", learning_rate ",
        o.learning_rate, "; expected 0 <= worker < num_workers <= ",
        kMaxWorkers, ", a prefix, dim and max_positives >= 1 (at most ",
        kSlotStride, " positives), staleness >= 0, learning_rate and "
        "timeout > 0"));
  }
  ps::TableConfig config;
  config.set_name(o.prefix + "_exchange");
  config.set_kind(ps::CONTENT);
  config.set_dim(o.dim + kIdParts);
  MIM_RETURN_IF_ERROR(client->CreateTable(config, /*if_not_exists=*/true));

  // This run's generation: this worker's run count + 1 (file comment).
  const uint64_t count_key = kCountBase + uint64_t(o.worker_index);
  MIM_ASSIGN_OR_RETURN(
      ps::PsClient::GetRowsResult counts,
      client->GetRows(config.name(), absl::MakeConstSpan(&count_key, 1)));
  if (counts.dim != static_cast<uint32_t>(o.dim + kIdParts)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT exchange table ", config.name(), " has dim ", counts.dim,
        "; expected ", o.dim + kIdParts, " (h_MM dim ", o.dim,
        " + 3): use another --worker_prefix"));
  }
  const uint64_t generation = counts.meta[0].version() + 1;
  // Later rows of worker 0's decision mean a run this worker missed.
  MIM_ASSIGN_OR_RETURN(
      ps::PsClient::GetRowsResult decision,
      client->GetRows(config.name(), absl::MakeConstSpan(&kDecisionKey, 1)));
  if ((decision.meta[0].version() >> 32) >= generation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT exchange table ", config.name(), " holds generation ",
        decision.meta[0].version() >> 32, " but worker ", o.worker_index,
        " is at generation ", generation,
        ": earlier runs' workers did not all start; use another "
        "--worker_prefix"));
  }
  // No worker of this run pushes before every worker is past Create (the
  // start barrier), so rows mean an earlier run's parameters: the exchange
  // table was dropped and its generations started over, while this
  // generation's parameter table was kept. Checked before this worker's
  // count moves on, so that a refused worker keeps its generation.
  const std::string dense_table =
      absl::StrCat(o.prefix, "_dense_g", generation);
  MIM_ASSIGN_OR_RETURN(std::vector<ps::PsClient::ShardStats> stats,
                       client->Stats(""));
  const uint64_t stale_rows =
      ps::FindTableOnShards(stats, dense_table).total_rows();
  if (stale_rows != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT parameter table ", dense_table, " already holds ", stale_rows,
        " rows of an earlier run at generation ", generation, " (was ",
        config.name(), " dropped without it?): drop it with ps_admin "
        "drop-table ", dense_table, " --yes, or use another --worker_prefix"));
  }
  // Created (if_not_exists: every worker of the run alike) before this
  // worker's count moves on, so that a refusal here also leaves its
  // generation alone; no worker pushes to it before the start barrier.
  worker::PsDenseParams::AdamOptions adam;
  adam.learning_rate = o.learning_rate;
  MIM_ASSIGN_OR_RETURN(
      std::unique_ptr<worker::PsDenseParams> params,
      worker::PsDenseParams::Create(client, dense_table, std::move(initial),
                                    adam, seed));
  std::unique_ptr<PsWorkerGroup> g(new PsWorkerGroup(client, o, generation));
  // The count row carries this worker's inputs fingerprint, which worker 0
  // compares at the start barrier.
  g->row_buffer_.assign(o.dim + kIdParts, 0.0f);
  PutParts(o.fingerprint & kPartsMask, g->row_buffer_.data());
  MIM_ASSIGN_OR_RETURN(
      ps::PsClient::UpsertResult counted,
      client->Upsert(config.name(), absl::MakeConstSpan(&count_key, 1),
                     g->row_buffer_, generation));
  if (counted.rows_stale != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT exchange table ", config.name(), ": worker ", o.worker_index,
        "'s run count moved past ", generation,
        " while it started: is another process running as --worker_index=",
        o.worker_index, " with --worker_prefix=", o.prefix, "?"));
  }
  g->params_ = std::move(params);
  return g;
}

absl::Status PsWorkerGroup::Finished() {
  return WriteControl(kEpochBase + uint64_t(options_.worker_index),
                      Versioned(generation_, kFinishedLow));
}

absl::StatusOr<uint64_t> PsWorkerGroup::DropRunTable() {
  if (options_.worker_index != 0) {
    return absl::FailedPreconditionError(
        "only worker 0 drops the run's parameter table, after the run");
  }
  MIM_RETURN_IF_ERROR(Finished());
  // A worker already in a later run over the prefix is done with this one.
  MIM_ASSIGN_OR_RETURN(
      std::vector<int> missing,
      AwaitEpochRows(kFinishedLow, /*later_generation_passes=*/true));
  if (!missing.empty()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "C-SFT worker 0: worker(s) ", absl::StrJoin(missing, ", "),
        " did not say they were done with ", params_->table(), " within ",
        absl::FormatDuration(options_.timeout), "; the table is kept"));
  }
  MIM_ASSIGN_OR_RETURN(std::vector<ps::PsClient::ShardDrop> drops,
                       client_->DropTable(params_->table()));
  uint64_t rows = 0;
  for (const ps::PsClient::ShardDrop& d : drops) rows += d.drop.rows();
  return rows;
}

absl::Status PsWorkerGroup::WriteControl(uint64_t key, uint64_t version) {
  row_buffer_.assign(options_.dim + kIdParts, 0.0f);
  return client_
      ->Upsert(exchange_table_, absl::MakeConstSpan(&key, 1), row_buffer_,
               version)
      .status();
}

absl::Status PsWorkerGroup::FetchParams(std::vector<float>* params) {
  return params_->Fetch(params);
}

absl::Status PsWorkerGroup::PushGradient(absl::Span<const float> gradient) {
  const absl::Status pushed = params_->PushGradient(gradient);
  if (!ps::IsPushInDoubt(pushed)) return pushed;
  // In doubt (no answer within the retry budget, or the shard's storage
  // failed mid-write): the client kept the gradient's parts, and their
  // resend is applied exactly once (the shards know each push's sequence)
  // or fails here, so a step's gradient is neither lost nor applied twice.
  const absl::Status settled = client_->ResolvePushesInDoubt();
  if (settled.ok()) return settled;
  return absl::Status(
      settled.code(),
      absl::StrCat("C-SFT worker ", options_.worker_index,
                   ": gradient push to ", params_->table(),
                   " is in doubt, and its resend failed: ", settled.message()));
}

absl::Status PsWorkerGroup::ExchangePositives(
    int64_t step, absl::Span<const int64_t> ids,
    absl::Span<const float> vectors, std::vector<int64_t>* peer_ids,
    std::vector<float>* peer_vectors) {
  const int d = options_.dim;
  const int width = d + kIdParts;
  if (step < 0 || step >= (int64_t{1} << 32) - 1 ||
      ids.size() > size_t(options_.max_positives) ||
      vectors.size() != ids.size() * size_t(d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C-SFT exchange of step ", step, ": ", ids.size(), " ids, ",
        vectors.size(), " floats; expected at most ", options_.max_positives,
        " ids of dim ", d, " and a step below 2^32 - 1"));
  }
  std::vector<uint64_t> keys(ids.size());
  row_buffer_.resize(ids.size() * width);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("C-SFT exchange: item id ", ids[i], " is negative"));
    }
    keys[i] = SlotKey(options_.worker_index, static_cast<int>(i));
    float* row = row_buffer_.data() + i * width;
    std::copy_n(vectors.data() + i * d, d, row);
    PutParts(static_cast<uint64_t>(ids[i]), row + d);
  }
  if (!keys.empty()) {
    MIM_RETURN_IF_ERROR(client_
                            ->Upsert(exchange_table_, keys, row_buffer_,
                                     Versioned(generation_, uint64_t(step) + 1))
                            .status());
  }
  if (peer_keys_.empty()) return absl::OkStatus();
  MIM_ASSIGN_OR_RETURN(ps::PsClient::GetRowsResult rows,
                       client_->GetRows(exchange_table_, peer_keys_));
  if (rows.dim != static_cast<uint32_t>(width) ||
      rows.meta.size() != peer_keys_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT exchange table ", exchange_table_, " answered dim ", rows.dim,
        " for ", rows.meta.size(), " rows; expected ", width, " for ",
        peer_keys_.size()));
  }
  for (size_t k = 0; k < peer_keys_.size(); ++k) {
    const uint64_t version = rows.meta[k].version();
    if ((version >> 32) != generation_ || (version & 0xffffffffu) == 0) {
      continue;  // not written in this run (or missing: version 0)
    }
    const int64_t their_step = int64_t(version & 0xffffffffu) - 1;
    if (their_step < step - options_.staleness) {
      ++rows_too_old_;
      continue;
    }
    if (their_step > step + options_.staleness) {
      ++rows_too_new_;
      continue;
    }
    const float* row = rows.values.data() + k * width;
    uint64_t id = 0;
    if (!GetParts(row + d, &id)) {
      return absl::DataLossError(absl::StrCat(
          "C-SFT exchange table ", exchange_table_, " row ", peer_keys_[k],
          ": the id reads ", row[d], ", ", row[d + 1], ", ", row[d + 2],
          "; expected three integers 0..", kIdPartMask));
    }
    peer_ids->push_back(static_cast<int64_t>(id));
    peer_vectors->insert(peer_vectors->end(), row, row + d);
  }
  return absl::OkStatus();
}

absl::Status PsWorkerGroup::EndEpoch(int epoch) {
  return WriteControl(kEpochBase + uint64_t(options_.worker_index),
                      Versioned(generation_, uint64_t(epoch)));
}

absl::StatusOr<std::vector<int>> PsWorkerGroup::AwaitEpochRows(
    uint64_t low, bool later_generation_passes) {
  std::vector<uint64_t> keys;
  for (int w = 0; w < options_.num_workers; ++w) {
    keys.push_back(kEpochBase + uint64_t(w));
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (true) {
    MIM_ASSIGN_OR_RETURN(ps::PsClient::GetRowsResult rows,
                         client_->GetRows(exchange_table_, keys));
    std::vector<int> missing;
    for (int w = 0; w < options_.num_workers; ++w) {
      const uint64_t version = rows.meta[w].version();
      if ((version >> 32) > generation_ && later_generation_passes) continue;
      if ((version >> 32) > generation_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "C-SFT worker ", w, " is at generation ", version >> 32,
            ", worker 0 at ", generation_, " (", exchange_table_,
            "): their earlier runs over this prefix differ (a worker that "
            "ran alone or was restarted); use another --worker_prefix"));
      }
      if ((version >> 32) < generation_ || (version & 0xffffffffu) < low) {
        missing.push_back(w);
      }
    }
    if (missing.empty() || absl::Now() >= deadline) return missing;
    // The shards have no notification RPC, so waits poll (as
    // FinishBarrier::WaitAll does).
    absl::SleepFor(options_.poll);
  }
}

absl::Status PsWorkerGroup::AwaitEpoch(int epoch) {
  absl::StatusOr<std::vector<int>> missing =
      AwaitEpochRows(uint64_t(epoch), /*later_generation_passes=*/false);
  if (!missing.ok()) return Abort(missing.status());
  if (!missing->empty()) {
    return Abort(absl::DeadlineExceededError(absl::StrCat(
        "C-SFT worker 0: worker(s) ", absl::StrJoin(*missing, ", "),
        epoch == 0 ? " did not start" :
                     absl::StrCat(" did not finish epoch ", epoch),
        " of generation ", generation_, " within ",
        absl::FormatDuration(options_.timeout))));
  }
  if (epoch != 0) return absl::OkStatus();
  // Every worker is up: their inputs must be this worker's, or batches
  // would be taken twice or never.
  std::vector<uint64_t> count_keys;
  for (int w = 0; w < options_.num_workers; ++w) {
    count_keys.push_back(kCountBase + uint64_t(w));
  }
  MIM_ASSIGN_OR_RETURN(ps::PsClient::GetRowsResult counts,
                       client_->GetRows(exchange_table_, count_keys));
  const uint64_t mine = options_.fingerprint & kPartsMask;
  for (int w = 0; w < options_.num_workers; ++w) {
    uint64_t theirs = 0;
    const float* row =
        counts.values.data() + size_t(w) * (options_.dim + kIdParts);
    if (!GetParts(row, &theirs) || theirs != mine) {
      return Abort(absl::FailedPreconditionError(absl::StrCat(
          "C-SFT worker ", w, "'s inputs differ from worker 0's (fingerprint ",
          theirs, " vs ", mine, " of the training pairs, catalogue and "
          "options): every worker needs the same data and flags")));
    }
  }
  return absl::OkStatus();
}

absl::Status PsWorkerGroup::Abort(const absl::Status& why) {
  // Best effort: the others stop waiting; `why` is what this worker says.
  (void)WriteControl(kDecisionKey, Versioned(generation_, kAbortLow));
  return why;
}

absl::Status PsWorkerGroup::Decide(int epoch, bool stop) {
  return WriteControl(kDecisionKey, Versioned(generation_,
                                              (uint64_t(epoch) << 1) |
                                                  (stop ? 1u : 0u)));
}

absl::StatusOr<bool> PsWorkerGroup::AwaitDecision(int epoch) {
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (true) {
    MIM_ASSIGN_OR_RETURN(
        ps::PsClient::GetRowsResult rows,
        client_->GetRows(exchange_table_,
                         absl::MakeConstSpan(&kDecisionKey, 1)));
    const uint64_t version = rows.meta[0].version();
    if ((version >> 32) > generation_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "C-SFT worker ", options_.worker_index, ": worker 0 decided for "
          "generation ", version >> 32, ", this worker is at ", generation_,
          "; use another --worker_prefix"));
    }
    if ((version >> 32) == generation_) {
      const uint64_t low = version & 0xffffffffu;
      if (low == kAbortLow) {
        return absl::AbortedError(absl::StrCat(
            "C-SFT worker ", options_.worker_index, ": worker 0 ended run ",
            generation_, " (its log says why: a missing worker, another "
            "generation, or inputs that differ)"));
      }
      if ((low >> 1) >= uint64_t(epoch)) {
        // A later epoch's decision means this one went on.
        return (low >> 1) == uint64_t(epoch) && (low & 1) != 0;
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "C-SFT worker ", options_.worker_index, ": worker 0 did not ",
          epoch == 0 ? "release the start barrier (worker 0, or another "
                       "worker, is missing)"
                     : absl::StrCat("decide after epoch ", epoch),
          " of generation ", generation_, " within ",
          absl::FormatDuration(options_.timeout),
          ": is it running with the same --worker_prefix and shards?"));
    }
    absl::SleepFor(options_.poll);
  }
}

}  // namespace mim::csft
